//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges with
//! stateless nonces, verification of credentials, and replay protection.
//!
//! Sans-IO: [`DigestAuth`] is plain state owned by the caller, which passes
//! the current time into every call and picks the header names itself
//! (`401` + `WWW-Authenticate` for REGISTER, `407` + `Proxy-Authenticate`
//! otherwise).
//!
//! # Nonces
//!
//! A nonce is 56 lowercase hex digits encoding 28 bytes:
//! the issue time in microseconds since the Unix epoch (8 bytes, big endian),
//! a per-process counter (4 bytes), and the first 16 bytes of
//! HMAC-SHA256(key, domain ‖ realm ‖ time ‖ counter). The key is per process,
//! so sipd recognises its own nonces without storing them, and nonces from a
//! previous process (or another realm) are simply not ours. A nonce is valid
//! for the lifetime given to [`DigestAuth::new`].
//!
//! # Replay protection
//!
//! Every (nonce, nc) pair is accepted at most once. The nonces that were used
//! successfully are tracked by their decoded (time, counter) numbers: per
//! nonce the highest nc seen plus a [`REPLAY_WINDOW`]-bit bitmap below it, so
//! slightly out-of-order nc values still work. Credentials without `qop`
//! (RFC 2069) use up their nonce. The table holds at most `capacity` nonces;
//! entries leave it when their nonce expires, or, when it is full, oldest
//! first. Whenever an entry leaves, the watermark `evicted_until` moves up
//! to its issue time, and a nonce issued at or before the watermark that is
//! not in the table is answered [`Verdict::Stale`], never accepted: a replay
//! cannot succeed after its entry is gone, even if the clock steps back.
//! All operations are O(1) amortised.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::sip::auth::AuthParams;

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
/// Raw nonce: time (8) + counter (4) + MAC.
const NONCE_BYTES: usize = 8 + 4 + MAC_LEN;
/// Length of a nonce as sent.
const NONCE_HEX_LEN: usize = 2 * NONCE_BYTES;
/// Domain separation for the nonce MAC.
const NONCE_DOMAIN: &[u8] = b"sipd digest nonce v1\0";
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
    /// Parses an `algorithm` parameter value, ignoring ASCII case. `None`
    /// for algorithms sipd does not support (e.g. `SHA-512-256`).
    pub fn parse(s: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ]
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
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of [`DigestAuth::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials valid: the authenticated user name (exactly as in
    /// `username`).
    Ok(String),
    /// The response was right but the nonce can no longer be used (expired,
    /// or this nc was already used, or its replay record is gone): send a
    /// fresh challenge with `stale=true`.
    Stale,
    /// No usable credentials: send a fresh challenge (not Digest, wrong
    /// realm, not our nonce, unsupported qop or algorithm).
    Challenge,
    /// `403 Forbidden`: unknown user or wrong password (the same answer and
    /// the same work for both).
    Forbidden,
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
    ///
    /// # Panics
    /// If the operating system has no random source.
    pub fn with_random_key(nonce_lifetime: Duration, capacity: usize) -> Self {
        let mut seed = [0u8; 36];
        getrandom::getrandom(&mut seed).expect("operating system random source");
        let mut key = [0u8; 32];
        key.copy_from_slice(&seed[..32]);
        let mut auth = Self::new(key, nonce_lifetime, capacity);
        auth.counter = u32::from_be_bytes([seed[32], seed[33], seed[34], seed[35]]);
        auth
    }

    /// Challenge header values for `realm` with one fresh nonce: SHA-256
    /// first, then MD5, each `Digest realm="…", nonce="…", qop="auth",
    /// algorithm=…` plus `, stale=true` when `stale`.
    pub fn challenges(&mut self, realm: &str, stale: bool, now: SystemTime) -> [String; 2] {
        let nonce = self.issue_nonce(realm, now);
        let realm = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        [Algorithm::Sha256, Algorithm::Md5].map(|alg| {
            format!("Digest realm={realm}, nonce=\"{nonce}\", qop=\"auth\", algorithm={alg}{stale}")
        })
    }

    /// Verifies Digest credentials (an `Authorization` or
    /// `Proxy-Authorization` value) of a request with `method`, for our
    /// `realm`. The response is checked over the `uri` parameter exactly as
    /// received. `secret_of(username)` gives the user's password (`None`:
    /// unknown user, which costs the same hashing as a known one).
    /// On success the (nonce, nc) pair is recorded and will not be accepted
    /// again.
    pub fn verify<F, S>(
        &mut self,
        creds: &AuthParams,
        method: &str,
        realm: &str,
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
        if c_realm != realm {
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
        let Some(id) = self.decode_nonce(realm, nonce) else {
            return Verdict::Challenge;
        };

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
            method: method.as_bytes(),
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
                _ => Verdict::Stale,
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

    fn issue_nonce(&mut self, realm: &str, now: SystemTime) -> String {
        let id = NonceId {
            issued_us: micros(now),
            counter: self.counter,
        };
        self.counter = self.counter.wrapping_add(1);
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&id.issued_us.to_be_bytes());
        raw[8..12].copy_from_slice(&id.counter.to_be_bytes());
        raw[12..].copy_from_slice(&self.nonce_mac(realm, id));
        let mut hex = [0u8; NONCE_HEX_LEN];
        hex_encode(&raw, &mut hex);
        String::from_utf8_lossy(&hex).into_owned()
    }

    fn nonce_mac(&self, realm: &str, id: NonceId) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(NONCE_DOMAIN);
        mac.update(&(realm.len() as u64).to_be_bytes());
        mac.update(realm.as_bytes());
        mac.update(&id.issued_us.to_be_bytes());
        mac.update(&id.counter.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The nonce's numbers if it is one of ours (for this realm).
    fn decode_nonce(&self, realm: &str, nonce: &str) -> Option<NonceId> {
        let mut raw = [0u8; NONCE_BYTES];
        if nonce.len() != NONCE_HEX_LEN || !hex_decode_lower(nonce.as_bytes(), &mut raw) {
            return None;
        }
        let id = NonceId {
            issued_us: u64::from_be_bytes(raw[..8].try_into().ok()?),
            counter: u32::from_be_bytes(raw[8..12].try_into().ok()?),
        };
        constant_time_eq(&self.nonce_mac(realm, id), &raw[12..]).then_some(id)
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
