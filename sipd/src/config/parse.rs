//! The sip.conf text format: sections, `key=value`, comments, line numbers.
