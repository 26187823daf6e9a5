//! The built-in media relay (what Kamailio needs rtpengine for): SDP
//! rewriting and the port pool are pure and used by the core (`sdp.rs`,
//! `ports.rs`); the relay itself (`relay.rs`) owns the UDP sockets and
//! forwards RTP/RTCP on its own threads, off the SIP core lock. The core
//! drives it with [`MediaOp`]s in its effects.

pub mod ports;
pub mod relay;
pub mod sdp;

use std::net::{IpAddr, SocketAddr};

/// A relay session's leg facing the caller.
pub const CALLER: usize = 0;
/// The leg facing the callee.
pub const CALLEE: usize = 1;

/// What the core asks of the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaOp {
    /// Open stream `stream` of session `id`: on each leg an RTP socket at
    /// `local[leg]` and its RTCP socket on the port above. What arrives on
    /// one leg leaves from the other leg's socket.
    Open {
        id: u64,
        stream: usize,
        local: [SocketAddr; 2],
    },
    /// The endpoint of a leg as its latest SDP names it: packets go to
    /// `rtp`/`rtcp` until the leg has latched (learned the address the
    /// endpoint really sends from, comedia); only packets from `allow` are
    /// accepted on that leg. A new SDP from the endpoint unlatches it.
    Peer {
        id: u64,
        stream: usize,
        leg: usize,
        rtp: SocketAddr,
        rtcp: SocketAddr,
        allow: IpAddr,
    },
    /// Media timeout counts from now (the call was answered).
    Touch { id: u64 },
    /// Close every socket of the session.
    Close { id: u64 },
}
