//! What a wasmtime store holds, split by lifetime: [`InstanceState`] lives
//! as long as the component instance (WASI context, resource table, memory
//! limits, the guest's stdout/stderr), and a [`RequestScope`] (telemetry,
//! outbound calls, deadline) is installed for one request and taken out
//! after it, so a warm instance can serve the next request with nothing of
//! the last one left reachable.

use crate::http::outbound::{IoFuture, Outbound, SentFuture};
use crate::telemetry::Adjustments;
use crate::telemetry::RequestTelemetry;
use crate::telemetry::logs::Logs;
use crate::telemetry::logs::stdio::GuestOutput;
use crate::telemetry::traces::CurrentSpan;
use crate::telemetry::traces::server::ServerNotes;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::types::HostResponseOutparam;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// What a finished request leaves for its SERVER span.
pub struct RequestEnd {
    /// What the limits changed in the guest's telemetry.
    pub adjustments: Adjustments,
    /// The route, attributes and exceptions the guest gave ([`ServerNotes`]).
    pub server: ServerNotes,
}

/// Resource handles (HTTP fields and bodies, streams, spans, ...) one
/// instance may hold at once; past this, the guest traps. Bounds what a guest
/// can make the host allocate on its behalf.
pub const MAX_RESOURCES_PER_INSTANCE: usize = 100_000;

/// The state of one store: one component instance, serving one request at
/// a time.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryLimits,
    /// The instance's stdout and stderr, to end a half-written line with
    /// the request it belongs to.
    output: [GuestOutput; 2],
    /// The current span as the guest's stdout and stderr see it; each
    /// request's trace state updates it.
    current: Arc<CurrentSpan>,
    /// The request being served; `None` between requests.
    request: Option<RequestScope>,
    /// Outbound hooks while no request is installed: everything is denied.
    no_request: NoRequest,
    /// The databases the component's manifest grants it.
    sql: Arc<crate::data::sql::Grants>,
    /// The key-value stores the component's manifest grants it.
    keyvalue: Arc<crate::data::kv::Grants>,
}

/// What belongs to one request inside an instance.
pub struct RequestScope {
    /// The request's trace state, the component's instruments and the logs.
    pub telemetry: RequestTelemetry,
    /// Outbound HTTP: who is calling, how deep, where to dispatch.
    pub outbound: Outbound,
    /// Past this the guest is interrupted (`Trap::Interrupt`).
    pub deadline: Instant,
}

impl InstanceState {
    /// A new instance's state for `component`: nothing granted but `env`
    /// (no files, sockets or name lookups), memories limited to
    /// `memory_bytes` each, and what the guest prints going to `logs` as log
    /// records.
    pub fn new(
        component: usize,
        env: &std::collections::BTreeMap<String, String>,
        memory_bytes: u64,
        logs: &Arc<Logs>,
        sql: Arc<crate::data::sql::Grants>,
        keyvalue: Arc<crate::data::kv::Grants>,
    ) -> InstanceState {
        let current = CurrentSpan::new(&opentelemetry::trace::SpanContext::empty_context());
        let stdout = GuestOutput::stdout(logs.clone(), component, current.clone());
        let stderr = GuestOutput::stderr(logs.clone(), component, current.clone());
        let env: Vec<(&String, &String)> = env.iter().collect();
        let wasi = WasiCtxBuilder::new()
            .envs(&env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES_PER_INSTANCE);
        InstanceState {
            wasi,
            http: WasiHttpCtx::new(),
            table,
            limits: MemoryLimits::new(memory_bytes),
            output: [stdout, stderr],
            current,
            request: None,
            no_request: NoRequest,
            sql,
            keyvalue,
        }
    }

    /// Install the request about to run; what the guest prints from now on
    /// is correlated with that request's current span.
    pub fn begin(&mut self, mut scope: RequestScope) {
        scope.telemetry.trace.share_current(self.current.clone());
        self.request = Some(scope);
    }

    /// Take the installed request out without ending anything (an
    /// instantiation that failed gives it back to be tried again).
    pub fn take_request(&mut self) -> Option<RequestScope> {
        self.request.take()
    }

    /// Take the finished request out: end the spans the guest left open
    /// (marked as ended by the host) and emit a half-written output line in
    /// the request it was written in. Returns what the limits changed in the
    /// request's guest telemetry and what the guest said about its SERVER span.
    pub fn end(&mut self) -> RequestEnd {
        let server = match self.request.as_mut() {
            Some(r) => r.telemetry.trace.take_server_notes(),
            None => Default::default(),
        };
        let adjustments = self.end_abandoned_spans();
        if !self.sql.is_empty() {
            crate::data::sql::end_request(&mut self.table);
        }
        for out in &self.output {
            out.end_line();
        }
        self.request = None;
        self.current
            .set(&opentelemetry::trace::SpanContext::empty_context());
        RequestEnd {
            adjustments,
            server,
        }
    }

    /// Drop the response outparam `rep` if the guest left it unset, so the
    /// host's side of it learns there will be no response.
    pub fn drop_response_outparam(&mut self, rep: Option<u32>) {
        let Some(rep) = rep else { return };
        let unset = self
            .table
            .get_any_mut(rep)
            .is_ok_and(|entry| entry.is::<HostResponseOutparam>());
        if unset {
            let _ = self
                .table
                .delete(Resource::<HostResponseOutparam>::new_own(rep));
        }
    }

    /// The request being served, or an error (a trap for the guest) when
    /// there is none; guest code only runs inside a request.
    pub fn request(&mut self) -> wasmtime::Result<&mut RequestScope> {
        installed(&mut self.request)
    }

    /// The request's telemetry and the resource table, borrowed together.
    pub fn telemetry_and_table(
        &mut self,
    ) -> wasmtime::Result<(&mut RequestTelemetry, &mut ResourceTable)> {
        let scope = installed(&mut self.request)?;
        Ok((&mut scope.telemetry, &mut self.table))
    }

    /// The deadline of the request being served, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.request.as_ref().map(|r| r.deadline)
    }

    /// The databases the component may open.
    pub fn sql_grants(&self) -> &crate::data::sql::Grants {
        &self.sql
    }

    /// The key-value stores the component may open.
    pub fn kv_grants(&self) -> &crate::data::kv::Grants {
        &self.keyvalue
    }

    /// Resource handles the instance holds now.
    pub fn handles(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

/// The installed request, or the error a guest call outside one gets.
fn installed(request: &mut Option<RequestScope>) -> wasmtime::Result<&mut RequestScope> {
    request
        .as_mut()
        .ok_or_else(|| wasmtime::format_err!("no request is being served by this instance"))
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let hooks: &mut dyn WasiHttpHooks = match &mut self.request {
            Some(scope) => scope,
            None => &mut self.no_request,
        };
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks,
        }
    }
}

impl WasiHttpHooks for RequestScope {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SentFuture {
        self.outbound.send(&self.telemetry, request, options)
    }
}

/// Hooks for an instance between requests: no request, no outbound calls.
struct NoRequest;

impl WasiHttpHooks for NoRequest {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SentFuture {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// The memory limit of every memory of an instance (a failed grow traps,
/// with a clear message), and the bytes its memories hold in total, which
/// decides whether a warm instance is kept.
pub struct MemoryLimits {
    limits: StoreLimits,
    bytes: usize,
    last_grant: usize,
}

impl MemoryLimits {
    fn new(memory_bytes: u64) -> MemoryLimits {
        MemoryLimits {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes as usize)
                .trap_on_grow_failure(true)
                .build(),
            bytes: 0,
            last_grant: 0,
        }
    }

    /// Bytes of linear memory the instance's memories hold, all together.
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }
}

impl ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            // Memories are created through here too (current = 0).
            self.last_grant = desired.saturating_sub(current);
            self.bytes += self.last_grant;
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.bytes -= std::mem::take(&mut self.last_grant).min(self.bytes);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_count_what_is_granted() {
        let mut m = MemoryLimits::new(1 << 20);
        assert!(m.memory_growing(0, 64 << 10, None).unwrap());
        assert!(m.memory_growing(64 << 10, 128 << 10, None).unwrap());
        assert_eq!(m.memory_bytes(), 128 << 10);
        // Past the limit: the grow fails (a trap), nothing is counted.
        assert!(m.memory_growing(128 << 10, 2 << 20, None).is_err());
        assert_eq!(m.memory_bytes(), 128 << 10);
        // Granted, then failed in the OS: taken back.
        assert!(m.memory_growing(128 << 10, 256 << 10, None).unwrap());
        let _ = m.memory_grow_failed(wasmtime::format_err!("no memory"));
        assert_eq!(m.memory_bytes(), 128 << 10);
    }
}
