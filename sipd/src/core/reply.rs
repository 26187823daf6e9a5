//! Responses sipd itself sends, and where responses go (RFC 3261 §18.2.2 with
//! RFC 3581 rport): always to the source IP of the request, so that a forged
//! Via cannot make sipd send to a third party.

use std::net::SocketAddr;

use crate::sip::{HeaderName, Message, ResponseBuilder, Via};
use crate::transport::{Out, Peer, Transport};

/// The top Via as it must appear in responses: with `received` when the
/// sent-by host is not the source IP, and `rport=PORT` when asked for.
pub fn via_with_received(via: &Via, peer: &Peer) -> String {
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

/// Where responses to a request from `peer` with top Via `via` go: over the
/// same connection for TCP; for UDP to the source IP, at the source port
/// when `rport` was asked for, else at the Via port (default 5060).
pub fn response_dest(via: &Via, peer: &Peer) -> Peer {
    match peer.transport {
        Transport::Tcp => *peer,
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
    Out {
        dest: response_dest(via, &peer),
        data: b.build(),
    }
}
