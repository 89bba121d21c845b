//! Start-up, `check`, the compile cache, a backend that is down, and
//! graceful shutdown.

use polytrace_tests::*;
use std::process::Command;

fn hello_manifest() -> String {
    format!(
        r#"
app = "life"
[[component]]
id = "hello"
source = "{}"
route = "/hello/..."
language = "rust"
"#,
        component("hello_rust").display()
    )
}

fn check(dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(polytrace_bin())
        .arg("check")
        .arg(dir)
        .env("POLYTRACE_CACHE_DIR", target_dir().join("test-cache"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_accepts_a_valid_app() {
    let dir = scratch_dir("check-ok");
    std::fs::write(dir.join("polytrace.toml"), hello_manifest()).unwrap();
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    assert!(out.contains("app `life` is valid (1 component)"), "{out}");
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let dir = scratch_dir("check-bad");
    let file = dir.join("polytrace.toml");
    std::fs::write(
        &file,
        "app = \"bad\"\n\n[[component]]\nid = \"UPPER\"\nsource = \"a.wasm\"\nroute = \"no-slash\"\n",
    )
    .unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok);
    let f = file.display();
    assert!(
        out.contains(&format!(
            "{f}:4:6: component `UPPER`: id `UPPER` must be a DNS label"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{f}:6:9: component `UPPER`: route `no-slash` must start with `/`"
        )),
        "{out}"
    );

    std::fs::write(&file, "app = \"bad\"\n[[component]\nid = 1\n").unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok);
    assert!(
        out.contains(&format!("{f}:2:")),
        "a syntax error names its line: {out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn check_names_components_that_are_missing_invalid_or_do_not_fit() {
    let dir = scratch_dir("check-components");
    // Not wasm at all.
    std::fs::write(dir.join("junk.wasm"), b"definitely not wasm").unwrap();
    // A core module, not a component.
    std::fs::write(dir.join("core.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    // A component that imports something polytrace does not provide.
    let alien = wat::parse_str(
        r#"(component (import "acme:rockets/launch" (instance (export "go" (func)))))"#,
    )
    .unwrap();
    std::fs::write(dir.join("alien.wasm"), alien).unwrap();
    // A component with nothing to serve.
    std::fs::write(
        dir.join("empty.wasm"),
        wat::parse_str("(component)").unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("polytrace.toml"),
        r#"app = "bad"
[[component]]
id = "missing"
source = "nope.wasm"
build = "make nope"

[[component]]
id = "junk"
source = "junk.wasm"

[[component]]
id = "core"
source = "core.wasm"

[[component]]
id = "alien"
source = "alien.wasm"

[[component]]
id = "empty"
source = "empty.wasm"
"#,
    )
    .unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok, "{out}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.contains(&format!("component `{id}`")))
            .unwrap_or_else(|| panic!("no line for {id}: {out}"))
            .to_string()
    };
    assert!(line("missing").contains("polytrace.toml:2:1:"), "{out}");
    assert!(
        line("missing").contains("does not exist: build it with `make nope`"),
        "{out}"
    );
    assert!(
        line("junk").contains("is not a WebAssembly binary"),
        "{out}"
    );
    assert!(
        line("core").contains("is not a valid WebAssembly component"),
        "{out}"
    );
    assert!(
        line("alien").contains("does not fit the polytrace:telemetry/service world"),
        "{out}"
    );
    assert!(line("alien").contains("acme:rockets/launch"), "{out}");
    assert!(
        line("empty").contains("does not export `wasi:http/incoming-handler"),
        "{out}"
    );
    assert!(out.contains("5 problems found"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_a_broken_app_with_a_clear_error() {
    let dir = scratch_dir("up-bad");
    std::fs::write(
        dir.join("polytrace.toml"),
        "app = \"x\"\n[[component]]\nid = \"a\"\nsource = \"gone.wasm\"\n",
    )
    .unwrap();
    let out = Command::new(polytrace_bin())
        .args(["up", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("component `a`: ") && err.contains("gone.wasm` does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_is_cached_between_starts() {
    let receiver = Receiver::start().await;
    let cache = scratch_dir("cache");
    let env = [("POLYTRACE_CACHE_DIR", cache.to_str().unwrap())];
    let first = Polytrace::up(
        "cache-1",
        &hello_manifest(),
        &receiver,
        "http/protobuf",
        &env,
    );
    assert!(first.log().contains("compiling"), "{}", first.log());
    drop(first);
    let second = Polytrace::up(
        "cache-2",
        &hello_manifest(),
        &receiver,
        "http/protobuf",
        &env,
    );
    let log = second.log();
    assert!(log.contains("loaded compiled code from cache"), "{log}");
    assert!(!log.contains("compiling"), "{log}");
    assert_eq!(get(&second.url("/hello/x")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_is_down_never_fails_a_request() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let host = hello_exporting_to(
        "down",
        closed,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
        ],
    );
    for _ in 0..20 {
        assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("span export failed"), "{log}");
    assert!(log.contains("Is the OTLP backend running?"), "{log}");
    // Every span was accounted for as dropped.
    let dropped_line = log.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(dropped_line.contains("exported=0"), "{dropped_line}");
    assert!(dropped_line.contains("dropped=40"), "{dropped_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_requests_and_flushes_every_span() {
    let receiver = Receiver::start().await;
    // A schedule delay far longer than the test: only the shutdown flush can
    // deliver these spans.
    let host = Polytrace::up(
        "sigterm",
        &hello_manifest(),
        &receiver,
        "grpc",
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let mut traces = Vec::new();
    for _ in 0..3 {
        traces.push(get(&host.url("/hello/x")).await.trace_id());
    }
    assert!(
        receiver.spans().is_empty(),
        "{:#?}\n{}",
        receiver.spans(),
        host.log()
    );
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    for t in traces {
        assert_eq!(receiver.trace(&t, 2).await.len(), 2);
    }
    assert!(log.contains("exported=6"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_disabled_serves_without_recording() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "disabled",
        &hello_manifest(),
        &receiver,
        "http/protobuf",
        &[("OTEL_SDK_DISABLED", "true")],
    );
    let r = request(
        "GET",
        &host.url("/hello/x"),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let (code, _) = host.terminate();
    assert_eq!(code, Some(0));
    assert!(receiver.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish() {
    let receiver = Receiver::start().await;
    let manifest = format!(
        "app = \"x\"\n[[component]]\nid = \"faults\"\nsource = \"{}\"\nroute = \"/faults/...\"\n",
        component("faults").display()
    );
    let host = Polytrace::up("inflight", &manifest, &receiver, "http/protobuf", &[]);
    let url = host.url("/faults/sleep?ms=700");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // Wait until the guest is running (its SERVER span is open), then stop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::task::spawn_blocking(move || host.terminate());
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "slept");
    let (code, log) = stopping.await.unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(receiver.trace(&response.trace_id(), 2).await.len(), 2);
}

/// A signal sent the moment the host says it listens stops it cleanly:
/// the handlers are installed before that line (they used to be installed
/// by a task that might not have run yet, and the SIGTERM then killed the
/// host by its default action: no exit code, spans not flushed).
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_right_after_the_listening_line_stops_the_app_cleanly() {
    let dir = scratch_dir("early-signal");
    std::fs::write(dir.join("polytrace.toml"), hello_manifest()).unwrap();
    for _ in 0..10 {
        let host = Polytrace::start(&dir, &[]);
        let (code, log) = tokio::task::spawn_blocking(move || host.terminate())
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("shutting down"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_never_slows_a_request() {
    let addr = black_hole().await;
    let host = hello_exporting_to(
        "black-hole",
        addr,
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    // While the exports wait on the black hole, the export stage fills up
    // and later batches are not exported; every request is still answered.
    for _ in 0..30 {
        assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("slower than they come"), "{log}");
    assert!(log.contains("span export failed"), "{log}");
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(
        stopped.contains("exported=0") && stopped.contains("dropped=60"),
        "{stopped}"
    );
}

/// hello-rust in a scratch dir named `name`, exporting over OTLP/HTTP to
/// `backend`, with `env` besides.
fn hello_exporting_to(
    name: &str,
    backend: std::net::SocketAddr,
    env: &[(&str, &str)],
) -> Polytrace {
    let dir = scratch_dir(name);
    std::fs::write(dir.join("polytrace.toml"), hello_manifest()).unwrap();
    let mut all = vec![(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        format!("http://{backend}"),
    )];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Polytrace::start(&dir, &all)
}

/// A listener that accepts connections and never reads or answers.
async fn black_hole() -> std::net::SocketAddr {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_costs_neither_the_console_nor_the_trace_store() {
    // Exports hang for 2 s each; every printed line still reaches the
    // console and every span the viewer's store well before that, since
    // neither waits for the backend.
    let addr = black_hole().await;
    let dir = scratch_dir("black-hole-local");
    std::fs::write(
        dir.join("polytrace.toml"),
        format!(
            "app = \"x\"\n[[component]]\nid = \"faults\"\nsource = \"{}\"\nroute = \"/faults/...\"\n",
            component("faults").display()
        ),
    )
    .unwrap();
    let host = Polytrace::start(
        &dir,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{addr}"),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "2000".into()),
            // Small batches and queues: many exports, most of them past
            // what the export stage holds (4 waiting: 32 / 8).
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE".into(), "8".into()),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE".into(), "8".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE".into(), "32".into()),
            ("OTEL_BLRP_MAX_QUEUE_SIZE".into(), "32".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
            ("OTEL_BLRP_SCHEDULE_DELAY".into(), "50".into()),
        ],
    );
    let requests = 100;
    for _ in 0..requests {
        assert_eq!(get(&host.url("/faults/print")).await.status, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let (mut printed, mut stored) = (0, 0);
    while std::time::Instant::now() < deadline {
        printed = host.stdout().matches("inside the span").count();
        let search = get(&host.ui_url("/api/traces?service=faults&limit=1000")).await;
        stored = search.json()["data"].as_array().map_or(0, |t| t.len());
        if printed == requests && stored == requests {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(printed, requests, "lines printed on the console");
    assert_eq!(stored, requests, "traces in the viewer's store");
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("slower than they come"), "{log}");
    // Two spans a request, none exported, each counted once.
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(
        stopped.contains("exported=0") && stopped.contains(&format!("dropped={}", 2 * requests)),
        "{stopped}"
    );
}

/// How a scripted OTLP/HTTP backend answers its `n`th traces export (from
/// 1): status, `Retry-After`, and how long it takes.
type Script = fn(usize) -> (u16, Option<&'static str>, std::time::Duration);

/// An OTLP/HTTP backend answering traces exports as `script` says (other
/// signals: 200 at once); the times the exports arrived.
async fn scripted_backend(
    script: Script,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = posts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let traces = req.uri().path() == "/v1/traces";
                            let _ = req.into_body().collect().await;
                            let (status, retry_after, delay) = if traces {
                                let n = {
                                    let mut seen = seen.lock().unwrap();
                                    seen.push(std::time::Instant::now());
                                    seen.len()
                                };
                                script(n)
                            } else {
                                (200, None, std::time::Duration::ZERO)
                            };
                            tokio::time::sleep(delay).await;
                            let mut response = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf");
                            if let Some(v) = retry_after {
                                response = response.header("retry-after", v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(bytes::Bytes::new())).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    (addr, posts)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_span_export_is_retried_after_the_wait_the_backend_asks_for() {
    // The first traces export is refused with 503 and `Retry-After: 1`;
    // every later one is accepted.
    let (addr, posts) = scripted_backend(|n| match n {
        1 => (503, Some("1"), std::time::Duration::ZERO),
        _ => (200, None, std::time::Duration::ZERO),
    })
    .await;
    let host = hello_exporting_to("throttled", addr, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while posts.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "one refused export, one retry: {log}");
    assert!(
        posts[1] - posts[0] >= std::time::Duration::from_millis(950),
        "retried after {:?}, before the second Retry-After asked for",
        posts[1] - posts[0]
    );
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(
        stopped.contains("exported=2") && stopped.contains("dropped=0"),
        "{stopped}"
    );
    assert!(!log.contains("span export failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_zero_does_not_turn_retries_into_a_flood() {
    // A backend that always refuses with `Retry-After: 0`: the retries of
    // one batch still wait the backoff (0.25-0.5 s, then doubling), so a
    // 2 s budget holds a handful of attempts, not thousands.
    let (addr, posts) = scripted_backend(|_| (503, Some("0"), std::time::Duration::ZERO)).await;
    let host = hello_exporting_to(
        "retry-after-zero",
        addr,
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    let n = posts.lock().unwrap().len();
    assert!((2..=8).contains(&n), "{n} attempts at one batch: {log}");
    assert!(
        log.contains("span export failed") && log.contains("503"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_gets_its_whole_timeout_even_after_waiting_for_a_slot() {
    // Every export takes 700 ms of a 1 s timeout. Twelve batches at once:
    // four start, four wait for a slot (700 ms), the rest are not exported.
    // The waiting four still get their full second once they start.
    let (addr, _posts) =
        scripted_backend(|_| (200, None, std::time::Duration::from_millis(700))).await;
    let host = hello_exporting_to(
        "slow-backend",
        addr,
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            // Four batches may wait for a slot (8 / 2).
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ],
    );
    for _ in 0..12 {
        assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("span export failed"), "{log}");
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(stopped.contains("dropped="), "{stopped}");
    let count = |key: &str| -> u64 {
        let at = stopped.find(key).unwrap() + key.len();
        stopped[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (exported, dropped) = (count("exported="), count("dropped="));
    assert_eq!(exported + dropped, 24, "{stopped}");
    assert!(exported >= 16, "{stopped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_exporter_prints_one_line_per_span() {
    let dir = scratch_dir("console");
    std::fs::write(dir.join("polytrace.toml"), hello_manifest()).unwrap();
    let host = Polytrace::start(
        &dir,
        &[
            ("OTEL_TRACES_EXPORTER".into(), "console".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
        ],
    );
    let response = get(&host.url("/hello/x")).await;
    assert_eq!(response.status, 200);
    let trace_id = response.trace_id();
    // Only the shutdown flush can print them, given the schedule delay.
    let (code, log, stdout) = tokio::task::spawn_blocking(move || host.terminate_with_stdout())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    let spans: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(&format!("trace={trace_id}")))
        .collect();
    assert_eq!(spans.len(), 2, "{stdout}");
    assert!(
        spans.iter().any(|l| l.contains("SERVER")
            && l.contains("GET /hello/*")
            && l.contains("parent=root")),
        "{stdout}"
    );
    assert!(
        spans.iter().any(|l| l.contains("INTERNAL")
            && l.contains("hello.work")
            && l.contains("hello.count=3")),
        "{stdout}"
    );
}

/// A component with `listen` in the manifest gets a listener of its own
/// (every path goes to it), next to the shared one, with the same tracing.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_can_have_its_own_listener() {
    let receiver = Receiver::start().await;
    let manifest = format!(
        r#"
app = "ports"
[[component]]
id = "front"
source = "{hello}"
route = "/hello/..."
[[component]]
id = "side"
source = "{hello}"
listen = "127.0.0.1:0"
"#,
        hello = component("hello_rust").display()
    );
    let host = Polytrace::up("own-listener", &manifest, &receiver, "grpc", &[]);
    let log = host.log();
    let own: std::net::SocketAddr = log
        .lines()
        .find(|l| l.contains("serving") && l.contains("component=side"))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no own listener in the log:\n{log}"));
    assert_ne!(own.port(), host.addr.port());
    let response = get(&format!("http://{own}/hello/direct?name=side")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let spans = receiver.trace(&response.trace_id(), 2).await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(server.service(), "side");
    assert_eq!(server.attributes["server.port"], own.port());
    // The shared listener still routes only by route; `side` is not on it.
    let shared = get(&host.url("/side")).await;
    assert_eq!(shared.status, 404);

    // A bad `listen` is a manifest error with its line.
    let bad = manifest.replace("127.0.0.1:0", "port eighty");
    let dir = scratch_dir("bad-listen");
    std::fs::write(dir.join("polytrace.toml"), &bad).unwrap();
    let out = std::process::Command::new(polytrace_bin())
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("polytrace.toml:10:10: component `side`:")
            && stderr.contains("`listen` = `port eighty` is not an address"),
        "{stderr}"
    );
}

/// `OTEL_TRACES_EXPORTER=otlp,console`: every span goes to the backend and
/// prints on the console.
#[tokio::test(flavor = "multi_thread")]
async fn otlp_and_console_together() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "otlp-console",
        &hello_manifest(),
        &receiver,
        "grpc",
        &[("OTEL_TRACES_EXPORTER", "otlp,console")],
    );
    let response = get(&host.url("/hello/x")).await;
    let trace_id = response.trace_id();
    assert_eq!(receiver.trace(&trace_id, 2).await.len(), 2);
    let (_, log, stdout) = tokio::task::spawn_blocking(move || host.terminate_with_stdout())
        .await
        .unwrap();
    assert!(log.contains("spans=otlp Grpc to"), "{log}");
    assert!(log.contains(" + console"), "{log}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(&format!("trace={trace_id}")))
            .count(),
        2,
        "{stdout}"
    );
}
