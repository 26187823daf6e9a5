//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges with
//! stateless nonces, verification of credentials, and replay protection.
//! The brute-force guard (failure counters and locks) is [`guard`].
//!
//! Sans-IO: [`DigestAuth`] is plain state owned by the caller, which passes
//! the current time into every call and picks the header names itself
//! (`401` + `WWW-Authenticate` for REGISTER, `407` + `Proxy-Authenticate`
//! otherwise).
//!
//! # Nonces
//!
//! A nonce is 74 lowercase hex digits encoding 37 bytes:
//! the issue time in microseconds since the Unix epoch (8 bytes, big endian),
//! a per-process counter (4 bytes), the [`Offer`] (1 byte: the algorithms
//! and qop the challenge offered), the first 16 bytes of
//! HMAC-SHA256(key, domain ‖ realm ‖ time ‖ counter ‖ offer), and a user tag:
//! the first 8 bytes of HMAC-SHA256(key, domain' ‖ the 29 bytes before ‖
//! user). The key is per process, so sipd recognises its own nonces without
//! storing them, and nonces from a previous process (or another realm) are
//! simply not ours. A nonce is valid for the lifetime given to
//! [`DigestAuth::new`].
//!
//! A nonce serves only the user it was issued for (the user of the request
//! that was challenged): credentials with another `username` are answered
//! [`Verdict::OtherUser`] without looking at the password, and the caller
//! challenges again with a nonce for that username (`stale=true`, so that a
//! client whose From user is not its user name, e.g. an anonymous caller,
//! answers once more instead of giving up). The answer must use one of the
//! algorithms the nonce's challenge offered (an absent `algorithm` means
//! MD5) and `qop=auth` exactly when it was offered; anything else is
//! [`Verdict::Challenge`]d, also without looking at the password.
//!
//! The digest `uri` must name the Request-URI ([`Request::uri`]; compared
//! as SIP URIs, RFC 3261 §19.1.4, see
//! [`crate::sip::auth::digest_uri_matches`]), else [`Verdict::UriMismatch`]
//! (RFC 7616 §3.4.6: 400); the response itself is computed over the `uri`
//! string exactly as received.
//!
//! # Replay protection
//!
//! Every (nonce, nc) pair is accepted at most once. The nonces that were used
//! successfully are tracked by their decoded (time, counter) numbers: per
//! nonce the highest nc seen plus a [`REPLAY_WINDOW`]-bit bitmap below it, so
//! slightly out-of-order nc values still work. Credentials without `qop`
//! (RFC 2069, only when a challenge offered no qop) use up their nonce. The
//! table holds at most `capacity` nonces;
//! entries leave it when their nonce expires, or, when it is full, oldest
//! first. Whenever an entry leaves, the watermark `evicted_until` moves up
//! to its issue time, and a nonce issued at or before the watermark that is
//! not in the table is answered [`Verdict::Stale`], never accepted: a replay
//! cannot succeed after its entry is gone, even if the clock steps back.
//! A pair seen before is answered [`Verdict::Replayed`]: the registrar
//! accepts that only for a retransmission of the very REGISTER that made a
//! binding, from the binding's own source address (which changes nothing).
//! All operations are O(1) amortised.

pub mod guard;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::sip::auth::{digest_uri_matches, AuthParams};

/// Suggested nonce lifetime for [`DigestAuth::new`]: five minutes.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Suggested replay-table capacity for [`DigestAuth::new`] (nonces tracked).
pub const DEFAULT_CAPACITY: usize = 262_144;

/// How many nc values below the highest one seen are still accepted (once
/// each) for a nonce.
pub const REPLAY_WINDOW: u32 = 64;

/// Longest accepted value of a credentials parameter we use; longer is
/// [`Verdict::Malformed`] (no hashing of megabytes).
const MAX_PARAM_LEN: usize = 2048;
/// Truncated HMAC length in the nonce.
const MAC_LEN: usize = 16;
/// Truncated HMAC length of the user tag.
const USER_TAG_LEN: usize = 8;
/// Time (8) + counter (4) + offer (1): what the nonce MAC covers.
const NONCE_HEAD: usize = 8 + 4 + 1;
/// What the user tag covers: head + MAC.
const NONCE_TAGGED: usize = NONCE_HEAD + MAC_LEN;
/// Raw nonce: head + MAC + user tag.
const NONCE_BYTES: usize = NONCE_TAGGED + USER_TAG_LEN;
/// Length of a nonce as sent.
const NONCE_HEX_LEN: usize = 2 * NONCE_BYTES;
/// Domain separation for the nonce MAC.
const NONCE_DOMAIN: &[u8] = b"sipd digest nonce v2\0";
/// Domain separation for the user tag.
const USER_DOMAIN: &[u8] = b"sipd digest nonce user v2\0";
/// Password hashed for unknown users, so that they cost the same time as
/// known ones; the result is never accepted.
const DUMMY_SECRET: &[u8] = b"sipd-unknown-user-dummy-secret";

/// A digest algorithm (RFC 7616 §6.1, RFC 8760).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (also the meaning of an absent `algorithm` parameter).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Every algorithm sipd knows.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
    ];

    /// Parses an `algorithm` parameter value, ignoring ASCII case. `None`
    /// for algorithms sipd does not support (e.g. `SHA-512-256`).
    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The canonical token, as sent in challenges.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (A1 includes nonce and cnonce).
    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    fn hash_kind(self) -> HashKind {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => HashKind::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => HashKind::Sha256,
        }
    }

    /// This algorithm's bit in an [`Offer`].
    fn bit(self) -> u8 {
        match self {
            Algorithm::Md5 => 1,
            Algorithm::Md5Sess => 2,
            Algorithm::Sha256 => 4,
            Algorithm::Sha256Sess => 8,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one challenge offered: a set of algorithms and whether `qop="auth"`
/// was offered. Carried (MAC-protected) in the nonce, so an answer is
/// checked against exactly what that client was offered, also after a
/// reload changed `digest=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Offer(u8);

impl Offer {
    const QOP: u8 = 0x80;

    /// The offer of these algorithms, with `qop="auth"` or without.
    pub fn new(algorithms: &[Algorithm], qop: bool) -> Offer {
        let algs = algorithms.iter().fold(0, |acc, a| acc | a.bit());
        Offer(algs | if qop { Offer::QOP } else { 0 })
    }

    /// Whether an answer with `alg` is acceptable.
    pub fn allows(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    /// Whether `qop="auth"` was offered (then an answer must use it; if
    /// not, an answer must not).
    pub fn qop(self) -> bool {
        self.0 & Offer::QOP != 0
    }
}

/// A challenge to issue: for our `realm`, with a nonce for `user` (the user
/// of the request being challenged), offering `algorithms` in this order,
/// with or without `qop="auth"` (sipd always offers it; RFC 2069 clients
/// without qop support are not served).
#[derive(Clone, Copy, Debug)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub user: &'a str,
    pub algorithms: &'a [Algorithm],
    pub qop: bool,
    /// Add `stale=true` (the client's credentials were fine but their nonce
    /// is not usable: expired, used, or for another user).
    pub stale: bool,
}

/// The request whose credentials are verified.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The Request-URI the digest `uri` must name (`None`: not compared,
    /// `[general] digest_uri=any`).
    pub uri: Option<&'a str>,
    /// Our realm.
    pub realm: &'a str,
}

/// Outcome of [`DigestAuth::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials valid: the authenticated user name (exactly as in
    /// `username`).
    Ok(String),
    /// The response was right but the nonce can no longer be used (expired,
    /// or its replay record is gone): send a fresh challenge with `stale=true`.
    Stale,
    /// The nonce was issued for another user than `username`: challenge
    /// again (with `stale=true`) with a nonce for `username`. The password
    /// was not looked at.
    OtherUser,
    /// The response was right and the nonce is current, but this (nonce, nc)
    /// was already accepted: a replay, or a retransmission of the accepted
    /// request that outlived its transaction. Treat as [`Verdict::Stale`]
    /// unless the caller knows it already acted on exactly this request from
    /// the same place (then acting again changes nothing). Carries the user.
    Replayed(String),
    /// No usable credentials: send a fresh challenge (not Digest, wrong
    /// realm, not our nonce, unsupported qop or algorithm, or an algorithm
    /// or qop that the nonce's challenge did not offer). The password was
    /// not looked at.
    Challenge,
    /// `403 Forbidden`: unknown user or wrong password (the same answer and
    /// the same work for both).
    Forbidden,
    /// `400 Bad Request`: the digest `uri` does not name the Request-URI
    /// (RFC 7616 §3.4.6). The password was not looked at.
    UriMismatch,
    /// `400 Bad Request`: credentials malformed (a required parameter
    /// missing, repeated or too long, bad nc).
    Malformed,
}

/// Digest authentication state: the nonce key, the nonce lifetime and the
/// replay table. One per process (per realm is not needed: the realm is
/// bound into each nonce).
pub struct DigestAuth {
    /// HMAC-SHA256 already keyed; cloned per nonce.
    mac: Hmac<Sha256>,
    lifetime_us: u64,
    capacity: usize,
    counter: u32,
    seen: HashMap<NonceId, Window>,
    /// Keys of `seen` in insertion (first successful use) order.
    order: VecDeque<NonceId>,
    /// Highest issue time (µs) of any entry that left the table.
    evicted_until: Option<u64>,
}

impl fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("DigestAuth")
            .field("lifetime_us", &self.lifetime_us)
            .field("capacity", &self.capacity)
            .field("tracked", &self.seen.len())
            .field("evicted_until", &self.evicted_until)
            .finish_non_exhaustive()
    }
}

/// A nonce decoded and authenticated: its issue time and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct NonceId {
    issued_us: u64,
    counter: u32,
}

/// A nonce of ours, decoded: its id, offer and user tag.
struct Decoded {
    id: NonceId,
    offer: Offer,
    /// The 29 bytes the user tag covers.
    tagged: [u8; NONCE_TAGGED],
    user_tag: [u8; USER_TAG_LEN],
}

/// The nc values used with one nonce: bit `i` of `bits` means `max - i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    max: u32,
    bits: u64,
}

impl Window {
    fn first(nc: u32) -> Window {
        Window { max: nc, bits: 1 }
    }

    /// A nonce that can never be used again (credentials without qop).
    fn used_up() -> Window {
        Window {
            max: u32::MAX,
            bits: u64::MAX,
        }
    }

    /// Records `nc`; false if it was seen before or is below the window.
    fn accept(&mut self, nc: u32) -> bool {
        if nc > self.max {
            let shift = nc - self.max;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.max = nc;
            true
        } else {
            let back = self.max - nc;
            if back >= REPLAY_WINDOW || self.bits & (1 << back) != 0 {
                false
            } else {
                self.bits |= 1 << back;
                true
            }
        }
    }
}

impl DigestAuth {
    /// A new authenticator with the given 32-byte nonce key, nonce lifetime
    /// and replay-table capacity (at least 1 is used).
    pub fn new(key: [u8; 32], nonce_lifetime: Duration, capacity: usize) -> Self {
        DigestAuth {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length"),
            lifetime_us: u64::try_from(nonce_lifetime.as_micros()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            counter: 0,
            seen: HashMap::new(),
            order: VecDeque::new(),
            evicted_until: None,
        }
    }

    /// Like [`DigestAuth::new`] with a fresh random key (and random counter
    /// start) from the operating system.
    pub fn with_random_key(nonce_lifetime: Duration, capacity: usize) -> Self {
        let mut seed = [0u8; 36];
        crate::rng::fill_random(&mut seed);
        let mut key = [0u8; 32];
        key.copy_from_slice(&seed[..32]);
        let mut auth = Self::new(key, nonce_lifetime, capacity);
        auth.counter = u32::from_be_bytes([seed[32], seed[33], seed[34], seed[35]]);
        auth
    }

    /// Challenge header values, one per offered algorithm in order, all
    /// with one fresh nonce for `c.user`: `Digest realm="…", nonce="…",
    /// qop="auth", algorithm=…` (`qop` only when offered) plus
    /// `, stale=true` when `c.stale`.
    pub fn challenge(&mut self, c: &Challenge, now: SystemTime) -> Vec<String> {
        let offer = Offer::new(c.algorithms, c.qop);
        let nonce = self.issue_nonce(c.realm, c.user, offer, now);
        let realm = quote(c.realm);
        let qop = if c.qop { ", qop=\"auth\"" } else { "" };
        let stale = if c.stale { ", stale=true" } else { "" };
        c.algorithms
            .iter()
            .map(|alg| {
                format!("Digest realm={realm}, nonce=\"{nonce}\"{qop}, algorithm={alg}{stale}")
            })
            .collect()
    }

    /// Verifies Digest credentials (an `Authorization` or
    /// `Proxy-Authorization` value) of a request `req`. The response is
    /// checked over the `uri` parameter exactly as received.
    /// `secret_of(username)` gives the user's password (`None`: unknown
    /// user, or a user who may not authenticate from here, which costs the
    /// same hashing as a known one). It is asked only once the credentials
    /// are well-formed, name `req`, answer what was offered for this
    /// username, and carry a nonce of ours.
    /// On success the (nonce, nc) pair is recorded and will not be accepted
    /// again.
    pub fn verify<F, S>(
        &mut self,
        creds: &AuthParams,
        req: &Request,
        secret_of: F,
        now: SystemTime,
    ) -> Verdict
    where
        F: FnOnce(&str) -> Option<S>,
        S: AsRef<str>,
    {
        if !creds.scheme.eq_ignore_ascii_case("Digest") {
            return Verdict::Challenge;
        }
        let Some(f) = Fields::collect(creds) else {
            return Verdict::Malformed;
        };
        let (Some(username), Some(c_realm), Some(nonce), Some(uri), Some(response)) =
            (f.username, f.realm, f.nonce, f.uri, f.response)
        else {
            return Verdict::Malformed;
        };
        if c_realm != req.realm {
            return Verdict::Challenge;
        }
        // qop=auth needs nc and cnonce; no qop is RFC 2069; anything else
        // (auth-int included) is not supported.
        let qop = match f.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(_)) = (f.nc, f.cnonce) else {
                    return Verdict::Malformed;
                };
                let Some(nc_value) = parse_nc(nc) else {
                    return Verdict::Malformed;
                };
                Some((q, nc, nc_value))
            }
            Some(_) => return Verdict::Challenge,
        };
        let alg = match f.algorithm {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a) {
                Some(alg) => alg,
                None => return Verdict::Challenge,
            },
        };
        if alg.is_sess() && f.cnonce.is_none() {
            return Verdict::Malformed;
        }
        if f.userhash.is_some_and(|u| !u.eq_ignore_ascii_case("false")) {
            // We never offer userhash (RFC 7616 §3.4.4).
            return Verdict::Challenge;
        }
        if req.uri.is_some_and(|r| !digest_uri_matches(uri, r)) {
            return Verdict::UriMismatch;
        }
        let Some(d) = self.decode_nonce(req.realm, nonce) else {
            return Verdict::Challenge;
        };
        if !constant_time_eq(&self.user_tag(&d.tagged, username), &d.user_tag) {
            return Verdict::OtherUser;
        }
        if !d.offer.allows(alg) || d.offer.qop() != qop.is_some() {
            return Verdict::Challenge;
        }
        let id = d.id;

        let secret = secret_of(username);
        let (password, known) = match &secret {
            Some(s) => (s.as_ref().as_bytes(), true),
            None => (DUMMY_SECRET, false),
        };
        let expected = compute_response(&ResponseInput {
            alg,
            username: username.as_bytes(),
            realm: c_realm.as_bytes(),
            password,
            method: req.method.as_bytes(),
            uri: uri.as_bytes(),
            nonce: nonce.as_bytes(),
            cnonce: f.cnonce.map(str::as_bytes),
            qop: qop.map(|(q, nc, _)| (q.as_bytes(), nc.as_bytes())),
        });
        let matches = eq_hex(expected.as_bytes(), response.as_bytes());
        // Non-short-circuit: the comparison is done for unknown users too.
        let ok = std::hint::black_box(known & matches);

        let now_us = micros(now);
        if self.is_expired(id.issued_us, now_us) {
            return if ok {
                Verdict::Stale
            } else {
                Verdict::Forbidden
            };
        }
        if !ok {
            return Verdict::Forbidden;
        }
        self.purge_us(now_us);
        let nc = qop.map(|(_, _, n)| n);
        if let Some(window) = self.seen.get_mut(&id) {
            return match nc {
                Some(n) if window.accept(n) => Verdict::Ok(username.to_owned()),
                _ => Verdict::Replayed(username.to_owned()),
            };
        }
        if self.evicted_until.is_some_and(|t| id.issued_us <= t) {
            return Verdict::Stale;
        }
        let window = nc.map_or_else(Window::used_up, Window::first);
        self.insert(id, window);
        Verdict::Ok(username.to_owned())
    }

    /// Drops the replay records of nonces expired at `now` (verify does
    /// this too; call it from a timer to free memory when idle).
    pub fn purge(&mut self, now: SystemTime) {
        self.purge_us(micros(now));
    }

    /// Number of nonces currently tracked in the replay table.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    /// The nonce lifetime.
    pub fn nonce_lifetime(&self) -> Duration {
        Duration::from_micros(self.lifetime_us)
    }

    fn issue_nonce(&mut self, realm: &str, user: &str, offer: Offer, now: SystemTime) -> String {
        let id = NonceId {
            issued_us: micros(now),
            counter: self.counter,
        };
        self.counter = self.counter.wrapping_add(1);
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&id.issued_us.to_be_bytes());
        raw[8..12].copy_from_slice(&id.counter.to_be_bytes());
        raw[12] = offer.0;
        let mac = self.nonce_mac(realm, &raw[..NONCE_HEAD]);
        raw[NONCE_HEAD..NONCE_TAGGED].copy_from_slice(&mac);
        let mut tagged = [0u8; NONCE_TAGGED];
        tagged.copy_from_slice(&raw[..NONCE_TAGGED]);
        raw[NONCE_TAGGED..].copy_from_slice(&self.user_tag(&tagged, user));
        let mut hex = [0u8; NONCE_HEX_LEN];
        hex_encode(&raw, &mut hex);
        String::from_utf8_lossy(&hex).into_owned()
    }

    /// MAC over the realm and the nonce's head (time, counter, offer).
    fn nonce_mac(&self, realm: &str, head: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(NONCE_DOMAIN);
        mac.update(&(realm.len() as u64).to_be_bytes());
        mac.update(realm.as_bytes());
        mac.update(head);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The tag binding an authenticated nonce (its first 29 bytes) to `user`.
    fn user_tag(&self, tagged: &[u8; NONCE_TAGGED], user: &str) -> [u8; USER_TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(USER_DOMAIN);
        mac.update(tagged);
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; USER_TAG_LEN];
        out.copy_from_slice(&full[..USER_TAG_LEN]);
        out
    }

    /// The nonce's parts if it is one of ours (for this realm); the user
    /// tag is not checked here.
    fn decode_nonce(&self, realm: &str, nonce: &str) -> Option<Decoded> {
        let mut raw = [0u8; NONCE_BYTES];
        if nonce.len() != NONCE_HEX_LEN || !hex_decode_lower(nonce.as_bytes(), &mut raw) {
            return None;
        }
        let (head, rest) = raw.split_at(NONCE_HEAD);
        let (mac, user_tag) = rest.split_at(MAC_LEN);
        if !constant_time_eq(&self.nonce_mac(realm, head), mac) {
            return None;
        }
        Some(Decoded {
            id: NonceId {
                issued_us: u64::from_be_bytes(head[..8].try_into().ok()?),
                counter: u32::from_be_bytes(head[8..12].try_into().ok()?),
            },
            offer: Offer(head[12]),
            tagged: raw[..NONCE_TAGGED].try_into().ok()?,
            user_tag: user_tag.try_into().ok()?,
        })
    }

    /// Expired, or issued more than a lifetime in the future (the clock
    /// stepped back).
    fn is_expired(&self, issued_us: u64, now_us: u64) -> bool {
        if now_us >= issued_us {
            now_us - issued_us >= self.lifetime_us
        } else {
            issued_us - now_us > self.lifetime_us
        }
    }

    fn purge_us(&mut self, now_us: u64) {
        while let Some(&front) = self.order.front() {
            if !self.is_expired(front.issued_us, now_us) {
                break;
            }
            self.remove_front();
        }
    }

    fn insert(&mut self, id: NonceId, window: Window) {
        while self.seen.len() >= self.capacity && !self.order.is_empty() {
            self.remove_front();
        }
        self.seen.insert(id, window);
        self.order.push_back(id);
    }

    fn remove_front(&mut self) {
        if let Some(old) = self.order.pop_front() {
            self.seen.remove(&old);
            // None < Some(_): the watermark only moves up.
            self.evicted_until = self.evicted_until.max(Some(old.issued_us));
        }
    }
}

/// Constant-time equality: false on a length mismatch, otherwise compares
/// every byte (xor-fold) without exiting early on content.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let acc = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(acc) == 0
}

/// The digest `response` a client computes (RFC 7616 §3.4.1), as lowercase
/// hex. With `qop` (`Some("auth")`), `nc` is hashed as 8 lowercase hex
/// digits, as sent in `nc=`; without `qop` (RFC 2069) `nc` is ignored and
/// `cnonce` only matters for the `-sess` algorithms.
#[allow(clippy::too_many_arguments)]
pub fn client_response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
    qop: Option<&str>,
) -> String {
    let nc = format!("{nc:08x}");
    compute_response(&ResponseInput {
        alg,
        username: username.as_bytes(),
        realm: realm.as_bytes(),
        password: password.as_bytes(),
        method: method.as_bytes(),
        uri: uri.as_bytes(),
        nonce: nonce.as_bytes(),
        cnonce: Some(cnonce.as_bytes()),
        qop: qop.map(|q| (q.as_bytes(), nc.as_bytes())),
    })
    .as_str()
    .to_owned()
}

/// The credentials parameters we use, each at most once.
#[derive(Default)]
struct Fields<'a> {
    username: Option<&'a str>,
    realm: Option<&'a str>,
    nonce: Option<&'a str>,
    uri: Option<&'a str>,
    response: Option<&'a str>,
    algorithm: Option<&'a str>,
    qop: Option<&'a str>,
    nc: Option<&'a str>,
    cnonce: Option<&'a str>,
    userhash: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// `None` if one of our parameters is repeated or too long. Names are
    /// matched ignoring ASCII case; other parameters (opaque, …) are ignored.
    fn collect(creds: &'a AuthParams) -> Option<Fields<'a>> {
        let mut f = Fields::default();
        for (name, value) in &creds.params {
            let Some(index) = param_index(name) else {
                continue;
            };
            let slot = match index {
                0 => &mut f.username,
                1 => &mut f.realm,
                2 => &mut f.nonce,
                3 => &mut f.uri,
                4 => &mut f.response,
                5 => &mut f.algorithm,
                6 => &mut f.qop,
                7 => &mut f.nc,
                8 => &mut f.cnonce,
                _ => &mut f.userhash,
            };
            if slot.is_some() || value.len() > MAX_PARAM_LEN {
                return None;
            }
            *slot = Some(value.as_str());
        }
        Some(f)
    }
}

/// Index of a parameter we use (case-insensitive lookup), `None` for others.
fn param_index(name: &str) -> Option<usize> {
    const NAMES: [&str; 10] = [
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "qop",
        "nc",
        "cnonce",
        "userhash",
    ];
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(name))
}

/// nc: 1 to 8 hex digits (RFC: exactly 8; shorter is tolerated).
fn parse_nc(nc: &str) -> Option<u32> {
    if nc.is_empty() || nc.len() > 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok()
}

/// Compares our lowercase hex digest with the received response, ignoring
/// the case of the received hex digits; constant time for equal lengths.
fn eq_hex(expected: &[u8], got: &[u8]) -> bool {
    if expected.len() != got.len() {
        return false;
    }
    let mut lower = [0u8; 64];
    let lower = &mut lower[..got.len()];
    for (l, g) in lower.iter_mut().zip(got) {
        *l = g.to_ascii_lowercase();
    }
    constant_time_eq(expected, lower)
}

/// Microseconds since the Unix epoch (0 before it, saturating).
fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A quoted-string for a header: `"` and `\` escaped, control characters
/// dropped (no header injection through a configured realm).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = HEX[usize::from(b >> 4)];
        o[1] = HEX[usize::from(b & 15)];
    }
}

/// Decodes lowercase hex into `out` (whose length must be half the input's).
fn hex_decode_lower(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[derive(Clone, Copy)]
enum HashKind {
    Md5,
    Sha256,
}

/// A digest as lowercase hex, without allocating.
struct HexDigest {
    buf: [u8; 64],
    len: usize,
}

impl HexDigest {
    fn of(bytes: &[u8]) -> HexDigest {
        let mut buf = [0u8; 64];
        hex_encode(bytes, &mut buf);
        HexDigest {
            buf,
            len: 2 * bytes.len(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// H(parts joined with ':').
fn h(kind: HashKind, parts: &[&[u8]]) -> HexDigest {
    fn run<D: Digest>(parts: &[&[u8]]) -> HexDigest {
        let mut d = D::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            d.update(p);
        }
        HexDigest::of(&d.finalize())
    }
    match kind {
        HashKind::Md5 => run::<Md5>(parts),
        HashKind::Sha256 => run::<Sha256>(parts),
    }
}

/// Everything that goes into a digest response, as the strings sent.
struct ResponseInput<'a> {
    alg: Algorithm,
    username: &'a [u8],
    realm: &'a [u8],
    password: &'a [u8],
    method: &'a [u8],
    uri: &'a [u8],
    nonce: &'a [u8],
    cnonce: Option<&'a [u8]>,
    /// (qop, nc) when qop is present.
    qop: Option<(&'a [u8], &'a [u8])>,
}

/// RFC 7616 §3.4.1 (and RFC 2069 without qop).
fn compute_response(i: &ResponseInput) -> HexDigest {
    let kind = i.alg.hash_kind();
    let cnonce = i.cnonce.unwrap_or_default();
    let mut ha1 = h(kind, &[i.username, i.realm, i.password]);
    if i.alg.is_sess() {
        ha1 = h(kind, &[ha1.as_bytes(), i.nonce, cnonce]);
    }
    let ha2 = h(kind, &[i.method, i.uri]);
    match i.qop {
        Some((qop, nc)) => h(
            kind,
            &[ha1.as_bytes(), i.nonce, nc, cnonce, qop, ha2.as_bytes()],
        ),
        None => h(kind, &[ha1.as_bytes(), i.nonce, ha2.as_bytes()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REALM: &str = "sipd.test";
    const LIFETIME: Duration = Duration::from_secs(300);
    const URI: &str = "sip:127.0.0.1:5060";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn auth_with_capacity(capacity: usize) -> DigestAuth {
        DigestAuth::new([7; 32], LIFETIME, capacity)
    }

    fn auth() -> DigestAuth {
        auth_with_capacity(1024)
    }

    fn secrets(user: &str) -> Option<&'static str> {
        match user {
            "alice" => Some("wonderland"),
            "bob" => Some("builder"),
            _ => None,
        }
    }

    /// Test-only parser of the challenge values we produce:
    /// `Digest k=v, k="v", …`.
    fn parse_challenge(value: &str) -> (String, Vec<(String, String)>) {
        let (scheme, rest) = value.split_once(' ').expect("scheme");
        let mut params = Vec::new();
        let mut rest = rest.trim_start();
        while !rest.is_empty() {
            let (name, after) = rest.split_once('=').expect("name=");
            let (val, after) = if let Some(q) = after.strip_prefix('"') {
                let mut val = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => val.push(chars.next().expect("escaped").1),
                        (i, '"') => break i + 1,
                        (_, c) => val.push(c),
                    }
                };
                (val, &q[end..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            params.push((name.trim().to_ascii_lowercase(), val));
            rest = after.trim_start_matches(',').trim_start();
        }
        (scheme.to_string(), params)
    }

    fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A nonce for `user` from a challenge offering `algorithms`, with or
    /// without qop.
    fn nonce_offering(
        a: &mut DigestAuth,
        user: &str,
        algorithms: &[Algorithm],
        qop: bool,
        now: SystemTime,
    ) -> String {
        let c = a.challenge(
            &Challenge {
                realm: REALM,
                user,
                algorithms,
                qop,
                stale: false,
            },
            now,
        );
        let (_, params) = parse_challenge(&c[0]);
        param(&params, "nonce").unwrap().to_string()
    }

    /// A nonce for `user` offering every algorithm with qop.
    fn nonce_for(a: &mut DigestAuth, user: &str, now: SystemTime) -> String {
        nonce_offering(a, user, &Algorithm::ALL, true, now)
    }

    /// A nonce for alice offering every algorithm with qop.
    fn fresh_nonce(a: &mut DigestAuth, now: SystemTime) -> String {
        nonce_for(a, "alice", now)
    }

    /// The default challenge (SHA-256, MD5 with qop) for alice.
    fn challenges(a: &mut DigestAuth, realm: &str, stale: bool, now: SystemTime) -> Vec<String> {
        a.challenge(
            &Challenge {
                realm,
                user: "alice",
                algorithms: &[Algorithm::Sha256, Algorithm::Md5],
                qop: true,
                stale,
            },
            now,
        )
    }

    /// Credentials a client would send; `build` gives the AuthParams.
    #[derive(Clone)]
    struct Cred {
        alg: Option<Algorithm>,
        user: String,
        password: String,
        realm: String,
        method: String,
        uri: String,
        nonce: String,
        nc: u32,
        cnonce: String,
        qop: Option<String>,
    }

    impl Cred {
        fn new(nonce: &str) -> Cred {
            Cred {
                alg: Some(Algorithm::Sha256),
                user: "alice".into(),
                password: "wonderland".into(),
                realm: REALM.into(),
                method: "REGISTER".into(),
                uri: URI.into(),
                nonce: nonce.into(),
                nc: 1,
                cnonce: "0a4f113b".into(),
                qop: Some("auth".into()),
            }
        }

        fn response(&self) -> String {
            client_response(
                self.alg.unwrap_or(Algorithm::Md5),
                &self.user,
                &self.realm,
                &self.password,
                &self.method,
                &self.uri,
                &self.nonce,
                self.nc,
                &self.cnonce,
                self.qop.as_deref(),
            )
        }

        fn build(&self) -> AuthParams {
            let mut params = vec![
                ("username".to_string(), self.user.clone()),
                ("realm".to_string(), self.realm.clone()),
                ("nonce".to_string(), self.nonce.clone()),
                ("uri".to_string(), self.uri.clone()),
                ("response".to_string(), self.response()),
            ];
            if let Some(alg) = self.alg {
                params.push(("algorithm".into(), alg.as_str().into()));
            }
            if let Some(qop) = &self.qop {
                params.push(("qop".into(), qop.clone()));
                params.push(("nc".into(), format!("{:08x}", self.nc)));
                params.push(("cnonce".into(), self.cnonce.clone()));
            }
            AuthParams {
                scheme: "Digest".into(),
                params,
            }
        }
    }

    fn request(method: &str) -> Request<'_> {
        Request {
            method,
            uri: None,
            realm: REALM,
        }
    }

    fn verify(a: &mut DigestAuth, creds: &AuthParams, method: &str, now: SystemTime) -> Verdict {
        a.verify(creds, &request(method), secrets, now)
    }

    fn ok() -> Verdict {
        Verdict::Ok("alice".into())
    }

    fn replayed() -> Verdict {
        Verdict::Replayed("alice".into())
    }

    fn set(p: &mut AuthParams, name: &str, value: &str) {
        match p.params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => p.params.push((name.to_string(), value.to_string())),
        }
    }

    fn without(p: &AuthParams, name: &str) -> AuthParams {
        let mut p = p.clone();
        p.params.retain(|(n, _)| n != name);
        p
    }

    // ---- known answers -------------------------------------------------

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(alg: Algorithm) -> String {
        client_response(
            alg,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            RFC7616_NONCE,
            1,
            RFC7616_CNONCE,
            Some("auth"),
        )
    }

    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        // RFC 7616 §3.9.1.
        assert_eq!(rfc7616(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            rfc7616(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn sess_variants_on_rfc7616_inputs() {
        // The RFC has no -sess example; these were computed independently
        // with Python's hashlib from the §3.9.1 inputs.
        assert_eq!(
            rfc7616(Algorithm::Md5Sess),
            "e783283f46242139c486a698fec7211d"
        );
        assert_eq!(
            rfc7616(Algorithm::Sha256Sess),
            "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7"
        );
    }

    #[test]
    fn rfc2617_md5_example_and_rfc2069_form() {
        let r = |qop| {
            client_response(
                Algorithm::Md5,
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life",
                "GET",
                "/dir/index.html",
                "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                1,
                "0a4f113b",
                qop,
            )
        };
        // RFC 2617 §3.5.
        assert_eq!(r(Some("auth")), "6629fae49393a05397450978507c4ef1");
        // Same inputs without qop, H(HA1:nonce:HA2) (computed with hashlib).
        assert_eq!(r(None), "670fd8c2df070c60b045671b8b24ff02");
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn algorithm_names() {
        for alg in [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ] {
            assert_eq!(Algorithm::parse(alg.as_str()), Some(alg));
            assert_eq!(Algorithm::parse(&alg.to_string().to_lowercase()), Some(alg));
        }
        assert_eq!(Algorithm::parse("SHA-512-256"), None);
        assert_eq!(Algorithm::parse(""), None);
    }

    #[test]
    fn window_logic() {
        let mut w = Window::first(5);
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(100));
        assert!(!w.accept(100 - REPLAY_WINDOW));
        assert!(w.accept(100 - REPLAY_WINDOW + 1));
        assert!(!w.accept(5));
        assert!(w.accept(u32::MAX));
        assert!(!w.accept(u32::MAX));
        let mut used = Window::used_up();
        for nc in [0, 1, u32::MAX - 1, u32::MAX] {
            assert!(!used.accept(nc));
        }
    }

    // ---- challenges ----------------------------------------------------

    #[test]
    fn challenge_format() {
        let mut a = auth();
        let [sha, md5]: [String; 2] = challenges(&mut a, REALM, false, t0()).try_into().unwrap();
        let mut nonces = Vec::new();
        for (value, alg) in [(&sha, "SHA-256"), (&md5, "MD5")] {
            let (scheme, params) = parse_challenge(value);
            assert_eq!(scheme, "Digest");
            assert_eq!(param(&params, "realm"), Some(REALM));
            assert_eq!(param(&params, "qop"), Some("auth"));
            assert!(value.contains("qop=\"auth\""), "{value}");
            assert_eq!(param(&params, "algorithm"), Some(alg));
            assert_eq!(param(&params, "stale"), None);
            let nonce = param(&params, "nonce").unwrap();
            assert_eq!(nonce.len(), NONCE_HEX_LEN);
            assert!(nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            nonces.push(nonce.to_string());
        }
        assert_eq!(nonces[0], nonces[1], "one nonce for both algorithms");

        let [sha2, md52]: [String; 2] = challenges(&mut a, REALM, true, t0()).try_into().unwrap();
        for value in [&sha2, &md52] {
            let (_, params) = parse_challenge(value);
            assert_eq!(param(&params, "stale"), Some("true"));
            assert!(value.ends_with(", stale=true"), "{value}");
            assert_ne!(param(&params, "nonce"), Some(nonces[0].as_str()));
        }
    }

    #[test]
    fn nonces_are_unique_within_one_microsecond() {
        let mut a = auth();
        let n: std::collections::HashSet<String> =
            (0..1000).map(|_| fresh_nonce(&mut a, t0())).collect();
        assert_eq!(n.len(), 1000);
    }

    #[test]
    fn realm_is_quoted_safely() {
        let mut a = auth();
        let c = challenges(&mut a, "we \"x\" \\ y\r\nX-Evil: 1", false, t0()).remove(0);
        assert!(!c.contains('\r') && !c.contains('\n'), "{c}");
        let (_, params) = parse_challenge(&c);
        assert_eq!(param(&params, "realm"), Some("we \"x\" \\ yX-Evil: 1"));
    }

    // ---- verification --------------------------------------------------

    #[test]
    fn every_algorithm_verifies() {
        for alg in [
            None,
            Some(Algorithm::Md5),
            Some(Algorithm::Md5Sess),
            Some(Algorithm::Sha256),
            Some(Algorithm::Sha256Sess),
        ] {
            let mut a = auth();
            let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
            c.alg = alg;
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                ok(),
                "{alg:?}"
            );
            assert_eq!(a.tracked(), 1);
        }
    }

    #[test]
    fn names_and_hex_case_are_tolerated() {
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        let mut p = c.build();
        for (name, value) in &mut p.params {
            *name = name.to_ascii_uppercase();
            if name == "RESPONSE" {
                *value = value.to_ascii_uppercase();
            }
            if name == "ALGORITHM" {
                *value = value.to_ascii_lowercase();
            }
        }
        p.scheme = "DIGEST".into();
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
    }

    #[test]
    fn uri_is_used_exactly_as_received() {
        // SIPp puts sip:ip:port in uri=, whatever the Request-URI is: the
        // request URI is not an input at all.
        for uri in [
            "sip:127.0.0.1:5060",
            "sip:sipd.test",
            "sip:Alice@X;transport=tcp",
        ] {
            let mut a = auth();
            let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
            c.uri = uri.into();
            assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), ok());
        }
        // But changing the uri after the response was computed breaks it.
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        let mut p = c.build();
        set(&mut p, "uri", "sip:127.0.0.1:5061");
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Forbidden);
    }

    #[test]
    fn method_is_bound() {
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        assert_eq!(
            verify(&mut a, &c.build(), "INVITE", t0()),
            Verdict::Forbidden
        );
        let mut c = c.clone();
        c.method = "INVITE".into();
        assert_eq!(verify(&mut a, &c.build(), "INVITE", t0()), ok());
    }

    #[test]
    fn wrong_password_and_unknown_user_are_forbidden() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        c.password = "wonderlant".into();
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Forbidden
        );

        c.user = "mallory".into();
        c.nonce = nonce_for(&mut a, "mallory", t0());
        let mut asked = Vec::new();
        let v = a.verify(
            &c.build(),
            &request("REGISTER"),
            |u: &str| {
                asked.push(u.to_string());
                None::<String>
            },
            t0(),
        );
        assert_eq!(v, Verdict::Forbidden);
        assert_eq!(asked, ["mallory"]);

        // The dummy secret itself is not a password for unknown users.
        c.password = String::from_utf8(DUMMY_SECRET.to_vec()).unwrap();
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Forbidden
        );
        // Another user's password is no good either.
        c.user = "bob".into();
        c.nonce = nonce_for(&mut a, "bob", t0());
        c.password = "wonderland".into();
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Forbidden
        );
        assert_eq!(a.tracked(), 0, "failures are not tracked");
    }

    #[test]
    fn owned_secrets_work_too() {
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        let v = a.verify(
            &c.build(),
            &request("REGISTER"),
            |u: &str| (u == "alice").then(|| String::from("wonderland")),
            t0(),
        );
        assert_eq!(v, ok());
    }

    #[test]
    fn wrong_realm_is_challenged() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        c.realm = "other.test".into();
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Challenge
        );
        // A nonce issued for another realm (same key) is not valid for ours.
        let other = challenges(&mut a, "other.test", false, t0()).remove(0);
        let (_, params) = parse_challenge(&other);
        let c = Cred::new(param(&params, "nonce").unwrap());
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Challenge
        );
    }

    #[test]
    fn non_digest_scheme_is_challenged() {
        let mut a = auth();
        let mut p = Cred::new(&fresh_nonce(&mut a, t0())).build();
        p.scheme = "Basic".into();
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Challenge);
    }

    #[test]
    fn forged_or_tampered_nonces_are_challenged() {
        let mut a = auth();
        let nonce = fresh_nonce(&mut a, t0());
        let mut forged = Vec::new();
        // Every single hex digit changed (time, counter and MAC parts).
        for i in 0..nonce.len() {
            let mut n = nonce.clone().into_bytes();
            n[i] = if n[i] == b'0' { b'1' } else { b'0' };
            forged.push(String::from_utf8(n).unwrap());
        }
        forged.push(nonce.to_ascii_uppercase());
        forged.push(nonce[..NONCE_HEX_LEN - 2].to_string());
        forged.push(format!("{nonce}00"));
        forged.push(String::new());
        forged.push("z".repeat(NONCE_HEX_LEN));
        forged.push("é".repeat(NONCE_HEX_LEN / 2));
        forged.push(RFC7616_NONCE.into());
        let user_tag_at = 2 * NONCE_TAGGED;
        for (i, n) in forged.iter().enumerate() {
            if *n == nonce {
                continue;
            }
            // The response is computed over the forged nonce: only the
            // nonce itself is wrong. A changed user tag leaves an
            // authentic nonce for some other user.
            let c = Cred::new(n);
            let want = if i >= user_tag_at && i < NONCE_HEX_LEN {
                Verdict::OtherUser
            } else {
                Verdict::Challenge
            };
            assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), want, "{n}");
        }
        assert_eq!(a.tracked(), 0);
    }

    // ---- nonces bound to a user ------------------------------------------

    #[test]
    fn a_nonce_serves_only_its_user() {
        let mut a = auth();
        let bobs = nonce_for(&mut a, "bob", t0());
        // alice answers bob's nonce with her right password: not accepted,
        // and her password is not even looked up.
        let c = Cred::new(&bobs);
        let v = a.verify(
            &c.build(),
            &request("REGISTER"),
            |u: &str| -> Option<&str> { panic!("secret of {u} asked") },
            t0(),
        );
        assert_eq!(v, Verdict::OtherUser);
        // Also when expired, replayed-looking or with a wrong password.
        let mut wrong = Cred::new(&bobs);
        wrong.password = "nope".into();
        assert_eq!(
            verify(&mut a, &wrong.build(), "REGISTER", t0() + LIFETIME),
            Verdict::OtherUser
        );
        // bob himself uses it.
        let mut b = Cred::new(&bobs);
        b.user = "bob".into();
        b.password = "builder".into();
        assert_eq!(
            verify(&mut a, &b.build(), "REGISTER", t0()),
            Verdict::Ok("bob".into())
        );
        assert_eq!(a.tracked(), 1);
    }

    #[test]
    fn user_binding_is_exact() {
        let mut a = auth();
        for (issued, used) in [
            ("alice", "Alice"),
            ("alice", "alice "),
            ("alice", "alic"),
            ("", "alice"),
            ("alice", ""),
            ("al", "ice"),
        ] {
            let mut c = Cred::new(&nonce_for(&mut a, issued, t0()));
            c.user = used.into();
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                Verdict::OtherUser,
                "{issued:?} / {used:?}"
            );
        }
        // An unknown user with its own nonce: the usual 403.
        let mut c = Cred::new(&nonce_for(&mut a, "zed", t0()));
        c.user = "zed".into();
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Forbidden
        );
    }

    // ---- exactly what was offered ------------------------------------------

    /// Every offer (each non-empty set of algorithms, with and without qop)
    /// against every answer (each algorithm or none, with and without
    /// qop): accepted exactly when the answer's algorithm (MD5 when
    /// absent) was offered and qop is used exactly when it was offered;
    /// otherwise a fresh challenge, without the password being looked at.
    #[test]
    fn exactly_the_offered_algorithms_and_qop_are_accepted() {
        let answers: Vec<Option<Algorithm>> = std::iter::once(None)
            .chain(Algorithm::ALL.into_iter().map(Some))
            .collect();
        for mask in 1u8..16 {
            let offered: Vec<Algorithm> = Algorithm::ALL
                .into_iter()
                .filter(|a| mask & a.bit() != 0)
                .collect();
            for qop_offered in [false, true] {
                for &alg in &answers {
                    for qop_used in [false, true] {
                        let mut a = auth();
                        let mut c = Cred::new(&nonce_offering(
                            &mut a,
                            "alice",
                            &offered,
                            qop_offered,
                            t0(),
                        ));
                        c.alg = alg;
                        c.qop = qop_used.then(|| "auth".into());
                        let mut p = c.build();
                        if !qop_used {
                            // -sess needs a cnonce even without qop.
                            p.params.push(("cnonce".into(), c.cnonce.clone()));
                        }
                        let accept = offered.contains(&alg.unwrap_or(Algorithm::Md5))
                            && qop_used == qop_offered;
                        let mut asked = false;
                        let v = a.verify(
                            &p,
                            &request("REGISTER"),
                            |u: &str| {
                                asked = true;
                                secrets(u)
                            },
                            t0(),
                        );
                        let what = format!(
                            "offer {offered:?} qop {qop_offered}, answer {alg:?} qop {qop_used}"
                        );
                        if accept {
                            assert_eq!(v, ok(), "{what}");
                        } else {
                            assert_eq!(v, Verdict::Challenge, "{what}");
                            assert!(!asked, "{what}: password looked up");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn offers_round_trip_through_the_nonce() {
        for mask in 1u8..16 {
            for qop in [false, true] {
                let algs: Vec<Algorithm> = Algorithm::ALL
                    .into_iter()
                    .filter(|a| mask & a.bit() != 0)
                    .collect();
                let offer = Offer::new(&algs, qop);
                assert_eq!(offer.qop(), qop);
                for alg in Algorithm::ALL {
                    assert_eq!(offer.allows(alg), algs.contains(&alg));
                }
                let mut a = auth();
                let n = nonce_offering(&mut a, "u", &algs, qop, t0());
                let d = a.decode_nonce(REALM, &n).expect("ours");
                assert_eq!(d.offer, offer);
            }
        }
    }

    #[test]
    fn a_challenge_without_qop_says_so() {
        let mut a = auth();
        let c = a.challenge(
            &Challenge {
                realm: REALM,
                user: "alice",
                algorithms: &[Algorithm::Md5],
                qop: false,
                stale: true,
            },
            t0(),
        );
        assert_eq!(c.len(), 1);
        assert!(!c[0].contains("qop"), "{}", c[0]);
        assert!(c[0].ends_with("algorithm=MD5, stale=true"), "{}", c[0]);
    }

    // ---- the digest uri --------------------------------------------------------

    #[test]
    fn the_digest_uri_must_name_the_request_uri() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        c.method = "INVITE".into();
        c.uri = "sip:1002@pbx".into();
        let p = c.build();
        let check = |ruri| Request {
            method: "INVITE",
            uri: Some(ruri),
            realm: REALM,
        };
        let never = |u: &str| -> Option<&str> { panic!("secret of {u} asked") };
        for other in [
            "sip:1003@pbx",
            "sip:pbx",
            "sip:1002@pbx:5060",
            "sips:1002@pbx",
        ] {
            assert_eq!(
                a.verify(&p, &check(other), never, t0()),
                Verdict::UriMismatch,
                "{other}"
            );
        }
        // Even with a nonce that is not ours: the request names another
        // resource, whatever else is wrong.
        let mut forged = p.clone();
        set(&mut forged, "nonce", "00");
        assert_eq!(
            a.verify(&forged, &check("sip:1003@pbx"), never, t0()),
            Verdict::UriMismatch
        );
        // The same SIP URI written another way is fine; the response is
        // still computed over the uri as received.
        assert_eq!(
            a.verify(&p, &check("sip:1002@PBX;transport=udp;lr"), never, t0()),
            Verdict::UriMismatch,
            "transport in one URI only: not equal"
        );
        assert_eq!(
            a.verify(&p, &check("sip:%31002@PBX;lr"), secrets, t0()),
            ok()
        );
        // Not compared when the caller says so.
        let mut c2 = Cred::new(&fresh_nonce(&mut a, t0()));
        c2.uri = "sip:127.0.0.1:5060".into();
        let any = Request {
            method: "REGISTER",
            uri: None,
            realm: REALM,
        };
        assert_eq!(a.verify(&c2.build(), &any, secrets, t0()), ok());
    }

    #[test]
    fn nonce_from_another_key_is_challenged() {
        let mut other = DigestAuth::new([8; 32], LIFETIME, 16);
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut other, t0()));
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", t0()),
            Verdict::Challenge
        );
        assert_eq!(verify(&mut other, &c.build(), "REGISTER", t0()), ok());

        // Random keys differ per instance (a restarted process).
        let mut r1 = DigestAuth::with_random_key(LIFETIME, 16);
        let mut r2 = DigestAuth::with_random_key(LIFETIME, 16);
        let c = Cred::new(&fresh_nonce(&mut r1, t0()));
        assert_eq!(
            verify(&mut r2, &c.build(), "REGISTER", t0()),
            Verdict::Challenge
        );
        assert_eq!(verify(&mut r1, &c.build(), "REGISTER", t0()), ok());
    }

    #[test]
    fn expiry() {
        let mut a = auth();
        let nonce = fresh_nonce(&mut a, t0());
        let c = Cred::new(&nonce);
        let late = t0() + LIFETIME;
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", late), Verdict::Stale);
        let mut wrong = c.clone();
        wrong.password = "nope".into();
        assert_eq!(
            verify(&mut a, &wrong.build(), "REGISTER", late),
            Verdict::Forbidden
        );
        let mut stranger = Cred::new(&nonce_for(&mut a, "mallory", t0()));
        stranger.user = "mallory".into();
        assert_eq!(
            verify(&mut a, &stranger.build(), "REGISTER", late),
            Verdict::Forbidden
        );
        // One microsecond before the end it is still good.
        let just = t0() + LIFETIME - Duration::from_micros(1);
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", just), ok());
    }

    #[test]
    fn lifetime_is_configurable() {
        let mut a = DigestAuth::new([7; 32], Duration::from_secs(10), 16);
        assert_eq!(a.nonce_lifetime(), Duration::from_secs(10));
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        let at = t0() + Duration::from_secs(10);
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", at), Verdict::Stale);
    }

    #[test]
    fn clock_stepping_back() {
        let mut a = auth();
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        // A small step back: the nonce is still fine.
        let before = t0() - Duration::from_secs(10);
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", before), ok());
        // Issued more than a lifetime "in the future": treated as expired.
        let c = Cred::new(&fresh_nonce(&mut a, t0()));
        let long_before = t0() - LIFETIME - Duration::from_secs(1);
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", long_before),
            Verdict::Stale
        );
        // Before the epoch: no panic.
        let ancient = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            verify(&mut a, &c.build(), "REGISTER", ancient),
            Verdict::Stale
        );
    }

    // ---- replay --------------------------------------------------------

    #[test]
    fn identical_replay_is_refused() {
        let mut a = auth();
        let p = Cred::new(&fresh_nonce(&mut a, t0())).build();
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
        for _ in 0..3 {
            assert_eq!(verify(&mut a, &p, "REGISTER", t0()), replayed());
        }
        assert_eq!(a.tracked(), 1);
    }

    #[test]
    fn increasing_nc_on_one_nonce() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        for nc in 1..=200 {
            c.nc = nc;
            c.cnonce = format!("c{nc}");
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                ok(),
                "nc {nc}"
            );
        }
        assert_eq!(a.tracked(), 1);
    }

    #[test]
    fn out_of_order_within_window() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        let order = [10, 7, 9, 8, 1, 11, 3];
        for nc in order {
            c.nc = nc;
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                ok(),
                "nc {nc}"
            );
        }
        for nc in order {
            c.nc = nc;
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                replayed(),
                "nc {nc} again"
            );
        }
        // 2, 4, 5, 6 were never used: still fine, once.
        for nc in [6, 2, 5, 4] {
            c.nc = nc;
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                ok(),
                "nc {nc}"
            );
        }
    }

    #[test]
    fn below_window_is_refused() {
        let mut a = auth();
        let mut c = Cred::new(&fresh_nonce(&mut a, t0()));
        c.nc = 1000;
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), ok());
        c.nc = 1000 - REPLAY_WINDOW; // never used, but too old
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), replayed());
        c.nc = 1000 - REPLAY_WINDOW + 1;
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), ok());
    }

    /// A nonce for alice from a challenge without qop (RFC 2069 style).
    fn no_qop_nonce(a: &mut DigestAuth) -> String {
        nonce_offering(a, "alice", &Algorithm::ALL, false, t0())
    }

    #[test]
    fn no_qop_nonce_is_single_use() {
        let mut a = auth();
        let nonce = no_qop_nonce(&mut a);
        let mut c = Cred::new(&nonce);
        c.qop = None;
        let p = c.build();
        assert!(!p.params.iter().any(|(n, _)| n == "nc" || n == "cnonce"));
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), replayed());
        // Nor can it be used with qop (which was not offered).
        let q = Cred::new(&nonce);
        assert_eq!(
            verify(&mut a, &q.build(), "REGISTER", t0()),
            Verdict::Challenge
        );
    }

    #[test]
    fn no_qop_sess_needs_cnonce() {
        let mut a = auth();
        let mut c = Cred::new(&no_qop_nonce(&mut a));
        c.qop = None;
        c.alg = Some(Algorithm::Md5Sess);
        let p = c.build();
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Malformed);
        let mut p = p;
        p.params.push(("cnonce".into(), c.cnonce.clone()));
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
    }

    #[test]
    fn nc_is_hashed_as_received() {
        // A client that sends nc=1 (not 8 digits) hashes "1".
        let mut a = auth();
        let nonce = fresh_nonce(&mut a, t0());
        let c = Cred::new(&nonce);
        let resp = compute_response(&ResponseInput {
            alg: Algorithm::Sha256,
            username: b"alice",
            realm: REALM.as_bytes(),
            password: b"wonderland",
            method: b"REGISTER",
            uri: URI.as_bytes(),
            nonce: nonce.as_bytes(),
            cnonce: Some(c.cnonce.as_bytes()),
            qop: Some((b"auth", b"1")),
        });
        let mut p = c.build();
        set(&mut p, "nc", "1");
        set(&mut p, "response", resp.as_str());
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
        // nc=00000001 is the same nc value: a replay.
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", t0()), replayed());
    }

    #[test]
    fn eviction_at_capacity_never_reopens_replays() {
        let mut a = auth_with_capacity(4);
        let unused_old = fresh_nonce(&mut a, t0());
        let mut used = Vec::new();
        for i in 0..6u64 {
            let now = t0() + Duration::from_secs(i);
            let p = Cred::new(&fresh_nonce(&mut a, now)).build();
            assert_eq!(verify(&mut a, &p, "REGISTER", now), ok());
            used.push(p);
            assert!(a.tracked() <= 4);
        }
        assert_eq!(a.tracked(), 4);
        let now = t0() + Duration::from_secs(10);
        // The two oldest were evicted: their replays are stale, never Ok.
        for p in &used[..2] {
            assert_eq!(verify(&mut a, p, "REGISTER", now), Verdict::Stale);
        }
        // Later nc on an evicted nonce: also stale (the record is gone).
        let mut c = Cred::new(param(&used[0].params, "nonce").unwrap());
        c.nc = 2;
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", now), Verdict::Stale);
        // The still-tracked ones are replays too.
        for p in &used[2..] {
            assert_eq!(verify(&mut a, p, "REGISTER", now), replayed());
        }
        // An unused nonce issued before the watermark: stale (fresh
        // challenge), not accepted.
        let c = Cred::new(&unused_old);
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", now), Verdict::Stale);
        // A new nonce works.
        let c = Cred::new(&fresh_nonce(&mut a, now));
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", now), ok());
        assert_eq!(a.tracked(), 4);
    }

    #[test]
    fn entries_expire_with_their_nonce() {
        let mut a = auth();
        let mut captured = Vec::new();
        for i in 0..10u64 {
            let now = t0() + Duration::from_secs(i);
            let p = Cred::new(&fresh_nonce(&mut a, now)).build();
            assert_eq!(verify(&mut a, &p, "REGISTER", now), ok());
            captured.push(p);
        }
        assert_eq!(a.tracked(), 10);
        a.purge(t0() + LIFETIME + Duration::from_secs(4));
        assert_eq!(a.tracked(), 5);
        // verify purges too.
        let now = t0() + LIFETIME + Duration::from_secs(20);
        let c = Cred::new(&fresh_nonce(&mut a, now));
        assert_eq!(verify(&mut a, &c.build(), "REGISTER", now), ok());
        assert_eq!(a.tracked(), 1);
        // Even if the clock then steps back so that the captured nonces look
        // valid again, their replays are not accepted.
        for p in &captured {
            assert_eq!(verify(&mut a, p, "REGISTER", t0()), Verdict::Stale);
        }
    }

    #[test]
    fn zero_capacity_still_tracks_one() {
        let mut a = auth_with_capacity(0);
        let p = Cred::new(&fresh_nonce(&mut a, t0())).build();
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), replayed());
        assert_eq!(a.tracked(), 1);
    }

    // ---- unsupported and malformed ------------------------------------

    #[test]
    fn unsupported_qop_and_algorithm_are_challenged() {
        let mut a = auth();
        let nonce = fresh_nonce(&mut a, t0());
        for qop in ["auth-int", "auth,auth-int", "", "other"] {
            let mut c = Cred::new(&nonce);
            c.qop = Some(qop.into());
            assert_eq!(
                verify(&mut a, &c.build(), "REGISTER", t0()),
                Verdict::Challenge,
                "qop {qop:?}"
            );
        }
        let mut p = Cred::new(&nonce).build();
        set(&mut p, "algorithm", "SHA-512-256");
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Challenge);
        let mut p = Cred::new(&nonce).build();
        set(&mut p, "userhash", "true");
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Challenge);
        // userhash=false is just the default.
        let mut p = Cred::new(&nonce).build();
        set(&mut p, "userhash", "false");
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
    }

    #[test]
    fn malformed_credentials() {
        let mut a = auth();
        let good = Cred::new(&fresh_nonce(&mut a, t0())).build();
        for name in [
            "username", "realm", "nonce", "uri", "response", "nc", "cnonce",
        ] {
            assert_eq!(
                verify(&mut a, &without(&good, name), "REGISTER", t0()),
                Verdict::Malformed,
                "without {name}"
            );
        }
        for nc in ["", "zz", "0x1", "-1", "+1", "000000001", "1 ", "１"] {
            let mut p = good.clone();
            set(&mut p, "nc", nc);
            assert_eq!(
                verify(&mut a, &p, "REGISTER", t0()),
                Verdict::Malformed,
                "nc {nc:?}"
            );
        }
        for name in ["username", "uri", "cnonce", "response", "nonce"] {
            let mut p = good.clone();
            set(&mut p, name, &"a".repeat(100_000));
            assert_eq!(
                verify(&mut a, &p, "REGISTER", t0()),
                Verdict::Malformed,
                "huge {name}"
            );
        }
        // A repeated parameter is ambiguous.
        let mut p = good.clone();
        p.params.push(("Nonce".into(), "00".into()));
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), Verdict::Malformed);
        // Unknown parameters, even huge, are ignored.
        let mut p = good.clone();
        p.params.push(("opaque".into(), "x".repeat(100_000)));
        assert_eq!(verify(&mut a, &p, "REGISTER", t0()), ok());
        assert_eq!(a.tracked(), 1);
    }

    #[test]
    fn bad_response_shapes_are_forbidden() {
        let mut a = auth();
        let good = Cred::new(&fresh_nonce(&mut a, t0())).build();
        for r in ["", "00", "xyz", &"0".repeat(64), &"f".repeat(65), "é"] {
            let mut p = good.clone();
            set(&mut p, "response", r);
            assert_eq!(
                verify(&mut a, &p, "REGISTER", t0()),
                Verdict::Forbidden,
                "{r}"
            );
        }
        assert_eq!(verify(&mut a, &good, "REGISTER", t0()), ok());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let a = DigestAuth::new([0xAB; 32], LIFETIME, 4);
        let s = format!("{a:?}");
        assert!(s.contains("capacity: 4"), "{s}");
        assert!(!s.to_lowercase().contains("abab"), "{s}");
    }

    // ---- properties ------------------------------------------------------

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,80}",
            "[0-9a-fA-F]{0,70}",
            Just("auth".to_string()),
            Just("auth-int".to_string()),
            Just("MD5-sess".to_string()),
            Just("SHA-256".to_string()),
            Just(REALM.to_string()),
            Just("alice".to_string()),
            Just("00000001".to_string()),
            Just("ffffffff".to_string()),
            Just("a".repeat(3000)),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("username"),
            Just("realm"),
            Just("nonce"),
            Just("uri"),
            Just("response"),
            Just("algorithm"),
            Just("qop"),
            Just("nc"),
            Just("cnonce"),
            Just("userhash"),
            Just("opaque"),
            Just("NC"),
        ]
        .prop_map(String::from)
        .boxed()
        .prop_union("[a-zA-Z*]{0,10}".boxed())
    }

    proptest! {
        #[test]
        fn random_credentials_never_panic(
            scheme in prop_oneof![Just("Digest".to_string()), ".{0,10}"],
            params in proptest::collection::vec((name(), value()), 0..14),
            use_real_nonce in any::<bool>(),
            method in prop_oneof![Just("REGISTER".to_string()), ".{0,10}"],
            offset_s in 0u64..1000,
        ) {
            let mut a = auth_with_capacity(8);
            let nonce = fresh_nonce(&mut a, t0());
            let mut params = params;
            if use_real_nonce {
                params.push(("nonce".into(), nonce));
            }
            let creds = AuthParams { scheme, params };
            let now = t0() + Duration::from_secs(offset_s);
            let v = a.verify(&creds, &request(&method), secrets, now);
            // Random junk is never accepted (it would need a valid response).
            prop_assert!(!matches!(v, Verdict::Ok(_)));
            prop_assert!(a.tracked() <= 1);
        }

        #[test]
        fn valid_credentials_verify_once(
            alg in prop_oneof![
                Just(Algorithm::Md5),
                Just(Algorithm::Md5Sess),
                Just(Algorithm::Sha256),
                Just(Algorithm::Sha256Sess),
            ],
            user in "[a-z]{1,12}",
            password in ".{0,30}",
            uri in "sip:[a-z0-9.@:;=]{1,40}",
            cnonce in "[A-Za-z0-9/+]{1,40}",
            nc in 1u32..,
            qop in any::<bool>(),
        ) {
            let mut a = auth();
            let mut c = Cred::new(&nonce_offering(&mut a, &user, &[alg], qop, t0()));
            c.alg = Some(alg);
            c.user = user.clone();
            c.password = password.clone();
            c.uri = uri;
            c.cnonce = cnonce;
            c.nc = nc;
            c.qop = qop.then(|| "auth".to_string());
            let mut p = c.build();
            if !qop {
                p.params.push(("cnonce".into(), c.cnonce.clone()));
            }
            let secret = |u: &str| (u == user).then_some(password.as_str());
            let req = Request { method: "REGISTER", uri: Some(&c.uri), realm: REALM };
            prop_assert_eq!(
                a.verify(&p, &req, secret, t0()),
                Verdict::Ok(user.clone())
            );
            prop_assert_eq!(
                a.verify(&p, &req, secret, t0()),
                Verdict::Replayed(user.clone())
            );
        }
    }
}
