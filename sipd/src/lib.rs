//! sipd: SIP registrar, stateful proxy and small-office PBX.
//!
//! The crate is a library (everything testable) plus a thin binary
//! (`main.rs`). See ARCHITECTURE.md for the layers.

pub mod auth;
pub mod calls;
pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod malformed;
pub mod media;
pub mod registrar;
pub mod rng;
pub mod routing;
pub mod server;
pub mod sip;
pub mod store;
pub mod time;
pub mod transaction;
pub mod transport;

#[cfg(test)]
mod layers;

/// Lock a mutex, also when a panicking thread poisoned it: the state under
/// sipd's locks stays consistent between statements, and one failed request
/// must not stop the whole daemon.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
