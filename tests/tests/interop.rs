//! One trace across native OpenTelemetry services and wasm guests, in both
//! directions: a native Python service (official `opentelemetry-sdk` with
//! the WSGI and urllib instrumentations) calls a polytrace app, whose
//! Python guest calls a native Node.js service (`@opentelemetry/sdk-node`
//! with the HTTP instrumentation). All three export OTLP to one receiver.
//! The native SDKs come from scripts/setup-native.sh (tests/native/).

use polytrace_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A native service process, killed when dropped.
struct Native {
    child: Child,
    url: String,
}

impl Native {
    fn start(mut cmd: Command) -> Native {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/setup-native.sh)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{cmd:?} did not start"));
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{cmd:?} said {first:?}"))
            .to_string();
        // Keep draining its stdout.
        std::thread::spawn(move || for _ in lines {});
        Native { child, url }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_across_native_and_wasm_services() {
    let receiver = Receiver::start().await;
    let otlp = receiver.endpoint("http/protobuf");
    let repo = repo_dir();

    // wasm → native: the guest's outbound call lands in a Node.js service.
    let mut node = Command::new("node");
    node.arg(repo.join("tests/native/node_service.cjs"))
        .current_dir(repo.join("tests/native"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    let node = Native::start(node);

    let manifest = format!(
        r#"
app = "interop"
[[component]]
id = "wasm-python"
source = "{}"
route = "/hello/..."
language = "python"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
propagation = {{ internal_hosts = ["http://127.0.0.1:*"] }}
"#,
        component("hello_python").display()
    );
    let host = Polytrace::up("interop", &manifest, &receiver, "http/protobuf", &[]);

    // native → wasm: a Python service calls the polytrace app.
    let downstream = format!(
        "{}?next={}",
        host.url("/hello/interop"),
        format!("{}/work", node.url)
            .replace(':', "%3A")
            .replace('/', "%2F")
    );
    let mut python = Command::new(repo.join(".tools/native-venv/bin/python"));
    python
        .arg(repo.join("tests/native/python_service.py"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("DOWNSTREAM_URL", &downstream);
    let python = Native::start(python);

    let response = get(&format!("{}/start", python.url)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["downstream_status"], 200, "{body}");
    assert_eq!(body["downstream"]["next"]["status"], 200, "{body}");

    // native-python: SERVER, work, CLIENT; polytrace: SERVER, hello.work,
    // CLIENT; native-node: SERVER, work.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.spans();
        if spans.len() >= 8 || std::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(spans.len(), 8, "{spans:#?}");
    let trace_id = &spans[0].trace_id;
    assert!(
        spans.iter().all(|s| &s.trace_id == trace_id),
        "one trace id across native and wasm: {spans:#?}"
    );
    let find = |service: &str, kind: i32| {
        spans
            .iter()
            .find(|s| s.service() == service && s.kind == kind)
            .unwrap_or_else(|| panic!("no kind {kind} span of {service}: {spans:#?}"))
    };
    let named = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service() == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name} of {service}: {spans:#?}"))
    };
    let py_server = find("native-python", KIND_SERVER);
    let py_work = named("native-python", "native-python.work");
    let py_client = find("native-python", KIND_CLIENT);
    let wasm_server = find("wasm-python", KIND_SERVER);
    let wasm_work = named("wasm-python", "hello.work");
    let wasm_client = find("wasm-python", KIND_CLIENT);
    let node_server = find("native-node", KIND_SERVER);
    let node_work = named("native-node", "native-node.work");

    assert_eq!(
        py_server.parent_span_id, "",
        "the native Python service is the root"
    );
    assert_eq!(py_work.parent_span_id, py_server.span_id);
    assert_eq!(py_client.parent_span_id, py_work.span_id);
    // native → wasm: the host continued the native CLIENT span's context.
    assert_eq!(wasm_server.parent_span_id, py_client.span_id);
    assert_eq!(wasm_work.parent_span_id, wasm_server.span_id);
    assert_eq!(wasm_client.parent_span_id, wasm_work.span_id);
    // wasm → native: the Node SDK continued the host's CLIENT span.
    assert_eq!(node_server.parent_span_id, wasm_client.span_id);
    assert_eq!(node_work.parent_span_id, node_server.span_id);
    assert_eq!(
        wasm_client.attributes["url.full"],
        format!("{}/work", node.url)
    );
    host.terminate();
}
