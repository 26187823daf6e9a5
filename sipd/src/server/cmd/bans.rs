//! `bans` and `bans clear ADDR`: the ban table (floods and brute-force
//! locks), and lifting every ban of one address.

use std::net::IpAddr;

use proto::{BanEntry, Bans, Reply, Response};

use super::Daemon;
use crate::core::{BanReason, Effects};

impl Daemon {
    pub(super) fn bans(&self, clear: Option<&str>) -> Response {
        let ip = match clear.map(|a| a.trim().parse::<IpAddr>()) {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => {
                return Response::error(format!(
                    "'{}' is not an IP address",
                    proto::shown(clear.unwrap_or_default())
                ))
            }
        };
        let (bans, cleared) = self.with_core(Effects::new(), |core, fx| {
            let cleared = ip.map(|ip| core.lift_bans(ip, fx));
            let bans = core
                .bans()
                .map(|b| BanEntry {
                    address: b.ip.to_string(),
                    reason: b.reason.describe(),
                    user: match &b.reason {
                        BanReason::AuthUser(u) => Some(u.clone()),
                        _ => None,
                    },
                    dropped: b.reason.drops(),
                    since_unix: b.since_unix,
                    until_unix: b.until_unix,
                })
                .collect();
            (bans, cleared)
        });
        Response::ok(Reply::Bans(Bans { bans, cleared }))
    }
}
