//! Warm instances: a component's instances serve request after request
//! (`isolation = "reuse"`, the default) or one request each
//! (`"per-request"`); an instance that trapped, timed out, grew too big or
//! leaked handles is never reused; telemetry never leaks between requests.

use polytrace_tests::*;
use serde_json::json;

/// The faults guest twice: `faults` with the default isolation and
/// `limits`, `fresh` with one instance per request.
fn manifest(limits: &str) -> String {
    let wasm = component("faults");
    format!(
        r#"
app = "reuse"
[[component]]
id = "faults"
source = "{wasm}"
route = "/faults/..."
language = "rust"
limits = {{ request_timeout_ms = 1000, memory_mb = 64{limits} }}

[[component]]
id = "fresh"
source = "{wasm}"
listen = "127.0.0.1:0"
language = "rust"
isolation = "per-request"
"#,
        wasm = wasm.display()
    )
}

async fn served(url: &str) -> u64 {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["served"].as_u64().unwrap()
}

/// The latest value of a host counter of `faults`, by attribute filter.
async fn counter(receiver: &Receiver, name: &str, reason: Option<&str>, at_least: f64) -> f64 {
    let matches = |p: &MetricPoint| {
        reason.is_none_or(|r| p.attr("polytrace.instance.discard_reason") == Some(&json!(r)))
    };
    let points = receiver
        .wait_metric("faults", name, |ps| {
            ps.iter().any(|p| matches(p) && p.value >= at_least)
        })
        .await;
    points
        .iter()
        .filter(|p| matches(p))
        .map(|p| p.value)
        .fold(0.0, f64::max)
}

/// Wait until `faults` has discarded at least `at_least` instances for
/// `reason`; the count.
async fn discards(receiver: &Receiver, reason: &str, at_least: f64) -> f64 {
    counter(
        receiver,
        "polytrace.guest.instance_discards",
        Some(reason),
        at_least,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_instance_keeps_its_globals_a_fresh_one_does_not() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("reuse-globals", &manifest(""), &receiver, "grpc", &[]);
    // One request at a time: one warm instance serves them all.
    for expected in 1..=5 {
        assert_eq!(served(&host.url("/faults/served")).await, expected);
    }
    // In-process calls to the per-request component get a new one each time.
    for _ in 0..3 {
        let r = get(&host.url("/faults/call?url=http://fresh/faults/served")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let fresh = receiver.wait_metric("fresh", "polytrace.guest.instance_discards", |ps| {
        ps.iter().any(|p| p.value >= 3.0)
    });
    let fresh = fresh.await;
    assert_eq!(
        fresh
            .last()
            .unwrap()
            .attr("polytrace.instance.discard_reason"),
        Some(&json!("per_request"))
    );
    let made = receiver
        .wait_metric("fresh", "polytrace.guest.instantiations", |ps| {
            ps.iter().any(|p| p.value >= 3.0)
        })
        .await;
    assert_eq!(made.last().unwrap().value, 3.0);
    // `faults`: made once, reused for the other 4 + 3 requests.
    assert_eq!(
        counter(&receiver, "polytrace.guest.instantiations", None, 1.0).await,
        1.0
    );
    assert_eq!(
        counter(&receiver, "polytrace.guest.instance_reuses", None, 7.0).await,
        7.0
    );
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_discard_the_instance_and_the_next_request_gets_a_healthy_one() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("reuse-faults", &manifest(""), &receiver, "grpc", &[]);
    // Warm one instance up, then break it three ways.
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(served(&host.url("/faults/served")).await, 2);
    assert_eq!(get(&host.url("/faults/trap")).await.status, 500);
    // A new instance: its globals start again.
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(get(&host.url("/faults/loop")).await.status, 504);
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(get(&host.url("/faults/oom")).await.status, 500);
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(served(&host.url("/faults/served")).await, 2);
    for reason in ["trap", "timeout"] {
        discards(&receiver, reason, 1.0).await;
    }
    // The trap and the out-of-memory trap.
    assert_eq!(discards(&receiver, "trap", 2.0).await, 2.0);
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn big_or_leaking_instances_are_replaced_and_requests_per_instance_is_kept() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "reuse-limits",
        &manifest(", requests_per_instance = 3"),
        &receiver,
        "grpc",
        &[],
    );
    // requests_per_instance = 3: the fourth request starts a new instance.
    for expected in [1, 2, 3, 1, 2] {
        assert_eq!(served(&host.url("/faults/served")).await, expected);
    }
    // Memory above the watermark (75% of 64 MiB) after a request: replaced.
    assert_eq!(get(&host.url("/faults/hoard?mb=56")).await.status, 200);
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    // 2000 resource handles leaked (and 2000 spans never ended, which hold
    // nothing past the request): replaced before it grows the host.
    assert_eq!(
        get(&host.url("/faults/leak-handles?n=2000")).await.status,
        200
    );
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    // A few handles kept are fine: the instance stays.
    assert_eq!(get(&host.url("/faults/leak-handles?n=5")).await.status, 200);
    assert_eq!(served(&host.url("/faults/served")).await, 3);
    for reason in ["max_requests", "memory", "handles"] {
        discards(&receiver, reason, 1.0).await;
    }
    host.terminate();
}

/// A guest that leaves a span open past its response, keeps working after
/// responding, and touches the last request's span in the next one: every
/// request's spans stay in that request's trace, under its SERVER span.
#[tokio::test(flavor = "multi_thread")]
async fn telemetry_never_leaks_between_requests_on_one_instance() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("reuse-leaks", &manifest(""), &receiver, "grpc", &[]);
    let traces = [
        "4bf92f3577b34da6a3ce929d0e0e4701",
        "4bf92f3577b34da6a3ce929d0e0e4702",
        "4bf92f3577b34da6a3ce929d0e0e4703",
        "4bf92f3577b34da6a3ce929d0e0e4704",
    ];
    for trace_id in traces {
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let r = request(
            "GET",
            &host.url("/faults/leave-open"),
            &[("traceparent", &traceparent)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (i, trace_id) in traces.iter().enumerate() {
        // SERVER, left_open, after_response: nothing more, nothing less.
        let spans = receiver.trace(trace_id, 3).await;
        assert_eq!(spans.len(), 3, "{spans:#?}");
        let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
        let open = spans.iter().find(|s| s.name == "left_open").unwrap();
        let late = spans.iter().find(|s| s.name == "after_response").unwrap();
        assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(open.parent_span_id, server.span_id);
        assert_eq!(late.parent_span_id, open.span_id);
        // One warm instance served them in order.
        assert_eq!(open.attributes["served"], json!(i as i64 + 1));
        // Ended by the host when its request ended; what the next request
        // did to it was ignored.
        assert_eq!(open.attributes["polytrace.span.auto_ended"], true);
        assert!(open.attr("set.by.next.request").is_none(), "{open:#?}");
        assert!(open.event("next request").is_none(), "{open:#?}");
    }
    host.terminate();
}

/// A JavaScript fetch listener answers once per instance (StarlingMonkey
/// issue 247): its first reused request fails, the host says why, and the
/// component gets a fresh instance per request from then on. A component
/// exporting its handler with the SDK's `serve()` stays warm.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_cannot_answer_twice_is_switched_to_per_request() {
    let receiver = Receiver::start().await;
    let manifest = format!(
        r#"
app = "reuse-js"
[[component]]
id = "listener"
source = "{}"
route = "/listener/..."
language = "javascript"

[[component]]
id = "hello-js"
source = "{}"
route = "/hello/..."
language = "javascript"
"#,
        component("js_fetch_listener").display(),
        component("hello_js").display()
    );
    let host = Polytrace::up("reuse-js", &manifest, &receiver, "grpc", &[]);
    let first = get(&host.url("/listener/x")).await;
    assert_eq!(first.json()["served"], 1);
    // Spans of a fetch listener reach the host although one is left open
    // (the SDK flushes on a microtask outside serve()); the host ends it.
    let spans = receiver.trace(&first.trace_id(), 3).await;
    let open = spans.iter().find(|s| s.name == "listener.open").unwrap();
    assert_eq!(open.attributes["text"], "a\u{fffd}b");
    assert_eq!(open.attributes["polytrace.span.auto_ended"], true);
    let child = spans.iter().find(|s| s.name == "listener.child").unwrap();
    assert_eq!(child.parent_span_id, open.span_id);
    let second = get(&host.url("/listener/x")).await;
    assert_eq!(second.status, 500, "{}", second.body);
    assert_eq!(second.json()["kind"], "NoResponse");
    for _ in 0..3 {
        assert_eq!(served(&host.url("/listener/x")).await, 1);
    }
    assert!(
        host.log()
            .contains("cannot serve two requests on one instance"),
        "{}",
        host.log()
    );
    // serve(): one instance, many requests.
    for _ in 0..5 {
        let r = get(&host.url("/hello/x?name=warm")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["service"], "hello-js");
    }
    let made = receiver
        .wait_metric("hello-js", "polytrace.guest.instance_reuses", |ps| {
            ps.iter().any(|p| p.value >= 4.0)
        })
        .await;
    assert_eq!(made.last().unwrap().value, 4.0);
    host.terminate();
}

/// Idle instances count against `--max-instances`, but never keep another
/// component from being served: an idle one is evicted to make room.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_makes_room_for_another_component() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "reuse-evict",
        &manifest(""),
        &receiver,
        "grpc",
        &[("POLYTRACE_MAX_INSTANCES", "1")],
    );
    // `faults` keeps its one instance idle; `fresh` needs the only slot.
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    let r = get(&host.url("/faults/call?url=http://fresh/faults/ok")).await;
    // The caller holds the one slot while it calls: the callee is refused.
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "status 503");
    // Once the caller is idle, a request to `fresh` (its own listener)
    // evicts it instead of being refused.
    let log = host.log();
    let own = log
        .lines()
        .find(|l| l.contains("(own listener)") && l.contains("component=fresh"))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no listener of `fresh` in the log:\n{log}"))
        .to_string();
    assert_eq!(served(&format!("http://{own}/faults/served")).await, 1);
    discards(&receiver, "evicted", 1.0).await;
    // And back: `faults` gets a new instance (its globals start again).
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    host.terminate();
}

/// An instance idle longer than `instance_idle_timeout_ms` is dropped; the
/// next request gets a new one.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_is_dropped_after_its_timeout() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "reuse-idle",
        &manifest(", instance_idle_timeout_ms = 300"),
        &receiver,
        "grpc",
        &[],
    );
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(served(&host.url("/faults/served")).await, 2);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    discards(&receiver, "idle", 1.0).await;
    host.terminate();
}

/// A guest that once returns without answering loses that instance only:
/// its warm instances had answered before, so reuse goes on.
#[tokio::test(flavor = "multi_thread")]
async fn one_unanswered_request_does_not_stop_reuse() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("reuse-noresp", &manifest(""), &receiver, "grpc", &[]);
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(served(&host.url("/faults/served")).await, 2);
    let none = get(&host.url("/faults/no-response")).await;
    assert_eq!(none.status, 500, "{}", none.body);
    assert_eq!(none.json()["kind"], "NoResponse");
    // A new instance, warm again from its second request on.
    assert_eq!(served(&host.url("/faults/served")).await, 1);
    assert_eq!(served(&host.url("/faults/served")).await, 2);
    assert_eq!(served(&host.url("/faults/served")).await, 3);
    assert!(
        !host.log().contains("cannot serve two requests"),
        "{}",
        host.log()
    );
    host.terminate();
}
