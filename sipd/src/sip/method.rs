//! The request method: [`Method`].

use std::fmt;

/// A SIP method. Methods are case-sensitive tokens (RFC 3261 §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Prack,
    Update,
    Refer,
    Subscribe,
    Notify,
    Message,
    Publish,
    Other(Box<str>),
}

impl Method {
    /// Parse a method token (case-sensitive; an unknown valid token is `Other`).
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            _ => Method::Other(token.into()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        for m in [
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
            "FOO",
        ] {
            assert_eq!(Method::from_token(m).as_str(), m);
        }
        assert_eq!(Method::from_token("invite"), Method::Other("invite".into()));
        assert_eq!(Method::Invite.to_string(), "INVITE");
    }
}
