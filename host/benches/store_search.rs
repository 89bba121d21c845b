//! Search over a large embedded store: 100,000 checkout-like traces
//! (5 spans each, 4 services) in a SQLite file, then the viewer's and
//! Jaeger's queries, each run repeatedly; prints the median and worst time.
//!
//!     cargo bench -p polytrace --bench store_search
//!
//! Environment: BENCH_TRACES (default 100000), BENCH_REPEAT (20).

#[path = "common/env.rs"]
mod env;
use env::env_or;
use polytrace::query::find_traces;
use polytrace::store::{Store, StoreConfig, StoredSpan};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One span of trace `trace`: (index, parent index), (service, operation),
/// (start, duration) in µs.
fn span(
    trace: usize,
    (i, parent): (usize, usize),
    (service, op): (&str, &str),
    (start, dur): (i64, i64),
    error: bool,
) -> StoredSpan {
    StoredSpan {
        trace_id: format!("{trace:032x}"),
        span_id: format!("{:016x}", trace * 8 + i),
        parent_id: if i == 0 {
            String::new()
        } else {
            format!("{:016x}", trace * 8 + parent)
        },
        service: service.into(),
        operation: op.into(),
        kind: if i.is_multiple_of(2) {
            "server".into()
        } else {
            "internal".into()
        },
        start_us: start,
        duration_us: dur,
        status: if error { 2 } else { 0 },
        status_message: String::new(),
        attributes: json!([
            {"key": "user.id", "type": "string", "value": format!("user-{}", trace % 1000)},
            {"key": "http.response.status_code", "type": "int64", "value": if error { 500 } else { 200 }},
            {"key": "order.items", "type": "int64", "value": trace % 7},
        ]),
        events: json!([]),
    }
}

#[tokio::main]
async fn main() {
    let traces = env_or("BENCH_TRACES", 100_000);
    let repeat = env_or("BENCH_REPEAT", 20);
    let dir = std::env::temp_dir().join(format!("polytrace-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig {
        path: Some(dir.join("traces.db")),
        max_age: Duration::from_secs(86_400),
        max_bytes: 8 << 30,
    })
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let spread = 3_000_000_000i64; // the traces start over the last 50 minutes
    let started = Instant::now();
    for chunk in (0..traces).collect::<Vec<_>>().chunks(500) {
        let mut batch = Vec::with_capacity(chunk.len() * 5);
        for &t in chunk {
            let start = now - spread + (t as i64 * spread) / traces as i64;
            let error = t.is_multiple_of(50);
            let d = 2000 + (t % 100) as i64 * 300;
            batch.push(span(
                t,
                (0, 0),
                ("api-gateway", "POST /checkout"),
                (start, d * 4),
                error,
            ));
            batch.push(span(
                t,
                (1, 0),
                ("api-gateway", "checkout_flow"),
                (start + 10, d * 3),
                error,
            ));
            batch.push(span(
                t,
                (2, 1),
                ("fraud-service", "check_fraud_rules"),
                (start + 20, d),
                false,
            ));
            batch.push(span(
                t,
                (3, 1),
                ("session-service", "load_session"),
                (start + 30, d / 2),
                false,
            ));
            batch.push(span(
                t,
                (4, 1),
                ("billing", "charge_card"),
                (start + 40, d),
                error,
            ));
        }
        while !store.flush(Duration::from_secs(60)) {}
        store.add_spans(batch);
    }
    assert!(store.flush(Duration::from_secs(300)));
    let load = started.elapsed();
    let stored: i64 = store
        .read(|c| c.query_row("SELECT SUM(spans) FROM blocks", [], |r| r.get(0)))
        .unwrap();
    println!(
        "store: {traces} traces, {stored} spans written in {:.1} s ({:.0} spans/s)",
        load.as_secs_f64(),
        stored as f64 / load.as_secs_f64()
    );

    let queries: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("newest 20, any service", vec![]),
        ("service", vec![("service", "billing".into())]),
        (
            "service + operation",
            vec![
                ("service", "billing".into()),
                ("operation", "charge_card".into()),
            ],
        ),
        (
            "service + tag (user.id)",
            vec![
                ("service", "api-gateway".into()),
                ("tags", r#"{"user.id":"user-42"}"#.into()),
            ],
        ),
        (
            "service + error=true",
            vec![
                ("service", "billing".into()),
                ("tags", r#"{"error":"true"}"#.into()),
            ],
        ),
        (
            "minDuration 30ms",
            vec![
                ("service", "api-gateway".into()),
                ("minDuration", "30ms".into()),
            ],
        ),
        (
            "status=error, limit 100",
            vec![("status", "error".into()), ("limit", "100".into())],
        ),
        (
            "minDuration no span has (reads every block)",
            vec![("minDuration", "1h".into())],
        ),
        (
            "rare tag, whole hour",
            vec![
                ("tags", r#"{"user.id":"user-999"}"#.into()),
                ("limit", "100".into()),
            ],
        ),
    ];
    println!();
    println!("| query over {traces} traces | results | median | worst |");
    println!("|---|---:|---:|---:|");
    for (name, params) in queries {
        let mut q: HashMap<String, String> = params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        q.entry("lookback".into()).or_insert("1h".into());
        // The viewer's page size (the API's default is Jaeger's 100).
        q.entry("limit".into()).or_insert("20".into());
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            n = find_traces(&store, &q).await.unwrap().len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| {name} | {n} | {:.1} ms | {:.1} ms |",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
