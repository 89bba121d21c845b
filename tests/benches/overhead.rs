//! Tracing overhead, measured side by side in one run: the same hello-rust
//! app served by two `polytrace` processes, one exporting every span over
//! OTLP to a real receiver, one with `OTEL_SDK_DISABLED=true`. Rounds
//! alternate between the two so drift on a shared machine hits both alike.
//!
//!     cargo bench -p polytrace-tests --bench overhead
//!
//! Beside them, the same service written natively (axum +
//! opentelemetry-rust, tests/native/hello_axum, built by scripts/bench.sh)
//! runs the same way, on and with `OTEL_SDK_DISABLED=true`, so the run
//! also shows what the native SDK costs that service.
//!
//! Environment: BENCH_ROUNDS (default 6), BENCH_SECONDS per round (2),
//! BENCH_CONNECTIONS (4), BENCH_EXPORTER (otlp), BENCH_STORE (a file),
//! BENCH_ENV (more variables for the traced host: `K=V,K=V`),
//! BENCH_NATIVE=0 (leave the native pair out), BENCH_VIEWER=N (then the
//! traced host alone and beside N clients of its viewer's search),
//! BENCH_COMPARE_BIN=<another polytrace build> (its pair too, in the same
//! alternating rounds: two builds measured side by side), BENCH_THREADS=1
//! (each service's CPU per request by thread name, too: where the added
//! CPU goes).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use polytrace_tests::bench::{Native, env_or, median, process_cpu_time, thread_cpu_ns};
use polytrace_tests::{Polytrace, Receiver, component, repo_dir};
use std::collections::BTreeMap;
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
    /// The same by thread name, in µs per request (threads that exited
    /// during the round are left out).
    threads: BTreeMap<String, f64>,
}

/// A round against the service at `addr`, process `pid`.
async fn round(addr: std::net::SocketAddr, pid: u32, seconds: u64, connections: u64) -> Round {
    let cpu_before = process_cpu_time(pid);
    let threads_before = thread_cpu_ns(pid);
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
    let cpu = process_cpu_time(pid) - cpu_before;
    let threads = thread_cpu_ns(pid)
        .into_iter()
        .map(|(name, ns)| {
            let spent = ns.saturating_sub(threads_before.get(&name).copied().unwrap_or(0));
            (name, spent as f64 / 1e3 / all.len() as f64)
        })
        .collect();
    Round {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        cpu_us: cpu.as_secs_f64() * 1e6 / all.len() as f64,
        threads,
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
    // BENCH_COMPARE_BIN: another build's pair, started the same way.
    let compared = std::env::var_os("BENCH_COMPARE_BIN").map(|bin| {
        let bin = std::path::PathBuf::from(bin);
        let mut compare_env = env.clone();
        // A file store of its own beside the other's (`memory` and `none`
        // are the same for both).
        let compare_store = store_dir.join("compared.db").display().to_string();
        if store != "memory" && store != "none" {
            compare_env.retain(|(k, _)| *k != "POLYTRACE_STORE");
            compare_env.push(("POLYTRACE_STORE", compare_store.as_str()));
        }
        (
            Polytrace::up_bin(
                &bin,
                "bench-cmp-on",
                &manifest,
                &receiver,
                "http/protobuf",
                &compare_env,
            ),
            Polytrace::up_bin(
                &bin,
                "bench-cmp-off",
                &manifest,
                &receiver,
                "http/protobuf",
                &[("OTEL_SDK_DISABLED", "true")],
            ),
        )
    });
    // The same hello service written natively with axum and
    // opentelemetry-rust (tests/native/hello_axum), on and off the same
    // way: what the field's own SDK costs this service on this machine.
    let axum = repo_dir().join("tests/native/hello_axum/target/dist/hello-axum-native");
    let natives = if std::env::var("BENCH_NATIVE").is_ok_and(|v| v == "0") {
        None
    } else if !axum.exists() {
        println!(
            "(axum + opentelemetry-rust skipped: build it with scripts/bench.sh overhead, or set BENCH_NATIVE=0)"
        );
        None
    } else {
        let start = |label: &str, disabled: bool| {
            let mut cmd = std::process::Command::new(&axum);
            cmd.env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                receiver.endpoint("http/protobuf"),
            )
            .env("OTEL_SERVICE_NAME", "native-rust")
            .env("PORT", "0");
            if disabled {
                cmd.env("OTEL_SDK_DISABLED", "true");
            }
            Native::start(label, cmd)
        };
        Some((
            start("axum + opentelemetry-rust", false),
            start("axum, OTEL_SDK_DISABLED=true", true),
        ))
    };
    // Pairs of (tracing on, tracing off), each a list of (addr, pid).
    let mut pairs = vec![(
        "polytrace",
        [(traced.addr, traced.pid()), (plain.addr, plain.pid())],
    )];
    if let Some((on, off)) = &compared {
        pairs.push((
            "polytrace (BENCH_COMPARE_BIN)",
            [(on.addr, on.pid()), (off.addr, off.pid())],
        ));
    }
    if let Some((on, off)) = &natives {
        pairs.push((
            "axum + opentelemetry-rust",
            [(on.addr, on.pid()), (off.addr, off.pid())],
        ));
    }
    let services: Vec<(std::net::SocketAddr, u32)> =
        pairs.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    // Warm up every service (first instantiations, connection setup).
    for &(addr, pid) in &services {
        round(addr, pid, 1, connections).await;
    }
    let mut results: Vec<Vec<Round>> = services.iter().map(|_| Vec::new()).collect();
    for i in 0..rounds {
        // Alternate the order, so drift on a shared machine hits all alike.
        let order: Vec<usize> = if i % 2 == 0 {
            (0..services.len()).collect()
        } else {
            (0..services.len()).rev().collect()
        };
        for j in order {
            let (addr, pid) = services[j];
            results[j].push(round(addr, pid, seconds, connections).await);
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
    let kib = receiver.bytes.load(std::sync::atomic::Ordering::Relaxed) / 1024;
    println!(
        "hello-rust, {connections} connections, {rounds} alternating rounds of {seconds}s each (medians)"
    );
    println!(
        "{:<48} {:>12} {:>12} {:>12} {:>14}",
        "", "requests/s", "p50 (µs)", "p99 (µs)", "CPU µs/req"
    );
    for (k, (name, _)) in pairs.iter().enumerate() {
        let (on_rps, on_p50, on_p99, on_cpu) = summarize(&results[2 * k]);
        let (off_rps, off_p50, off_p99, off_cpu) = summarize(&results[2 * k + 1]);
        println!(
            "{:<48} {:>12.0} {:>12.1} {:>12.1} {:>14.1}",
            format!("{name}: tracing on (OTLP export)"),
            on_rps,
            on_p50,
            on_p99,
            on_cpu
        );
        println!(
            "{:<48} {:>12.0} {:>12.1} {:>12.1} {:>14.1}",
            format!("{name}: OTEL_SDK_DISABLED=true"),
            off_rps,
            off_p50,
            off_p99,
            off_cpu
        );
        println!(
            "{name} overhead: p50 {:+.1} µs, throughput {:+.1}% (on/off {:.2}×), CPU per request {:+.1} µs ({:+.1}%)",
            on_p50 - off_p50,
            (on_rps / off_rps - 1.0) * 100.0,
            on_rps / off_rps,
            on_cpu - off_cpu,
            (on_cpu / off_cpu - 1.0) * 100.0
        );
    }
    if std::env::var("BENCH_THREADS").is_ok_and(|v| v == "1") {
        // Medians by thread name, each service beside the others.
        let names: std::collections::BTreeSet<&String> = results
            .iter()
            .flatten()
            .flat_map(|r| r.threads.keys())
            .collect();
        let labels: Vec<String> = pairs
            .iter()
            .flat_map(|(name, _)| [format!("{name} on"), format!("{name} off")])
            .collect();
        println!("CPU µs per request by thread (medians of the rounds):");
        println!(
            "{:<24} {}",
            "",
            labels
                .iter()
                .map(|l| format!("{l:>22}"))
                .collect::<String>()
        );
        for name in names {
            let row: String = results
                .iter()
                .map(|rs| {
                    let v = median(
                        rs.iter()
                            .map(|r| r.threads.get(name).copied().unwrap_or(0.0))
                            .collect(),
                    );
                    format!("{v:>22.2}")
                })
                .collect();
            println!("{name:<24} {row}");
        }
    }
    println!("({kib} KiB of OTLP received in all)");
    // BENCH_VIEWER=N: the traced host again, alone and while N clients ask
    // its viewer for 1,500 traces at a time (the store holds the rounds'
    // spans by now), alternating: what a busy viewer takes from the app.
    let viewers = env_or("BENCH_VIEWER", 0);
    if viewers > 0 {
        let search = traced.ui_url("/api/traces?service=hello&lookback=1h&limit=1500");
        let (mut alone, mut beside) = (Vec::new(), Vec::new());
        let mut answered = 0usize;
        for i in 0..rounds {
            for with_viewer in [i % 2 == 0, i % 2 != 0] {
                if !with_viewer {
                    alone.push(round(traced.addr, traced.pid(), seconds, connections).await);
                    continue;
                }
                let until = Instant::now() + Duration::from_secs(seconds);
                let clients: Vec<_> = (0..viewers)
                    .map(|_| {
                        let search = search.clone();
                        tokio::spawn(async move {
                            let mut n = 0;
                            while Instant::now() < until {
                                if polytrace_tests::get(&search).await.status == 200 {
                                    n += 1;
                                }
                            }
                            n
                        })
                    })
                    .collect();
                beside.push(round(traced.addr, traced.pid(), seconds, connections).await);
                for c in clients {
                    answered += c.await.unwrap();
                }
            }
        }
        let (a_rps, a_p50, a_p99, _) = summarize(&alone);
        let (b_rps, b_p50, b_p99, _) = summarize(&beside);
        println!(
            "{:<48} {:>12.0} {:>12.1} {:>12.1}",
            "polytrace, viewer idle", a_rps, a_p50, a_p99
        );
        println!(
            "{:<48} {:>12.0} {:>12.1} {:>12.1}",
            format!("polytrace, {viewers} viewer clients asking"),
            b_rps,
            b_p50,
            b_p99
        );
        println!(
            "busy viewer: throughput {:.2}× of an idle viewer's, p99 {:+.1} µs ({answered} viewer answers of 1,500 traces)",
            b_rps / a_rps,
            b_p99 - a_p99
        );
    }
    let _ = std::fs::remove_dir_all(&store_dir);
}
