//! Unit tests of the sip module as a whole (the tests of one function sit
//! next to it in its file): builders, a corpus of tricky messages, edits,
//! property tests, and the layer check.

mod build;
mod corpus;
mod edit;
mod layers;
mod props;
