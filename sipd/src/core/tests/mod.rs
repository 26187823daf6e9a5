//! Behaviour tests of the core, one file per behaviour, driven without
//! sockets through [`harness::Bench`].

mod answers;
mod harness;

mod cancel;
mod cancel_ignored;
mod closed_flow;
mod credentials;
mod dialog_guard;
mod digest;
mod feature_commit;
mod forking;
mod gateway_health;
mod guard;
mod local_address;
mod media;
mod nodes;
mod options;
mod permit;
mod reload;
mod retention;
mod sequences;
mod time;
