//! The query side of the embedded store: Jaeger's v1 HTTP JSON API (what
//! the Jaeger UI and Grafana's Jaeger data source call), a few polytrace
//! endpoints for the viewer (service map, per-operation summary), and the
//! viewer itself, all on one listener (`--ui`).
//!
//! Parameters are parsed by pure functions into typed queries
//! (`TraceQuery`, `DependencyQuery`) the way Jaeger's query service parses
//! them, so each rule is unit-tested without a server.

use crate::http::allowed_hosts::AllowedHosts;
use crate::http::listener::{self, ConnectionLimits, ListenerStats};
use crate::store::{
    AnswerBudget, Loaded, SpanSearch, Store, StoredSpan, TraceStatus, spans_within,
};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Traces returned by a search when `limit` is not given (Jaeger's default;
/// the Jaeger UI and the viewer send their own).
pub const DEFAULT_LIMIT: usize = 100;
/// The most a search returns.
pub const MAX_LIMIT: usize = 1500;
/// How far back a search looks with neither `start` nor `lookback`
/// (Jaeger's default).
const SEARCH_LOOKBACK: Duration = Duration::from_secs(2 * 86_400);
/// The same for polytrace's own views (service map, summary).
const VIEW_LOOKBACK: Duration = Duration::from_secs(3600);
/// How far back `/api/dependencies` looks without `lookback`, in ms
/// (Jaeger's default).
const DEPENDENCIES_LOOKBACK_MS: i64 = 86_400_000;

/// Spans one answer of the query API may hold, by default
/// (`--query-max-spans`): a search returns the traces that fit, and names
/// the others in `errors`.
pub const DEFAULT_MAX_ANSWER_SPANS: usize = 10_000;
/// Bytes of span data one answer may hold, by default (`--query-max-mb`).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 32 << 20;
/// How long one query may run in the store before it is interrupted (and
/// answered 503).
pub const QUERY_TIME_BUDGET: Duration = Duration::from_secs(10);

/// The message of a trace a search found but its answer had no room for.
const LEFT_OUT: &str = "left out: the answer reached its budget (--query-max-spans, --query-max-mb); \
                        narrow the search or lower its limit";

/// Renders the Prometheus text exposition of the app's metrics.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The routes of the viewer listener: the viewer and its API when there is
/// a store, and Prometheus `GET /metrics` always.
pub fn router(store: Option<Arc<Store>>, metrics: MetricsSource, budget: AnswerBudget) -> Router {
    let scrape = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || metrics())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        header::CONTENT_TYPE,
                        crate::telemetry::metrics::prometheus::CONTENT_TYPE,
                    )],
                    text,
                )
            }
        }),
    );
    match store {
        Some(store) => scrape.merge(viewer_router(Viewer { store, budget })),
        None => scrape,
    }
}

/// What the viewer's handlers share.
#[derive(Clone)]
struct Viewer {
    store: Arc<Store>,
    budget: AnswerBudget,
}

impl axum::extract::FromRef<Viewer> for Arc<Store> {
    fn from_ref(v: &Viewer) -> Arc<Store> {
        v.store.clone()
    }
}

impl axum::extract::FromRef<Viewer> for AnswerBudget {
    fn from_ref(v: &Viewer) -> AnswerBudget {
        v.budget
    }
}

fn viewer_router(viewer: Viewer) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(operation_names))
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(one_trace))
        .route("/api/dependencies", get(dependencies))
        .route("/api/polytrace/service-map", get(service_map))
        .route("/api/polytrace/summary", get(summary))
        .route("/", get(viewer_page))
        .route("/search", get(viewer_page))
        .route("/trace/{trace_id}", get(viewer_page))
        .route("/map", get(viewer_page))
        .route("/summary", get(viewer_page))
        .route("/viewer.js", get(viewer_js))
        .route("/viewer.css", get(viewer_css))
        .with_state(viewer)
}

/// An API answer: Jaeger's envelope, or its error shape with a status.
enum Answer {
    /// `data` and its count; `errors` lists what was asked for and not
    /// found (traces looked up by id), `null` when empty.
    Data {
        data: Json,
        total: usize,
        errors: Vec<Json>,
    },
    Error(StatusCode, String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Answer::Data {
                data,
                total,
                errors,
            } => {
                let errors = (!errors.is_empty()).then_some(errors);
                (
                    StatusCode::OK,
                    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}),
                )
            }
            Answer::Error(status, msg) => (
                status,
                json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                       "errors": [{"code": status.as_u16(), "msg": msg}]}),
            ),
        };
        (status, axum::Json(body)).into_response()
    }
}

fn data(data: Json, total: usize) -> Answer {
    Answer::Data {
        data,
        total,
        errors: Vec::new(),
    }
}

fn bad(msg: impl Into<String>) -> Answer {
    Answer::Error(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found() -> Answer {
    Answer::Error(StatusCode::NOT_FOUND, TRACE_NOT_FOUND.into())
}

/// Jaeger's message for a trace id it has no spans for.
const TRACE_NOT_FOUND: &str = "trace not found";

fn internal(e: impl std::fmt::Display) -> Answer {
    Answer::Error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("trace store: {e}"),
    )
}

/// Run a store read off the async workers, within [`QUERY_TIME_BUDGET`].
async fn read<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Answer> {
    let store = store.clone();
    let deadline = std::time::Instant::now() + QUERY_TIME_BUDGET;
    tokio::task::spawn_blocking(move || store.read_within(Some(deadline), f))
        .await
        .map_err(internal)?
        .map_err(|e| {
            if crate::store::is_interrupted(&e) {
                Answer::Error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the query ran past its time budget of {} s and was stopped; \
                         narrow it (a shorter lookback, a service, fewer traces)",
                        QUERY_TIME_BUDGET.as_secs()
                    ),
                )
            } else {
                internal(e)
            }
        })
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

// ---- Parameters -----------------------------------------------------------

/// Query parameters in the order they came; `tag`, `tags` and `traceID`
/// may repeat.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `name`; an empty one counts as absent, as in Jaeger.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`, in order.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl From<&HashMap<String, String>> for Params {
    fn from(q: &HashMap<String, String>) -> Self {
        Params(q.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// Jaeger's wording for a parameter it could not parse.
fn param_error(name: &str, why: impl std::fmt::Display) -> String {
    format!("unable to parse param '{name}': {why}")
}

/// An integer parameter: `start`/`end` (µs since the epoch) or, for
/// dependencies, `endTs`/`lookback` (ms).
fn int_param(p: &Params, name: &str) -> Result<Option<i64>, String> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|e| param_error(name, format!("`{v}`: {e}")))
        })
        .transpose()
}

/// A boolean parameter as Go's `strconv.ParseBool` reads it; absent is false.
fn bool_param(p: &Params, name: &str) -> Result<bool, String> {
    match p.get(name) {
        None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some(v) => Err(param_error(name, format!("`{v}` is not true or false"))),
    }
}

/// Go's `time.ParseDuration`, which Jaeger parses `minDuration` and
/// `maxDuration` with, in nanoseconds: an optional sign, then one or more
/// numbers (with an optional fraction) each followed by a unit — `ns`,
/// `us` (or `µs`), `ms`, `s`, `m`, `h` — as in `1.5ms` or `1h2m`; `0`
/// alone needs no unit. With `days`, `d` is a unit too. `None` when the
/// text is not a duration or does not fit in 64 bits of nanoseconds.
fn go_duration_ns(s: &str, days: bool) -> Option<i64> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(digits(after)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" if days => 86_400_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Digits past the 19th change the result by well under a nanosecond.
        let fraction = &fraction[..fraction.len().min(19)];
        let part = match fraction {
            "" => 0,
            f => f.parse::<u128>().ok()? * unit_ns / 10u128.pow(f.len() as u32),
        };
        total = total.checked_add(whole.checked_mul(unit_ns)?.checked_add(part)?)?;
        rest = after;
    }
    let total = i128::try_from(total).ok()?;
    i64::try_from(if negative { -total } else { total }).ok()
}

/// A duration such as `1.5s`, `100ms`, `2h30m` or `7d`: Go's syntax (as
/// Jaeger takes it) plus `d` for days, not negative. For lookbacks and the
/// store's retention.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    match go_duration_ns(s, true) {
        Some(ns) => u64::try_from(ns)
            .map(Duration::from_nanos)
            .map_err(|_| format!("`{s}` is negative")),
        None => Err(format!(
            "`{s}` is not a duration (a number and a unit: ns, us, ms, s, m, h or d, as in 1.5s or 2h30m)"
        )),
    }
}

/// `minDuration` or `maxDuration` in nanoseconds; 0 means no bound, as in
/// Jaeger.
fn duration_bound(p: &Params, name: &str) -> Result<Option<i64>, String> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    match go_duration_ns(v, false) {
        Some(0) => Ok(None),
        Some(ns) => Ok(Some(ns)),
        None => Err(param_error(
            name,
            format!("`{v}` is not a duration (as in 1.5ms, 100us or 1h2m)"),
        )),
    }
}

/// The span start window in µs: `start` and `end`, else `lookback` (or
/// `default`) before `end`, which is now when not given. `lookback` is
/// polytrace's (Jaeger reads only `start` and `end`); `custom` means
/// "use `start`".
fn window(p: &Params, now_us: i64, default: Duration) -> Result<(i64, i64), String> {
    let end = int_param(p, "end")?.unwrap_or(now_us);
    let start = match int_param(p, "start")? {
        Some(start) => start,
        None => {
            let lookback = match p.get("lookback") {
                None | Some("custom") => default,
                Some(l) => parse_duration(l).map_err(|e| param_error("lookback", e))?,
            };
            i64::try_from(lookback.as_micros())
                .ok()
                .and_then(|l| end.checked_sub(l))
                .ok_or_else(|| param_error("lookback", "it reaches too far back"))?
        }
    };
    if start > end {
        return Err("'start' is after 'end'".into());
    }
    Ok((start, end))
}

/// A trace id as Jaeger takes it — 1 to 32 hex digits in either case —
/// left-padded with zeros to the 32 lowercase digits the store keys on.
fn parse_trace_id(s: &str) -> Result<String, String> {
    if s.len() > 32 {
        return Err(format!(
            "TraceID cannot be longer than 32 hex characters: {s}"
        ));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "malformed trace id `{s}`: 1 to 32 hex digits expected"
        ));
    }
    Ok(format!("{:0>32}", s.to_ascii_lowercase()))
}

/// The most tag filters one search may have: each is checked against every
/// candidate block, so thousands of them would be a way to make a query
/// slow.
pub const MAX_TAG_FILTERS: usize = 64;

/// The tag filters: each `tag=key:value`, then each `tags` — a JSON object
/// of strings as the Jaeger UI and Grafana send it, or polytrace's logfmt
/// `k=v k2=v2`. A later value for a key wins, so `tags` overrides `tag`
/// (as in Jaeger).
fn tag_filters(p: &Params) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for tag in p.all("tag") {
        let (k, v) = tag.split_once(':').ok_or_else(|| {
            format!("malformed 'tag' parameter, expecting key:value, received: {tag}")
        })?;
        tags.insert(k.to_string(), v.to_string());
    }
    for raw in p.all("tags").map(str::trim).filter(|t| !t.is_empty()) {
        if raw.starts_with('{') || raw == "null" {
            let object: Option<BTreeMap<String, String>> = serde_json::from_str(raw)
                .map_err(|e| format!("malformed 'tags' parameter, cannot unmarshal JSON: {e}"))?;
            tags.extend(object.unwrap_or_default());
            continue;
        }
        for kv in raw.split_whitespace() {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                format!("malformed 'tags' parameter: `{kv}` is neither JSON nor key=value")
            })?;
            tags.insert(k.to_string(), v.to_string());
        }
    }
    if tags.len() > MAX_TAG_FILTERS {
        return Err(format!(
            "{} tag filters: a search takes at most {MAX_TAG_FILTERS}",
            tags.len()
        ));
    }
    Ok(tags)
}

/// A search of `/api/traces`, parsed from its parameters.
#[derive(Debug, Clone, PartialEq)]
struct TraceQuery {
    /// `traceID` (repeatable): exactly these traces; the filters are
    /// checked but not applied, as in Jaeger.
    trace_ids: Vec<String>,
    service: Option<String>,
    operation: Option<String>,
    /// Every pair must be an attribute of one span (`error` matches the
    /// span's status).
    tags: BTreeMap<String, String>,
    /// Span start, µs since the epoch, both ends included.
    start_us: i64,
    end_us: i64,
    /// Span duration in whole µs, both ends included.
    min_duration_us: Option<i64>,
    max_duration_us: Option<i64>,
    limit: usize,
    status: Option<TraceStatus>,
}

/// Parse the parameters of `/api/traces` as Jaeger does, plus polytrace's
/// `lookback`, logfmt `tags` and `status`; the error is the message of a 400.
///
/// `service` may be left out (a search across services, which Jaeger
/// allows for stores that can do it), but not when `operation` is given.
/// `raw` (Jaeger: skip its clock-skew adjusters) is checked and changes
/// nothing here; `spanKind` (which Jaeger's search ignores too) and
/// `prettyPrint` are ignored.
fn parse_trace_query(p: &Params, now_us: i64) -> Result<TraceQuery, String> {
    let (start_us, end_us) = window(p, now_us, SEARCH_LOOKBACK)?;
    let tags = tag_filters(p)?;
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<i32>() {
            Ok(l) if l <= 0 => DEFAULT_LIMIT,
            Ok(l) => (l as usize).min(MAX_LIMIT),
            Err(e) => return Err(param_error("limit", format!("`{v}`: {e}"))),
        },
    };
    let min = duration_bound(p, "minDuration")?;
    let max = duration_bound(p, "maxDuration")?;
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err("'maxDuration' should be greater than 'minDuration'".into());
    }
    let mut trace_ids = Vec::new();
    for id in p.all("traceID") {
        let id = parse_trace_id(id).map_err(|e| format!("cannot parse traceID param: {e}"))?;
        if !trace_ids.contains(&id) {
            trace_ids.push(id);
        }
    }
    bool_param(p, "raw")?;
    let service = p.get("service").map(str::to_string);
    let operation = p.get("operation").map(str::to_string);
    if operation.is_some() && service.is_none() && trace_ids.is_empty() {
        return Err("'operation' needs 'service'".into());
    }
    let status = match p.get("status") {
        None => None,
        Some("error") => Some(TraceStatus::Error),
        Some("ok") => Some(TraceStatus::Ok),
        Some(s) => {
            return Err(param_error("status", format!("`{s}` (use error or ok)")));
        }
    };
    Ok(TraceQuery {
        trace_ids,
        service,
        operation,
        tags,
        start_us,
        end_us,
        // A span's duration is whole µs: round the bounds inwards.
        min_duration_us: min.map(|ns| ns / 1000 + i64::from(ns % 1000 > 0)),
        max_duration_us: max.map(|ns| ns.div_euclid(1000)),
        limit,
        status,
    })
}

/// The `GET /api/traces/{id}` lookup: the id, with `start`, `end` (µs) and
/// `raw` checked as Jaeger checks them (they are only hints to a store
/// that keeps every trace in one place).
fn parse_trace_lookup(id: &str, p: &Params) -> Result<String, String> {
    let id = parse_trace_id(id)?;
    int_param(p, "start")?;
    int_param(p, "end")?;
    bool_param(p, "raw")?;
    Ok(id)
}

/// What `/api/dependencies` asks for.
#[derive(Debug, Clone, PartialEq)]
struct DependencyQuery {
    /// Calls that started in this window, µs since the epoch, both ends
    /// included.
    start_us: i64,
    end_us: i64,
    /// Only the edges from or to this service.
    service: Option<String>,
}

/// `endTs` (ms since the epoch, default now) and `lookback` (ms, default a
/// day), as Jaeger reads them; `service` keeps the edges that touch it.
fn parse_dependency_query(p: &Params, now_us: i64) -> Result<DependencyQuery, String> {
    let end_ms = int_param(p, "endTs")?.unwrap_or(now_us / 1000);
    let lookback_ms = int_param(p, "lookback")?.unwrap_or(DEPENDENCIES_LOOKBACK_MS);
    if lookback_ms < 0 {
        return Err("'lookback' must not be negative".into());
    }
    let micros = |ms: i64| ms.checked_mul(1000);
    let end_us = micros(end_ms)
        .ok_or_else(|| param_error("endTs", format!("`{end_ms}` ms is out of range")))?;
    let start_us = end_ms
        .checked_sub(lookback_ms)
        .and_then(micros)
        .ok_or_else(|| param_error("lookback", "it reaches too far back"))?;
    Ok(DependencyQuery {
        start_us,
        end_us,
        service: p.get("service").map(str::to_string),
    })
}

// ---- Handlers -------------------------------------------------------------

async fn services(State(store): State<Arc<Store>>) -> Answer {
    match read(&store, crate::store::search::service_names).await {
        Ok(names) => {
            let n = names.len();
            data(json!(names), n)
        }
        Err(e) => e,
    }
}

/// `/api/services/{service}/operations`: the names, whatever the span kind.
async fn operation_names(State(store): State<Arc<Store>>, Path(service): Path<String>) -> Answer {
    match read(&store, move |c| {
        let mut names: Vec<String> = crate::store::search::operations(c, &service, None)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.dedup();
        Ok(names)
    })
    .await
    {
        Ok(names) => {
            let n = names.len();
            data(json!(names), n)
        }
        Err(e) => e,
    }
}

/// `/api/operations?service=&spanKind=`: `[{name, spanKind}]`, one entry
/// per name and kind; `spanKind` (`server`, `client`, `producer`,
/// `consumer`, `internal`) keeps that kind only.
async fn operations(
    State(store): State<Arc<Store>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let p = Params(q);
    let Some(service) = p.get("service").map(str::to_string) else {
        return bad("parameter 'service' is required");
    };
    let kind = p.get("spanKind").map(str::to_string);
    match read(&store, move |c| {
        Ok(
            crate::store::search::operations(c, &service, kind.as_deref())?
                .into_iter()
                .map(|(name, kind)| json!({"name": name, "spanKind": kind}))
                .collect::<Vec<Json>>(),
        )
    })
    .await
    {
        Ok(ops) => {
            let n = ops.len();
            data(Json::Array(ops), n)
        }
        Err(e) => e,
    }
}

/// `/api/traces`: the traces asked for by `traceID`, or the newest traces
/// with a span that matches every filter.
async fn search(
    State(store): State<Arc<Store>>,
    State(budget): State<AnswerBudget>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let query = match parse_trace_query(&Params(q), now_us()) {
        Ok(query) => query,
        Err(msg) => return bad(msg),
    };
    let found = if query.trace_ids.is_empty() {
        find(&store, query, budget).await
    } else {
        traces_by_id(&store, query.trace_ids, budget).await
    };
    match found {
        Ok(found) => found.answer(),
        Err(e) => e,
    }
}

/// The search behind `/api/traces`: traces in Jaeger's model, newest first,
/// or the message of a 400. With no answer budget: for benchmarks and
/// embedders.
pub async fn find_traces(
    store: &Arc<Store>,
    q: &HashMap<String, String>,
) -> Result<Vec<Json>, String> {
    let query = parse_trace_query(&Params::from(q), now_us())?;
    let budget = AnswerBudget::UNLIMITED;
    let found = if query.trace_ids.is_empty() {
        find(store, query, budget).await
    } else {
        traces_by_id(store, query.trace_ids, budget).await
    };
    found.map(|f| f.traces).map_err(|e| match e {
        Answer::Error(_, msg) => msg,
        Answer::Data { .. } => "unexpected answer".into(),
    })
}

impl TraceQuery {
    /// The store's search for this query (`error` becomes the span-status
    /// filter, as in Jaeger).
    fn search(&self) -> SpanSearch {
        let mut tags = self.tags.clone();
        let span_error = tags.remove("error").map(|v| v == "true");
        SpanSearch {
            service: self.service.clone(),
            operation: self.operation.clone(),
            tags,
            span_error,
            start_us: self.start_us,
            end_us: self.end_us,
            min_duration_us: self.min_duration_us,
            max_duration_us: self.max_duration_us,
            status: self.status,
            limit: self.limit,
        }
    }
}

/// Traces in Jaeger's model, in the order asked for, and those that are
/// not in it.
struct Found {
    traces: Vec<Json>,
    /// Asked for by id and not in the store.
    missing: Vec<String>,
    /// Found, but the answer's budget had no room for them.
    left_out: Vec<String>,
}

impl Found {
    /// Jaeger's envelope; each trace not given is an entry of `errors`.
    fn answer(self) -> Answer {
        let n = self.traces.len();
        let errors = self
            .missing
            .into_iter()
            .map(|id| json!({"msg": TRACE_NOT_FOUND, "traceID": id}))
            .chain(
                self.left_out
                    .into_iter()
                    .map(|id| json!({"code": 413, "msg": LEFT_OUT, "traceID": id})),
            )
            .collect();
        Answer::Data {
            data: Json::Array(self.traces),
            total: n,
            errors,
        }
    }
}

/// Run a filter search: the first `limit` distinct traces of the newest
/// matching spans (the store stops reading as soon as it has them), as
/// many whole as `budget` holds.
async fn find(store: &Arc<Store>, q: TraceQuery, budget: AnswerBudget) -> Result<Found, Answer> {
    let search = q.search();
    let (ids, loaded, services) = read(store, move |c| {
        let ids = crate::store::search::search(c, &search)?;
        let loaded = spans_within(c, &ids, budget)?;
        Ok((ids, loaded, services_of(c)?))
    })
    .await?;
    let mut found = in_order(&ids, loaded, &[], &services);
    // A trace expired between the search and the read is simply gone.
    found.missing.clear();
    Ok(found)
}

/// The traces of `ids` in Jaeger's model, in that order, each with a
/// warning when the budget cut its spans or (`logs_cut`) its log records.
fn in_order(ids: &[String], loaded: Loaded, logs_cut: &[String], services: &Services) -> Found {
    let mut by_trace: BTreeMap<&str, Vec<&StoredSpan>> = BTreeMap::new();
    for s in &loaded.spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
    }
    let left_out: HashSet<&String> = loaded.left_out.iter().collect();
    let mut traces = Vec::new();
    let mut missing = Vec::new();
    for id in ids.iter().filter(|id| !left_out.contains(id)) {
        let Some(spans) = by_trace.get(id.as_str()) else {
            missing.push(id.clone());
            continue;
        };
        let mut warnings = Vec::new();
        if loaded.truncated.as_ref() == Some(id) {
            warnings.push(format!(
                "only the first {} spans of this trace are shown: the answer reached its \
                 budget (--query-max-spans, --query-max-mb)",
                spans.len()
            ));
        }
        if logs_cut.contains(id) {
            warnings.push(
                "some log records of this trace are not shown: the answer reached its budget \
                 (--query-max-spans, --query-max-mb)"
                    .to_string(),
            );
        }
        traces.push(jaeger_trace(spans, services, warnings));
    }
    Found {
        traces,
        missing,
        left_out: loaded.left_out,
    }
}

/// The spans of `ids` with their log records, within `budget` (a record
/// counts as a span, and its bytes): each record shows on its span, after
/// the span's events, in time order. Also the traces whose records did not
/// all fit.
fn spans_with_logs(
    c: &rusqlite::Connection,
    ids: &[String],
    budget: AnswerBudget,
) -> rusqlite::Result<(Loaded, Vec<String>)> {
    let mut loaded = spans_within(c, ids, budget)?;
    let mut spans_left = budget.max_spans.saturating_sub(loaded.spans_used);
    let mut bytes_left = budget.max_bytes.saturating_sub(loaded.bytes_used);
    let index: HashMap<(String, String), usize> = loaded
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.trace_id.clone(), s.span_id.clone()), i))
        .collect();
    let mut logs_cut = Vec::new();
    let left_out: HashSet<String> = loaded.left_out.iter().cloned().collect();
    for id in ids.iter().filter(|id| !left_out.contains(*id)) {
        // One more than fits says whether some were left out.
        for (span_id, log) in crate::store::logs_of(c, id, spans_left.saturating_add(1))? {
            let size = crate::store::search::json_bytes(&log);
            if spans_left == 0 || size > bytes_left {
                logs_cut.push(id.clone());
                break;
            }
            if let Some(&i) = index.get(&(id.clone(), span_id))
                && let Json::Array(events) = &mut loaded.spans[i].events
            {
                events.push(log);
                spans_left -= 1;
                bytes_left -= size;
            }
        }
    }
    Ok((loaded, logs_cut))
}

/// Whole traces by id (normalised), in that order, as many as `budget`
/// holds, and the ids not found.
async fn traces_by_id(
    store: &Arc<Store>,
    ids: Vec<String>,
    budget: AnswerBudget,
) -> Result<Found, Answer> {
    let (ids, (loaded, logs_cut), services) = read(store, move |c| {
        let loaded = spans_with_logs(c, &ids, budget)?;
        Ok((ids, loaded, services_of(c)?))
    })
    .await?;
    Ok(in_order(&ids, loaded, &logs_cut, &services))
}

/// `GET /api/traces/{id}`: one whole trace (cut at the answer budget, with
/// a warning), 404 when the store has no span of it.
async fn one_trace(
    State(store): State<Arc<Store>>,
    State(budget): State<AnswerBudget>,
    Path(trace_id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let id = match parse_trace_lookup(&trace_id, &Params(q)) {
        Ok(id) => id,
        Err(msg) => return bad(msg),
    };
    match traces_by_id(&store, vec![id], budget).await {
        Ok(found) if found.traces.is_empty() => not_found(),
        Ok(found) => data(Json::Array(found.traces), 1),
        Err(e) => e,
    }
}

/// service → (language, resource tags).
type Services = HashMap<String, (String, Json)>;

fn services_of(c: &rusqlite::Connection) -> rusqlite::Result<Services> {
    crate::store::search::registered_services(c)
}

/// One trace in Jaeger's JSON model.
fn jaeger_trace(spans: &[&StoredSpan], services: &Services, warnings: Vec<String>) -> Json {
    let mut process_ids: BTreeMap<&str, String> = BTreeMap::new();
    for s in spans {
        let next = format!("p{}", process_ids.len() + 1);
        process_ids.entry(s.service.as_str()).or_insert(next);
    }
    let processes: serde_json::Map<String, Json> = process_ids
        .iter()
        .map(|(service, id)| {
            let tags = services
                .get(*service)
                .map(|(_, r)| r.clone())
                .unwrap_or(json!([]));
            (id.clone(), json!({"serviceName": service, "tags": tags}))
        })
        .collect();
    let trace_id = spans
        .first()
        .map(|s| s.trace_id.clone())
        .unwrap_or_default();
    let spans: Vec<Json> = spans
        .iter()
        .map(|s| {
            let mut tags = s.attributes.as_array().cloned().unwrap_or_default();
            tags.push(json!({"key": "span.kind", "type": "string", "value": s.kind}));
            match s.status {
                2 => {
                    tags.push(json!({"key": "error", "type": "bool", "value": true}));
                    tags.push(
                        json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}),
                    );
                    if !s.status_message.is_empty() {
                        tags.push(json!({"key": "otel.status_description", "type": "string",
                                         "value": s.status_message}));
                    }
                }
                1 => tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"})),
                _ => {}
            }
            let logs: Vec<Json> = s
                .events
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|e| {
                            let mut fields = vec![json!({"key": "event", "type": "string",
                                                         "value": e["name"]})];
                            fields.extend(e["attributes"].as_array().cloned().unwrap_or_default());
                            json!({"timestamp": e["timestamp"], "fields": fields})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let references = if s.parent_id.is_empty() {
                json!([])
            } else {
                json!([{"refType": "CHILD_OF", "traceID": s.trace_id, "spanID": s.parent_id}])
            };
            json!({
                "traceID": s.trace_id,
                "spanID": s.span_id,
                "operationName": s.operation,
                "references": references,
                "flags": 1,
                "startTime": s.start_us,
                "duration": s.duration_us,
                "tags": tags,
                "logs": logs,
                "processID": process_ids[s.service.as_str()],
                "warnings": null,
            })
        })
        .collect();
    let warnings = (!warnings.is_empty()).then(|| json!(warnings));
    json!({"traceID": trace_id, "spans": spans, "processes": processes, "warnings": warnings})
}

/// `/api/dependencies?endTs=&lookback=&service=`: calls between services
/// (a span whose parent is another service's), counted per edge.
async fn dependencies(
    State(store): State<Arc<Store>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let query = match parse_dependency_query(&Params(q), now_us()) {
        Ok(query) => query,
        Err(msg) => return bad(msg),
    };
    match read(&store, move |c| {
        let Calls { names, calls } = calls(c, query.start_us, query.end_us)?;
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for call in &calls {
            let (parent, child) = (
                names[call.caller as usize].as_str(),
                names[call.callee as usize].as_str(),
            );
            if query
                .service
                .as_ref()
                .is_none_or(|s| s == parent || s == child)
            {
                *counts.entry((parent, child)).or_default() += 1;
            }
        }
        Ok(counts
            .into_iter()
            .map(|((parent, child), n)| json!({"parent": parent, "child": child, "callCount": n}))
            .collect::<Vec<Json>>())
    })
    .await
    {
        Ok(edges) => {
            let n = edges.len();
            data(Json::Array(edges), n)
        }
        Err(e) => e,
    }
}

/// How far before a window a caller's span is looked for: a call whose
/// callee started in the window is counted even if its caller started up
/// to this long before the window.
const CALLER_MARGIN_US: i64 = 60_000_000;

/// One call between services: indices into [`Calls::names`], and the
/// callee span's duration and status.
struct Call {
    caller: u32,
    callee: u32,
    duration_us: i64,
    failed: bool,
}

/// The calls between services whose callee span started in a window.
struct Calls {
    names: Vec<String>,
    calls: Vec<Call>,
}

/// Every span of the window whose parent span is of another service, as a
/// [`Call`]. Spans are keyed by their ids as numbers and services by index,
/// so the join holds ~50 bytes a span of the window, not its strings.
fn calls(c: &rusqlite::Connection, start_us: i64, end_us: i64) -> rusqlite::Result<Calls> {
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut service_of: HashMap<(u128, u64), u32> = HashMap::new();
    // (trace, parent span, service, duration, failed) of each child span.
    let mut children: Vec<(u128, u64, u32, i64, bool)> = Vec::new();
    crate::store::search::scan_window(c, start_us.saturating_sub(CALLER_MARGIN_US), end_us, |s| {
        let Ok(trace) = u128::from_str_radix(&s.trace_id, 16) else {
            return;
        };
        let service = match index.get(&s.service) {
            Some(i) => *i,
            None => {
                let i = names.len() as u32;
                index.insert(s.service.clone(), i);
                names.push(s.service.clone());
                i
            }
        };
        if let Ok(span) = u64::from_str_radix(&s.span_id, 16) {
            service_of.insert((trace, span), service);
        }
        if s.start_us >= start_us
            && let Ok(parent) = u64::from_str_radix(&s.parent_id, 16)
        {
            children.push((trace, parent, service, s.duration_us, s.failed));
        }
    })?;
    let calls = children
        .into_iter()
        .filter_map(|(trace, parent, callee, duration_us, failed)| {
            let caller = *service_of.get(&(trace, parent))?;
            (caller != callee).then_some(Call {
                caller,
                callee,
                duration_us,
                failed,
            })
        })
        .collect();
    Ok(Calls { names, calls })
}

/// The value at quantile `q` of sorted values.
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(mut durations: Vec<i64>) -> Json {
    durations.sort_unstable();
    json!({
        "p50": quantile(&durations, 0.50),
        "p95": quantile(&durations, 0.95),
        "p99": quantile(&durations, 0.99),
    })
}

/// Services (with languages) and the calls between them over a window:
/// request count, error percentage and callee latency per edge.
async fn service_map(
    State(store): State<Arc<Store>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let (start, end) = match window(&Params(q), now_us(), VIEW_LOOKBACK) {
        Ok(w) => w,
        Err(msg) => return bad(msg),
    };
    let rows = read(&store, move |c| {
        let Calls { names, calls } = calls(c, start, end)?;
        // Per edge: the callee durations and the failed calls.
        let mut by_index: BTreeMap<(u32, u32), (Vec<i64>, i64)> = BTreeMap::new();
        for call in calls {
            let e = by_index.entry((call.caller, call.callee)).or_default();
            e.0.push(call.duration_us);
            e.1 += i64::from(call.failed);
        }
        let edges: BTreeMap<(String, String), (Vec<i64>, i64)> = by_index
            .into_iter()
            .map(|((from, to), e)| {
                (
                    (names[from as usize].clone(), names[to as usize].clone()),
                    e,
                )
            })
            .collect();
        let mut roots: BTreeMap<String, i64> = BTreeMap::new();
        crate::store::search::scan_window(c, start, end, |s| {
            if s.parent_id.is_empty() {
                *roots.entry(s.service).or_default() += 1;
            }
        })?;
        Ok((
            edges,
            roots.into_iter().collect::<Vec<_>>(),
            services_of(c)?,
        ))
    })
    .await;
    let (edges, roots, services) = match rows {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut nodes: BTreeMap<String, Json> = BTreeMap::new();
    for (from, to) in edges.keys() {
        for s in [from, to] {
            nodes.insert(s.clone(), Json::Null);
        }
    }
    for (s, _) in &roots {
        nodes.insert(s.clone(), Json::Null);
    }
    let nodes: Vec<Json> = nodes
        .keys()
        .map(|s| {
            json!({
                "service": s,
                "language": services.get(s).map(|(l, _)| l.as_str()).unwrap_or("unknown"),
                "entry_requests": roots.iter().find(|(r, _)| r == s).map_or(0, |(_, n)| *n),
            })
        })
        .collect();
    let edges: Vec<Json> = edges
        .into_iter()
        .map(|((from, to), (durations, errors))| {
            let n = durations.len();
            json!({
                "from": from,
                "to": to,
                "requests": n,
                "errors": errors,
                "error_percent": if n == 0 { 0.0 } else { errors as f64 * 100.0 / n as f64 },
                "latency_us": latency(durations),
            })
        })
        .collect();
    data(json!({"nodes": nodes, "edges": edges}), 1)
}

/// Per service and operation over a window: rate, error %, latency.
async fn summary(
    State(store): State<Arc<Store>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Answer {
    let (start, end) = match window(&Params(q), now_us(), VIEW_LOOKBACK) {
        Ok(w) => w,
        Err(msg) => return bad(msg),
    };
    let rows = read(&store, move |c| {
        let mut rows = Vec::new();
        crate::store::search::scan_window(c, start, end, |s| {
            rows.push((s.service, s.operation, s.kind, s.duration_us, s.failed));
        })?;
        Ok(rows)
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return e,
    };
    // In floating point: `start` and `end` are the client's, and their
    // difference can overflow an i64.
    let seconds = ((end as f64 - start as f64) / 1e6).max(1e-6);
    let mut groups: BTreeMap<(String, String, String), (Vec<i64>, i64)> = BTreeMap::new();
    for (service, operation, kind, duration, failed) in rows {
        let g = groups.entry((service, operation, kind)).or_default();
        g.0.push(duration);
        g.1 += i64::from(failed);
    }
    let out: Vec<Json> = groups
        .into_iter()
        .map(|((service, operation, kind), (durations, errors))| {
            let n = durations.len();
            json!({
                "service": service,
                "operation": operation,
                "kind": kind,
                "count": n,
                "rate_per_second": n as f64 / seconds,
                "error_percent": errors as f64 * 100.0 / n as f64,
                "latency_us": latency(durations),
            })
        })
        .collect();
    let n = out.len();
    data(Json::Array(out), n)
}

async fn viewer_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../viewer/index.html"),
    )
}

async fn viewer_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../viewer/viewer.js"),
    )
}

async fn viewer_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../viewer/viewer.css"),
    )
}

/// How long the viewer's listener waits for the queries in flight at
/// shutdown before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Answers at least this large (by `Content-Length`) give their memory back.
const TRIM_AFTER_BYTES: u64 = 256 << 10;

/// Give the memory a large answer used back to the system once it is
/// freed. A query builds its answer in many small allocations; glibc keeps
/// what is freed in its per-thread arenas, so without this one large answer
/// leaves the process that much bigger for good. In the background, one at
/// a time (it walks the heap: a few ms), and only after answers of at least
/// [`TRIM_AFTER_BYTES`].
fn release_freed_memory(answer_bytes: Option<u64>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static TRIMMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if answer_bytes.is_none_or(|n| n < TRIM_AFTER_BYTES)
            || TRIMMING.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only returns free pages; it has no
            // preconditions and is thread-safe in glibc.
            unsafe { libc::malloc_trim(0) };
            TRIMMING.store(false, std::sync::atomic::Ordering::Release);
        });
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = answer_bytes;
}

/// How the viewer's listener serves.
#[derive(Debug, Clone)]
pub struct ViewerOptions {
    /// Its connection bounds.
    pub limits: ConnectionLimits,
    /// The `Host` names it answers to; others get a 403.
    pub hosts: AllowedHosts,
    /// What one answer of the query API may hold.
    pub budget: AnswerBudget,
}

/// Serve [`router`] on `listener` as `options` say until `shutdown`
/// resolves; then at most [`SHUTDOWN_GRACE`] for the queries in flight.
pub async fn serve(
    store: Option<Arc<Store>>,
    metrics: MetricsSource,
    listener: tokio::net::TcpListener,
    options: ViewerOptions,
    stats: Arc<ListenerStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let hosts = Arc::new(options.hosts);
    let app = router(store, metrics, options.budget).layer(axum::middleware::from_fn(
        move |mut req: axum::extract::Request, next: axum::middleware::Next| {
            let hosts = hosts.clone();
            async move {
                // One Host field (a second one could slip past the check
                // below), present in HTTP/1.1.
                if let Err(why) = crate::http::check_host(&mut req, None) {
                    return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
                }
                let host = req
                    .headers()
                    .get(header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
                match host {
                    Some(host) if !hosts.allows(&host) => (
                        StatusCode::FORBIDDEN,
                        format!(
                            "this listener does not answer to the host name `{}`; \
                             pass --ui-allowed-hosts with it to allow it\n",
                            host.chars().take(100).collect::<String>().escape_debug()
                        ),
                    )
                        .into_response(),
                    _ => {
                        let api = req.uri().path().starts_with("/api/");
                        let response = next.run(req).await;
                        if api {
                            // The answer is serialized by now and the values
                            // it was made from are freed.
                            release_freed_memory(
                                response
                                    .headers()
                                    .get(header::CONTENT_LENGTH)
                                    .and_then(|v| v.to_str().ok()?.parse().ok()),
                            );
                        }
                        response
                    }
                }
            }
        },
    ));
    let service = move |_peer| hyper_util::service::TowerToHyperService::new(app.clone());
    listener::serve(
        listener,
        options.limits,
        stats,
        service,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed "now" (µs) so windows are exact.
    const NOW: i64 = 1_700_000_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn query(pairs: &[(&str, &str)]) -> TraceQuery {
        parse_trace_query(&params(pairs), NOW).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
    }

    fn rejected(pairs: &[(&str, &str)]) -> String {
        match parse_trace_query(&params(pairs), NOW) {
            Ok(q) => panic!("{pairs:?} must be a 400, parsed as {q:?}"),
            Err(msg) => msg,
        }
    }

    #[test]
    fn trace_ids_take_1_to_32_hex_digits_left_padded_with_zeros() {
        for (given, stored) in [
            ("a7890b687652000e", "0000000000000000a7890b687652000e"),
            ("A7890B687652000E", "0000000000000000a7890b687652000e"),
            ("1", "00000000000000000000000000000001"),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
            (
                "4BF92F3577B34DA6a3ce929d0e0e4736",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
        ] {
            assert_eq!(parse_trace_id(given).as_deref(), Ok(stored), "{given}");
        }
        let too_long = parse_trace_id(&"a".repeat(33)).unwrap_err();
        assert!(too_long.contains("longer than 32"), "{too_long}");
        for bad in [
            "",
            "not-a-trace-id",
            "g",
            "a7890b68-7652000e",
            " a7890b687652000e",
            "+a7890b687652000e",
            "0xa7890b687652000e",
            "é",
        ] {
            assert!(parse_trace_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_trace_lookup_checks_its_hints() {
        let id = parse_trace_lookup("a7890b687652000e", &params(&[])).unwrap();
        assert_eq!(id, "0000000000000000a7890b687652000e");
        let hints = [("start", "1"), ("end", "2"), ("raw", "true")];
        assert!(parse_trace_lookup("ab", &params(&hints)).is_ok());
        for bad in [("start", "x"), ("end", "1.5"), ("raw", "maybe")] {
            let msg = parse_trace_lookup("ab", &params(&[bad])).unwrap_err();
            assert!(msg.contains(&format!("'{}'", bad.0)), "{msg}");
        }
        assert!(parse_trace_lookup("not-a-trace-id", &params(&[])).is_err());
    }

    #[test]
    fn go_durations() {
        const S: i64 = 1_000_000_000;
        for (text, ns) in [
            ("1.5ms", 1_500_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("100μs", 100_000),
            ("300ns", 300),
            ("1h2m", 3_720 * S),
            ("2h45m30.5s", 9_930 * S + S / 2),
            ("1.s", S),
            (".5s", S / 2),
            ("0", 0),
            ("-0", 0),
            ("+3ns", 3),
            ("-1.5s", -3 * S / 2),
            ("1.0000000001s", S),
            ("2562047h", 2_562_047 * 3_600 * S),
        ] {
            assert_eq!(go_duration_ns(text, false), Some(ns), "{text}");
        }
        for bad in [
            "",
            "1",
            "12",
            "s",
            ".s",
            "-",
            "1d",
            "1w",
            "1 s",
            " 1s",
            "1s ",
            "--1s",
            "1.5.5s",
            "1e3s",
            "fast",
            "1hh",
            "2562048h",
            "99999999999999999999999999999999999999999h",
        ] {
            assert_eq!(go_duration_ns(bad, false), None, "{bad:?}");
        }
        assert_eq!(go_duration_ns("1d12h", true), Some(36 * 3_600 * S));
    }

    #[test]
    fn durations_for_lookbacks_and_retention() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration(" 2d ").unwrap(),
            Duration::from_secs(172_800)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in [
            "12",
            "fast",
            "3weeks",
            "-1h",
            "99999999999999999999h",
            "1e300h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_search_without_parameters_is_jaegers_default() {
        let q = query(&[]);
        assert_eq!(q.end_us, NOW);
        assert_eq!(q.start_us, NOW - 2 * 86_400 * 1_000_000);
        assert_eq!(q.limit, 100);
        assert!(q.trace_ids.is_empty() && q.tags.is_empty());
        assert_eq!((q.service, q.operation), (None, None));
        assert_eq!((q.min_duration_us, q.max_duration_us), (None, None));
    }

    #[test]
    fn start_and_end_are_microseconds_and_lookback_counts_back_from_end() {
        let q = query(&[("start", "1000"), ("end", "2000")]);
        assert_eq!((q.start_us, q.end_us), (1000, 2000));
        // What Grafana sends.
        let q = query(&[("start", "1000"), ("end", "2000"), ("lookback", "custom")]);
        assert_eq!((q.start_us, q.end_us), (1000, 2000));
        let q = query(&[("lookback", "1h")]);
        assert_eq!((q.start_us, q.end_us), (NOW - 3_600_000_000, NOW));
        let q = query(&[("end", "9000000000"), ("lookback", "2d")]);
        assert_eq!(q.start_us, 9_000_000_000 - 172_800_000_000);
        assert_eq!(
            query(&[("lookback", "custom")]).start_us,
            query(&[]).start_us
        );
        // Given a start, lookback is not read.
        assert_eq!(query(&[("start", "5"), ("lookback", "junk")]).start_us, 5);
        for bad in [
            &[("start", "x")][..],
            &[("end", "1.5")],
            &[("start", "99999999999999999999")],
            &[("lookback", "3weeks")],
            &[("lookback", "99999999999999999999h")],
            &[("start", "10"), ("end", "5")],
            &[("end", "-9223372036854775808"), ("lookback", "1h")],
        ] {
            let msg = rejected(bad);
            assert!(!msg.is_empty());
        }
        assert!(rejected(&[("start", "x")]).starts_with("unable to parse param 'start'"));
    }

    #[test]
    fn limit_is_a_32_bit_integer_capped_at_the_maximum() {
        assert_eq!(query(&[("limit", "20")]).limit, 20);
        assert_eq!(query(&[("limit", "+20")]).limit, 20);
        assert_eq!(query(&[("limit", "0")]).limit, DEFAULT_LIMIT);
        assert_eq!(query(&[("limit", "-5")]).limit, DEFAULT_LIMIT);
        assert_eq!(query(&[("limit", "5000")]).limit, MAX_LIMIT);
        assert_eq!(query(&[("limit", "2147483647")]).limit, MAX_LIMIT);
        for bad in ["many", "1.5", "2147483648", "99999999999999999999"] {
            let msg = rejected(&[("limit", bad)]);
            assert!(msg.starts_with("unable to parse param 'limit'"), "{msg}");
        }
    }

    #[test]
    fn duration_bounds_are_go_durations_rounded_inwards_to_microseconds() {
        let q = query(&[("minDuration", "1.5ms"), ("maxDuration", "1h2m")]);
        assert_eq!(q.min_duration_us, Some(1_500));
        assert_eq!(q.max_duration_us, Some(3_720_000_000));
        assert_eq!(
            query(&[("maxDuration", "100us")]).max_duration_us,
            Some(100)
        );
        // A span lasts whole µs: 1500ns is at least 2µs and at most 1µs.
        assert_eq!(query(&[("minDuration", "1500ns")]).min_duration_us, Some(2));
        assert_eq!(query(&[("maxDuration", "1500ns")]).max_duration_us, Some(1));
        // 0 is no bound, as in Jaeger, so it is never below the other one.
        let q = query(&[("minDuration", "1s"), ("maxDuration", "0")]);
        assert_eq!(
            (q.min_duration_us, q.max_duration_us),
            (Some(1_000_000), None)
        );
        assert_eq!(query(&[("minDuration", "0")]).min_duration_us, None);
        let q = query(&[("minDuration", "1s"), ("maxDuration", "1000ms")]);
        assert_eq!(q.min_duration_us, q.max_duration_us);
        assert_eq!(
            rejected(&[("minDuration", "2s"), ("maxDuration", "1s")]),
            "'maxDuration' should be greater than 'minDuration'"
        );
        for bad in ["fast", "12", "1d", "1 ms"] {
            let msg = rejected(&[("minDuration", bad)]);
            assert!(
                msg.starts_with("unable to parse param 'minDuration'"),
                "{msg}"
            );
            let msg = rejected(&[("maxDuration", bad)]);
            assert!(
                msg.starts_with("unable to parse param 'maxDuration'"),
                "{msg}"
            );
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        query(pairs).tags.into_iter().collect()
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_search_takes_at_most_64_tag_filters() {
        let many: BTreeMap<String, String> = (0..1000)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let json = serde_json::to_string(&many).unwrap();
        let msg = rejected(&[("tags", json.as_str())]);
        assert!(msg.contains("at most 64"), "{msg}");
        let enough: Vec<String> = (0..64).map(|i| format!("k{i}:v")).collect();
        let pairs: Vec<(&str, &str)> = enough.iter().map(|t| ("tag", t.as_str())).collect();
        assert_eq!(query(&pairs).tags.len(), 64);
    }

    #[test]
    fn tags_come_as_json_logfmt_or_key_colon_value_pairs() {
        let json = r#"{"error":"true","http.response.status_code":"500"}"#;
        assert_eq!(
            tags(&[("tags", json)]),
            kv(&[("error", "true"), ("http.response.status_code", "500")])
        );
        assert_eq!(
            tags(&[("tag", "k:v"), ("tag", "url:http://x:8080/a")]),
            kv(&[("k", "v"), ("url", "http://x:8080/a")])
        );
        assert_eq!(tags(&[("tag", "k:")]), kv(&[("k", "")]));
        assert_eq!(tags(&[("tags", "a=1 b=2")]), kv(&[("a", "1"), ("b", "2")]));
        // Several `tags` merge; `tags` wins over `tag` wherever it comes.
        assert_eq!(
            tags(&[("tags", r#"{"a":"1"}"#), ("tags", r#"{"b":"2"}"#)]),
            kv(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(
            tags(&[("tags", r#"{"a":"3"}"#), ("tag", "a:1"), ("tag", "b:2")]),
            kv(&[("a", "3"), ("b", "2")])
        );
        assert!(tags(&[("tags", "null")]).is_empty());
        assert!(tags(&[("tags", "")]).is_empty());
        assert_eq!(
            rejected(&[("tag", "novalue")]),
            "malformed 'tag' parameter, expecting key:value, received: novalue"
        );
        for bad in [
            r#"{broken"#,
            r#"{"code":500}"#,
            r#"{"a":["1"]}"#,
            "[1]",
            "a",
        ] {
            let msg = rejected(&[("tags", bad)]);
            assert!(msg.starts_with("malformed 'tags' parameter"), "{msg}");
        }
    }

    #[test]
    fn trace_id_parameters_are_parsed_padded_and_deduplicated() {
        let q = query(&[
            ("traceID", "a7890b687652000e"),
            ("traceID", "0000000000000000A7890B687652000E"),
            ("traceID", "ff"),
        ]);
        assert_eq!(
            q.trace_ids,
            vec![
                "0000000000000000a7890b687652000e".to_string(),
                format!("{:0>32}", "ff"),
            ]
        );
        let msg = rejected(&[("traceID", "ab"), ("traceID", "zz")]);
        assert!(msg.starts_with("cannot parse traceID param"), "{msg}");
        assert_eq!(
            query(&[("traceID", "ab"), ("operation", "GET")])
                .trace_ids
                .len(),
            1
        );
    }

    #[test]
    fn service_operation_status_and_accepted_extras() {
        let q = query(&[("service", "billing"), ("operation", "charge")]);
        assert_eq!(q.service.as_deref(), Some("billing"));
        assert_eq!(q.operation.as_deref(), Some("charge"));
        // The first value counts, an empty one as absent (Go's Query().Get).
        assert_eq!(
            query(&[("service", "a"), ("service", "b")])
                .service
                .as_deref(),
            Some("a")
        );
        assert_eq!(query(&[("service", ""), ("service", "b")]).service, None);
        assert_eq!(query(&[("service", ""), ("operation", "")]).operation, None);
        assert_eq!(
            rejected(&[("operation", "POST")]),
            "'operation' needs 'service'"
        );
        assert_eq!(
            query(&[("status", "error")]).status,
            Some(TraceStatus::Error)
        );
        assert_eq!(query(&[("status", "ok")]).status, Some(TraceStatus::Ok));
        assert!(rejected(&[("status", "maybe")]).contains("'status'"));
        query(&[
            ("spanKind", "server"),
            ("prettyPrint", "true"),
            ("raw", "True"),
        ]);
        assert!(rejected(&[("raw", "yes")]).starts_with("unable to parse param 'raw'"));
    }

    #[test]
    fn a_trace_query_becomes_the_stores_search_with_error_as_span_status() {
        let q = query(&[
            ("service", "billing"),
            ("operation", "charge"),
            ("tags", r#"{"a":"1","b":"2","error":"true"}"#),
            ("minDuration", "1ms"),
            ("maxDuration", "1s"),
            ("status", "error"),
            ("limit", "7"),
        ]);
        let s = q.search();
        assert_eq!(s.service.as_deref(), Some("billing"));
        assert_eq!(s.operation.as_deref(), Some("charge"));
        assert_eq!(
            s.tags,
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(s.span_error, Some(true));
        assert_eq!(
            (s.min_duration_us, s.max_duration_us),
            (Some(1000), Some(1_000_000))
        );
        assert_eq!((s.status, s.limit), (Some(TraceStatus::Error), 7));
        assert_eq!(
            query(&[("tag", "error:false")]).search().span_error,
            Some(false)
        );
        assert_eq!(query(&[]).search().span_error, None);
    }

    fn dependency_query(pairs: &[(&str, &str)]) -> Result<DependencyQuery, String> {
        parse_dependency_query(&params(pairs), NOW)
    }

    #[test]
    fn dependencies_take_milliseconds() {
        let q = dependency_query(&[]).unwrap();
        assert_eq!((q.start_us, q.end_us), (NOW - 86_400_000_000, NOW));
        let q = dependency_query(&[("endTs", "1000"), ("lookback", "500"), ("service", "b")]);
        assert_eq!(
            q,
            Ok(DependencyQuery {
                start_us: 500_000,
                end_us: 1_000_000,
                service: Some("b".into())
            })
        );
        for bad in [
            &[("endTs", "yesterday")][..],
            &[("lookback", "1h")],
            &[("lookback", "-1")],
            &[("endTs", "9223372036854775807")],
            &[("endTs", "-9223372036854775808"), ("lookback", "1")],
        ] {
            assert!(dependency_query(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    /// An in-memory store with two spans of one trace (id with 16 leading
    /// zero digits), a server span calling a client span of another service.
    fn store() -> Arc<Store> {
        let store = Store::open(crate::store::StoreConfig::default()).unwrap();
        let span = |span_id: &str, parent_id: &str, service: &str, kind: &str| StoredSpan {
            trace_id: "0000000000000000a7890b687652000e".into(),
            span_id: span_id.into(),
            parent_id: parent_id.into(),
            service: service.into(),
            operation: "GET /x".into(),
            kind: kind.into(),
            start_us: now_us() - 1_000_000,
            duration_us: 1500,
            status: 0,
            status_message: String::new(),
            attributes: json!([]),
            events: json!([]),
        };
        store.add_spans(vec![
            span("00000000000000a1", "", "front", "server"),
            span("00000000000000a2", "00000000000000a1", "back", "server"),
            span("00000000000000a3", "00000000000000a1", "front", "client"),
        ]);
        assert!(store.flush(Duration::from_secs(10)));
        store
    }

    fn pairs(list: &[(&str, &str)]) -> Query<Vec<(String, String)>> {
        Query(params(list).0)
    }

    #[tokio::test]
    async fn a_trace_is_found_by_its_short_id() {
        let store = store();
        for id in [
            "a7890b687652000e",
            "A7890B687652000E",
            "0000000000000000a7890b687652000e",
        ] {
            let answer = one_trace(
                State(store.clone()),
                State(AnswerBudget::UNLIMITED),
                Path(id.into()),
                pairs(&[]),
            )
            .await;
            let Answer::Data { data, total, .. } = answer else {
                panic!("{id} must be found");
            };
            assert_eq!(total, 1);
            assert_eq!(data[0]["spans"].as_array().unwrap().len(), 3);
        }
        let unknown = one_trace(
            State(store.clone()),
            State(AnswerBudget::UNLIMITED),
            Path("ab".into()),
            pairs(&[]),
        )
        .await;
        assert!(matches!(unknown, Answer::Error(StatusCode::NOT_FOUND, _)));
        let long = one_trace(
            State(store),
            State(AnswerBudget::UNLIMITED),
            Path("a".repeat(33)),
            pairs(&[]),
        )
        .await;
        assert!(matches!(long, Answer::Error(StatusCode::BAD_REQUEST, _)));
    }

    #[tokio::test]
    async fn a_search_by_trace_ids_lists_those_not_found() {
        let list = [("traceID", "ab"), ("traceID", "a7890b687652000e")];
        let Answer::Data {
            data,
            total,
            errors,
        } = search(State(store()), State(AnswerBudget::UNLIMITED), pairs(&list)).await
        else {
            panic!("a search by id answers 200");
        };
        assert_eq!(total, 1);
        assert_eq!(data[0]["traceID"], "0000000000000000a7890b687652000e");
        assert_eq!(
            errors,
            vec![json!({"msg": "trace not found", "traceID": format!("{:0>32}", "ab")})]
        );
    }

    /// Traces 1..=5 with `i` × 10 spans each, trace 5 the newest.
    fn store_of_sizes() -> Arc<Store> {
        let store = Store::open(crate::store::StoreConfig::default()).unwrap();
        for t in 1..=5i64 {
            let spans = (0..t * 10)
                .map(|i| StoredSpan {
                    trace_id: format!("{t:032x}"),
                    span_id: format!("{i:016x}"),
                    parent_id: String::new(),
                    service: "svc".into(),
                    operation: "op".into(),
                    kind: "server".into(),
                    start_us: now_us() - 1_000_000 + t * 1000 + i,
                    duration_us: 10,
                    status: 0,
                    status_message: String::new(),
                    attributes: json!([{"key": "k", "type": "string", "value": "v".repeat(100)}]),
                    events: json!([]),
                })
                .collect();
            store.add_spans(spans);
        }
        assert!(store.flush(Duration::from_secs(10)));
        store
    }

    fn spans_in(data: &Json) -> usize {
        data.as_array()
            .unwrap()
            .iter()
            .map(|t| t["spans"].as_array().unwrap().len())
            .sum()
    }

    #[tokio::test]
    async fn an_answer_holds_whole_traces_up_to_its_budget_and_names_the_rest() {
        let store = store_of_sizes();
        let budget = AnswerBudget {
            max_spans: 95,
            max_bytes: usize::MAX,
        };
        // Newest first: 50 + 40 spans fit; 30 would pass 95, and so would 20
        // after them: every other trace is left out, named in `errors`.
        let Answer::Data { data, errors, .. } = search(
            State(store.clone()),
            State(budget),
            pairs(&[("service", "svc")]),
        )
        .await
        else {
            panic!("a search answers 200");
        };
        assert_eq!(spans_in(&data), 90);
        assert_eq!(data.as_array().unwrap().len(), 2);
        assert_eq!(data[0]["traceID"], format!("{:032x}", 5));
        let left: Vec<&str> = errors
            .iter()
            .map(|e| e["traceID"].as_str().unwrap())
            .collect();
        assert_eq!(left.len(), 3, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| e["msg"] == LEFT_OUT && e["code"] == 413)
        );
        // The same by ids, in the order asked.
        let ids: Vec<(&str, String)> = (1..=5).map(|t| ("traceID", format!("{t:x}"))).collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let Answer::Data { data, errors, .. } =
            search(State(store.clone()), State(budget), pairs(&ids)).await
        else {
            panic!();
        };
        // 10 + 20 + 30 = 60 fit, 40 would not (100), 50 would not either.
        assert_eq!(spans_in(&data), 60);
        assert_eq!(errors.len(), 2);
        // A bytes budget works the same way (each span ≈ 200 bytes).
        let by_bytes = AnswerBudget {
            max_spans: usize::MAX,
            max_bytes: 3000,
        };
        let Answer::Data { data, errors, .. } = search(
            State(store.clone()),
            State(by_bytes),
            pairs(&[("service", "svc")]),
        )
        .await
        else {
            panic!();
        };
        assert!(spans_in(&data) < 50, "{}", spans_in(&data));
        assert_eq!(data.as_array().unwrap().len(), 1);
        assert_eq!(errors.len(), 4);
        // A later trace that would pass the bytes budget is left out whole,
        // never cut (each span ≈ 260 bytes: 50 fit in 20,000, 40 more not).
        let later = AnswerBudget {
            max_spans: usize::MAX,
            max_bytes: 20_000,
        };
        let Answer::Data { data, errors, .. } = search(
            State(store.clone()),
            State(later),
            pairs(&[("service", "svc")]),
        )
        .await
        else {
            panic!();
        };
        assert_eq!(spans_in(&data), 50);
        assert!(data[0]["warnings"].is_null());
        assert_eq!(errors.len(), 4);
        // One trace larger than the budget is cut, with a warning.
        let small = AnswerBudget {
            max_spans: 7,
            max_bytes: usize::MAX,
        };
        let Answer::Data { data, .. } = one_trace(
            State(store),
            State(small),
            Path(format!("{:x}", 5)),
            pairs(&[]),
        )
        .await
        else {
            panic!();
        };
        assert_eq!(spans_in(&data), 7);
        let warning = data[0]["warnings"][0].as_str().unwrap();
        assert!(warning.contains("only the first 7 spans"), "{warning}");
    }

    #[tokio::test]
    async fn log_records_count_against_the_answer_budget() {
        let store = store_of_sizes();
        // Trace 1 (10 spans) gets 20 log records on its first span. An
        // in-memory store reads on its writer's connection, so a test may
        // write rows through `read`.
        store
            .read(|c| {
                for i in 0..20 {
                    c.execute(
                        "INSERT INTO logs VALUES (?1, ?2, ?3, 'svc', 'INFO', ?4, '[]')",
                        rusqlite::params![
                            format!("{:032x}", 1),
                            format!("{:016x}", 0),
                            now_us() - 500_000 + i,
                            format!("line {i}")
                        ],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let logs_of_first = |data: &Json| {
            data[0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["logs"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        };
        let whole = one_trace(
            State(store.clone()),
            State(AnswerBudget::UNLIMITED),
            Path("1".into()),
            pairs(&[]),
        )
        .await;
        let Answer::Data { data, .. } = whole else {
            panic!()
        };
        assert_eq!(logs_of_first(&data), 20);
        assert!(data[0]["warnings"].is_null());
        // 10 spans and 5 records fit in 15.
        let budget = AnswerBudget {
            max_spans: 15,
            max_bytes: usize::MAX,
        };
        let Answer::Data { data, .. } =
            one_trace(State(store), State(budget), Path("1".into()), pairs(&[])).await
        else {
            panic!()
        };
        assert_eq!(spans_in(&data), 10);
        assert_eq!(logs_of_first(&data), 5);
        let warning = data[0]["warnings"][0].as_str().unwrap();
        assert!(warning.contains("log records"), "{warning}");
    }

    #[tokio::test]
    async fn operations_by_service_and_span_kind() {
        let store = store();
        let all = operations(State(store.clone()), pairs(&[("service", "front")])).await;
        let Answer::Data { data, .. } = all else {
            panic!()
        };
        assert_eq!(
            data,
            json!([{"name": "GET /x", "spanKind": "client"}, {"name": "GET /x", "spanKind": "server"}])
        );
        let server = [("service", "front"), ("spanKind", "server")];
        let Answer::Data { data, total, .. } =
            operations(State(store.clone()), pairs(&server)).await
        else {
            panic!()
        };
        assert_eq!(
            (data, total),
            (json!([{"name": "GET /x", "spanKind": "server"}]), 1)
        );
        let missing = operations(State(store), pairs(&[("spanKind", "server")])).await;
        assert!(
            matches!(missing, Answer::Error(StatusCode::BAD_REQUEST, m) if m == "parameter 'service' is required")
        );
    }

    #[tokio::test]
    async fn dependencies_can_keep_the_edges_of_one_service() {
        let store = store();
        let edge = json!([{"parent": "front", "child": "back", "callCount": 1}]);
        for service in ["back", "front"] {
            let list = [("service", service)];
            let Answer::Data { data, .. } = dependencies(State(store.clone()), pairs(&list)).await
            else {
                panic!()
            };
            assert_eq!(data, edge);
        }
        let list = [("service", "elsewhere")];
        let Answer::Data { data, .. } = dependencies(State(store), pairs(&list)).await else {
            panic!()
        };
        assert_eq!(data, json!([]));
    }
}
