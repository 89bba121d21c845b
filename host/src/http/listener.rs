//! What every listener of the host (the app's, a component's own, the
//! viewer's) bounds on its clients, and the accept loop that enforces it:
//!
//! - **connections**: at most [`ConnectionLimits::max_connections`] open at
//!   once; a client past the cap gets a `503` with `Connection: close` and
//!   is closed, so file descriptors stay bounded and the listener keeps
//!   answering;
//! - **header read**: a request head (request line and headers) must arrive
//!   within [`ConnectionLimits::header_read_timeout`] of the connection
//!   waiting for it — on a new connection and between keep-alive requests
//!   alike, so this is also how long an idle connection is kept;
//! - **idle**: a connection on which no byte is read or written for
//!   [`ConnectionLimits::idle_timeout`] is closed — a client that stops
//!   sending its request body or stops reading the response — unless a
//!   handler was working with its whole request meanwhile;
//! - **shutdown**: once the shutdown future resolves, no connection is
//!   accepted, in-flight requests get `grace` to finish, and then the
//!   listener returns whatever is still open.
//!
//! Each listener counts what it did in [`ListenerStats`], which the
//! Prometheus endpoint shows as `polytrace_listener_*` series.

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Default for [`ConnectionLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default for [`ConnectionLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConnectionLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Refusals being written at once; past this a connection over the cap is
/// closed without an answer (a flood must not hold descriptors either).
const MAX_REFUSING: usize = 64;
/// At shutdown, a connection with no request in a handler and no response
/// being sent is closed once it has moved no byte for this long.
const QUIET_FOR: Duration = Duration::from_millis(500);
/// How long a refusal may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The bounds one listener puts on its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once (≥ 1).
    pub max_connections: usize,
    /// From waiting for a request head to having all of it.
    pub header_read_timeout: Duration,
    /// No byte moved on a connection, unless a handler is working with its
    /// whole request.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What one listener did; all counts since start.
#[derive(Debug)]
pub struct ListenerStats {
    /// Which listener: `app`, `component:<id>` or `viewer`.
    pub name: String,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted (refused ones included).
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// Connections closed by the header-read or the idle timeout.
    pub timed_out: AtomicU64,
}

impl ListenerStats {
    /// Zeroed counts for the listener called `name`.
    pub fn new(name: impl Into<String>) -> Arc<ListenerStats> {
        Arc::new(ListenerStats {
            name: name.into(),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }
}

/// The Prometheus text exposition of `listeners`: gauge
/// `polytrace_listener_connections` (open now) and counters
/// `polytrace_listener_connections_accepted_total`, `…_refused_total`,
/// `…_timed_out_total`, each labelled `listener`; nothing for no listeners.
pub fn prometheus(listeners: &[Arc<ListenerStats>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if listeners.is_empty() {
        return out;
    }
    /// Name, type, help, value.
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ListenerStats) -> u64,
    );
    let series: [Series; 4] = [
        (
            "polytrace_listener_connections",
            "gauge",
            "Connections open on the listener.",
            |s| s.open.load(Ordering::Relaxed) as u64,
        ),
        (
            "polytrace_listener_connections_accepted_total",
            "counter",
            "Connections accepted, refused ones included.",
            |s| s.accepted.load(Ordering::Relaxed),
        ),
        (
            "polytrace_listener_connections_refused_total",
            "counter",
            "Connections refused because the listener's connection cap was reached.",
            |s| s.refused.load(Ordering::Relaxed),
        ),
        (
            "polytrace_listener_connections_timed_out_total",
            "counter",
            "Connections closed by the header-read or the idle timeout.",
            |s| s.timed_out.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for l in listeners {
            let label = l.name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{listener=\"{label}\"}} {}", value(l));
        }
    }
    out
}

/// Serve HTTP/1.1 on `listener` within `limits` until `shutdown` resolves,
/// then give the requests in flight `grace` and return. `service` makes the
/// service of one connection from its peer's address.
pub async fn serve<S, B>(
    listener: TcpListener,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    service: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: hyper::service::Service<
            hyper::Request<RequestBody>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut refused_warning = crate::telemetry::drops::Throttle::default();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, keep serving.
                    tracing::warn!(listener = %stats.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if stats.open.load(Ordering::Relaxed) >= limits.max_connections {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if refused_warning.ready() {
                tracing::warn!(
                    listener = %stats.name,
                    "{} connections open, the most allowed: new ones are answered 503 \
                     (raise --max-connections if this is real load)",
                    limits.max_connections
                );
            }
            refuse(stream, &refusing);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = InFlight {
            inner: service(peer),
            activity: activity.clone(),
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let open = Open::new(stats.clone());
        let idle_timeout = limits.idle_timeout;
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                done = conn => if let Err(e) = done {
                    if e.is_timeout() {
                        _open.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!("connection from {peer}: {e}");
                },
                () = activity.idle(idle_timeout) => {
                    _open.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection from {peer}: idle for {idle_timeout:?}, closed");
                }
                // hyper's graceful shutdown waits for a request head that
                // is half sent; nothing is lost by not waiting.
                () = activity.quiet_after(stopping) => {}
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(
                listener = %stats.name,
                "requests still in flight after {} s; stopping without them",
                grace.as_secs_f64()
            );
        }
    }
}

/// Answer a connection over the cap with a 503 and close it, in the
/// background; with [`MAX_REFUSING`] refusals already being written, close
/// it at once.
fn refuse(mut stream: TcpStream, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        const BODY: &str = "too many connections: try again later\n";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
             content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// One open connection, counted in `stats.open` while it lives.
struct Open {
    stats: Arc<ListenerStats>,
}

impl Open {
    fn new(stats: Arc<ListenerStats>) -> Open {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open { stats }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// in the service (a guest may work for a while without I/O: that is not
/// idleness).
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
    /// Requests whose handler is running.
    in_service: AtomicUsize,
    /// Request bodies not yet received whole.
    receiving: AtomicUsize,
    /// Responses whose body is still being sent.
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
        }
    }

    fn count(&self, count: Count) -> &AtomicUsize {
        match count {
            Count::Receiving => &self.receiving,
            Count::Answering => &self.answering,
        }
    }

    /// A handler is at work with its whole request: time passing without
    /// bytes is the guest working, not the client stalling.
    fn working(&self) -> bool {
        self.in_service.load(Ordering::Acquire) > 0 && self.receiving.load(Ordering::Acquire) == 0
    }

    /// No request is being handled or answered: closing the connection
    /// loses nothing (a request head half sent is not a request yet).
    fn quiet(&self) -> bool {
        self.in_service.load(Ordering::Acquire) == 0 && self.answering.load(Ordering::Acquire) == 0
    }

    /// Resolves once `stopping` says the listener is shutting down and the
    /// connection is [`quiet`](Self::quiet) and has moved no byte for
    /// [`QUIET_FOR`] (the last bytes of a response may still be on their
    /// way out after its body ended).
    async fn quiet_after(&self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        if stopping.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.quiet() && last.elapsed() >= QUIET_FOR {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once the connection has moved no byte for `timeout`, unless
    /// a handler was working with its whole request meanwhile (a request
    /// body that stops arriving is the client stalling, handler or not). A
    /// connection waiting for a request head is hyper's header-read
    /// timeout's to close.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + timeout;
            if Instant::now() >= due && !self.working() {
                return;
            }
            let wake = due.max(Instant::now() + Duration::from_millis(100));
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
            if self.working() {
                // Time spent working counts as activity.
                self.touch();
            }
        }
    }
}

/// A service that marks its connection busy while a request is inside it.
struct InFlight<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<hyper::Request<hyper::body::Incoming>> for InFlight<S>
where
    S: hyper::service::Service<hyper::Request<RequestBody>, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: hyper::body::Body + 'static,
{
    type Response = hyper::Response<Counted<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let activity = self.activity.clone();
        activity.in_service.fetch_add(1, Ordering::AcqRel);
        let busy = Busy(activity.clone());
        let arrival = BodyArrival::default();
        let mut req = req.map(|body| {
            Counted::new(body, &activity, Count::Receiving).noting_arrival_in(&arrival)
        });
        req.extensions_mut().insert(arrival);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            let out = out.map(|response| {
                response.map(|body| Counted::new(body, &activity, Count::Answering))
            });
            drop(busy);
            out
        })
    }
}

/// A request body as the listener's services see it: hyper's, counted in
/// its connection's [`Activity`] until it has been received whole.
pub type RequestBody = Counted<hyper::body::Incoming>;

/// How a request's body is arriving, in the request's extensions: at a
/// deadline, a handler waiting for body bytes the client has not sent is
/// the client's delay, not the handler's.
#[derive(Clone, Debug, Default)]
pub struct BodyArrival(Arc<ArrivalState>);

#[derive(Debug, Default)]
struct ArrivalState {
    /// The last frame has passed.
    whole: AtomicBool,
    /// The latest read of the body found no bytes yet.
    waiting: AtomicBool,
}

impl BodyArrival {
    /// The host is waiting for body bytes the client has not sent: the
    /// body is not whole and its latest read found nothing to take.
    pub fn stalled(&self) -> bool {
        !self.0.whole.load(Ordering::Acquire) && self.0.waiting.load(Ordering::Acquire)
    }
}

/// Which count of a connection's [`Activity`] a body is in.
#[derive(Clone, Copy)]
enum Count {
    /// A request body not yet received whole: while it is, time without
    /// bytes is the client stalling.
    Receiving,
    /// A response body not yet sent whole: shutdown waits for it.
    Answering,
}

/// A body counted in its connection's [`Activity`] until its last frame
/// (or an error) has passed, or it is dropped.
pub struct Counted<B> {
    body: B,
    counted: Option<(Arc<Activity>, Count)>,
    /// Told of each read and of the end (not of a failure or a drop).
    arrival: Option<BodyArrival>,
}

impl<B: hyper::body::Body> Counted<B> {
    fn new(body: B, activity: &Arc<Activity>, count: Count) -> Counted<B> {
        let counted = (!body.is_end_stream()).then(|| {
            activity.count(count).fetch_add(1, Ordering::AcqRel);
            (activity.clone(), count)
        });
        Counted {
            body,
            counted,
            arrival: None,
        }
    }

    /// Note in `arrival` how reads of the body go, and when it has ended.
    fn noting_arrival_in(mut self, arrival: &BodyArrival) -> Counted<B> {
        if self.body.is_end_stream() {
            arrival.0.whole.store(true, Ordering::Release);
        } else {
            self.arrival = Some(arrival.clone());
        }
        self
    }
}

impl<B> Counted<B> {
    fn done(&mut self) {
        if let Some((activity, count)) = self.counted.take() {
            activity.count(count).fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.body).poll_frame(cx);
        let ended = matches!(poll, Poll::Ready(None)) || this.body.is_end_stream();
        if let Some(arrival) = &this.arrival {
            arrival
                .0
                .waiting
                .store(poll.is_pending(), Ordering::Release);
            if ended {
                arrival.0.whole.store(true, Ordering::Release);
                this.arrival = None;
            }
        }
        if ended || matches!(poll, Poll::Ready(Some(Err(_)))) {
            this.done();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Holds a connection busy until dropped (answered or cancelled).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_service.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that notes the time of every read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_series_are_labelled_and_escaped() {
        let a = ListenerStats::new("app");
        let v = ListenerStats::new("component:\"x\"");
        a.open.store(3, Ordering::Relaxed);
        a.refused.store(7, Ordering::Relaxed);
        let text = prometheus(&[a, v]);
        assert!(
            text.contains("polytrace_listener_connections{listener=\"app\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("polytrace_listener_connections_refused_total{listener=\"app\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("polytrace_listener_connections{listener=\"component:\\\"x\\\"\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE polytrace_listener_connections_timed_out_total counter"));
    }
}
