//! Behaviour tests of the core, one file per behaviour, driven without
//! sockets through [`harness::Bench`].

mod harness;

mod cancel;
mod cancel_ignored;
mod closed_flow;
mod credentials;
mod feature_commit;
mod guard;
mod local_address;
mod options;
mod reload;
mod retention;
mod sequences;
mod time;
