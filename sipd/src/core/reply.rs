//! Responses sipd itself sends, and where responses go (RFC 3261 §18.2.2 with
//! RFC 3581 rport): always to the source IP of the request, so that a forged
//! Via cannot make sipd send to a third party.

use std::net::SocketAddr;

use crate::sip::{push_ip, push_u32, HeaderName, Message, Params, ResponseBuilder, Via};
use crate::transport::{Out, Peer, Transport};

/// The top Via as it must appear in responses: with `received` when the
/// sent-by host is not the source IP, and `rport=PORT` when asked for
/// (replacing those parameters where they are, else appended). Written
/// straight into one string: this runs for every request.
pub fn via_with_received(via: &Via, peer: &Peer) -> String {
    let src_ip = peer.addr.ip();
    let wants_rport = via.params.has("rport");
    let received = wants_rport || via.host.ip() != Some(src_ip);
    let mut s = String::with_capacity(96);
    s.push_str("SIP/2.0/");
    s.push_str(&via.transport);
    s.push(' ');
    via.host.push_to(&mut s);
    if let Some(p) = via.port {
        s.push(':');
        push_u32(&mut s, u32::from(p));
    }
    let (mut put_received, mut put_rport) = (!received, !wants_rport);
    let push_received = |s: &mut String| {
        s.push_str(";received=");
        push_ip(s, src_ip);
    };
    let push_rport = |s: &mut String| {
        s.push_str(";rport=");
        push_u32(s, u32::from(peer.addr.port()));
    };
    for (name, value) in &via.params.0 {
        if received && name.eq_ignore_ascii_case("received") {
            if !put_received {
                push_received(&mut s);
                put_received = true;
            }
        } else if wants_rport && name.eq_ignore_ascii_case("rport") {
            if !put_rport {
                push_rport(&mut s);
                put_rport = true;
            }
        } else {
            Params::push_one(&mut s, name, value.as_deref());
        }
    }
    if !put_received {
        push_received(&mut s);
    }
    if !put_rport {
        push_rport(&mut s);
    }
    s
}

/// Where responses to a request from `peer` with top Via `via` go: over the
/// same connection for TCP; for UDP to the source IP, at the source port
/// when `rport` was asked for, else at the Via port (default 5060).
pub fn response_dest(via: &Via, peer: &Peer) -> Peer {
    match peer.transport {
        Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => *peer,
        Transport::Udp => {
            let port = if via.params.has("rport") {
                peer.addr.port()
            } else {
                via.port.unwrap_or(5060)
            };
            Peer {
                transport: Transport::Udp,
                addr: SocketAddr::new(peer.addr.ip(), port),
                flow: None,
                local: peer.local,
            }
        }
    }
}

/// Build a response to `req` from `peer`.
pub fn build(
    req: &Message,
    peer: Peer,
    code: u16,
    reason: &str,
    to_tag: &str,
    headers: &[(HeaderName, &str)],
) -> Out {
    let via = req.top_via();
    let mut b = ResponseBuilder::new(req, code, reason)
        .top_via(&via_with_received(via, &peer))
        .to_tag(to_tag)
        .header(
            HeaderName::Server,
            concat!("sipd/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        b = b.header(name.clone(), value);
    }
    Out::response(response_dest(via, &peer), b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `via_with_received` did before it wrote the string itself.
    fn reference(via: &Via, peer: &Peer) -> String {
        let mut via = via.clone();
        let src_ip = peer.addr.ip();
        let wants_rport = via.params.has("rport");
        if via.host.ip() != Some(src_ip) || wants_rport {
            via.params.set("received", Some(&src_ip.to_string()));
        }
        if wants_rport {
            via.params.set("rport", Some(&peer.addr.port().to_string()));
        }
        via.to_string()
    }

    #[test]
    fn same_text_as_params_set_and_display() {
        let peers = [
            "127.0.0.1:5070",
            "10.0.0.9:40000",
            "[::1]:5062",
            "[2001:db8::7]:9",
        ];
        let vias = [
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bK1",
            "SIP/2.0/TCP host.example:5060;branch=z9hG4bK2;received=1.2.3.4;rport=7",
            "SIP/2.0/UDP 192.168.1.5:5060;received=9.9.9.9;branch=z9hG4bK3",
            "SIP/2.0/UDP [::1]:5062;branch=z9hG4bK4;rport;x=\"a b\"",
            "SIP/2.0/UDP [2001:db8::7];maddr=239.1.1.1;ttl=1;branch=z9hG4bK5",
            "SIP/2.0/UDP 10.0.0.9:40000;branch=z9hG4bK6;flag",
        ];
        for v in vias {
            let via = Via::parse(v).unwrap();
            for p in peers {
                let peer = Peer::to(Transport::Udp, p.parse().unwrap());
                assert_eq!(
                    via_with_received(&via, &peer),
                    reference(&via, &peer),
                    "{v} from {p}"
                );
            }
        }
    }
}
