//! HTTP in and out: the inbound listener and outbound dispatch.

pub mod allowed_hosts;
pub mod body;
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
    /// Hops so far: in-process calls, or for a network request its
    /// [`outbound::HOPS_HEADER`] (0 without one).
    pub depth: u32,
    /// The calling component of an in-process request.
    pub caller: Option<String>,
}

impl Inbound {
    /// The hop count a network request carries in
    /// [`outbound::HOPS_HEADER`]: 0 when absent or not a number; capped
    /// just past [`outbound::MAX_HOPS`].
    pub fn hops(headers: &http::HeaderMap) -> u32 {
        headers
            .get(outbound::HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map_or(0, |h| h.min(outbound::MAX_HOPS + 1))
    }

    /// A request one component sends another in-process, `depth` hops deep.
    pub fn in_process(depth: u32, caller: String) -> Self {
        Inbound {
            depth,
            caller: Some(caller),
            ..Default::default()
        }
    }
}
