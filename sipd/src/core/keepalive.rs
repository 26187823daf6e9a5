//! NAT keep-alive and reachability (like Asterisk `qualify_frequency` and
//! Kamailio nathelper pings): an OPTIONS to each UDP binding every
//! `qualify` seconds, spread over the interval, at most
//! [`PINGS_PER_TICK`] per tick whatever the number of bindings. The
//! OPTIONS are sent without a transaction (one datagram each: a ping that
//! gets no answer is a miss, not a retransmission); any response from
//! the binding's address with the ping's unguessable branch marks the
//! device reachable with its round trip. Three misses in a row make it
//! unreachable: it is not rung until it answers again (`registrar.rs`).

use super::proxy::push_hostport;
use super::{Core, Effects};
use crate::sip::{HeaderName, Message, Method, RequestBuilder};
use crate::time::Now;
use crate::transport::Out;

/// Branch prefix of keep-alive OPTIONS: our prefix and `k` (not a hex
/// digit, so no proxied branch starts like this).
const PING_PREFIX: &str = "z9hG4bKsdk";

/// Most keep-alive OPTIONS sent per tick (20 ms): 12,800 a second, so
/// 100,000 bindings at qualify=25 (4,000 a second) keep up.
pub const PINGS_PER_TICK: usize = 256;

impl Core {
    /// Send the keep-alive OPTIONS that are due.
    pub(super) fn send_keepalives(&mut self, now: Now, fx: &mut Effects) {
        let config = self.config.clone();
        let qualify = |name: &str| {
            config
                .client(name)
                .map_or(0, |c| c.qualify(&config.general))
        };
        let rng = &mut self.rng;
        let mut token = || rng.next_u64() as u32;
        let pings = self
            .registrar
            .due_pings(now.at, PINGS_PER_TICK, &qualify, &mut token);
        for p in pings {
            let mut local = String::with_capacity(48);
            push_hostport(&mut local, self.local.addr_for(&p.dest));
            let branch = format!("{PING_PREFIX}{:x}.{:x}", p.id, p.token);
            let tag = self.rng.token();
            let call_id = format!("{}-ka", self.rng.token());
            let data = RequestBuilder::new(&Method::Options, &p.contact)
                .header(
                    HeaderName::Via,
                    &format!("SIP/2.0/UDP {local};branch={branch};rport"),
                )
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, &format!("<sip:sipd@{local}>;tag={tag}"))
                .header(HeaderName::To, &format!("<{}>", p.contact))
                .header(HeaderName::CallId, &call_id)
                .header(HeaderName::CSeq, "1 OPTIONS")
                .build();
            fx.out.push(Out::request(p.dest, data));
            self.counters.keepalives_sent += 1;
        }
    }

    /// Is this response the answer to one of our keep-alives? Then it is
    /// counted (and consumed) here.
    pub(super) fn on_keepalive_response(
        &mut self,
        msg: &Message,
        from: std::net::SocketAddr,
        now: Now,
    ) -> bool {
        let Some(rest) = msg
            .top_via()
            .branch()
            .and_then(|b| b.strip_prefix(PING_PREFIX))
        else {
            return false;
        };
        if msg.cseq().method != Method::Options {
            return false;
        }
        let parsed = rest.split_once('.').and_then(|(id, token)| {
            Some((
                u64::from_str_radix(id, 16).ok()?,
                u32::from_str_radix(token, 16).ok()?,
            ))
        });
        if let Some((id, token)) = parsed {
            if self.registrar.on_pong(id, token, from, now.at) {
                self.counters.keepalives_answered += 1;
            }
        }
        true
    }
}
