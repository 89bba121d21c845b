//! Services as their teams write them: an unchanged Flask app with the
//! OpenTelemetry API (examples/flask-orders), built by the real toolchain,
//! served by the real binary, traced into a real OTLP receiver.

use polytrace_tests::*;

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

/// `polytrace up` of one example component (`wasm`, a built example) at
/// `route`, exporting to `receiver`, with `env` added.
fn up_one(
    receiver: &Receiver,
    id: &str,
    wasm: &str,
    route: &str,
    language: &str,
    env: &[(&str, &str)],
) -> Polytrace {
    let manifest = format!(
        "app = \"{id}\"\nversion = \"0.1.0\"\n\n[[component]]\nid = \"{id}\"\nsource = \"{}\"\n\
         route = \"{route}\"\nlanguage = \"{language}\"\nlimits = {{ memory_mb = 128 }}\n",
        component(wasm).display()
    );
    Polytrace::up(wasm, &manifest, receiver, "http/protobuf", env)
}

fn flask_orders(receiver: &Receiver) -> Polytrace {
    up_one(
        receiver,
        "orders",
        "flask_orders",
        "/api/...",
        "python",
        &[],
    )
}

fn find<'a>(spans: &'a [FlatSpan], name: &str) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

/// The Flask route names the SERVER span and sets `http.route`; API-made
/// spans nest under it; `get_current_span()` in the view is the SERVER
/// span; the API's counter and histogram, and `logging`, reach the host.
#[tokio::test]
async fn a_flask_app_with_the_opentelemetry_api_traces_unchanged() {
    let receiver = Receiver::start().await;
    let host = flask_orders(&receiver);
    let traceparent = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    let created = request(
        "POST",
        &host.url("/api/orders"),
        &[
            ("content-type", "application/json"),
            ("traceparent", &traceparent),
        ],
        r#"{"items": ["tea", "cake"]}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["items"], 2);
    let order_id = created.json()["id"].as_str().unwrap().to_string();

    let spans = receiver.trace(REMOTE_TRACE, 2).await;
    let server = find(&spans, "POST /api/orders");
    assert_eq!(server.kind, 2);
    assert_eq!(server.parent_span_id, REMOTE_SPAN);
    assert_eq!(server.attr("http.route").unwrap(), "/api/orders");
    assert_eq!(server.attr("order.id").unwrap(), order_id.as_str());
    assert_eq!(server.attr("http.response.status_code").unwrap(), 201);
    // Once: the manifest's route is not also on the span.
    let raw = receiver
        .exports()
        .into_iter()
        .flat_map(|e| e.request.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .find(|s| s.name == "POST /api/orders")
        .unwrap();
    let routes = raw
        .attributes
        .iter()
        .filter(|kv| kv.key == "http.route")
        .count();
    assert_eq!(routes, 1, "{raw:#?}");
    let validate = find(&spans, "validate_order");
    assert_eq!(validate.kind, 1);
    assert_eq!(validate.parent_span_id, server.span_id);
    assert_eq!(validate.attr("order.items").unwrap(), 2);
    assert_eq!(validate.status_code, 0);

    let created = receiver
        .wait_metric("orders", "orders.created", |p| {
            p.iter().any(|p| p.value >= 1.0)
        })
        .await;
    let point = created.last().unwrap();
    assert_eq!(point.kind, "sum");
    assert!(point.monotonic);
    assert_eq!(point.unit, "{order}");
    assert_eq!(point.attr("order.status").unwrap(), "accepted");
    let sizes = receiver
        .wait_metric("orders", "order.items", |p| p.iter().any(|p| p.count >= 1))
        .await;
    assert_eq!(sizes.last().unwrap().value, 2.0);
    let durations = receiver
        .wait_metric("orders", "http.server.request.duration", |p| {
            p.iter()
                .any(|p| p.attr("http.route").is_some_and(|r| r == "/api/orders"))
        })
        .await;
    assert!(
        durations
            .iter()
            .all(|p| p.attr("http.route").is_some_and(|r| r != "/api/*")),
        "the manifest's route replaced by Flask's: {durations:#?}"
    );

    let logs = receiver
        .wait_logs(
            |r| r.trace_id == REMOTE_TRACE,
            |r| {
                r.iter()
                    .any(|r| r.body.as_str().is_some_and(|b| b.starts_with("order ")))
            },
        )
        .await;
    let line = logs
        .iter()
        .find(|r| r.body.as_str().is_some_and(|b| b.starts_with("order ")))
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert_eq!(
        line.body,
        format!("order {order_id} created with 2 items").as_str()
    );
    assert_eq!(line.span_id, server.span_id);
    host.terminate();
}

/// A route with a variable is named by its template; nested
/// `start_as_current_span` blocks nest; events land on their span.
#[tokio::test]
async fn route_templates_and_nesting_come_from_the_framework() {
    let receiver = Receiver::start().await;
    let host = flask_orders(&receiver);
    let response = get(&host.url("/api/orders/o-7")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let spans = receiver.trace(&response.trace_id(), 3).await;
    let server = find(&spans, "GET /api/orders/<order_id>");
    assert_eq!(server.attr("http.route").unwrap(), "/api/orders/<order_id>");
    assert_eq!(server.attr("url.path").unwrap(), "/api/orders/o-7");
    let load = find(&spans, "load_order");
    assert_eq!(load.parent_span_id, server.span_id);
    assert_eq!(load.attr("order.id").unwrap(), "o-7");
    let items = find(&spans, "load_order.items");
    assert_eq!(items.parent_span_id, load.span_id);
    assert_eq!(items.event("cache.miss").unwrap()["cache.key"], "o-7");

    // No route matched: no template, the manifest's route stays.
    let missing = get(&host.url("/api/nothing/here")).await;
    assert_eq!(missing.status, 404);
    let spans = receiver.trace(&missing.trace_id(), 1).await;
    assert_eq!(spans[0].name, "GET /api/*");
    assert_eq!(spans[0].attr("http.route").unwrap(), "/api/*");
    host.terminate();
}

/// An exception in a view: Flask's own 500, the exception on the SERVER
/// span, which has Error status; Flask's error log in the trace.
#[tokio::test]
async fn an_exception_in_a_view_is_a_500_with_the_exception_on_the_server_span() {
    let receiver = Receiver::start().await;
    let host = flask_orders(&receiver);
    let response = get(&host.url("/api/orders/o-9/fail")).await;
    assert_eq!(response.status, 500, "{}", response.body);
    assert!(response.body.contains("Internal Server Error"));
    let trace_id = response.trace_id();
    let spans = receiver.trace(&trace_id, 1).await;
    let server = find(&spans, "GET /api/orders/<order_id>/fail");
    assert_eq!(server.status_code, 2);
    let exception = server
        .event("exception")
        .unwrap_or_else(|| panic!("{server:#?}"));
    assert_eq!(exception["exception.type"], "RuntimeError");
    assert_eq!(
        exception["exception.message"],
        "order o-9 cannot be charged"
    );
    assert!(
        exception["exception.stacktrace"]
            .as_str()
            .unwrap()
            .contains("fail_order"),
        "{exception:#?}"
    );
    receiver
        .wait_logs(
            |r| r.trace_id == trace_id,
            |r| r.iter().any(|r| r.severity_text == "ERROR"),
        )
        .await;
    // The instance keeps serving.
    assert_eq!(get(&host.url("/api/orders/o-1")).await.status, 200);
    host.terminate();
}

/// `propagate.inject` writes the W3C header of the current API span.
#[tokio::test]
async fn propagate_inject_carries_the_current_span() {
    let receiver = Receiver::start().await;
    let host = flask_orders(&receiver);
    let response = get(&host.url("/api/trace")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    let span_id = body["span_id"].as_str().unwrap();
    let traceparent = body["headers"]["traceparent"].as_str().unwrap();
    let trace_id = response.trace_id();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-{span_id}-")),
        "{traceparent}"
    );
    let spans = receiver.trace(&trace_id, 2).await;
    assert_eq!(find(&spans, "inject").span_id, span_id);
    host.terminate();
}

fn go_nethttp(receiver: &Receiver) -> Polytrace {
    up_one(receiver, "fraud-service", "go_nethttp", "/...", "go", &[])
}

/// A net/http ServeMux with Go 1.22 patterns and the OpenTelemetry API's
/// shapes: the pattern names the SERVER span, `tracer.Start(r.Context())`
/// nests under it, `SpanFromContext(r.Context())` is the SERVER span, the
/// counter reaches the host.
#[tokio::test]
async fn a_go_servemux_with_the_opentelemetry_shapes_traces_unchanged() {
    let receiver = Receiver::start().await;
    let host = go_nethttp(&receiver);
    let denied = request(
        "POST",
        &host.url("/verify"),
        &[],
        r#"{"transaction_id": "t-2", "amount": 20000}"#,
    )
    .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.json()["result"], "denied");
    let spans = receiver.trace(&denied.trace_id(), 2).await;
    let server = find(&spans, "POST /verify");
    assert_eq!(server.attr("http.route").unwrap(), "/verify");
    assert_eq!(server.status_code, 0, "a 403 is not a server error");
    let rules = find(&spans, "check_fraud_rules");
    assert_eq!(rules.parent_span_id, server.span_id);
    assert_eq!(rules.attr("transaction.id").unwrap(), "t-2");
    assert_eq!(rules.attr("fraud.detected").unwrap(), true);
    assert_eq!(rules.status_code, 2);
    assert_eq!(
        rules.status_message,
        "amount 20000.00 above the limit 10000.00"
    );
    assert_eq!(
        rules.event("exception").unwrap()["exception.message"],
        "amount 20000.00 above the limit 10000.00"
    );

    let found = get(&host.url("/transactions/t-9")).await;
    assert_eq!(found.status, 200, "{}", found.body);
    let spans = receiver.trace(&found.trace_id(), 2).await;
    let server = find(&spans, "GET /transactions/{id}");
    assert_eq!(server.attr("http.route").unwrap(), "/transactions/{id}");
    assert_eq!(server.attr("transaction.id").unwrap(), "t-9");
    assert_eq!(
        find(&spans, "load_transaction").parent_span_id,
        server.span_id
    );

    let missing = get(&host.url("/nothing")).await;
    assert_eq!(missing.status, 404);
    let spans = receiver.trace(&missing.trace_id(), 1).await;
    assert_eq!(
        spans[0].name, "GET /*",
        "no pattern matched: the manifest's route"
    );

    receiver
        .wait_metric("fraud-service", "verifications.performed", |p| {
            p.iter()
                .any(|p| p.attr("result").is_some_and(|r| r == "denied") && p.value >= 1.0)
        })
        .await;
    host.terminate();
}

/// A handler that panics: 500, the panic on the SERVER span, and the warm
/// instance serves the next request.
#[tokio::test]
async fn a_go_handler_that_panics_is_a_500_with_the_panic_on_the_server_span() {
    let receiver = Receiver::start().await;
    let host = go_nethttp(&receiver);
    let response = get(&host.url("/panic")).await;
    assert_eq!(response.status, 500, "{}", response.body);
    let spans = receiver.trace(&response.trace_id(), 1).await;
    let server = find(&spans, "GET /panic");
    assert_eq!(server.status_code, 2);
    let exception = server
        .event("exception")
        .unwrap_or_else(|| panic!("{server:#?}"));
    assert_eq!(exception["exception.type"], "panic");
    assert_eq!(exception["exception.message"], "rules engine exploded");
    assert!(
        exception["exception.stacktrace"]
            .as_str()
            .unwrap()
            .contains("goroutine"),
        "{exception:#?}"
    );
    let next = request(
        "POST",
        &host.url("/verify"),
        &[],
        r#"{"transaction_id": "t-1", "amount": 12}"#,
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.body);
    host.terminate();
}

fn hono_sessions(receiver: &Receiver) -> Polytrace {
    up_one(
        receiver,
        "session-service",
        "hono_sessions",
        "/...",
        "javascript",
        &[],
    )
}

/// A Hono app with @opentelemetry/api, bundled from its package.json: the
/// Hono route names the SERVER span, startActiveSpan nests across awaits,
/// Hono's middleware runs, the counter reaches the host.
#[tokio::test]
async fn a_hono_app_with_the_opentelemetry_api_traces_unchanged() {
    let receiver = Receiver::start().await;
    let host = hono_sessions(&receiver);
    let found = get(&host.url("/sessions/abc")).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.json()["user_id"], "user-1");
    assert_eq!(
        found.headers.get("x-served-by").unwrap(),
        "session-service",
        "the app's middleware ran"
    );
    let spans = receiver.trace(&found.trace_id(), 3).await;
    let server = find(&spans, "GET /sessions/:id");
    assert_eq!(server.attr("http.route").unwrap(), "/sessions/:id");
    let load = find(&spans, "load_session");
    assert_eq!(load.parent_span_id, server.span_id);
    assert_eq!(load.attr("session.id").unwrap(), "abc");
    assert_eq!(load.attr("session.active").unwrap(), true);
    let lookup = find(&spans, "sessions.lookup");
    assert_eq!(lookup.parent_span_id, load.span_id, "nested after an await");

    let missing = get(&host.url("/sessions/nope")).await;
    assert_eq!(missing.status, 404);
    let spans = receiver.trace(&missing.trace_id(), 3).await;
    let load = find(&spans, "load_session");
    assert_eq!(load.status_code, 2);
    assert_eq!(load.status_message, "session nope not found");

    let unrouted = get(&host.url("/nothing")).await;
    assert_eq!(unrouted.status, 404);
    let spans = receiver.trace(&unrouted.trace_id(), 1).await;
    assert_eq!(spans[0].name, "GET /*", "no Hono route: the manifest's");

    receiver
        .wait_metric("session-service", "sessions.loaded", |p| {
            p.iter()
                .any(|p| p.attr("status").is_some_and(|s| s == "not_found") && p.value >= 1.0)
        })
        .await;

    let traced = get(&host.url("/trace")).await;
    let body = traced.json();
    let span_id = body["span_id"].as_str().unwrap();
    assert!(
        body["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("00-{}-{span_id}-", traced.trace_id())),
        "{body}"
    );
    host.terminate();
}

/// An error thrown in a Hono handler: Hono's 500, the error on the SERVER
/// span, and the instance keeps serving.
#[tokio::test]
async fn an_error_in_a_hono_handler_is_a_500_with_the_error_on_the_server_span() {
    let receiver = Receiver::start().await;
    let host = hono_sessions(&receiver);
    let response = get(&host.url("/boom")).await;
    assert_eq!(response.status, 500, "{}", response.body);
    let spans = receiver.trace(&response.trace_id(), 1).await;
    let server = find(&spans, "GET /boom");
    assert_eq!(server.status_code, 2);
    let exception = server
        .event("exception")
        .unwrap_or_else(|| panic!("{server:#?}"));
    assert_eq!(exception["exception.type"], "Error");
    assert_eq!(exception["exception.message"], "session store unavailable");
    assert_eq!(get(&host.url("/sessions/xyz")).await.status, 200);
    host.terminate();
}

/// A Rust component written against the `opentelemetry` crate's API:
/// `in_span` nests, `record_error` and `set_status` land on the span, the
/// API's counter reaches the host.
#[tokio::test]
async fn a_rust_component_with_the_opentelemetry_crate_traces_unchanged() {
    let receiver = Receiver::start().await;
    let host = up_one(&receiver, "billing", "rust_otel", "/charge", "rust", &[]);
    let charged = request("POST", &host.url("/charge?amount=12"), &[], "").await;
    assert_eq!(charged.status, 200, "{}", charged.body);
    let spans = receiver.trace(&charged.trace_id(), 3).await;
    let server = find(&spans, "POST /charge");
    let charge = find(&spans, "charge_card");
    assert_eq!(charge.parent_span_id, server.span_id);
    assert_eq!(charge.attr("charge.amount").unwrap(), 12.0);
    let ledger = find(&spans, "ledger.write");
    assert_eq!(ledger.parent_span_id, charge.span_id);
    assert_eq!(
        ledger.event("ledger.appended").unwrap()["ledger.entries"],
        1
    );

    let declined = request("POST", &host.url("/charge?amount=5000"), &[], "").await;
    assert_eq!(declined.status, 402, "{}", declined.body);
    let spans = receiver.trace(&declined.trace_id(), 3).await;
    let charge = find(&spans, "charge_card");
    assert_eq!(charge.status_code, 2);
    assert_eq!(charge.status_message, "card declined for 5000.00");
    assert_eq!(
        charge.event("exception").unwrap()["exception.message"],
        "card declined for 5000.00"
    );
    receiver
        .wait_metric("billing", "charges.created", |p| {
            p.iter()
                .any(|p| p.attr("charge.status").is_some_and(|s| s == "declined"))
        })
        .await;
    host.terminate();
}

/// HEAD, as health checks send it: the GET route's headers, no body, and
/// the instance stays warm (no trap). Flask and Hono both.
#[tokio::test]
async fn head_requests_answer_without_a_body_and_keep_the_instance() {
    let receiver = Receiver::start().await;
    let flask = flask_orders(&receiver);
    let hono = hono_sessions(&receiver);
    for (host, path, service) in [
        (&flask, "/api/orders/o-1", "orders"),
        (&hono, "/sessions/abc", "session-service"),
    ] {
        let head = request("HEAD", &host.url(path), &[], "").await;
        assert_eq!(head.status, 200, "{service}: {}", head.body);
        assert!(head.body.is_empty());
        // SERVER and the view's two spans (the SERVER span ends last).
        let spans = receiver.trace(&head.trace_id(), 3).await;
        let server = spans
            .iter()
            .find(|s| s.kind == KIND_SERVER)
            .unwrap_or_else(|| panic!("{service}: {spans:#?}"));
        assert_eq!(server.status_code, 0, "{service}: {server:#?}");
        assert_eq!(get(&host.url(path)).await.status, 200);
        let metrics = prometheus_text(host).await;
        assert!(
            !metrics.contains("polytrace_guest_instance_discards_total"),
            "{service}: an instance was discarded:\n{metrics}"
        );
    }
    flask.terminate();
    hono.terminate();
}

/// The host's Prometheus text, for what it says about instances.
async fn prometheus_text(host: &Polytrace) -> String {
    get(&host.ui_url("/metrics")).await.body
}

/// PEP 3333: a UTF-8 path and query reach Flask as the client wrote them.
#[tokio::test]
async fn a_flask_view_gets_utf8_paths_and_queries_whole() {
    let receiver = Receiver::start().await;
    let host = flask_orders(&receiver);
    let response = get(&host.url("/api/orders/%C3%A9t%C3%A9?q=%C3%A9")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["id"], "été");
    host.terminate();
}

/// Under a span attribute count limit, the guest's SERVER span attributes
/// go after the host's: `http.route` and the status stay, the guest's are
/// what the limit drops.
#[tokio::test]
async fn guest_server_attributes_never_push_out_the_hosts() {
    let receiver = Receiver::start().await;
    let host = up_one(
        &receiver,
        "orders",
        "flask_orders",
        "/api/...",
        "python",
        &[("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "9")],
    );
    let created = request(
        "POST",
        &host.url("/api/orders"),
        &[("content-type", "application/json")],
        r#"{"items": ["tea"]}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let spans = receiver.trace(&created.trace_id(), 2).await;
    let server = find(&spans, "POST /api/orders");
    assert_eq!(
        server.attr("http.route").unwrap(),
        "/api/orders",
        "{server:#?}"
    );
    assert_eq!(server.attr("http.response.status_code").unwrap(), 201);
    assert!(server.attr("order.id").is_none(), "{server:#?}");
    assert!(server.dropped_attributes_count > 0);
    host.terminate();
}
