//! The inbound listener: routes each request to the component whose route
//! matches, and shuts down gracefully (stop accepting, finish in-flight
//! requests).

use super::Inbound;
use crate::app::{App, host_response, incoming_body};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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

/// Serve `app` on `listener` until `shutdown` resolves, then wait for the
/// connections in flight (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    target: Target,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                let path = req.uri().path().to_string();
                let idx = match target {
                    Target::Routes => app.route(&path),
                    Target::Component(i) => Some(i),
                };
                let response = match idx {
                    Some(idx) => {
                        let inbound = Inbound {
                            client: Some(peer),
                            local: Some(local),
                            ..Default::default()
                        };
                        app.handle(idx, req.map(incoming_body), inbound).await
                    }
                    None => host_response(404, &format!("no component serves `{path}`")),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after {}s; stopping anyway", SHUTDOWN_GRACE.as_secs());
        }
    }
    Ok(())
}
