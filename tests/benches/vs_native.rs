//! polytrace guests against the same service written natively with its
//! language's own OpenTelemetry SDK, side by side in one run.
//!
//!     scripts/bench.sh vs_native
//!
//! Each examples/hello-* runs in its own `polytrace up` as a user runs it
//! (tracing on, OTLP/HTTP export, the SQLite file store), once with warm
//! instances (the default) and once with `isolation = "per-request"`. The
//! natives (tests/native, installed by scripts/setup-native.sh) are Flask
//! with opentelemetry-instrumentation-flask on gunicorn (2 sync workers),
//! Express with @opentelemetry/sdk-node (HTTP and Express
//! instrumentations), axum with opentelemetry-rust (SERVER span and child
//! span, batched OTLP/HTTP) and Go `net/http` (no OpenTelemetry SDK can be
//! fetched here: it does the work without tracing). Every one exports to
//! the same OTLP endpoint, which discards what it gets. Rounds alternate
//! over every service; medians are reported, with page faults per request
//! and resident memory of the serving processes.
//!
//! `flask` in BENCH_LANGUAGES adds examples/flask-orders (an unchanged Flask
//! app with the OpenTelemetry API; `GET /api/orders/o-7`, two API spans)
//! against its native twin, tests/native/flask_otel.py (APP_DIR=examples/flask-orders), on gunicorn;
//! `hono` adds examples/hono-sessions (Hono with @opentelemetry/api;
//! `GET /sessions/abc`, two API spans) against the same service in Express
//! with sdk-node, tests/native/sessions_express.cjs.
//!
//! Environment: BENCH_ROUNDS (3), BENCH_SECONDS per round (5),
//! BENCH_CONNECTIONS (4), BENCH_LANGUAGES (python,javascript,rust,go; or
//! flask, hono),
//! BENCH_BEFORE (the path of an earlier `polytrace` build to run beside,
//! with its defaults: a fresh instance per request).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use polytrace_tests::bench::{Native, env_or, median};
use polytrace_tests::{Polytrace, Receiver, component, repo_dir, scratch_dir, target_dir};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// One connection sending requests back to back until `until`; it
/// reconnects when the server closes (gunicorn's sync workers close every
/// connection after one request).
async fn client(addr: SocketAddr, path: &'static str, until: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut sender = None;
    while Instant::now() < until {
        let started = Instant::now();
        let s = match &mut sender {
            Some(s) => s,
            None => {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                sender.insert(s)
            }
        };
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        match s.send_request(req).await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                let close = resp
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                resp.into_body().collect().await.unwrap();
                latencies.push(started.elapsed());
                if close {
                    sender = None;
                }
            }
            // Closed between requests: connect again.
            Err(_) => sender = None,
        }
    }
    latencies
}

struct Round {
    rps: f64,
    p50: f64,
    p99: f64,
    faults_per_request: f64,
    rss_mib: f64,
}

/// Minor + major page faults and resident KiB of `pid` and its children.
fn process_tree(pid: u32) -> (u64, u64) {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or(vec![], |(_, r)| r.split_whitespace().collect());
                if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(parent)
                    && !pids.contains(&p)
                {
                    pids.push(p);
                }
            }
        }
        i += 1;
    }
    let (mut faults, mut rss) = (0, 0);
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state ppid ... minflt is field 10, majflt 12 (1-based from pid).
            faults += f.get(7).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            faults += f.get(9).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (faults, rss)
}

async fn round(service: &Service, seconds: u64, connections: u64) -> Round {
    let (faults_before, _) = process_tree(service.pid);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(service.addr, service.path, until)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (faults_after, rss) = process_tree(service.pid);
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Round {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50).as_secs_f64() * 1e3,
        p99: pct(0.99).as_secs_f64() * 1e3,
        faults_per_request: (faults_after - faults_before) as f64 / all.len() as f64,
        rss_mib: rss as f64 / 1024.0,
    }
}

/// One service of the comparison: its guest and what it is asked.
#[derive(Clone, Copy)]
struct App {
    /// BENCH_LANGUAGES' name for it.
    key: &'static str,
    language: &'static str,
    wasm: &'static str,
    route: &'static str,
    path: &'static str,
}

/// A service under test: a polytrace host or a native process.
struct Service {
    language: &'static str,
    /// What every request asks for.
    path: &'static str,
    label: String,
    native: bool,
    addr: SocketAddr,
    pid: u32,
    _host: Option<Polytrace>,
    _native: Option<Native>,
}

/// A polytrace host serving the hello guest; `isolation` `None`: an
/// earlier build (`before`), run with its own default isolation (builds
/// before warm instances knew no isolation setting and made a fresh
/// instance per request).
fn guest(
    app: &App,
    isolation: Option<&str>,
    before: Option<&std::path::Path>,
    receiver: &Receiver,
) -> Service {
    let label = match (isolation, before) {
        (Some(i), _) => format!("polytrace, {i}"),
        (None, _) => "polytrace before (its defaults)".to_string(),
    };
    let App {
        key,
        language,
        wasm,
        route,
        path,
    } = *app;
    let name = format!("vs-native-{key}-{}", isolation.unwrap_or("before"));
    let dir = scratch_dir(&name);
    let isolation_line = isolation.map_or(String::new(), |i| format!("isolation = \"{i}\"\n"));
    std::fs::write(
        dir.join("polytrace.toml"),
        format!(
            "app = \"bench\"\n[[component]]\nid = \"{key}\"\nsource = \"{}\"\n\
             route = \"{route}\"\nlanguage = \"{language}\"\n{isolation_line}",
            component(wasm).display()
        ),
    )
    .unwrap();
    // The default store: a SQLite file beside the manifest.
    let store = dir.join(".polytrace").join("traces.db");
    let env = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        receiver.endpoint("http/protobuf"),
    )];
    let args = ["--store", store.to_str().unwrap(), "--guest-logs", "off"];
    let host = match before {
        Some(bin) => Polytrace::start_bin(bin, &dir, &args, &env),
        None => Polytrace::start_with_args(&dir, &args, &env),
    };
    Service {
        language: key,
        path,
        label,
        native: false,
        addr: host.addr,
        pid: host.pid(),
        _host: Some(host),
        _native: None,
    }
}

/// Start a native service exporting to `receiver`.
fn native(app: &App, label: &str, mut cmd: Command, receiver: &Receiver) -> Service {
    let language = app.key;
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        receiver.endpoint("http/protobuf"),
    )
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    .env("OTEL_SERVICE_NAME", format!("native-{language}"))
    .env("OTEL_METRICS_EXPORTER", "none")
    .env("OTEL_LOGS_EXPORTER", "none")
    .env("PORT", "0");
    let native = Native::start(label, cmd);
    Service {
        language,
        path: app.path,
        label: label.to_string(),
        native: true,
        addr: native.addr,
        pid: native.pid(),
        _host: None,
        _native: Some(native),
    }
}

#[tokio::main]
async fn main() {
    let rounds = env_or("BENCH_ROUNDS", 3);
    let seconds = env_or("BENCH_SECONDS", 5);
    let connections = env_or("BENCH_CONNECTIONS", 4);
    let languages =
        std::env::var("BENCH_LANGUAGES").unwrap_or_else(|_| "python,javascript,rust,go".into());
    // BENCH_BEFORE: an earlier `polytrace` binary to run beside this one.
    let before = std::env::var_os("BENCH_BEFORE").map(std::path::PathBuf::from);
    let receiver = Receiver::start_sink().await;
    let native_dir = repo_dir().join("tests").join("native");
    let mut services = Vec::new();
    for key in languages.split(',') {
        let hello = |language, wasm| App {
            key: language,
            language,
            wasm,
            route: "/hello/...",
            path: "/hello/bench?name=b",
        };
        let app = match key {
            "python" => hello("python", "hello_python"),
            "javascript" => hello("javascript", "hello_js"),
            "rust" => hello("rust", "hello_rust"),
            "go" => hello("go", "hello_go"),
            // examples/flask-orders, an unchanged Flask app with the
            // OpenTelemetry API, against its native twin.
            "flask" => App {
                key: "flask",
                language: "python",
                wasm: "flask_orders",
                route: "/api/...",
                path: "/api/orders/o-7",
            },
            // examples/hono-sessions (Hono with @opentelemetry/api) against
            // the same service in Express with sdk-node.
            "hono" => App {
                key: "hono",
                language: "javascript",
                wasm: "hono_sessions",
                route: "/...",
                path: "/sessions/abc",
            },
            other => panic!("BENCH_LANGUAGES: unknown language {other}"),
        };
        services.push(guest(&app, Some("reuse"), None, &receiver));
        services.push(guest(&app, Some("per-request"), None, &receiver));
        if let Some(bin) = &before {
            services.push(guest(&app, None, Some(bin), &receiver));
        }
        // Flask apps on gunicorn (2 sync workers), Express apps with
        // sdk-node loaded first.
        let gunicorn = |wsgi_app: &str| {
            let mut c = Command::new(repo_dir().join(".tools/native-venv/bin/gunicorn"));
            c.current_dir(&native_dir).args([
                "-c",
                "gunicorn_conf.py",
                "-w",
                "2",
                "-b",
                "127.0.0.1:0",
                wsgi_app,
            ]);
            ("Flask + SDK, gunicorn -w 2", c)
        };
        let express = |script: &str| {
            let mut c = Command::new("node");
            c.current_dir(&native_dir)
                .args(["--require", "./hello_express_otel.cjs", script]);
            ("Express + sdk-node", c)
        };
        let cmd = match key {
            "flask" => {
                let (name, mut c) = gunicorn("flask_otel:app");
                c.env("APP_DIR", "examples/flask-orders");
                (name, c)
            }
            "python" => gunicorn("hello_flask:app"),
            "hono" => express("sessions_express.cjs"),
            "javascript" => express("hello_express.cjs"),
            "rust" => (
                "axum + opentelemetry-rust",
                // Built with the same `dist` profile as the host (bench.sh).
                Command::new(native_dir.join("hello_axum/target/dist/hello-axum-native")),
            ),
            _ => (
                "net/http (no SDK)",
                Command::new(target_dir().join("native/hello_go")),
            ),
        };
        services.push(native(&app, cmd.0, cmd.1, &receiver));
    }
    // Warm-up: first instantiations, compiled code, connections.
    for s in &services {
        round(s, 1, connections).await;
    }
    let mut results: Vec<Vec<Round>> = services.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        // Alternate the order, so drift on a shared machine hits all alike.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..services.len()).collect()
        } else {
            (0..services.len()).rev().collect()
        };
        for i in order {
            results[i].push(round(&services[i], seconds, connections).await);
        }
    }
    println!(
        "hello service, {connections} connections, {rounds} alternating rounds of {seconds} s (medians)"
    );
    println!(
        "{:<11} {:<30} {:>9} {:>9} {:>9} {:>12} {:>9} {:>14}",
        "language", "service", "req/s", "p50 ms", "p99 ms", "faults/req", "RSS MiB", "vs native"
    );
    for (i, s) in services.iter().enumerate() {
        let rs = &results[i];
        let rps = median(rs.iter().map(|r| r.rps).collect());
        let native_rps = services
            .iter()
            .zip(&results)
            .find(|(n, _)| n.native && n.language == s.language)
            .map(|(_, nr)| median(nr.iter().map(|r| r.rps).collect()))
            .unwrap();
        println!(
            "{:<11} {:<30} {:>9.0} {:>9.2} {:>9.2} {:>12.1} {:>9.0} {:>13.2}×",
            s.language,
            s.label,
            rps,
            median(rs.iter().map(|r| r.p50).collect()),
            median(rs.iter().map(|r| r.p99).collect()),
            median(rs.iter().map(|r| r.faults_per_request).collect()),
            median(rs.iter().map(|r| r.rss_mib).collect()),
            rps / native_rps
        );
    }
}
