//! Header names: [`HeaderName`] (case-insensitive, compact forms) and the
//! names that must appear exactly once.

use std::fmt;

/// A header name. Known names are variants (compact forms map to them);
/// any other name is kept lower-cased in `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    AllowEvents,
    AnswerMode,
    AuthenticationInfo,
    Authorization,
    CallId,
    CallInfo,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLanguage,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Diversion,
    ErrorInfo,
    Event,
    Expires,
    From,
    InReplyTo,
    MaxForwards,
    MinExpires,
    MinSe,
    MimeVersion,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    Priority,
    Privacy,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Replaces,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    Other(Box<str>),
}

impl HeaderName {
    /// Parse a header name: case-insensitive, compact forms
    /// (i m f t v l c k s e o u r b x) map to their full names.
    /// Known names do not allocate.
    pub fn parse(name: &str) -> HeaderName {
        match HeaderName::known(name) {
            Some(h) => h,
            None => HeaderName::Other(name.to_ascii_lowercase().into_boxed_str()),
        }
    }

    /// Known header for `name` (case-insensitive), without allocating:
    /// dispatch on the length, then ASCII-case-insensitive compares.
    fn known(name: &str) -> Option<HeaderName> {
        let b = name.as_bytes();
        let eq = |s: &str| b.eq_ignore_ascii_case(s.as_bytes());
        let h = match b.len() {
            1 => match b.first()?.to_ascii_lowercase() {
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'v' => HeaderName::Via,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'e' => HeaderName::ContentEncoding,
                b'o' => HeaderName::Event,
                b'u' => HeaderName::AllowEvents,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'x' => HeaderName::SessionExpires,
                _ => return None,
            },
            2 if eq("To") => HeaderName::To,
            3 if eq("Via") => HeaderName::Via,
            4 if eq("CSeq") => HeaderName::CSeq,
            4 if eq("Date") => HeaderName::Date,
            4 if eq("From") => HeaderName::From,
            4 if eq("RAck") => HeaderName::RAck,
            4 if eq("RSeq") => HeaderName::RSeq,
            5 if eq("Allow") => HeaderName::Allow,
            5 if eq("Event") => HeaderName::Event,
            5 if eq("Route") => HeaderName::Route,
            6 if eq("Accept") => HeaderName::Accept,
            6 if eq("Min-SE") => HeaderName::MinSe,
            6 if eq("Reason") => HeaderName::Reason,
            6 if eq("Server") => HeaderName::Server,
            7 if eq("Call-ID") => HeaderName::CallId,
            7 if eq("Contact") => HeaderName::Contact,
            7 if eq("Expires") => HeaderName::Expires,
            7 if eq("Privacy") => HeaderName::Privacy,
            7 if eq("Require") => HeaderName::Require,
            7 if eq("Subject") => HeaderName::Subject,
            7 if eq("Warning") => HeaderName::Warning,
            8 if eq("Priority") => HeaderName::Priority,
            8 if eq("Refer-To") => HeaderName::ReferTo,
            8 if eq("Replaces") => HeaderName::Replaces,
            8 if eq("Reply-To") => HeaderName::ReplyTo,
            9 if eq("Call-Info") => HeaderName::CallInfo,
            9 if eq("Diversion") => HeaderName::Diversion,
            9 if eq("Supported") => HeaderName::Supported,
            9 if eq("Timestamp") => HeaderName::Timestamp,
            10 if eq("Alert-Info") => HeaderName::AlertInfo,
            10 if eq("Error-Info") => HeaderName::ErrorInfo,
            10 if eq("User-Agent") => HeaderName::UserAgent,
            11 if eq("Answer-Mode") => HeaderName::AnswerMode,
            11 if eq("In-Reply-To") => HeaderName::InReplyTo,
            11 if eq("Min-Expires") => HeaderName::MinExpires,
            11 if eq("Referred-By") => HeaderName::ReferredBy,
            11 if eq("Retry-After") => HeaderName::RetryAfter,
            11 if eq("Unsupported") => HeaderName::Unsupported,
            12 if eq("Allow-Events") => HeaderName::AllowEvents,
            12 if eq("Content-Type") => HeaderName::ContentType,
            12 if eq("Max-Forwards") => HeaderName::MaxForwards,
            12 if eq("MIME-Version") => HeaderName::MimeVersion,
            12 if eq("Organization") => HeaderName::Organization,
            12 if eq("Record-Route") => HeaderName::RecordRoute,
            13 if eq("Authorization") => HeaderName::Authorization,
            13 if eq("Proxy-Require") => HeaderName::ProxyRequire,
            14 if eq("Content-Length") => HeaderName::ContentLength,
            15 if eq("Accept-Encoding") => HeaderName::AcceptEncoding,
            15 if eq("Accept-Language") => HeaderName::AcceptLanguage,
            15 if eq("Session-Expires") => HeaderName::SessionExpires,
            16 if eq("Content-Encoding") => HeaderName::ContentEncoding,
            16 if eq("Content-Language") => HeaderName::ContentLanguage,
            16 if eq("WWW-Authenticate") => HeaderName::WwwAuthenticate,
            18 if eq("Proxy-Authenticate") => HeaderName::ProxyAuthenticate,
            18 if eq("Subscription-State") => HeaderName::SubscriptionState,
            19 if eq("Authentication-Info") => HeaderName::AuthenticationInfo,
            19 if eq("Content-Disposition") => HeaderName::ContentDisposition,
            19 if eq("P-Asserted-Identity") => HeaderName::PAssertedIdentity,
            19 if eq("Proxy-Authorization") => HeaderName::ProxyAuthorization,
            20 if eq("P-Preferred-Identity") => HeaderName::PPreferredIdentity,
            _ => return None,
        };
        Some(h)
    }

    /// Canonical spelling (e.g. `Call-ID`, `CSeq`, `WWW-Authenticate`); for
    /// `Other` the lower-cased name.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptEncoding => "Accept-Encoding",
            HeaderName::AcceptLanguage => "Accept-Language",
            HeaderName::AlertInfo => "Alert-Info",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::AnswerMode => "Answer-Mode",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::Authorization => "Authorization",
            HeaderName::CallId => "Call-ID",
            HeaderName::CallInfo => "Call-Info",
            HeaderName::Contact => "Contact",
            HeaderName::ContentDisposition => "Content-Disposition",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLanguage => "Content-Language",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Date => "Date",
            HeaderName::Diversion => "Diversion",
            HeaderName::ErrorInfo => "Error-Info",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::InReplyTo => "In-Reply-To",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::MinSe => "Min-SE",
            HeaderName::MimeVersion => "MIME-Version",
            HeaderName::Organization => "Organization",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::PPreferredIdentity => "P-Preferred-Identity",
            HeaderName::Priority => "Priority",
            HeaderName::Privacy => "Privacy",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RAck => "RAck",
            HeaderName::Reason => "Reason",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::Replaces => "Replaces",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::Require => "Require",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Route => "Route",
            HeaderName::RSeq => "RSeq",
            HeaderName::Server => "Server",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Subject => "Subject",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::Supported => "Supported",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Via => "Via",
            HeaderName::Warning => "Warning",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::Other(s) => s,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names that must appear exactly once in every message.
pub(crate) fn single_name(name: &HeaderName) -> Option<&'static str> {
    match name {
        HeaderName::From => Some("From"),
        HeaderName::To => Some("To"),
        HeaderName::CallId => Some("Call-ID"),
        HeaderName::CSeq => Some("CSeq"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_case_and_compact() {
        assert_eq!(HeaderName::parse("call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("CALL-ID"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("cSeQ"), HeaderName::CSeq);
        assert_eq!(
            HeaderName::parse("www-authenticate"),
            HeaderName::WwwAuthenticate
        );
        let compact = [
            ("i", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("f", HeaderName::From),
            ("t", HeaderName::To),
            ("v", HeaderName::Via),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("k", HeaderName::Supported),
            ("s", HeaderName::Subject),
            ("e", HeaderName::ContentEncoding),
            ("o", HeaderName::Event),
            ("u", HeaderName::AllowEvents),
            ("r", HeaderName::ReferTo),
            ("b", HeaderName::ReferredBy),
            ("x", HeaderName::SessionExpires),
        ];
        for (c, h) in compact {
            assert_eq!(HeaderName::parse(c), h);
            assert_eq!(HeaderName::parse(&c.to_uppercase()), h);
        }
        assert_eq!(
            HeaderName::parse("X-Custom"),
            HeaderName::Other("x-custom".into())
        );
        assert_eq!(HeaderName::parse("a"), HeaderName::Other("a".into()));
        assert_eq!(HeaderName::parse("X-Custom").as_str(), "x-custom");
    }

    #[test]
    fn canonical_names_round_trip() {
        for n in [
            "Call-ID",
            "CSeq",
            "WWW-Authenticate",
            "MIME-Version",
            "Min-SE",
            "RAck",
            "RSeq",
            "P-Asserted-Identity",
            "Record-Route",
            "Content-Length",
            "Subscription-State",
        ] {
            assert_eq!(HeaderName::parse(n).as_str(), n);
            assert_eq!(HeaderName::parse(&n.to_lowercase()).as_str(), n);
        }
    }
}
