//! PURE routing decisions: who a dialed number reaches, the forwarding
//! state and the rules for changing it, star codes. No I/O, no clock:
//! registrations come in as a locator function, times and random numbers as
//! arguments; the core and the server carry the decisions out.
//!
//! Layers (each imports only those before it):
//! [`reach`] (resolve a number, reach a client) ← [`forwards`] (forwarding
//! state) ← [`features`] (star codes) ← [`router`] (an INVITE's plan).

pub mod features;
pub mod forwards;
pub mod reach;
pub mod router;
