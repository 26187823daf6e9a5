//! `fwd WHO [always F | unavail F | clear]`: show or change a client's
//! forwarding. The rules are `routing::forwards`'; the change goes through
//! the core (`Core::change_forwarding`), like a phone's star code, so that
//! overlapping changes and failed store writes leave memory and store
//! agreeing; here the command waits for the commit before it answers.

use proto::{Reply, Response};

use super::Daemon;
use crate::core::Effects;
use crate::time::Now;

/// What the command does after its turn in the core.
enum Step {
    Done(Box<Response>),
    Wait(u64),
}

impl Daemon {
    /// `fwd WHO [action]`: WHO is a name or number; a change through a
    /// number that names several clients is refused with the candidates.
    pub(super) async fn fwd(&self, who: &str, action: Option<proto::Forwarding>) -> Response {
        use crate::routing::forwards::{self, SetBy};
        let (step, waits) = self.run_core(Effects::new(), |core, fx| {
            let config = core.config().clone();
            let Some(action) = action else {
                return Step::Done(Box::new(match forwards::lookup(&config, who) {
                    Ok(matches) => Response::ok(Reply::Fwd(core.forwards().report(&matches))),
                    Err(e) => Response::error(e),
                }));
            };
            let client = match forwards::lookup_one(&config, who) {
                Ok(client) => client,
                Err(e) => return Step::Done(Box::new(Response::error(e))),
            };
            match forwards::change(&config, client, action, SetBy::Sipctl) {
                Ok(ov) => Step::Wait(core.change_forwarding(&client.name, ov, Now::read(), fx)),
                Err(e) => Step::Done(Box::new(Response::error(e))),
            }
        });
        let token = match step {
            Step::Done(r) => {
                for (t, rx) in waits {
                    self.resume_after(t, rx);
                }
                return *r;
            }
            Step::Wait(token) => token,
        };
        let mut ours = None;
        for (t, rx) in waits {
            if t == token {
                ours = Some(rx);
            } else {
                self.resume_after(t, rx);
            }
        }
        let result = match ours {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("store writer stopped".into())),
            None => Err("store writer stopped".into()),
        };
        let failed = result
            .as_ref()
            .err()
            .map(|e| format!("forwarding not saved: {e}"));
        self.with_core(Effects::new(), |core, fx| {
            core.resume(token, result, Now::read(), fx);
            match failed {
                Some(e) => Response::error(e),
                None => {
                    let config = core.config().clone();
                    Response::ok(Reply::Fwd(core.forwards().report(&config.lookup(who))))
                }
            }
        })
    }
}
