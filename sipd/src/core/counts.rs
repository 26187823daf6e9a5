//! Received messages by kind, for the metrics (`sipd_requests_total`,
//! `sipd_responses_total`): requests per method, responses per status
//! class. Two small arrays in [`super::Counters`], one increment per
//! message next to `requests_in` / `responses_in`; the scrape reads them.
//! Methods outside sipd's list share one `other` slot, so a peer cannot
//! grow the label set.

use crate::sip::Method;

/// The methods counted, in slot order; unknown methods count as `other`.
pub const METHOD_LABELS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// The status classes counted, in slot order.
pub const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Received requests by method and responses by class (retransmissions
/// included, like `requests_in` and `responses_in`).
#[derive(Clone, Debug, Default)]
pub struct MessageCounts {
    requests: [u64; METHOD_LABELS.len()],
    responses: [u64; CLASS_LABELS.len()],
}

fn slot(method: Option<&Method>) -> usize {
    match method {
        Some(Method::Invite) => 0,
        Some(Method::Ack) => 1,
        Some(Method::Bye) => 2,
        Some(Method::Cancel) => 3,
        Some(Method::Register) => 4,
        Some(Method::Options) => 5,
        Some(Method::Info) => 6,
        Some(Method::Prack) => 7,
        Some(Method::Update) => 8,
        Some(Method::Refer) => 9,
        Some(Method::Subscribe) => 10,
        Some(Method::Notify) => 11,
        Some(Method::Message) => 12,
        Some(Method::Publish) => 13,
        Some(Method::Other(_)) | None => 14,
    }
}

impl MessageCounts {
    pub fn request(&mut self, method: Option<&Method>) {
        self.requests[slot(method)] += 1;
    }

    /// A response with this status (the parser admits 100–699 only; anything
    /// else is not counted by class).
    pub fn response(&mut self, status: Option<u16>) {
        if let Some(code @ 100..=699) = status {
            self.responses[usize::from(code / 100 - 1)] += 1;
        }
    }

    /// (method, count), every method in [`METHOD_LABELS`] order.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        METHOD_LABELS
            .iter()
            .copied()
            .zip(self.requests.iter().copied())
    }

    /// (class, count), 1xx to 6xx.
    pub fn responses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLASS_LABELS
            .iter()
            .copied()
            .zip(self.responses.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_labels() {
        for (i, label) in METHOD_LABELS.iter().enumerate() {
            let m = Method::from_token(label);
            assert_eq!(slot(Some(&m)), i, "{label}");
        }
        assert_eq!(slot(Some(&Method::from_token("FOO"))), 14);
        assert_eq!(slot(None), 14);
    }

    #[test]
    fn counts() {
        let mut c = MessageCounts::default();
        c.request(Some(&Method::Register));
        c.request(Some(&Method::Register));
        c.request(Some(&Method::from_token("X-FOO")));
        for code in [100, 180, 200, 401, 699, 700, 99] {
            c.response(Some(code));
        }
        c.response(None);
        let r: Vec<_> = c.requests().filter(|(_, n)| *n > 0).collect();
        assert_eq!(r, [("REGISTER", 2), ("other", 1)]);
        let r: Vec<_> = c.responses().collect();
        assert_eq!(
            r,
            [
                ("1xx", 2),
                ("2xx", 1),
                ("3xx", 0),
                ("4xx", 1),
                ("5xx", 0),
                ("6xx", 1)
            ]
        );
    }
}
