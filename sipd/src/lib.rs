//! sipd: SIP registrar, stateful proxy and small-office PBX.
//!
//! The crate is a library (everything testable) plus a thin binary
//! (`main.rs`). See ARCHITECTURE.md for the layers.

pub mod auth;
pub mod config;
pub mod sip;
