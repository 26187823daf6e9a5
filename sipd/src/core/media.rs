//! The core's side of the media relay (`media=`): whether a call is
//! relayed (decided when its INVITE is first forwarded), the SDP of every
//! offer and answer rewritten to the relay's ports (INVITE, 18x, 2xx, ACK,
//! re-INVITE, UPDATE, PRACK, in both directions), the relay told each
//! leg's endpoint, and the session closed with the call. A call answered
//! whose relay saw no packet for `media_timeout` seconds is hung up (BYE
//! to both ends) with its own CDR disposition. Sans-IO: the relay
//! (`media/relay.rs`) carries out [`MediaOp`]s from the effects.

use std::net::{IpAddr, SocketAddr};

use super::{Core, Effects};
use crate::calls::{Call, Disposition, Relayed, State};
use crate::config::Media;
use crate::media::{sdp, MediaOp};
use crate::sip::{HeaderName, Message, Uri};
use crate::time::Now;
use crate::transport::{Peer, Transport};

/// Does this message carry an SDP body?
fn sdp_body(msg: &Message) -> Option<&[u8]> {
    let body = msg.body();
    if body.is_empty() {
        return None;
    }
    let ct = msg
        .header(&HeaderName::ContentType)
        .unwrap_or("application/sdp");
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/sdp").then_some(body)
}

/// The IP a URI's host names, if it is one.
fn uri_ip(uri: &str) -> Option<IpAddr> {
    Uri::parse(uri).ok()?.host.ip()
}

/// Same address, an IPv4-mapped IPv6 one counting as its IPv4 address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Behind NAT, as its own request shows: it came from another address
/// than its Via or Contact names, or its SDP names another one.
fn request_behind_nat(msg: &Message, from: IpAddr) -> bool {
    let via = msg.top_via().host.ip();
    let contact = msg.contact_uri().and_then(|u| u.host.ip());
    let sdp_addrs = sdp_body(msg)
        .and_then(sdp::parse)
        .map(|s| s.addrs().collect::<Vec<_>>())
        .unwrap_or_default();
    via.into_iter()
        .chain(contact)
        .chain(sdp_addrs)
        .any(|ip| !ip.is_unspecified() && !same_ip(ip, from))
}

impl Core {
    /// The relay's address on a leg whose signalling uses `peer`.
    fn relay_ip(&self, peer: &Peer) -> IpAddr {
        match self.config.general.rtp_address {
            Some(ip) if ip.is_ipv4() == peer.addr.is_ipv4() => ip,
            _ => self.local.addr_for(peer).ip(),
        }
    }

    /// Decide, as the INVITE of call `call_id` from `caller_peer` first
    /// goes to `dest` (target `target`, Request-URI `ruri`), whether its
    /// media is relayed; if so the call gets its relay session (streams
    /// open as SDP names them).
    pub(in crate::core) fn decide_media(
        &mut self,
        msg: &Message,
        caller_peer: &Peer,
        dest: &Peer,
        target: &str,
        ruri: Option<&str>,
    ) {
        let Some(call) = self.calls.get(msg.call_id()) else {
            return;
        };
        if call.media.is_some() || call.node_leg {
            return;
        }
        let g = &self.config.general;
        let mode_of = |name: &str| self.config.client(name).map(|c| c.media(g));
        let callee = self
            .config
            .client(target)
            .map(|c| c.name.clone())
            .or_else(|| self.config.by_source(dest.addr).map(|c| c.name.clone()));
        let modes = [
            mode_of(&call.caller).unwrap_or(g.media),
            callee.as_deref().and_then(mode_of).unwrap_or(g.media),
        ];
        let relay = if modes.contains(&Media::Relay) {
            true
        } else if modes.contains(&Media::Direct) {
            false
        } else {
            // auto. WebRTC ends (ICE, DTLS-SRTP over WS/WSS) traverse NAT
            // themselves and a relay that does not speak ICE would break
            // them: not relayed.
            let webrtc = [caller_peer.transport, dest.transport]
                .iter()
                .any(|t| matches!(t, Transport::Ws | Transport::Wss))
                || sdp_body(msg).and_then(sdp::parse).is_some_and(|s| s.ice);
            let caller_nat = request_behind_nat(msg, caller_peer.addr.ip());
            let callee_nat = ruri
                .and_then(uri_ip)
                .is_some_and(|ip| !same_ip(ip, dest.addr.ip()));
            let families = caller_peer.addr.is_ipv4() != dest.addr.is_ipv4();
            !webrtc && (caller_nat || callee_nat || families)
        };
        if !relay {
            return;
        }
        let id = self.next_media;
        self.next_media += 1;
        let local = [self.relay_ip(caller_peer), self.relay_ip(dest)];
        if let Some(call) = self.calls.get_mut(msg.call_id()) {
            call.media = Some(Relayed {
                id,
                local,
                streams: Vec::new(),
                peers: Vec::new(),
                held: false,
                callee_ip: None,
            });
            self.media_calls.insert(id, call.call_id.clone());
            self.counters.media_sessions += 1;
            tracing::debug!("call {} relayed (session {id})", call.call_id);
        }
    }

    /// The body of `msg`, sent in call `call_id` by end `from` (CALLER or
    /// CALLEE) whose signalling comes from `src`, rewritten for the other
    /// end: its streams' addresses and ports are the relay's. The relay
    /// learns the sender's endpoint. `None`: not relayed, not SDP.
    pub(in crate::core) fn media_body(
        &mut self,
        call_id: &str,
        from: usize,
        src: IpAddr,
        msg: &Message,
        fx: &mut Effects,
    ) -> Option<Vec<u8>> {
        let body = sdp_body(msg)?;
        let summary = sdp::parse(body)?;
        let call = self.calls.get_mut(call_id)?;
        let m = call.media.as_mut()?;
        let to = 1 - from.min(1);
        // A callee behind another node: its media is its own address's.
        let src = match m.callee_ip {
            Some(ip) if from == crate::media::CALLEE => ip,
            _ => src,
        };
        let mut ports = Vec::with_capacity(summary.streams.len());
        for (i, s) in summary.streams.iter().enumerate() {
            if !s.relayed() {
                ports.push(None);
                continue;
            }
            if m.streams.len() <= i {
                m.streams.resize(i + 1, None);
                m.peers.resize(i + 1, [None, None]);
            }
            if m.streams[i].is_none() {
                match (self.ports.take(), self.ports.take()) {
                    (Some(a), Some(b)) => {
                        m.streams[i] = Some([a, b]);
                        fx.media.push(MediaOp::Open {
                            id: m.id,
                            stream: i,
                            local: [
                                SocketAddr::new(m.local[0], a),
                                SocketAddr::new(m.local[1], b),
                            ],
                        });
                    }
                    (a, b) => {
                        for p in [a, b].into_iter().flatten() {
                            self.ports.give(p);
                        }
                        self.counters.media_no_ports += 1;
                        tracing::warn!(
                            "call {call_id}: no free relay port in rtp_ports, stream {i} goes direct"
                        );
                    }
                }
            }
            let Some(pair) = m.streams[i] else {
                ports.push(None);
                continue;
            };
            ports.push(Some(pair[to]));
            let inactive = s.inactive || s.addr.is_some_and(|a| a.is_unspecified());
            if !inactive {
                // Media for this end goes to its signalling IP, at the
                // ports its SDP names (comedia corrects the port).
                let rtp = SocketAddr::new(src, s.port);
                let rtcp = SocketAddr::new(src, s.rtcp.unwrap_or(s.port.wrapping_add(1)));
                if m.peers[i][from] != Some((rtp, rtcp)) {
                    m.peers[i][from] = Some((rtp, rtcp));
                    fx.media.push(MediaOp::Peer {
                        id: m.id,
                        stream: i,
                        leg: from,
                        rtp,
                        rtcp,
                        allow: src,
                    });
                }
            }
        }
        m.held = summary
            .streams
            .iter()
            .filter(|s| s.relayed())
            .all(|s| s.inactive);
        sdp::rewrite(body, m.local[to], &ports)
    }

    /// The callee of a relayed call is at `ip` (where its INVITE goes):
    /// its first packets are accepted before its SDP arrives.
    pub(in crate::core) fn expect_callee(&self, call_id: &str, ip: IpAddr, fx: &mut Effects) {
        let m = self.calls.get(call_id).and_then(|c| c.media.as_ref());
        if let Some(m) = m.filter(|m| !m.streams.is_empty()) {
            fx.media.push(MediaOp::Expect {
                id: m.id,
                leg: crate::media::CALLEE,
                allow: ip,
            });
        }
    }

    /// Close a call's relay session and give its ports back.
    pub(in crate::core) fn release_media(&mut self, call: &Call, fx: &mut Effects) {
        let Some(m) = &call.media else {
            return;
        };
        self.media_calls.remove(&m.id);
        for pair in m.streams.iter().flatten() {
            for p in pair {
                self.ports.give(*p);
            }
        }
        fx.media.push(MediaOp::Close { id: m.id });
    }

    /// The relay could not bind `port` (another program holds it): it is
    /// not handed out again.
    pub fn media_bind_failed(&mut self, port: u16) {
        self.ports.retire(port);
        self.counters.media_bind_failures += 1;
    }

    /// The relay session behind a call, if it is relayed.
    pub fn media_session(&self, call_id: &str) -> Option<u64> {
        self.calls.get(call_id)?.media.as_ref().map(|m| m.id)
    }

    /// Relay ports in use (RTP+RTCP pairs, two per relayed stream).
    pub fn media_ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// Relay sessions the relay reports silent for `media_timeout`: an
    /// answered call that is not on hold is ended (BYE to both ends).
    pub fn on_media_idle(&mut self, sessions: &[u64], now: Now, fx: &mut Effects) {
        let timeout = u64::from(self.config.general.media_timeout) * 1000;
        if timeout == 0 {
            return;
        }
        for id in sessions {
            let Some(call_id) = self.media_calls.get(id).cloned() else {
                // A session the core no longer knows: close it.
                fx.media.push(MediaOp::Close { id: *id });
                continue;
            };
            let due = self.calls.get(&call_id).is_some_and(|c| {
                c.state == State::Answered
                    && c.media.as_ref().is_some_and(|m| !m.held)
                    && c.answer_ms
                        .is_some_and(|a| now.unix_ms.saturating_sub(a) >= timeout)
            });
            if due {
                tracing::info!("call {call_id}: no media for {}s, hung up", timeout / 1000);
                self.counters.media_timeouts += 1;
                self.hang_up_call(&call_id, now, fx);
                self.end_call(&call_id, Disposition::MediaTimeout, 200, now, fx);
            }
        }
    }
}
