//! Control protocol between sipd and sipctl.
