//! A loaded application and the life of one request through one of its
//! components. [`App::serve`] is the whole story on one screen: open the
//! SERVER span, run the guest in a warm (or new) instance, wait for its
//! response, and turn whatever went wrong into a [`Fault`].

use crate::http::Inbound;
use crate::http::outbound::{Dispatcher, Outbound, ResponseFuture};
use crate::http::status;
use crate::instance::{InstanceState, RequestEnd, RequestScope};
use crate::manifest::{Component as ComponentConfig, Diagnostic, Manifest};
use crate::pool::{Discard, FINISHING_WAIT, InstancePool, Shares, Slot, Warm};
use crate::runtime::{Progress, Runtime};
use crate::telemetry::metrics::{ActiveRequest, ComponentMetrics, DISCARD_REASON};
use crate::telemetry::propagation::Share;
use crate::telemetry::traces::record_exception;
use crate::telemetry::traces::wire::WireSpan;
use crate::telemetry::{RequestTelemetry, RequestTrace, Settings, Telemetry, propagation, semconv};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt, Full};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

/// Extra time past a component's timeout before the host stops waiting on a
/// guest that is blocked outside wasm (the epoch deadline catches the rest).
const GRACE: Duration = Duration::from_millis(250);

/// One component, compiled and pre-instantiated, with its warm instances.
pub struct LoadedComponent {
    pub config: ComponentConfig,
    /// The databases its manifest grants it.
    sql: Arc<crate::data::sql::Grants>,
    /// The key-value stores its manifest grants it.
    keyvalue: Arc<crate::data::kv::Grants>,
    pre: ProxyPre<InstanceState>,
    pool: InstancePool,
}

/// A running application.
pub struct App {
    pub manifest: Manifest,
    pub runtime: Runtime,
    pub telemetry: Telemetry,
    components: Vec<LoadedComponent>,
    /// `--max-instances`, shared between the components.
    shares: Arc<Shares>,
    /// Requests whose SERVER span has not ended yet.
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Compile (or load from cache) and check every component; every problem is
/// collected, so `polytrace check` reports them all at once.
pub fn load_components(
    manifest: &Manifest,
    runtime: &Runtime,
) -> Result<Vec<(ComponentConfig, ProxyPre<InstanceState>)>, Vec<Diagnostic>> {
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
        for (name, database) in &c.sql {
            if let Err(why) = database.check() {
                problems.push(manifest.component_problem(c, format!("sql.{name}: {why}")));
            }
        }
        for (name, file) in &c.sql_schema {
            if let Err(why) = crate::data::sql::read_schema(file) {
                problems.push(manifest.component_problem(c, format!("sql.{name}: {why}")));
            }
        }
        for (name, store) in &c.keyvalue {
            if let Err(why) = store.check() {
                problems.push(manifest.component_problem(c, format!("keyvalue.{name}: {why}")));
            }
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
            .map(|(config, pre)| LoadedComponent {
                pool: InstancePool::new(&config),
                sql: Arc::new(crate::data::sql::Grants::new(&config.sql)),
                keyvalue: Arc::new(crate::data::kv::Grants::new(&config.keyvalue)),
                config,
                pre,
            })
            .collect();
        let shares = Arc::new(Shares::new(
            runtime.max_instances as usize,
            manifest.components.len(),
        ));
        let app = Arc::new(App {
            manifest,
            runtime,
            telemetry,
            components,
            shares,
            in_flight: Default::default(),
            idle: tokio::sync::Notify::new(),
        });
        tokio::spawn(expire_idle_instances(Arc::downgrade(&app)));
        Ok(app)
    }

    /// Run every granted database's `schema` file, in manifest order,
    /// before the app serves. The first failure stops it, naming the
    /// component, the grant, the file and the database's message.
    pub async fn apply_sql_schemas(&self) -> anyhow::Result<()> {
        for c in &self.components {
            c.sql
                .apply_schemas(&c.config.sql_schema)
                .await
                .map_err(|why| {
                    anyhow::anyhow!("cannot start the app: component `{}`: {why}", c.config.id)
                })?;
        }
        Ok(())
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

    /// Handle one request in component `idx`.
    pub fn handle(
        self: &Arc<Self>,
        idx: usize,
        request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> ResponseFuture {
        Box::pin(self.clone().serve(idx, request, inbound))
    }

    /// One request, start to end.
    async fn serve(
        self: Arc<Self>,
        idx: usize,
        mut request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> http::Response<HyperOutgoingBody> {
        let config = &self.components[idx].config;
        let deadline = Instant::now() + config.timeout;
        let hard_deadline = tokio::time::Instant::from_std(deadline + GRACE);
        // In-process calls pass too: only `http` targets are routed in-process.
        let refused = crate::http::check_host(&mut request, inbound.local)
            .and_then(|()| crate::http::check_scheme(request.uri()))
            .map_err(|why| (400, "BadRequest", why))
            .and_then(|()| {
                crate::http::check_transfer_coding(request.headers())
                    .map_err(|why| (501, "NotImplemented", why))
            });
        // Whether the host waits on the client for body bytes, for the
        // deadline below (in-process requests have no such note).
        let arrival = request
            .extensions()
            .get::<crate::http::listener::BodyArrival>()
            .cloned();
        // 1. The SERVER span, continuing the caller's trace if it sent one.
        let (mut server, trace) = ServerSpan::start(&self, idx, &request, &inbound);
        if let Err((status, error_type, why)) = refused {
            // Refused before it takes an instance (wasi:http could not
            // hand the guest a request without an authority, nor tell it
            // that its body is still transfer-coded).
            drop(trace);
            let fault = Fault::new(status, error_type, why.to_string());
            return server.fail(fault, self.component_metrics(idx));
        }
        // 2. The guest runs in a warm or a new instance, polled right here
        //    until it answers. A handler that writes its whole body before
        //    returning (most do) has finished by then too, and the request
        //    needs no task besides its connection's: no spawn, no hand-over
        //    between tasks or worker threads.
        let scope = self.request_scope(idx, trace, &inbound, deadline);
        let (sender, mut receiver) = oneshot::channel();
        let mut running = Running {
            app: self.clone(),
            idx,
            hard_deadline,
            guest: Some(Box::pin(
                AssertUnwindSafe(self.clone().run_guest(idx, scope, request, sender))
                    .catch_unwind(),
            )),
        };
        let first = tokio::time::timeout_at(hard_deadline, async {
            tokio::select! {
                // The guest first: when it has also finished, settle it here.
                biased;
                run = running.future() => First::Finished(run),
                answer = &mut receiver => First::Answered(answer.ok()),
            }
        })
        .await;
        let (answer, run) = match first {
            Ok(First::Finished(run)) => {
                // Finished: nothing is left to run.
                drop(running.take());
                (receiver.try_recv().ok(), Some(run))
            }
            Ok(First::Answered(answer)) => (answer, None),
            Err(_) => {
                // Read before the guest goes: dropping it ends the body.
                let stalled = arrival.is_some_and(|a| a.stalled());
                // Dropping the guest's future stops it.
                drop(running.take());
                self.discarded(idx, Discard::Timeout);
                let fault = if stalled {
                    // The guest was waiting for the client: 408, as before
                    // it had an instance, not the component's timeout.
                    Fault::body_stalled(config.timeout)
                } else {
                    Fault::timeout(config.timeout)
                };
                return server.fail(fault, self.component_metrics(idx));
            }
        };
        // A guest that failed (trapped) after answering, before anything
        // went out: the client gets the fault's 500, not a cut response.
        let failed = run.as_ref().is_some_and(GuestRun::failed_run);
        // 3. Its response (the body may still be streaming), or a fault.
        match answer {
            Some(Ok(response)) if !failed => {
                // A status the guest may not send as is (RFC 9110) is fixed
                // here; the span records what the client receives.
                let (response, enforced) = status::enforce(response, |original| {
                    server.error_response(
                        500,
                        status::INVALID_RESPONSE,
                        &status::replaced(original),
                    )
                });
                server.responded(response.status().as_u16());
                let mut response = server.answer(response);
                let pool = &self.components[idx].pool;
                pool.answered();
                // The SERVER span ends when the guest does: here, when it
                // has; else in a task that runs the rest of it (its body).
                match (run, enforced) {
                    (Some(run), None) => {
                        let fault = self.settle_run(idx, run, true, Some(&mut server));
                        pool.finished();
                        server.end(fault, self.component_metrics(idx));
                    }
                    (run, enforced) => {
                        let mut guest = running.take();
                        let failed = Arc::new(AtomicBool::new(false));
                        response = guarded(response, failed.clone());
                        let app = self.clone();
                        tokio::spawn(async move {
                            let run = match (run, guest.as_mut()) {
                                (Some(run), _) => Some(run),
                                (None, Some(guest)) => {
                                    tokio::time::timeout_at(hard_deadline, guest).await.ok()
                                }
                                // Cannot be: a guest that has not finished is taken
                                // only here.
                                (None, None) => None,
                            };
                            // Before the instance goes (its body ends then).
                            if run.as_ref().is_none_or(GuestRun::failed_run) {
                                failed.store(true, Ordering::Release);
                            }
                            drop(guest);
                            let fault = match run {
                                Some(run) => app.settle_run(idx, run, true, Some(&mut server)),
                                None => {
                                    // The guest's future was dropped: it stopped.
                                    app.discarded(idx, Discard::Timeout);
                                    Some(Fault::unfinished_body())
                                }
                            };
                            app.components[idx].pool.finished();
                            if let Some(enforced) = enforced
                                && let Some(why) = enforced.settle(hard_deadline).await
                            {
                                server.intervened(&why);
                            }
                            server.end(fault, app.component_metrics(idx));
                        });
                    }
                }
                response
            }
            answer => {
                let run = match run {
                    Some(run) => run,
                    None => running.future().await,
                };
                drop(running.take());
                let answered = answer.is_some();
                let fault = self.settle_run(idx, run, answered, Some(&mut server));
                let fault = match answer {
                    Some(Err(code)) => fault.unwrap_or_else(|| Fault::error_code(&code)),
                    // An answer here means the guest failed: `fault` is set.
                    _ => fault.unwrap_or_else(Fault::no_response),
                };
                server.fail(fault, self.component_metrics(idx))
            }
        }
    }

    /// [`App::settle`] a guest run, or report the host panic that ended it.
    fn settle_run(
        &self,
        idx: usize,
        run: std::thread::Result<GuestRun>,
        answered: bool,
        server: Option<&mut ServerSpan>,
    ) -> Option<Fault> {
        match run {
            Ok(run) => self.settle(idx, run, answered, server),
            Err(panic) => Some(Fault::host_panic(panic.as_ref())),
        }
    }

    /// What the guest reaches during this request: its trace, the
    /// component's instruments and logs, outbound dispatch, the deadline.
    fn request_scope(
        self: &Arc<Self>,
        idx: usize,
        trace: RequestTrace,
        inbound: &Inbound,
        deadline: Instant,
    ) -> RequestScope {
        RequestScope {
            telemetry: RequestTelemetry {
                trace,
                component: idx,
                metrics: self.component_metrics(idx).clone(),
                logs: self.telemetry.logs.clone(),
            },
            outbound: Outbound::new(self.clone(), idx, inbound.depth),
            deadline,
        }
    }

    /// Wait for the request to be ready (its body arriving), take a slot of
    /// the component's share and a warm instance (or make one), install the
    /// request, call the guest's handler, take the request out again.
    async fn run_guest(
        self: Arc<Self>,
        idx: usize,
        scope: RequestScope,
        request: http::Request<WasiBody>,
        sender: oneshot::Sender<Result<http::Response<WasiBody>, ErrorCode>>,
    ) -> GuestRun {
        let scheme = match request.uri().scheme_str() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let request = match crate::http::body::ready(request, scope.deadline).await {
            Ok(request) => request,
            Err(why) => return GuestRun::failed(Fault::body_not_ready(why)),
        };
        let Some(slot) = self.shares.take(idx) else {
            return GuestRun::failed(Fault::share_used(
                &self.components[idx].config.id,
                self.shares.busy(idx),
                self.shares.guaranteed(),
            ));
        };
        let pool = &self.components[idx].pool;
        let mut warm = match pool.take_or_wait(FINISHING_WAIT).await {
            Some(mut warm) => {
                self.component_metrics(idx).reuses.add(1, &[]);
                warm.store.data_mut().begin(scope);
                warm
            }
            None => match self.instantiate(idx, scope).await {
                Ok(warm) => warm,
                Err(fault) => return GuestRun::failed(fault),
            },
        };
        warm.served += 1;
        let Warm { store, proxy, .. } = &mut warm;
        store.set_epoch_deadline(1);
        let mut outparam = None;
        let call = async {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(scheme, request);
            let req = req.map_err(|e| Fault::bad_request(&e))?;
            let out = store.data_mut().http().new_response_outparam(sender);
            let out = out.map_err(|e| Fault::guest(&e))?;
            outparam = Some(out.rep());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await
                .map_err(|e| Fault::guest(&e))
        };
        let result = call.await;
        // An answer the guest never gave: drop it, so the waiting side hears.
        store.data_mut().drop_response_outparam(outparam);
        let end = store.data_mut().end();
        GuestRun {
            result,
            end: Some(end),
            instance: Some(warm),
            _slot: Some(slot),
        }
    }

    /// A new instance of component `idx`, with `scope` installed (start
    /// functions run inside the request that needed the instance). When
    /// `--max-instances` are alive, an idle instance of any component makes
    /// room; with none idle, the request is refused (503).
    async fn instantiate(&self, idx: usize, mut scope: RequestScope) -> Result<Warm, Fault> {
        let component = &self.components[idx];
        loop {
            let state = InstanceState::new(
                idx,
                &component.config.env,
                component.config.memory_bytes,
                &self.telemetry.logs,
                component.sql.clone(),
                component.keyvalue.clone(),
            );
            let mut store = Store::new(&self.runtime.engine, state);
            store.limiter(|s| &mut s.limits);
            store.epoch_deadline_callback(|store| match store.data().deadline() {
                Some(deadline) if Instant::now() >= deadline => Err(Trap::Interrupt.into()),
                // Yield so a busy guest never holds a worker thread.
                _ => Ok(UpdateDeadline::Yield(1)),
            });
            store.set_epoch_deadline(1);
            store.data_mut().begin(scope);
            match component.pre.instantiate_async(&mut store).await {
                Ok(proxy) => {
                    self.component_metrics(idx).instantiations.add(1, &[]);
                    return Ok(Warm::new(store, proxy));
                }
                Err(e)
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some() =>
                {
                    scope = store
                        .data_mut()
                        .take_request()
                        .expect("the request was installed above");
                    drop(store);
                    if !self.evict_idle_instance() {
                        return Err(Fault::overloaded(&e));
                    }
                }
                Err(e) => return Err(Fault::guest(&e)),
            }
        }
    }

    /// Settle a guest run: report what the limits changed on the SERVER
    /// span (`None`: it ended already, its client went away), give the
    /// instance back to the pool or throw it away, and return the guest's
    /// fault, if any. `answered`: the guest set a response.
    fn settle(
        &self,
        idx: usize,
        run: GuestRun,
        answered: bool,
        server: Option<&mut ServerSpan>,
    ) -> Option<Fault> {
        let GuestRun {
            result,
            end,
            instance,
            _slot: slot,
        } = run;
        if let Some(end) = end
            && let Some(server) = server
        {
            server.adjust(end, self.component_metrics(idx));
        }
        let fault = result.err();
        let pool = &self.components[idx].pool;
        let verdict = match (&fault, instance) {
            (_, None) => None,
            (Some(f), Some(_)) => Some(f.discard()),
            (None, Some(warm)) if !answered => {
                if warm.served > 1 && pool.stop_reuse() {
                    tracing::warn!(
                        component = %self.components[idx].config.id,
                        "a warm instance returned without answering, and no warm instance of this \
                         component has answered yet: it cannot serve two requests on one instance, \
                         so from now on it gets a fresh instance per request. A JavaScript component \
                         built from `addEventListener('fetch', ...)` cannot (StarlingMonkey issue \
                         247): export `incomingHandler = serve(handler)` from polytrace.js instead, \
                         or set `isolation = \"per-request\"` in the manifest"
                    );
                    for _ in 0..pool.expire(Duration::ZERO) {
                        self.discarded(idx, Discard::PerRequest);
                    }
                }
                Some(Discard::NoResponse)
            }
            (None, Some(mut warm)) => {
                if warm.served > 1 {
                    pool.reused_answered();
                }
                let verdict = pool.verdict(&mut warm);
                if verdict.is_none() {
                    pool.put(warm);
                }
                verdict
            }
        };
        if let Some(reason) = verdict {
            self.discarded(idx, reason);
        }
        // The instance is back in its pool or gone: its slot is free.
        drop(slot);
        fault
    }

    /// Count an instance of component `idx` thrown away.
    fn discarded(&self, idx: usize, reason: Discard) {
        self.component_metrics(idx)
            .discards
            .add(1, &[KeyValue::new(DISCARD_REASON, reason.as_str())]);
    }

    /// Drop one idle instance of any component to free its slot; false
    /// when no instance is idle.
    fn evict_idle_instance(&self) -> bool {
        for (idx, c) in self.components.iter().enumerate() {
            if c.pool.evict_one() {
                self.discarded(idx, Discard::Evicted);
                return true;
            }
        }
        false
    }

    fn component_metrics(&self, idx: usize) -> &Arc<ComponentMetrics> {
        self.telemetry.metrics.component(idx)
    }

    /// Wait (at most `timeout`) until every request's SERVER span has ended:
    /// a response can reach the client before its span ends (the guest may
    /// still be finishing), and shutdown flushes only after this.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }
}

impl Dispatcher for App {
    fn component_index(&self, host: &str) -> Option<usize> {
        App::component_index(self, host)
    }

    fn component_id(&self, idx: usize) -> &str {
        App::component_id(self, idx)
    }

    fn allows(&self, from: usize, scheme: &str, host: &str, port: u16) -> bool {
        self.components[from]
            .config
            .allowed_outbound_hosts
            .iter()
            .any(|a| a.allows(scheme, host, port))
    }

    fn share(&self, from: usize, scheme: &str, host: &str, port: u16) -> Share {
        self.components[from]
            .config
            .propagation
            .share(scheme, host, port)
    }

    fn dispatch(
        self: Arc<Self>,
        to: usize,
        request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> ResponseFuture {
        self.handle(to, request, inbound)
    }
}

/// Drop instances idle longer than their component's idle timeout, until
/// the app is gone; looks four times per shortest timeout.
async fn expire_idle_instances(app: std::sync::Weak<App>) {
    let Some(shortest) = app
        .upgrade()
        .and_then(|a| a.components.iter().map(|c| c.pool.idle_timeout).min())
    else {
        return;
    };
    let period = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        for (idx, c) in app.components.iter().enumerate() {
            for _ in 0..c.pool.expire(c.pool.idle_timeout) {
                app.discarded(idx, Discard::Idle);
            }
        }
    }
}

/// `response` with a body that fails at its end once `failed` is set.
fn guarded(
    response: http::Response<HyperOutgoingBody>,
    failed: Arc<AtomicBool>,
) -> http::Response<HyperOutgoingBody> {
    response.map(|body| crate::http::body::Guarded::new(body, failed).boxed_unsync())
}

/// Running the guest for one request, panics caught.
type GuestFuture =
    std::pin::Pin<Box<dyn Future<Output = std::thread::Result<GuestRun>> + Send + 'static>>;

/// The guest's run while `serve` polls it. Should `serve` be dropped with
/// the guest unfinished (hyper drops it when the client goes away), the
/// guest finishes in a task of its own, as it would with the client still
/// there: it is never stopped halfway by someone else's disconnect, its
/// spans are kept, and its instance is settled.
struct Running {
    app: Arc<App>,
    idx: usize,
    hard_deadline: tokio::time::Instant,
    /// `None` once `serve` has taken it (to finish it elsewhere, or to
    /// stop it at the deadline) or it has finished.
    guest: Option<GuestFuture>,
}

impl Running {
    /// The guest's future, to poll. Panics once taken.
    fn future(&mut self) -> &mut GuestFuture {
        self.guest.as_mut().expect("the guest's run, not taken yet")
    }

    /// Take the guest's future (`None` once taken): `serve` sees to it
    /// from here.
    fn take(&mut self) -> Option<GuestFuture> {
        self.guest.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(guest) = self.guest.take() else {
            return;
        };
        // Dropped outside the runtime (not hyper's way): no task can start,
        // the guest stops here.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (app, idx, hard_deadline) = (self.app.clone(), self.idx, self.hard_deadline);
        runtime.spawn(async move {
            match tokio::time::timeout_at(hard_deadline, guest).await {
                // Whether it answered is unknown (nobody listens any more):
                // taken as answered, so that this is never mistaken for a
                // component that cannot serve twice on one instance.
                Ok(run) => {
                    if let Some(fault) = app.settle_run(idx, run, true, None) {
                        fault.count(app.component_metrics(idx));
                    }
                }
                Err(_) => app.discarded(idx, Discard::Timeout),
            }
        });
    }
}

/// What happened first while the guest ran.
enum First {
    /// It returned (having answered or not).
    Finished(std::thread::Result<GuestRun>),
    /// It answered and is still running; `None`: it dropped its answer.
    Answered(Option<Result<http::Response<WasiBody>, ErrorCode>>),
}

/// What running the guest for one request gave.
struct GuestRun {
    result: Result<(), Fault>,
    /// What the guest's telemetry left for the SERVER span, unless it never ran.
    end: Option<RequestEnd>,
    /// The instance, unless there never was one.
    instance: Option<Warm>,
    /// Its slot of the component's share, given back once it is settled.
    _slot: Option<Slot>,
}

impl GuestRun {
    /// Whether a run failed: the guest trapped or timed out, or the host
    /// panicked running it.
    fn failed_run(run: &std::thread::Result<GuestRun>) -> bool {
        run.as_ref().map_or(true, |r| r.result.is_err())
    }

    fn failed(fault: Fault) -> GuestRun {
        GuestRun {
            result: Err(fault),
            end: None,
            instance: None,
            _slot: None,
        }
    }
}

/// Why a request failed, in the host or in the guest: the status answered,
/// the `error.type` recorded on the SERVER span and in
/// `http.server.request.duration`, the message for the span and the client,
/// and which health counter it counts in.
#[derive(Debug)]
pub struct Fault {
    pub status: u16,
    /// `error.type`: `Timeout`, `Trap::UnreachableCodeReached`, ...
    pub kind: String,
    pub message: String,
    /// The wasm backtrace of a trap.
    pub backtrace: Option<String>,
    counter: Counter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    None,
    Trap,
    Timeout,
}

impl Fault {
    fn new(status: u16, kind: &str, message: String) -> Fault {
        Fault {
            status,
            kind: kind.to_string(),
            message,
            backtrace: None,
            counter: Counter::None,
        }
    }

    /// The guest trapped, was interrupted at its deadline, or failed in a
    /// host call.
    fn guest(e: &wasmtime::Error) -> Fault {
        let backtrace = e
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| bt.to_string())
            .filter(|s| !s.trim().is_empty());
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault {
                counter: Counter::Timeout,
                ..Fault::new(
                    504,
                    "Timeout",
                    "the component ran past its timeout and was interrupted".into(),
                )
            },
            trap => {
                // The root cause first, then the context chain, without the backtrace.
                let chain: Vec<String> = e
                    .chain()
                    .map(|c| c.to_string())
                    .filter(|s| !s.contains("wasm backtrace:"))
                    .collect();
                let kind = match trap {
                    Some(trap) => format!("Trap::{trap:?}"),
                    None => "GuestError".to_string(),
                };
                Fault {
                    backtrace,
                    counter: if trap.is_some() {
                        Counter::Trap
                    } else {
                        Counter::None
                    },
                    ..Fault::new(500, &kind, chain.join(": "))
                }
            }
        }
    }

    /// The request could not be handed to the guest.
    fn bad_request(e: &wasmtime::Error) -> Fault {
        Fault::new(400, "BadRequest", format!("{e:#}"))
    }

    /// `--max-instances` are alive and none is idle.
    fn overloaded(e: &wasmtime::Error) -> Fault {
        Fault::new(
            503,
            "Overloaded",
            format!(
                "the host is running its limit of instances at once ({e}); retry shortly \
                 or raise --max-instances"
            ),
        )
    }

    /// The request body did not arrive (in time, or whole) before the guest
    /// could start.
    fn body_not_ready(why: crate::http::body::NotReady) -> Fault {
        use crate::http::body::NotReady;
        match why {
            NotReady::TimedOut { received } => Fault::new(
                408,
                "RequestTimeout",
                format!(
                    "the request body did not arrive within the component's timeout \
                     ({received} bytes came)"
                ),
            ),
            NotReady::Failed(e) => {
                Fault::new(400, "BadRequest", format!("the request body failed: {e}"))
            }
        }
    }

    /// At the component's timeout the host was waiting for request body
    /// bytes the client had not sent: the client's delay (408), not the
    /// component's.
    fn body_stalled(timeout: Duration) -> Fault {
        Fault::new(
            408,
            "RequestTimeout",
            format!(
                "the request body had not arrived whole within the component's timeout of \
                 {} ms",
                timeout.as_millis()
            ),
        )
    }

    /// The component uses its share of `--max-instances`.
    fn share_used(component: &str, busy: usize, guaranteed: usize) -> Fault {
        Fault::new(
            503,
            "Overloaded",
            format!(
                "component `{component}` has {busy} requests running, its share of --max-instances \
                 (each component keeps {guaranteed} for itself); retry shortly or raise --max-instances"
            ),
        )
    }

    /// No response within the component's timeout.
    fn timeout(timeout: Duration) -> Fault {
        Fault {
            counter: Counter::Timeout,
            ..Fault::new(
                504,
                "Timeout",
                format!(
                    "the component did not respond within its timeout of {} ms",
                    timeout.as_millis()
                ),
            )
        }
    }

    /// The response head went out, the body did not finish in time.
    fn unfinished_body() -> Fault {
        Fault {
            counter: Counter::Timeout,
            ..Fault::new(
                504,
                "Timeout",
                "the component did not finish its response body in time".into(),
            )
        }
    }

    /// The guest answered with a wasi:http error code.
    fn error_code(code: &ErrorCode) -> Fault {
        Fault::new(
            500,
            "ErrorCode",
            format!("the component answered with error {code:?}"),
        )
    }

    /// The handler returned without setting a response.
    fn no_response() -> Fault {
        Fault::new(
            500,
            "NoResponse",
            "the component returned without setting a response".into(),
        )
    }

    /// The host code running the guest panicked (`panic`: the payload).
    fn host_panic(panic: &(dyn std::any::Any + Send)) -> Fault {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        Fault::new(
            500,
            "HostPanic",
            format!("the host panicked running the guest: {message}"),
        )
    }

    /// Why an instance that failed this way is not reused.
    fn discard(&self) -> Discard {
        match self.counter {
            Counter::Timeout => Discard::Timeout,
            _ => Discard::Trap,
        }
    }

    /// Count the fault in the component's health metrics.
    fn count(&self, m: &ComponentMetrics) {
        match self.counter {
            Counter::Trap => m
                .traps
                .add(1, &[KeyValue::new("error.type", self.kind.clone())]),
            Counter::Timeout => m.timeouts.add(1, &[]),
            Counter::None => {}
        }
    }
}

/// The SERVER span of one request and its `http.server.*` metrics; ends
/// exactly once, when it is consumed ([`ServerSpan::end`] or
/// [`ServerSpan::fail`]) or dropped.
struct ServerSpan {
    span: WireSpan,
    /// The method as the span's name starts (`GET`, or `HTTP`).
    method_name: &'static str,
    /// `http.route`: the manifest's route, or the one the guest's framework
    /// matched; set on the span when it ends.
    route: Option<String>,
    /// The guest's attributes for the span, set after every host attribute
    /// when it ends (under an attribute count limit, the guest's go first).
    guest_attributes: Vec<KeyValue>,
    metrics: RequestMetrics,
    /// The `traceresponse` header (W3C Trace Context Level 2).
    traceresponse: String,
    status: u16,
    /// Ended by [`ServerSpan::end`] or [`ServerSpan::fail`] (else by its
    /// drop: the request was cancelled).
    ended: bool,
}

/// `error.type` of a request whose task was cancelled before it ended:
/// the client disconnected before the guest answered (or the host stopped
/// past its shutdown grace). The guest itself finishes on its own.
pub const REQUEST_CANCELLED: &str = "RequestCancelled";

impl ServerSpan {
    /// Open the SERVER span of `request`, continuing the caller's trace
    /// when it sent a valid `traceparent`; returns it with the request's
    /// trace state for the guest.
    fn start(
        app: &Arc<App>,
        idx: usize,
        request: &http::Request<WasiBody>,
        inbound: &Inbound,
    ) -> (ServerSpan, RequestTrace) {
        let config = &app.components[idx].config;
        let extracted = propagation::extract(
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let uri = request.uri();
        let host_header = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let authority = uri.authority().map(|a| a.to_string()).or(host_header);
        let scheme = uri.scheme_str().unwrap_or("http");
        let (server_address, server_port) =
            split_authority(authority.as_deref(), inbound.local, scheme);
        let route = config
            .route
            .as_ref()
            .filter(|r| r.matches(uri.path()).is_some())
            .map(|r| r.http_route());
        let server_request = semconv::ServerRequest {
            method: request.method().as_str(),
            scheme,
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
            value_cap: app.telemetry.settings.max_attribute_value_length,
        };
        let metrics = RequestMetrics::start(app, idx, &server_request);
        let sink = app.telemetry.traces.sink(idx);
        // `http.route` is set when the span ends: the guest's framework may
        // name a finer route than the manifest's ([`ServerSpan::adjust`]).
        let mut attrs = server_request.attributes();
        attrs.retain(|kv| kv.key.as_str() != "http.route");
        if let Some(caller) = &inbound.caller {
            attrs.push(KeyValue::new("polytrace.caller.component", caller.clone()));
        }
        let span = WireSpan::start(
            sink,
            server_request.span_name(),
            SpanKind::Server,
            &attrs,
            extracted.parent.as_ref(),
        );
        let random = extracted
            .parent
            .as_ref()
            .is_none_or(|p| p.trace_flags().to_u8() & propagation::FLAG_RANDOM != 0);
        let trace = RequestTrace::new(
            app.telemetry.tracer(idx).clone(),
            sink.clone(),
            span.span_context().clone(),
            extracted.baggage,
            extracted.tracestate,
            random,
            app.telemetry.settings.max_attribute_value_length,
        );
        // W3C Trace Context Level 2: tell the caller which trace this became.
        let traceresponse = propagation::format_traceparent(trace.current());
        let server = ServerSpan {
            span,
            method_name: server_request.span_method(),
            route: route.clone(),
            guest_attributes: Vec::new(),
            metrics,
            traceresponse,
            status: 0,
            ended: false,
        };
        (server, trace)
    }

    /// The guest answered with `status`.
    fn responded(&mut self, status: u16) {
        let (attrs, st) = semconv::server_response(status);
        self.span.set_attributes(attrs);
        self.span.set_status(st);
        self.metrics
            .status(status, (status >= 500).then(|| status.to_string()));
        self.status = status;
    }

    /// What the guest's framework said about the request (its route,
    /// attributes, exceptions) and what the limits changed in the guest's
    /// telemetry, on the span.
    fn adjust(&mut self, end: RequestEnd, m: &ComponentMetrics) {
        let RequestEnd {
            adjustments,
            server,
        } = end;
        if let Some(route) = server.route {
            self.span
                .update_name(format!("{} {route}", self.method_name));
            self.metrics.route(route.clone());
            self.route = Some(route);
        }
        self.guest_attributes = server.attributes;
        for exception in server.exceptions {
            self.span.add_event("exception", exception);
        }
        self.span.set_attributes(adjustments.attributes());
        if adjustments.dropped_spans > 0 {
            m.dropped.add_spans(adjustments.dropped_spans);
        }
    }

    /// The guest's response, with `traceresponse`.
    fn answer(
        &self,
        mut response: http::Response<HyperOutgoingBody>,
    ) -> http::Response<HyperOutgoingBody> {
        add_traceresponse(&mut response, &self.traceresponse);
        response
    }

    /// End after the response went out; a fault found later (a trap while
    /// streaming the body, a timeout) is recorded on the span.
    fn end(mut self, fault: Option<Fault>, m: &ComponentMetrics) {
        if let Some(f) = fault {
            f.count(m);
            self.metrics.status(self.status, Some(f.kind.clone()));
            record_exception(&mut self.span, &f.kind, &f.message, f.backtrace);
        }
        self.end_span();
    }

    /// End the span: its `http.route`, then the guest's attributes (the
    /// host's own come first). Ending again does nothing.
    fn end_span(&mut self) {
        self.ended = true;
        if let Some(route) = self.route.take() {
            self.span.set_attribute(KeyValue::new("http.route", route));
        }
        let guest = std::mem::take(&mut self.guest_attributes);
        if !guest.is_empty() {
            self.span.set_attributes(guest);
        }
        self.span.end();
    }

    /// The host changed the guest's response (see [`status`]): the span
    /// says why, with Error status.
    fn intervened(&mut self, why: &str) {
        self.span.set_status(Status::error(why.to_string()));
        self.span
            .set_attribute(KeyValue::new("error.type", status::INVALID_RESPONSE));
        record_exception(&mut self.span, status::INVALID_RESPONSE, why, None);
        self.metrics
            .status(self.status, Some(status::INVALID_RESPONSE.to_string()));
        tracing::warn!(
            trace_id = %self.span.span_context().trace_id(),
            "{}: {why}",
            status::INVALID_RESPONSE
        );
    }

    /// A JSON error response naming the trace, so the failure is easy to
    /// find: `{"error": message, "kind": kind, "trace_id": ...}`.
    fn error_response(
        &self,
        status: u16,
        kind: &str,
        message: &str,
    ) -> http::Response<HyperOutgoingBody> {
        let body = serde_json::json!({
            "error": message,
            "kind": kind,
            "trace_id": self.span.span_context().trace_id().to_string(),
        });
        let mut response = http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if status == 503 {
            response = response.header(http::header::RETRY_AFTER, "1");
        }
        response
            .body(full_body(body.to_string()))
            .expect("static response parts are valid")
    }

    /// End as failed and answer the fault's status with a JSON body that
    /// names the trace, so the failure is easy to find.
    fn fail(mut self, fault: Fault, m: &ComponentMetrics) -> http::Response<HyperOutgoingBody> {
        fault.count(m);
        let trace_id = self.span.span_context().trace_id().to_string();
        self.metrics.status(fault.status, Some(fault.kind.clone()));
        record_exception(&mut self.span, &fault.kind, &fault.message, fault.backtrace);
        let (attrs, _) = semconv::server_response(fault.status);
        self.span.set_attributes(attrs);
        self.span.set_status(Status::error(fault.message.clone()));
        self.end_span();
        tracing::warn!(
            trace_id,
            status = fault.status,
            "{}: {}",
            fault.kind,
            fault.message
        );
        let mut response = self.error_response(fault.status, &fault.kind, &fault.message);
        add_traceresponse(&mut response, &self.traceresponse);
        response
    }
}

/// A SERVER span dropped without [`ServerSpan::end`] or
/// [`ServerSpan::fail`] (its task cancelled: the client went away, the
/// host shut down) still ends with its `http.route`.
impl Drop for ServerSpan {
    fn drop(&mut self) {
        if !self.ended {
            // Cancelled before an answer went out: the span and the
            // duration metric say so (HTTP semantic conventions: a request
            // that ends without a status has an `error.type`).
            self.span
                .set_attribute(KeyValue::new("error.type", REQUEST_CANCELLED));
            self.metrics.cancelled();
        }
        self.end_span();
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
    /// Taken when the request is done.
    active: Option<ActiveRequest>,
    attrs: Vec<KeyValue>,
}

impl RequestMetrics {
    fn start(app: &Arc<App>, idx: usize, r: &semconv::ServerRequest<'_>) -> RequestMetrics {
        app.in_flight.fetch_add(1, Ordering::AcqRel);
        let metrics = app.telemetry.metrics.component(idx);
        let active = metrics.server_active.start(r.method, r.scheme);
        let mut attrs = vec![
            KeyValue::new("http.request.method", semconv::known_method(r.method)),
            KeyValue::new("url.scheme", semconv::scheme_value(r.scheme)),
        ];
        attrs.extend(
            r.route
                .map(|route| KeyValue::new("http.route", route.to_string())),
        );
        attrs.push(KeyValue::new(
            "network.protocol.version",
            r.protocol_version,
        ));
        RequestMetrics {
            app: app.clone(),
            idx,
            started: Instant::now(),
            active: Some(active),
            attrs,
        }
    }

    /// The route template the guest's framework matched (`http.route`).
    fn route(&mut self, route: String) {
        self.attrs.retain(|kv| kv.key.as_str() != "http.route");
        self.attrs.push(KeyValue::new("http.route", route));
    }

    /// The request was cancelled before it ended: `error.type` without a
    /// status code, unless one was recorded.
    fn cancelled(&mut self) {
        if !self.attrs.iter().any(|kv| kv.key.as_str() == "error.type") {
            self.attrs
                .push(KeyValue::new("error.type", REQUEST_CANCELLED));
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
        if let Some(active) = self.active.take() {
            m.server_active.end(active);
        }
        m.server_duration
            .record(self.started.elapsed().as_secs_f64(), &self.attrs);
        // Dropped when the SERVER span has ended: the request is done.
        if self.app.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
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
