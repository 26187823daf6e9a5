//! sipd: SIP registrar, stateful proxy and small-office PBX.
//!
//! The crate is a library (everything testable) plus a thin binary
//! (`main.rs`). See ARCHITECTURE.md for the layers.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod features;
pub mod forwards;
pub mod malformed;
pub mod router;
pub mod server;
pub mod sip;
pub mod store;
pub mod transaction;
pub mod transport;
