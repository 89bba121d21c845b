//! HTTP in and out: the inbound listener and outbound dispatch.

pub mod outbound;
pub mod server;
