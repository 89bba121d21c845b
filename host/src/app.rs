//! A loaded application: its components ready to instantiate, and the life
//! of one request through one of them (SERVER span, fresh instance, limits,
//! faults turned into responses and error spans).

use crate::http::outbound::Outbound;
use crate::manifest::{Component as ComponentConfig, Diagnostic, Manifest};
use crate::runtime::{MAX_RESOURCES_PER_INSTANCE, Progress, RequestState, Runtime};
use crate::telemetry::stdio::GuestOutput;
use crate::telemetry::{
    RequestTrace, Settings, Telemetry, propagation, record_exception, semconv, start_span,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use opentelemetry_sdk::trace::Span;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpView};

/// Extra time past a component's timeout before the host stops waiting on a
/// guest that is blocked outside wasm (the epoch deadline catches the rest).
const GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// One component, compiled and pre-instantiated.
pub struct LoadedComponent {
    pub config: ComponentConfig,
    pre: ProxyPre<RequestState>,
}

/// A running application.
pub struct App {
    pub manifest: Manifest,
    pub runtime: Runtime,
    pub telemetry: Telemetry,
    components: Vec<LoadedComponent>,
    /// Requests whose SERVER span has not ended yet.
    in_flight: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

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
    pub fn in_process(depth: u32, caller: String) -> Self {
        Inbound {
            depth,
            caller: Some(caller),
            ..Default::default()
        }
    }
}

/// Compile (or load from cache) and check every component; every problem is
/// collected, so `polytrace check` reports them all at once.
pub fn load_components(
    manifest: &Manifest,
    runtime: &Runtime,
) -> Result<Vec<(ComponentConfig, ProxyPre<RequestState>)>, Vec<Diagnostic>> {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for c in &manifest.components {
        if !c.source.exists() {
            let hint = match &c.build {
                Some(cmd) => format!(
                    "build it with `{cmd}` (its `build` command, run in {})",
                    manifest.dir.display()
                ),
                None => "build the component first, or fix `source`".to_string(),
            };
            problems.push(manifest.component_problem(
                c,
                format!("`{}` does not exist: {hint}", c.source.display()),
            ));
            continue;
        }
        let id = c.id.clone();
        let progress = |p: Progress| match p {
            Progress::Cached => tracing::info!(component = %id, "loaded compiled code from cache"),
            Progress::Compiling { bytes } => tracing::info!(
                component = %id,
                "compiling {:.1} MB of wasm (once; later starts use the cache)…",
                bytes as f64 / 1e6
            ),
            Progress::Compiled { elapsed } => {
                tracing::info!(component = %id, "compiled in {:.1}s", elapsed.as_secs_f64())
            }
        };
        let prepared = runtime
            .load(&c.source, &progress)
            .and_then(|component| runtime.prepare(&component));
        match prepared {
            Ok(pre) => loaded.push((c.clone(), pre)),
            Err(e) => problems.push(manifest.component_problem(c, format!("{e:#}"))),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

impl App {
    /// Load every component and start telemetry. Must run within tokio.
    pub fn new(
        manifest: Manifest,
        runtime: Runtime,
        settings: Settings,
        store: Option<Arc<crate::store::Store>>,
    ) -> anyhow::Result<Arc<App>> {
        let loaded = load_components(&manifest, &runtime).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(|d| format!("  {d}")).collect();
            anyhow::anyhow!("cannot start the app:\n{}", lines.join("\n"))
        })?;
        let telemetry = Telemetry::start(settings, &manifest, store)?;
        let components = loaded
            .into_iter()
            .map(|(config, pre)| LoadedComponent { config, pre })
            .collect();
        Ok(Arc::new(App {
            manifest,
            runtime,
            telemetry,
            components,
            in_flight: Default::default(),
            idle: tokio::sync::Notify::new(),
        }))
    }

    pub fn component(&self, idx: usize) -> &ComponentConfig {
        &self.components[idx].config
    }

    pub fn component_id(&self, idx: usize) -> &str {
        &self.components[idx].config.id
    }

    /// The component whose id is `host` (case-insensitive, as host names are).
    pub fn component_index(&self, host: &str) -> Option<usize> {
        self.components
            .iter()
            .position(|c| c.config.id.eq_ignore_ascii_case(host))
    }

    /// The component whose route serves `path`; the longest match wins.
    pub fn route(&self, path: &str) -> Option<usize> {
        self.components
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.config.route.as_ref()?.matches(path)?, i)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, i)| i)
    }

    /// Handle one request in a fresh instance of component `idx`.
    pub fn handle(
        self: &Arc<Self>,
        idx: usize,
        request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<HyperOutgoingBody>> + Send>> {
        let app = self.clone();
        Box::pin(async move { app.handle_inner(idx, request, inbound).await })
    }

    async fn handle_inner(
        self: Arc<Self>,
        idx: usize,
        request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> http::Response<HyperOutgoingBody> {
        let config = &self.components[idx].config;
        let started = Instant::now();
        let deadline = started + config.timeout;

        // SERVER span, continuing the caller's trace when it sent a valid one.
        let extracted = propagation::extract(
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let uri = request.uri().clone();
        let host_header = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let authority = uri.authority().map(|a| a.to_string()).or(host_header);
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let (server_address, server_port) =
            split_authority(authority.as_deref(), inbound.local, &scheme);
        let route = config
            .route
            .as_ref()
            .filter(|r| r.matches(uri.path()).is_some())
            .map(|r| r.http_route());
        let server_request = semconv::ServerRequest {
            method: request.method().as_str(),
            scheme: &scheme,
            path: uri.path(),
            query: uri.query(),
            route: route.as_deref(),
            server_address: server_address.as_deref(),
            server_port,
            client_address: inbound.client.map(|c| c.ip().to_string()),
            protocol_version: protocol_version(request.version()),
            user_agent: request
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        };
        let mut metrics = RequestMetrics::start(&self, idx, &server_request);
        let tracer = self.telemetry.tracer(idx);
        let mut attrs = server_request.attributes();
        if let Some(caller) = &inbound.caller {
            attrs.push(KeyValue::new("polytrace.caller.component", caller.clone()));
        }
        let mut span = start_span(
            tracer,
            server_request.span_name(),
            SpanKind::Server,
            attrs,
            extracted.parent.as_ref(),
        );
        let random = extracted
            .parent
            .as_ref()
            .is_none_or(|p| p.trace_flags().to_u8() & propagation::FLAG_RANDOM != 0);
        let trace = RequestTrace::new(
            tracer.clone(),
            span.span_context().clone(),
            extracted.baggage,
            random,
            self.telemetry.settings.max_attribute_value_length,
        );
        // W3C Trace Context Level 2: tell the caller which trace this became.
        let traceresponse = propagation::format_traceparent(trace.current());

        // A fresh instance with this component's limits and nothing granted
        // but its manifest `env`.
        // What it prints becomes log records, correlated with its current span.
        let env: Vec<(&String, &String)> = config.env.iter().collect();
        let logs = &self.telemetry.logs;
        let wasi = WasiCtxBuilder::new()
            .envs(&env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::stdout(
                logs.clone(),
                idx,
                trace.shared_current(),
            ))
            .stderr(GuestOutput::stderr(
                logs.clone(),
                idx,
                trace.shared_current(),
            ))
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES_PER_INSTANCE);
        let state = RequestState {
            wasi,
            http: WasiHttpCtx::new(),
            table,
            limits: StoreLimitsBuilder::new()
                .memory_size(config.memory_bytes as usize)
                .trap_on_grow_failure(true)
                .build(),
            outbound: Outbound::new(trace, self.clone(), idx, inbound.depth),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                // Yield so a busy guest never holds a worker thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);

        let (sender, receiver) = oneshot::channel();
        let wasi_scheme = if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let prepared = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(wasi_scheme, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            anyhow::Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(v) => v,
            Err(e) => {
                return self.fail(
                    span,
                    &mut metrics,
                    400,
                    "BadRequest",
                    &format!("{e:#}"),
                    None,
                    &traceresponse,
                );
            }
        };
        let pre = self.components[idx].pre.clone();
        let instantiations = self.telemetry.metrics.component(idx).instantiations.clone();
        let guest = tokio::spawn(async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiations.add(1, &[]);
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            }
            .await;
            let adjustments = store.data_mut().end_abandoned_spans();
            (result, adjustments)
        });
        let abort = guest.abort_handle();
        let hard_deadline = tokio::time::Instant::from_std(deadline + GRACE);

        match tokio::time::timeout_at(hard_deadline, receiver).await {
            Ok(Ok(Ok(mut response))) => {
                let status = response.status().as_u16();
                let (attrs, st) = semconv::server_response(status);
                span.set_attributes(attrs);
                span.set_status(st);
                metrics.status(status, (status >= 500).then(|| status.to_string()));
                add_traceresponse(&mut response, &traceresponse);
                // The body may still be streaming: the span ends when the guest does.
                let app = self.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout_at(hard_deadline, guest).await {
                        Ok(Ok((result, adjustments))) => {
                            span.set_attributes(adjustments.attributes());
                            app.count_dropped_spans(idx, adjustments.dropped_spans);
                            if let Err(e) = result {
                                let kind = app.count_failure(idx, &e);
                                metrics.status(status, Some(kind));
                                record_guest_error(&mut span, &e);
                            }
                        }
                        Ok(Err(join)) => {
                            metrics.status(status, Some("HostPanic".into()));
                            record_exception(&mut span, "HostPanic", &join.to_string(), None)
                        }
                        Err(_) => {
                            abort.abort();
                            app.telemetry.metrics.component(idx).timeouts.add(1, &[]);
                            metrics.status(status, Some("Timeout".into()));
                            record_exception(
                                &mut span,
                                "Timeout",
                                "the component did not finish its response body in time",
                                None,
                            );
                        }
                    }
                    span.end();
                    drop(metrics);
                });
                response
            }
            Ok(Ok(Err(code))) => {
                let _ = guest.await;
                let message = format!("the component answered with error {code:?}");
                self.fail(
                    span,
                    &mut metrics,
                    500,
                    "ErrorCode",
                    &message,
                    None,
                    &traceresponse,
                )
            }
            Ok(Err(_)) => {
                // The guest finished or failed without setting a response.
                match guest.await.map(|(result, _)| result) {
                    Ok(Err(e))
                        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                            .is_some() =>
                    {
                        let message = format!(
                            "the host is running its limit of instances at once ({e}); retry shortly \
                             or raise --max-instances"
                        );
                        let mut response = self.fail(
                            span,
                            &mut metrics,
                            503,
                            "Overloaded",
                            &message,
                            None,
                            &traceresponse,
                        );
                        response.headers_mut().insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from_static("1"),
                        );
                        response
                    }
                    Ok(Err(e)) => {
                        let timed_out = e.downcast_ref::<Trap>() == Some(&Trap::Interrupt);
                        self.count_failure(idx, &e);
                        let (kind, message, backtrace) = describe_guest_error(&e);
                        let status = if timed_out { 504 } else { 500 };
                        self.fail(
                            span,
                            &mut metrics,
                            status,
                            &kind,
                            &message,
                            backtrace,
                            &traceresponse,
                        )
                    }
                    Ok(Ok(())) => self.fail(
                        span,
                        &mut metrics,
                        500,
                        "NoResponse",
                        "the component returned without setting a response",
                        None,
                        &traceresponse,
                    ),
                    Err(join) => self.fail(
                        span,
                        &mut metrics,
                        500,
                        "HostPanic",
                        &join.to_string(),
                        None,
                        &traceresponse,
                    ),
                }
            }
            Err(_) => {
                abort.abort();
                let message = format!(
                    "the component did not respond within its timeout of {} ms",
                    config.timeout.as_millis()
                );
                self.telemetry.metrics.component(idx).timeouts.add(1, &[]);
                self.fail(
                    span,
                    &mut metrics,
                    504,
                    "Timeout",
                    &message,
                    None,
                    &traceresponse,
                )
            }
        }
    }

    /// End `span` as failed and answer `status` with a JSON body that names
    /// the trace, so the failure is easy to find.
    #[allow(clippy::too_many_arguments)]
    fn fail(
        &self,
        mut span: Span,
        metrics: &mut RequestMetrics,
        status: u16,
        kind: &str,
        message: &str,
        backtrace: Option<String>,
        traceresponse: &str,
    ) -> http::Response<HyperOutgoingBody> {
        let trace_id = span.span_context().trace_id().to_string();
        metrics.status(status, Some(kind.to_string()));
        record_exception(&mut span, kind, message, backtrace);
        let (attrs, _) = semconv::server_response(status);
        span.set_attributes(attrs);
        span.set_status(Status::error(message.to_string()));
        span.end();
        tracing::warn!(trace_id, status, "{kind}: {message}");
        let body = serde_json::json!({
            "error": message,
            "kind": kind,
            "trace_id": trace_id,
        });
        let mut response = http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full_body(body.to_string()))
            .expect("static response parts are valid");
        add_traceresponse(&mut response, traceresponse);
        response
    }
}

impl App {
    /// Wait (at most `timeout`) until every request's SERVER span has ended:
    /// a response can reach the client before its span ends (the guest may
    /// still be finishing), and shutdown flushes only after this.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }

    /// Count a guest failure in the health metrics; returns its `error.type`.
    fn count_failure(&self, idx: usize, e: &wasmtime::Error) -> String {
        let m = self.telemetry.metrics.component(idx);
        let (kind, _, _) = describe_guest_error(e);
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => m.timeouts.add(1, &[]),
            Some(_) => m.traps.add(1, &[KeyValue::new("error.type", kind.clone())]),
            None => {}
        }
        kind
    }

    fn count_dropped_spans(&self, idx: usize, n: u64) {
        if n > 0 {
            self.telemetry.metrics.component(idx).dropped.add_spans(n);
        }
    }
}

/// `http.server.active_requests` and `http.server.request.duration` of one
/// request: counted active when made, recorded when dropped (when the
/// SERVER span ends), with the status and error type set by then. Also the
/// app's count of requests in flight, which shutdown waits on.
struct RequestMetrics {
    app: Arc<App>,
    idx: usize,
    started: Instant,
    active: Vec<KeyValue>,
    attrs: Vec<KeyValue>,
}

impl RequestMetrics {
    fn start(app: &Arc<App>, idx: usize, r: &semconv::ServerRequest<'_>) -> RequestMetrics {
        app.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let active = semconv::server_active_attributes(r.method, r.scheme);
        app.telemetry
            .metrics
            .component(idx)
            .server_active
            .add(1, &active);
        let mut attrs = active.clone();
        attrs.extend(
            r.route
                .map(|route| KeyValue::new("http.route", route.to_string())),
        );
        attrs.push(KeyValue::new(
            "network.protocol.version",
            r.protocol_version.to_string(),
        ));
        RequestMetrics {
            app: app.clone(),
            idx,
            started: Instant::now(),
            active,
            attrs,
        }
    }

    /// The response status, and `error.type` when the request failed.
    fn status(&mut self, status: u16, error_type: Option<String>) {
        self.attrs
            .retain(|kv| !matches!(kv.key.as_str(), "http.response.status_code" | "error.type"));
        self.attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(e) = error_type {
            self.attrs.push(KeyValue::new("error.type", e));
        }
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        let m = self.app.telemetry.metrics.component(self.idx);
        m.server_active.add(-1, &self.active);
        m.server_duration
            .record(self.started.elapsed().as_secs_f64(), &self.attrs);
        // Dropped when the SERVER span has ended: the request is done.
        if self
            .app
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.app.idle.notify_waiters();
        }
    }
}

/// A complete body for responses the host writes itself.
pub fn full_body(text: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(text.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// Error response for requests the host rejects before any component runs.
pub fn host_response(status: u16, message: &str) -> http::Response<HyperOutgoingBody> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full_body(
            serde_json::json!({ "error": message }).to_string(),
        ))
        .expect("static response parts are valid")
}

fn add_traceresponse(response: &mut http::Response<HyperOutgoingBody>, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        response.headers_mut().insert("traceresponse", v);
    }
}

fn record_guest_error(span: &mut Span, e: &wasmtime::Error) {
    let (kind, message, backtrace) = describe_guest_error(e);
    record_exception(span, &kind, &message, backtrace);
}

/// Exception type, message and wasm backtrace of a guest failure.
fn describe_guest_error(e: &wasmtime::Error) -> (String, String, Option<String>) {
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string())
        .filter(|s| !s.trim().is_empty());
    let kind = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "Timeout".to_string(),
        Some(trap) => format!("Trap::{trap:?}"),
        None => "GuestError".to_string(),
    };
    let message = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            "the component ran past its timeout and was interrupted".to_string()
        }
        _ => {
            // The root cause first, then the context chain, without the backtrace.
            let chain: Vec<String> = e
                .chain()
                .map(|c| c.to_string())
                .filter(|s| !s.contains("wasm backtrace:"))
                .collect();
            chain.join(": ")
        }
    };
    (kind, message, backtrace)
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn split_authority(
    authority: Option<&str>,
    local: Option<SocketAddr>,
    scheme: &str,
) -> (Option<String>, Option<u16>) {
    match authority.and_then(|a| a.parse::<http::uri::Authority>().ok()) {
        Some(a) => (
            Some(a.host().to_string()),
            a.port_u16()
                .or(local.map(|l| l.port()))
                .or(Some(crate::manifest::default_port(scheme))),
        ),
        None => (local.map(|l| l.ip().to_string()), local.map(|l| l.port())),
    }
}

/// A request body for the guest from a hyper body.
pub fn incoming_body<B>(body: B) -> WasiBody
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()
}
