//! The inbound listener: routes each request to the component whose route
//! matches, and shuts down gracefully (stop accepting, finish in-flight
//! requests).

use super::Inbound;
use super::listener::{self, ConnectionLimits, ListenerStats};
use crate::app::{App, host_response, incoming_body};
use hyper::service::service_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Which components a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The shared listener: the component whose route matches the path.
    Routes,
    /// A component's own listener (`listen` in the manifest): every path.
    Component(usize),
}

/// Serve `app` on `listener` within `limits` until `shutdown` resolves,
/// then wait for the connections in flight (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    target: Target,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let service = move |peer: SocketAddr| {
        let app = app.clone();
        service_fn(move |req: hyper::Request<listener::RequestBody>| {
            let app = app.clone();
            async move {
                let path = req.uri().path().to_string();
                // A tunnel (RFC 9110, section 9.3.6) is not a route: no
                // component can be handed one through wasi:http.
                if req.method() == http::Method::CONNECT {
                    return Ok(host_response(
                        405,
                        "CONNECT is not served: polytrace is not a proxy, it serves its components' routes",
                    ));
                }
                let idx = match target {
                    Target::Routes => app.route(&path),
                    Target::Component(i) => Some(i),
                };
                let response = match idx {
                    Some(idx) => {
                        let inbound = Inbound {
                            client: Some(peer),
                            local: Some(local),
                            depth: Inbound::hops(req.headers()),
                            ..Default::default()
                        };
                        app.handle(idx, req.map(incoming_body), inbound).await
                    }
                    None => host_response(404, &format!("no component serves `{path}`")),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    listener::serve(listener, limits, stats, service, shutdown, SHUTDOWN_GRACE).await;
    Ok(())
}
