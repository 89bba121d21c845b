//! HTTP in and out: the inbound listener and outbound dispatch.

pub mod allowed_hosts;
pub mod listener;
pub mod outbound;
pub mod server;
pub mod status;

use std::net::SocketAddr;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The peer of a network request.
    pub client: Option<SocketAddr>,
    /// The listener address that accepted it.
    pub local: Option<SocketAddr>,
    /// In-process hops so far (0 for a network request).
    pub depth: u32,
    /// The calling component of an in-process request.
    pub caller: Option<String>,
}

impl Inbound {
    /// A request one component sends another in-process, `depth` hops deep.
    pub fn in_process(depth: u32, caller: String) -> Self {
        Inbound {
            depth,
            caller: Some(caller),
            ..Default::default()
        }
    }
}
