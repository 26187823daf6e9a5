//! Control commands (spec §6), one file per command like mini-redis's
//! `cmd/`: the control socket hands each parsed request to
//! [`Daemon::handle`], which answers with one response.

mod bans;
mod calls;
mod cdr;
mod fwd;
mod gateways;
mod regs;
mod reload;
mod status;

use std::sync::Arc;

use proto::{Command, Reply, Response};

use super::Daemon;

impl crate::control::Handler for Daemon {
    async fn handle(self: Arc<Self>, cmd: Command) -> Response {
        match cmd {
            Command::Status => Response::ok(Reply::Status(self.status())),
            Command::Reload => self.reload_command().await,
            Command::Regs { name } => Response::ok(Reply::Regs(self.regs(name.as_deref()))),
            Command::Calls => Response::ok(Reply::Calls(self.calls())),
            Command::Cdr { last } => self.cdr(last).await,
            Command::Fwd { who, action } => self.fwd(&who, action).await,
            Command::Bans { clear } => self.bans(clear.as_deref()),
            Command::Gateways => Response::ok(Reply::Gateways(self.gateways())),
        }
    }
}
