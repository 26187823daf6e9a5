//! Low-level parsing: start line, header lines with folding, Content-Length
//! framing, limits. Used by `message.rs`.
