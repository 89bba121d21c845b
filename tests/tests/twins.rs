//! The services of the mission, each run twice: as its native twin (the
//! same app file under its own framework's server with the official
//! OpenTelemetry SDK set up: tests/native/flask_otel.py,
//! tests/native/hono_otel.mjs) and as a polytrace component (the app file
//! alone). Asked the same requests, both sides give traces of the same
//! shape: services, span names, kinds, nesting, status, the app's
//! attributes, `http.route`, the response status and where exceptions are
//! recorded. Go has no twin here: the Go module proxy cannot be reached
//! from this machine, and Debian's official Go SDK (1.1.0) predates the
//! stable metrics API examples/go-nethttp uses.

use polytrace_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The parent span id every request carries (in its `traceparent`): the
/// root of each compared shape.
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A native twin: its process, killed however the test ends, and its URL.
struct Native {
    child: Child,
    url: String,
}

impl Native {
    /// Starts `command` (which prints `listening on URL` first) as
    /// `service`, exporting traces and metrics to `receiver` over OTLP/HTTP
    /// protobuf with short export intervals.
    fn start(mut command: Command, service: &str, receiver: &Receiver) -> Native {
        command
            .env("OTEL_SERVICE_NAME", format!("{service}-native"))
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                receiver.endpoint("http/protobuf"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            // The stable HTTP conventions, which polytrace follows.
            .env("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("the native {service} (run scripts/setup-native.sh): {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(url) = first.strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("the native {service} said {first:?}");
        };
        let url = url.to_string();
        std::thread::spawn(move || for _ in lines {});
        Native { child, url }
    }

    /// A Flask app directory (`examples/...`) under Flask with the SDK.
    fn flask(app_dir: &str, service: &str, receiver: &Receiver) -> Native {
        let mut c = Command::new(repo_dir().join(".tools/native-venv/bin/python"));
        c.arg(repo_dir().join("tests/native/flask_otel.py"))
            .env("APP_DIR", app_dir);
        Native::start(c, service, receiver)
    }

    /// A Hono app directory (`examples/...`) on Node with sdk-node and
    /// @hono/otel; `hosts` maps service names the app calls to twins.
    fn hono(
        app_dir: &str,
        service: &str,
        hosts: &[(&str, &Native)],
        receiver: &Receiver,
    ) -> Native {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|(name, twin)| format!("{name}={}", twin.url.trim_start_matches("http://")))
            .collect();
        let mut c = Command::new("node");
        c.arg(repo_dir().join("tests/native/hono_otel.mjs"))
            .env("APP_DIR", app_dir)
            .env("SERVICE_HOSTS", hosts.join(","));
        Native::start(c, service, receiver)
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of a comparison: method, path, body, the status both sides
/// answer and the number of spans its trace has.
type Case<'a> = (&'a str, &'a str, &'a str, u16, usize);

/// Asks the native twin (at `native_url`) and the component each case and
/// asserts both traces have the same [`shape`], keeping the attributes
/// whose keys start with one of `app_prefixes`.
async fn compare(
    receiver: &Receiver,
    native_url: &str,
    guest: &Polytrace,
    cases: &[Case<'_>],
    app_prefixes: &[&str],
) {
    for (i, &(method, path, body, status, count)) in cases.iter().enumerate() {
        let mut shapes = Vec::new();
        for (side, url) in [
            ("native", format!("{native_url}{path}")),
            ("polytrace", guest.url(path)),
        ] {
            let trace_id = format!("5bf92f3577b34da6a3ce929d0e0e{i:02x}{:02x}", shapes.len());
            let response = request(
                method,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("traceparent", &format!("00-{trace_id}-{CALLER_SPAN}-01")),
                ],
                body,
            )
            .await;
            assert_eq!(
                response.status, status,
                "{side} {method} {path}: {}",
                response.body
            );
            let spans = receiver.trace(&trace_id, count).await;
            shapes.push(shape(&spans, app_prefixes));
        }
        assert_eq!(
            shapes[0], shapes[1],
            "{method} {path}: native (left) and polytrace (right) differ"
        );
    }
}

/// A trace's shape: each span as `service kind name status [attributes]
/// {events}` under its parent (siblings by name), with the attributes
/// whose keys start with one of `app_prefixes`, `http.route` and
/// `http.response.status_code`, and the exception type of each exception
/// event. A native twin's service name loses its `-native` suffix.
fn shape(spans: &[FlatSpan], app_prefixes: &[&str]) -> Vec<String> {
    fn walk(
        spans: &[FlatSpan],
        app_prefixes: &[&str],
        parent: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        let mut children: Vec<&FlatSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by(|a, b| (a.service(), &a.name).cmp(&(b.service(), &b.name)));
        for s in children {
            let attrs: Vec<String> = s
                .attributes
                .iter()
                .filter(|(k, _)| {
                    app_prefixes.iter().any(|p| k.starts_with(p))
                        || k.as_str() == "http.route"
                        || k.as_str() == "http.response.status_code"
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let events: Vec<String> = s
                .events
                .iter()
                .map(|(name, a)| match a.get("exception.type") {
                    Some(t) => format!("{name}:{t}"),
                    None => format!("{name}:{:?}", a.keys().collect::<Vec<_>>()),
                })
                .collect();
            out.push(format!(
                "{}{} {} {} status={} {attrs:?} {events:?}",
                "  ".repeat(depth),
                s.service().trim_end_matches("-native"),
                s.kind,
                s.name,
                s.status_code
            ));
            walk(spans, app_prefixes, &s.span_id, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(spans, app_prefixes, CALLER_SPAN, 0, &mut out);
    out
}

/// Waits until `service` and its native twin have both exported a sum
/// point of `metric` with `key` = `value`.
async fn both_count(receiver: &Receiver, service: &str, metric: &str, key: &str, value: &str) {
    for service in [format!("{service}-native"), service.to_string()] {
        receiver
            .wait_metric(&service, metric, |p| {
                p.iter()
                    .any(|p| p.kind == "sum" && p.attr(key).is_some_and(|s| s == value))
            })
            .await;
    }
}

/// examples/flask-orders: the Flask `/api/orders` service.
#[tokio::test(flavor = "multi_thread")]
async fn flask_orders_traces_like_its_native_twin() {
    let receiver = Receiver::start().await;
    let native = Native::flask("examples/flask-orders", "orders", &receiver);
    let guest = Polytrace::up_dir(
        &repo_dir().join("examples/flask-orders"),
        &receiver,
        "http/protobuf",
        &[],
    );
    let cases = [
        (
            "POST",
            "/api/orders",
            r#"{"items": ["tea", "cake"]}"#,
            201,
            2,
        ),
        ("POST", "/api/orders", r#"{"items": []}"#, 400, 2),
        ("GET", "/api/orders/o-7", "", 200, 3),
        ("GET", "/api/orders/o-9/fail", "", 500, 1),
    ];
    compare(&receiver, &native.url, &guest, &cases, &["order."]).await;
    both_count(
        &receiver,
        "orders",
        "orders.created",
        "order.status",
        "accepted",
    )
    .await;
    guest.terminate();
}

/// examples/hono-sessions: the JavaScript session service (Hono), against
/// the same app.js on Node with sdk-node and Hono's own OpenTelemetry
/// middleware.
#[tokio::test(flavor = "multi_thread")]
async fn hono_sessions_traces_like_its_native_twin() {
    let receiver = Receiver::start().await;
    let native = Native::hono("examples/hono-sessions", "session-service", &[], &receiver);
    let guest = Polytrace::up_dir(
        &repo_dir().join("examples/hono-sessions"),
        &receiver,
        "http/protobuf",
        &[],
    );
    let cases = [
        ("GET", "/sessions/abc", "", 200, 3),
        ("GET", "/sessions/nobody", "", 404, 3),
        ("GET", "/boom", "", 500, 1),
    ];
    compare(&receiver, &native.url, &guest, &cases, &["session."]).await;
    both_count(
        &receiver,
        "session-service",
        "sessions.loaded",
        "status",
        "not_found",
    )
    .await;
    guest.terminate();
}

/// examples/frontend-data: a Hono frontend calling a Flask data processor,
/// against the two twins calling each other: one trace across both
/// services, and a failure in the processor recorded where it was raised
/// and where the frontend caught it, on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn frontend_and_data_processor_trace_like_their_native_twins() {
    let receiver = Receiver::start().await;
    let processor = Native::flask(
        "examples/frontend-data/data-processor",
        "data-processor",
        &receiver,
    );
    let frontend = Native::hono(
        "examples/frontend-data/frontend-api",
        "frontend-api",
        &[("data-processor", &processor)],
        &receiver,
    );
    let guest = Polytrace::up_dir(
        &repo_dir().join("examples/frontend-data"),
        &receiver,
        "http/protobuf",
        &[],
    );
    let cases = [
        ("GET", "/process/ada", "", 200, 5),
        ("GET", "/process/error-ada", "", 500, 5),
    ];
    compare(
        &receiver,
        &frontend.url,
        &guest,
        &cases,
        &["user.", "data."],
    )
    .await;
    guest.terminate();
}
