//! The query side of the embedded store: Jaeger's v1 HTTP JSON API (what
//! the Jaeger UI and Grafana's Jaeger data source call), a few polytrace
//! endpoints for the viewer (service map, per-operation summary), and the
//! viewer itself, all on one listener (`--ui`).

use crate::store::{Store, StoredSpan, spans_of};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Traces returned by a search when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;
/// The most a search returns.
pub const MAX_LIMIT: usize = 1500;

/// Renders the Prometheus text exposition of the app's metrics.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The routes of the viewer listener: the viewer and its API when there is
/// a store, and Prometheus `GET /metrics` always.
pub fn router(store: Option<Arc<Store>>, metrics: MetricsSource) -> Router {
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
                        crate::telemetry::prometheus::CONTENT_TYPE,
                    )],
                    text,
                )
            }
        }),
    );
    match store {
        Some(store) => scrape.merge(viewer_router(store)),
        None => scrape,
    }
}

fn viewer_router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(operations))
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
        .with_state(store)
}

/// An API answer: Jaeger's envelope, or its error shape with a status.
enum Answer {
    Data(Json, usize),
    Error(StatusCode, String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Answer::Data(data, total) => (
                StatusCode::OK,
                json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}),
            ),
            Answer::Error(status, msg) => (
                status,
                json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                       "errors": [{"code": status.as_u16(), "msg": msg}]}),
            ),
        };
        (status, axum::Json(body)).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Answer {
    Answer::Error(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> Answer {
    Answer::Error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("trace store: {e}"),
    )
}

/// Run a store read off the async workers.
async fn read<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Answer> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read(f))
        .await
        .map_err(internal)?
        .map_err(internal)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

/// A Go-style duration as Jaeger accepts it: `1.5s`, `100ms`, `250us`,
/// `2m`, `1h`, and `d` for days in lookbacks.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ns, us, ms, s, m, h or d)"))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let seconds = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => return Err(format!("`{s}`: unknown unit `{other}`")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Answer> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            bad(format!(
                "unable to parse param '{name}': `{v}` is not an integer"
            ))
        }),
    }
}

fn duration_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Answer> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_duration(v)
            .map(|d| Some(d.as_micros() as i64))
            .map_err(|e| bad(format!("unable to parse param '{name}': {e}"))),
    }
}

/// `tags` as Jaeger's UI sends it (a JSON object) or as logfmt (`k=v k2=v2`).
fn tags_param(q: &HashMap<String, String>) -> Result<Vec<(String, String)>, Answer> {
    let Some(raw) = q.get("tags").filter(|v| !v.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    if raw.trim_start().starts_with('{') {
        let obj: serde_json::Map<String, Json> = serde_json::from_str(raw)
            .map_err(|e| bad(format!("malformed 'tags' parameter: {e}")))?;
        return Ok(obj
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect());
    }
    raw.split_whitespace()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    bad(format!(
                        "malformed 'tags' parameter: `{kv}` is not key=value"
                    ))
                })
        })
        .collect()
}

/// The search window in µs: `start`/`end` (µs), else `lookback` before now.
fn window(q: &HashMap<String, String>) -> Result<(i64, i64), Answer> {
    let end = int_param(q, "end")?.unwrap_or_else(now_us);
    let start = match int_param(q, "start")? {
        Some(s) => s,
        None => {
            let lookback = match q.get("lookback").map(String::as_str) {
                None | Some("") | Some("custom") => Duration::from_secs(3600),
                Some(l) => parse_duration(l)
                    .map_err(|e| bad(format!("unable to parse param 'lookback': {e}")))?,
            };
            end - lookback.as_micros() as i64
        }
    };
    if start > end {
        return Err(bad("'start' is after 'end'"));
    }
    Ok((start, end))
}

async fn services(State(store): State<Arc<Store>>) -> Answer {
    match read(&store, |c| {
        let mut q = c.prepare(
            "SELECT service FROM services UNION SELECT DISTINCT service FROM spans ORDER BY 1",
        )?;
        q.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    })
    .await
    {
        Ok(names) => {
            let n = names.len();
            Answer::Data(json!(names), n)
        }
        Err(e) => e,
    }
}

async fn operations(State(store): State<Arc<Store>>, Path(service): Path<String>) -> Answer {
    match read(&store, move |c| {
        let mut q =
            c.prepare("SELECT DISTINCT operation FROM spans WHERE service = ?1 ORDER BY 1")?;
        q.query_map([service], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    })
    .await
    {
        Ok(names) => {
            let n = names.len();
            Answer::Data(json!(names), n)
        }
        Err(e) => e,
    }
}

/// The search of `/api/traces`: traces with a span that matches every
/// filter, newest first.
async fn search(
    State(store): State<Arc<Store>>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    match search_inner(&store, &q).await {
        Ok(a) | Err(a) => a,
    }
}

/// The search behind `/api/traces`: traces in Jaeger's model, newest first,
/// or the message of a 400. For benchmarks and embedders.
pub async fn find_traces(
    store: &Arc<Store>,
    q: &HashMap<String, String>,
) -> Result<Vec<Json>, String> {
    match search_inner(store, q).await {
        Ok(Answer::Data(Json::Array(traces), _)) => Ok(traces),
        Ok(Answer::Data(..)) => Ok(Vec::new()),
        Ok(Answer::Error(_, m)) | Err(Answer::Error(_, m)) => Err(m),
        Err(Answer::Data(..)) => Err("unexpected answer".into()),
    }
}

async fn search_inner(store: &Arc<Store>, q: &HashMap<String, String>) -> Result<Answer, Answer> {
    let (start, end) = window(q)?;
    let limit = match int_param(q, "limit")? {
        None => DEFAULT_LIMIT,
        Some(l) if l <= 0 => DEFAULT_LIMIT,
        Some(l) => (l as usize).min(MAX_LIMIT),
    };
    let min = duration_param(q, "minDuration")?;
    let max = duration_param(q, "maxDuration")?;
    if let (Some(a), Some(b)) = (min, max)
        && a > b
    {
        return Err(bad("'minDuration' is above 'maxDuration'"));
    }
    let tags = tags_param(q)?;
    let service = q.get("service").filter(|s| !s.is_empty()).cloned();
    let operation = q.get("operation").filter(|s| !s.is_empty()).cloned();
    if operation.is_some() && service.is_none() {
        return Err(bad("'operation' needs 'service'"));
    }
    // polytrace's own: status=error|ok over the whole trace.
    let status = q.get("status").filter(|s| !s.is_empty()).cloned();
    if let Some(s) = &status
        && s != "error"
        && s != "ok"
    {
        return Err(bad(format!(
            "unable to parse param 'status': `{s}` (use error or ok)"
        )));
    }

    // Spans newest first; the first `limit` distinct traces win, so a search
    // stops reading as soon as it has them. A tag filter drives the search
    // from the tag index (rare values are found without scanning spans).
    let (attr_tags, error_tag): (Vec<_>, Vec<_>) =
        tags.into_iter().partition(|(k, _)| k != "error");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut sql = match attr_tags.first() {
        Some((k, v)) => {
            args.extend([k.clone().into(), v.clone().into(), start.into(), end.into()]);
            String::from(
                "SELECT s.trace_id FROM tags t JOIN spans s
                 ON s.trace_id = t.trace_id AND s.span_id = t.span_id
                 WHERE t.key = ? AND t.value = ? AND t.start_us >= ? AND t.start_us <= ?",
            )
        }
        None => {
            args.extend([start.into(), end.into()]);
            String::from("SELECT s.trace_id FROM spans s WHERE s.start_us >= ? AND s.start_us <= ?")
        }
    };
    for (k, v) in attr_tags.iter().skip(1) {
        sql += " AND EXISTS (SELECT 1 FROM tags t2 WHERE t2.key = ? AND t2.value = ?
                 AND t2.start_us = s.start_us AND t2.trace_id = s.trace_id
                 AND t2.span_id = s.span_id)";
        args.push(k.clone().into());
        args.push(v.clone().into());
    }
    if let Some(s) = service {
        sql += " AND s.service = ?";
        args.push(s.into());
    }
    if let Some(o) = operation {
        sql += " AND s.operation = ?";
        args.push(o.into());
    }
    if let Some(m) = min {
        sql += " AND s.duration_us >= ?";
        args.push(m.into());
    }
    if let Some(m) = max {
        sql += " AND s.duration_us <= ?";
        args.push(m.into());
    }
    for (_, v) in error_tag {
        sql += if v == "true" {
            " AND s.status = 2"
        } else {
            " AND s.status != 2"
        };
    }
    match status.as_deref() {
        Some("error") => {
            sql += " AND s.trace_id IN (SELECT trace_id FROM spans WHERE status = 2)";
        }
        Some("ok") => {
            sql += " AND s.trace_id NOT IN (SELECT trace_id FROM spans WHERE status = 2)";
        }
        _ => {}
    }
    sql += if attr_tags.is_empty() {
        " ORDER BY s.start_us DESC"
    } else {
        " ORDER BY t.start_us DESC"
    };

    let spans = read(store, move |c| {
        let ids: Vec<String> = {
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            let mut ids: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            while ids.len() < limit
                && let Some(row) = rows.next()?
            {
                let id: String = row.get(0)?;
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
            ids
        };
        let spans = spans_of(c, &ids)?;
        Ok((ids, spans, services_of(c)?))
    })
    .await?;
    let (ids, spans, services) = spans;
    let mut by_trace: BTreeMap<&str, Vec<&StoredSpan>> = BTreeMap::new();
    for s in &spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
    }
    let traces: Vec<Json> = ids
        .iter()
        .filter_map(|id| by_trace.get(id.as_str()))
        .map(|spans| jaeger_trace(spans, &services))
        .collect();
    let n = traces.len();
    Ok(Answer::Data(Json::Array(traces), n))
}

async fn one_trace(State(store): State<Arc<Store>>, Path(trace_id): Path<String>) -> Answer {
    let id = trace_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad(format!(
            "malformed trace id `{trace_id}`: 32 hex digits expected"
        ));
    }
    let found = read(&store, move |c| {
        let mut spans = spans_of(c, std::slice::from_ref(&id))?;
        // Log records show on their span, after its events, in time order.
        for (span_id, log) in crate::store::logs_of(c, &id)? {
            if let Some(Json::Array(events)) = spans
                .iter_mut()
                .find(|s| s.span_id == span_id)
                .map(|s| &mut s.events)
            {
                events.push(log);
            }
        }
        Ok((spans, services_of(c)?))
    })
    .await;
    match found {
        Ok((spans, _)) if spans.is_empty() => {
            Answer::Error(StatusCode::NOT_FOUND, "trace not found".into())
        }
        Ok((spans, services)) => {
            let refs: Vec<&StoredSpan> = spans.iter().collect();
            Answer::Data(json!([jaeger_trace(&refs, &services)]), 1)
        }
        Err(e) => e,
    }
}

/// service → (language, resource tags).
type Services = HashMap<String, (String, Json)>;

fn services_of(c: &rusqlite::Connection) -> rusqlite::Result<Services> {
    let mut q = c.prepare("SELECT service, language, resource FROM services")?;
    q.query_map([], |r| {
        let resource: String = r.get(2)?;
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get::<_, String>(1)?,
                serde_json::from_str(&resource).unwrap_or(json!([])),
            ),
        ))
    })?
    .collect()
}

/// One trace in Jaeger's JSON model.
fn jaeger_trace(spans: &[&StoredSpan], services: &Services) -> Json {
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
    json!({"traceID": trace_id, "spans": spans, "processes": processes, "warnings": null})
}

/// `/api/dependencies?endTs=&lookback=` (milliseconds, as Jaeger's).
async fn dependencies(
    State(store): State<Arc<Store>>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let end_ms = match int_param(&q, "endTs") {
        Ok(v) => v.unwrap_or(now_us() / 1000),
        Err(e) => return e,
    };
    let lookback_ms = match int_param(&q, "lookback") {
        Ok(v) => v.unwrap_or(24 * 3600 * 1000),
        Err(e) => return e,
    };
    if lookback_ms < 0 {
        return bad("'lookback' must not be negative");
    }
    let (start, end) = ((end_ms - lookback_ms) * 1000, end_ms * 1000);
    match read(&store, move |c| {
        let mut q = c.prepare(
            "SELECT p.service, s.service, COUNT(*) FROM spans s
             JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_id
             WHERE p.service != s.service AND s.start_us >= ?1 AND s.start_us <= ?2
             GROUP BY 1, 2 ORDER BY 1, 2",
        )?;
        q.query_map([start, end], |r| {
            Ok(
                json!({"parent": r.get::<_, String>(0)?, "child": r.get::<_, String>(1)?,
                      "callCount": r.get::<_, i64>(2)?}),
            )
        })?
        .collect::<rusqlite::Result<Vec<Json>>>()
    })
    .await
    {
        Ok(edges) => {
            let n = edges.len();
            Answer::Data(Json::Array(edges), n)
        }
        Err(e) => e,
    }
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
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (start, end) = match window(&q) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let rows = read(&store, move |c| {
        let mut q = c.prepare(
            "SELECT p.service, s.service, s.duration_us, s.status FROM spans s
             JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_id
             WHERE p.service != s.service AND s.start_us >= ?1 AND s.start_us <= ?2",
        )?;
        let rows = q
            .query_map([start, end], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut roots = c.prepare(
            "SELECT service, COUNT(*) FROM spans WHERE parent_id = '' AND start_us >= ?1
             AND start_us <= ?2 GROUP BY 1",
        )?;
        let roots = roots
            .query_map([start, end], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((rows, roots, services_of(c)?))
    })
    .await;
    let (rows, roots, services) = match rows {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut edges: BTreeMap<(String, String), (Vec<i64>, i64)> = BTreeMap::new();
    for (from, to, duration, status) in rows {
        let e = edges.entry((from, to)).or_default();
        e.0.push(duration);
        e.1 += i64::from(status == 2);
    }
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
    Answer::Data(json!({"nodes": nodes, "edges": edges}), 1)
}

/// Per service and operation over a window: rate, error %, latency.
async fn summary(
    State(store): State<Arc<Store>>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (start, end) = match window(&q) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let rows = read(&store, move |c| {
        let mut q = c.prepare(
            "SELECT service, operation, kind, duration_us, status FROM spans
             WHERE start_us >= ?1 AND start_us <= ?2",
        )?;
        q.query_map([start, end], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return e,
    };
    let seconds = ((end - start) as f64 / 1e6).max(1e-6);
    let mut groups: BTreeMap<(String, String, String), (Vec<i64>, i64)> = BTreeMap::new();
    for (service, operation, kind, duration, status) in rows {
        let g = groups.entry((service, operation, kind)).or_default();
        g.0.push(duration);
        g.1 += i64::from(status == 2);
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
    Answer::Data(Json::Array(out), n)
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

/// Serve the viewer and API on `listener` until `shutdown`.
pub async fn serve(
    store: Option<Arc<Store>>,
    metrics: MetricsSource,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_jaeger() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3weeks").is_err());
    }

    #[test]
    fn quantiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
