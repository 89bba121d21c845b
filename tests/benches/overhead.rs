//! Tracing overhead, measured side by side in one run: the same hello-rust
//! app served by two `polytrace` processes, one exporting every span over
//! OTLP to a real receiver, one with `OTEL_SDK_DISABLED=true`. Rounds
//! alternate between the two so drift on a shared machine hits both alike.
//!
//!     cargo bench -p polytrace-tests --bench overhead
//!
//! Environment: BENCH_ROUNDS (default 6), BENCH_SECONDS per round (2),
//! BENCH_CONNECTIONS (4), BENCH_EXPORTER (otlp), BENCH_STORE (a file),
//! BENCH_ENV (more variables for the traced host: `K=V,K=V`).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use polytrace_tests::bench::{env_or, median};
use polytrace_tests::{Polytrace, Receiver, component};
use std::time::{Duration, Instant};

/// One connection sending requests back to back until `until`.
async fn client(addr: std::net::SocketAddr, until: Instant) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let req = hyper::Request::get(format!("http://{addr}/hello/bench?name=b"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let started = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

struct Round {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// The host's CPU time (all threads) per request served, in µs.
    cpu_us: f64,
}

async fn round(host: &Polytrace, seconds: u64, connections: u64) -> Round {
    let addr = host.addr;
    let cpu_before = host.cpu_time();
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(addr, until)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    // Let the export worker and the store finish this round's full
    // batches (a partial one waits for OTEL_BSP_SCHEDULE_DELAY, below).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = host.cpu_time() - cpu_before;
    Round {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        cpu_us: cpu.as_secs_f64() * 1e6 / all.len() as f64,
    }
}

#[tokio::main]
async fn main() {
    let rounds = env_or("BENCH_ROUNDS", 6);
    let seconds = env_or("BENCH_SECONDS", 2);
    let connections = env_or("BENCH_CONNECTIONS", 4);
    let manifest = format!(
        "app = \"bench\"\n[[component]]\nid = \"hello\"\nsource = \"{}\"\nroute = \"/hello/...\"\nlanguage = \"rust\"\n",
        component("hello_rust").display()
    );
    // The receiver takes every export over HTTP/protobuf but does not decode
    // it: decoding is the backend's cost, and on a 2-core machine it would
    // compete with the host being measured. BENCH_DECODE=1 decodes anyway.
    let receiver = if std::env::var_os("BENCH_DECODE").is_some() {
        Receiver::start().await
    } else {
        Receiver::start_sink().await
    };
    // BENCH_EXPORTER=none keeps spans recorded but unexported, to split
    // span-making cost from export cost.
    let exporter = std::env::var("BENCH_EXPORTER").unwrap_or_else(|_| "otlp".into());
    // BENCH_STORE: the embedded store of the traced host: by default a
    // SQLite file, as `polytrace up` keeps it beside the manifest; `memory`,
    // `none`, or a file path.
    let store_dir = std::env::temp_dir().join(format!("polytrace-overhead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = std::env::var("BENCH_STORE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| store_dir.join("traces.db").display().to_string());
    // BENCH_ENV: more variables for the traced host, `K=V,K=V`.
    let extra = std::env::var("BENCH_ENV").unwrap_or_default();
    // The traced host runs with `up`'s defaults: the test harness shortens
    // the batch delays and the metric interval (for tests that wait on
    // exports); undo that here. Under load every span batch is full
    // (512 spans every few ms); the 5 s delay only holds a round's last
    // partial batch (at most 511 spans of ~30,000), exported whenever the
    // delay comes round, possibly outside a traced round: under 1% of a
    // round's spans, left uncounted.
    let mut env = vec![
        ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "1000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ("OTEL_TRACES_EXPORTER", exporter.as_str()),
        ("POLYTRACE_STORE", store.as_str()),
    ];
    env.extend(extra.split(',').filter_map(|kv| kv.split_once('=')));
    let traced = Polytrace::up("bench-on", &manifest, &receiver, "http/protobuf", &env);
    let plain = Polytrace::up(
        "bench-off",
        &manifest,
        &receiver,
        "http/protobuf",
        &[("OTEL_SDK_DISABLED", "true")],
    );
    // Warm up both (first instantiations, connection setup).
    round(&traced, 1, connections).await;
    round(&plain, 1, connections).await;

    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first.
        if i % 2 == 0 {
            on.push(round(&traced, seconds, connections).await);
            off.push(round(&plain, seconds, connections).await);
        } else {
            off.push(round(&plain, seconds, connections).await);
            on.push(round(&traced, seconds, connections).await);
        }
    }
    let summarize = |rs: &[Round]| {
        (
            median(rs.iter().map(|r| r.rps).collect()),
            median(rs.iter().map(|r| r.p50.as_secs_f64() * 1e6).collect()),
            median(rs.iter().map(|r| r.p99.as_secs_f64() * 1e6).collect()),
            median(rs.iter().map(|r| r.cpu_us).collect()),
        )
    };
    let (on_rps, on_p50, on_p99, on_cpu) = summarize(&on);
    let (off_rps, off_p50, off_p99, off_cpu) = summarize(&off);
    let kib = receiver.bytes.load(std::sync::atomic::Ordering::Relaxed) / 1024;
    println!(
        "hello-rust, {connections} connections, {rounds} alternating rounds of {seconds}s each (medians)"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>14}",
        "", "requests/s", "p50 (µs)", "p99 (µs)", "CPU µs/req"
    );
    println!(
        "{:<28} {:>12.0} {:>12.1} {:>12.1} {:>14.1}",
        "tracing on (OTLP export)", on_rps, on_p50, on_p99, on_cpu
    );
    println!(
        "{:<28} {:>12.0} {:>12.1} {:>12.1} {:>14.1}",
        "OTEL_SDK_DISABLED=true", off_rps, off_p50, off_p99, off_cpu
    );
    println!(
        "overhead: p50 {:+.1} µs, throughput {:+.1}%, host CPU per request {:+.1} µs ({:+.1}%)  ({kib} KiB of OTLP received)",
        on_p50 - off_p50,
        (on_rps / off_rps - 1.0) * 100.0,
        on_cpu - off_cpu,
        (on_cpu / off_cpu - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&store_dir);
}
