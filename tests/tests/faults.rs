//! Faults and bad input: each one answered cleanly, recorded on a span, and
//! the host keeps serving.

use polytrace_tests::*;

fn faults_manifest(extra: &str) -> String {
    format!(
        r#"
app = "faults"
[[component]]
id = "faults"
source = "{}"
route = "/faults/..."
language = "rust"
env = {{ GREETING = "hi" }}
limits = {{ request_timeout_ms = 1000, memory_mb = 32 }}
{extra}
"#,
        component("faults").display()
    )
}

async fn server_span(receiver: &Receiver, response: &Response) -> FlatSpan {
    server_span_of(receiver, &response.trace_id()).await
}

async fn server_span_of(receiver: &Receiver, trace_id: &str) -> FlatSpan {
    let spans = receiver.trace(trace_id, 1).await;
    spans
        .into_iter()
        .find(|s| s.kind == KIND_SERVER)
        .expect("a SERVER span")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_500_with_the_trap_on_the_span() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "trap",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let response = get(&host.url("/faults/trap")).await;
    assert_eq!(response.status, 500);
    assert_eq!(response.json()["trace_id"], response.trace_id());
    let spans = receiver.trace(&response.trace_id(), 2).await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(server.status_code, STATUS_ERROR);
    assert_eq!(server.attributes["http.response.status_code"], 500);
    assert_eq!(server.attributes["error.type"], "500");
    let exception = server.event("exception").expect("exception event");
    assert_eq!(exception["exception.type"], "Trap::UnreachableCodeReached");
    let stack = exception["exception.stacktrace"].as_str().unwrap();
    assert!(
        stack.contains("faults.wasm") || stack.contains("trap_here"),
        "wasm backtrace: {stack}"
    );
    // The guest's own span was open when it trapped: the host ended it, marked.
    let open = spans.iter().find(|s| s.name == "about_to_trap").unwrap();
    assert_eq!(open.attributes["polytrace.span.auto_ended"], true);
    assert_eq!(open.parent_span_id, server.span_id);

    // The next request works.
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_a_504_and_does_not_block_others() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "loop",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let looping = tokio::spawn(get(Box::leak(host.url("/faults/loop").into_boxed_str())));
    // While the loop spins (timeout 1 s), other requests are answered. Sent
    // after the loop has started; both cores may be busy, yet they finish
    // first because the looping guest yields every epoch tick.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..5 {
        let ok = get(&host.url("/faults/ok")).await;
        assert_eq!(ok.status, 200);
    }
    assert!(
        !looping.is_finished(),
        "the loop ended before the other requests were served"
    );
    let response = looping.await.unwrap();
    assert_eq!(response.status, 504, "{}", response.body);
    let server = server_span(&receiver, &response).await;
    assert_eq!(server.status_code, STATUS_ERROR);
    assert_eq!(server.attributes["error.type"], "504");
    assert_eq!(
        server.event("exception").unwrap()["exception.type"],
        "Timeout"
    );
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_fails_after_answering_cuts_its_body_and_its_span_says_so() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "answer-then-fail",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    // A trap right after the first bytes: the guest has ended before the
    // host sends the response head, so the client gets the trap's 500.
    let (status, trace_id, body) = head_then_body(host.addr, "/faults/answer-then-trap").await;
    assert_eq!(status, 500);
    let body = body.expect("the 500's body");
    assert!(
        String::from_utf8_lossy(&body).contains("unreachable"),
        "{body:?}"
    );
    let server = server_span_of(&receiver, &trace_id).await;
    assert_eq!(server.attributes["http.response.status_code"], 500);
    assert_eq!(server.status_code, STATUS_ERROR);
    let exception = server.event("exception").expect("exception event");
    assert_eq!(exception["exception.type"], "Trap::UnreachableCodeReached");

    // A loop the deadline interrupts while the body streams: the head went
    // out, so the body fails: the client never takes 7 bytes for a whole
    // body.
    let (status, trace_id, body) = head_then_body(host.addr, "/faults/answer-then-loop").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "the body ended cleanly: {body:?}");
    let server = server_span_of(&receiver, &trace_id).await;
    assert_eq!(server.attributes["http.response.status_code"], 200);
    assert_eq!(server.status_code, STATUS_ERROR);
    let exception = server.event("exception").expect("exception event");
    assert_eq!(exception["exception.type"], "Timeout");
    assert!(
        exception["exception.message"]
            .as_str()
            .unwrap()
            .contains("ran past its timeout"),
        "{exception:?}"
    );
    // The host keeps serving.
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_does_not_stop_the_guest_halfway() {
    use tokio::io::AsyncWriteExt as _;
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "client-leaves",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    // The guest sleeps 600 ms inside a span; its client leaves after 100.
    let trace_id = "5bd66ef5095369c7b0d1f8f4bd33716a";
    let mut stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /faults/sleep?ms=600 HTTP/1.1\r\nhost: localhost\r\n\
                 traceparent: 00-{trace_id}-5fb397be34d26b51-01\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(stream);
    // The guest ran to its end: its span is whole, not lost or cut.
    let spans = receiver.trace(trace_id, 2).await;
    let sleeping = spans
        .iter()
        .find(|s| s.name == "sleeping")
        .expect("the guest's span");
    assert!(
        sleeping.duration >= std::time::Duration::from_millis(600),
        "the guest's span lasted {:?}",
        sleeping.duration
    );
    assert!(
        !sleeping
            .attributes
            .contains_key("polytrace.span.auto_ended")
    );
    // The SERVER span says the request ended without an answer.
    let server = spans
        .iter()
        .find(|s| s.kind == KIND_SERVER)
        .expect("the SERVER span");
    assert_eq!(server.attributes["error.type"], "RequestCancelled");
    assert!(server.attr("http.response.status_code").is_none());
    // No longer an active request (a request that never ended would stay
    // counted as 1).
    receiver
        .wait_metric("faults", "http.server.active_requests", |p| {
            p.last().is_some_and(|p| p.value == 0.0)
        })
        .await;
    // And its instance went back to the pool: the next request is its second.
    let served = get(&host.url("/faults/served")).await;
    assert_eq!(served.json()["served"], 2, "{}", served.body);
}

/// GET `path` on its own connection: the status and the trace id of the
/// response head, then how its body ended.
async fn head_then_body(
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, String, Result<bytes::Bytes, hyper::Error>) {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("the response head");
    let trace_id = response
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .expect("a traceresponse header")
        .to_string();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes());
    (status, trace_id, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn eating_memory_past_the_limit_is_a_500() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("oom", &faults_manifest(""), &receiver, "http/protobuf", &[]);
    for _ in 0..3 {
        let response = get(&host.url("/faults/oom")).await;
        assert_eq!(response.status, 500, "{}", response.body);
        let server = server_span(&receiver, &response).await;
        assert_eq!(server.status_code, STATUS_ERROR);
        let message = server.event("exception").unwrap()["exception.message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("memory"), "{message}");
    }
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn span_limits_cap_what_a_guest_can_send() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("limits", &faults_manifest(""), &receiver, "grpc", &[]);
    let response = get(&host.url("/faults/attributes")).await;
    assert_eq!(response.status, 200);
    let spans = receiver.trace(&response.trace_id(), 2).await;
    let span = spans.iter().find(|s| s.name == "many_attributes").unwrap();
    // 1 huge + 300 numbered attributes: 128 kept, the rest counted.
    assert_eq!(span.attributes.len(), 128);
    assert_eq!(span.dropped_attributes_count, 301 - 128);
    assert_eq!(span.attributes["huge"].as_str().unwrap().len(), 4096);
    assert_eq!(span.events.len(), 128);
    assert_eq!(span.dropped_events_count, 200 - 128);
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_left_open_are_ended_and_marked() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "unended",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let response = get(&host.url("/faults/unended")).await;
    assert_eq!(response.status, 200);
    let spans = receiver.trace(&response.trace_id(), 2).await;
    let leaked = spans.iter().find(|s| s.name == "never_ended").unwrap();
    assert_eq!(leaked.attributes["polytrace.span.auto_ended"], true);
    assert_eq!(leaked.attributes["leaked"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_span_ignores_later_changes() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "after-end",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let response = get(&host.url("/faults/after-end")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["recording_after_end"], false);
    let spans = receiver.trace(&response.trace_id(), 3).await;
    let probe = spans.iter().find(|s| s.name == "after_end_probe").unwrap();
    assert_eq!(probe.attributes["before"], true);
    assert!(
        probe.attr("after").is_none(),
        "set after end must be a no-op: {probe:#?}"
    );
    assert!(probe.event("late").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_codes_follow_the_conventions() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "status",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let not_found = get(&host.url("/faults/status?code=404")).await;
    assert_eq!(not_found.status, 404);
    let span = server_span(&receiver, &not_found).await;
    assert_eq!(span.status_code, STATUS_UNSET, "4xx is not a server error");
    assert!(span.attr("error.type").is_none());
    let unavailable = get(&host.url("/faults/status?code=503")).await;
    let span = server_span(&receiver, &unavailable).await;
    assert_eq!(span.status_code, STATUS_ERROR);
    assert_eq!(span.attributes["error.type"], "503");

    // A client span is an error on 4xx: call our own 404 in-process.
    let via = get(&host.url("/faults/call?url=http://faults/faults/status?code=404")).await;
    assert_eq!(via.body, "status 404");
    let spans = receiver.trace(&via.trace_id(), 3).await;
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(client.status_code, STATUS_ERROR);
    assert_eq!(client.attributes["error.type"], "404");
    assert_eq!(client.attributes["http.response.status_code"], 404);

    // No route: 404 from the host itself.
    assert_eq!(get(&host.url("/nowhere")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_grants_nothing_the_manifest_does_not() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "sandbox",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[("SECRET_HOST_VAR", "leak")],
    );
    let env = get(&host.url("/faults/env")).await;
    assert_eq!(env.body, "GREETING=hi");
    let fs = get(&host.url("/faults/fs")).await;
    assert!(fs.body.starts_with("denied"), "{}", fs.body);

    // The receiver is a real server on loopback, but not allowed.
    let url = format!("http://{}/v1/traces", receiver.http);
    let denied = get(&host.url(&format!("/faults/call?url={url}"))).await;
    assert_eq!(denied.status, 502);
    assert!(denied.body.contains("HttpRequestDenied"), "{}", denied.body);
    let spans = receiver.trace(&denied.trace_id(), 2).await;
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(client.status_code, STATUS_ERROR);
    assert_eq!(client.attributes["error.type"], "HttpRequestDenied");
    let why = client.event("exception").unwrap()["exception.message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("allowed_outbound_hosts"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_hosts_reach_the_network() {
    let receiver = Receiver::start().await;
    let extra = format!(
        "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]",
        receiver.http.port()
    );
    let host = Polytrace::up(
        "allowed",
        &faults_manifest(&extra),
        &receiver,
        "http/protobuf",
        &[],
    );
    // A GET on the OTLP endpoint is a real network round trip answered 400.
    let url = format!("http://127.0.0.1:{}/v1/traces", receiver.http.port());
    let response = get(&host.url(&format!("/faults/call?url={url}"))).await;
    assert_eq!(response.body, "status 400");
    let spans = receiver.trace(&response.trace_id(), 2).await;
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(client.attributes["url.full"], url);
    assert_eq!(client.attributes["server.port"], receiver.http.port());
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_instance_limit_requests_get_503_and_the_host_recovers() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "overload",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[("POLYTRACE_MAX_INSTANCES", "2")],
    );
    let url = host.url("/faults/sleep?ms=600");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Both instances are taken while the two sleepers run.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rejected = get(&host.url("/faults/ok")).await;
    assert_eq!(rejected.status, 503, "{}", rejected.body);
    assert_eq!(rejected.headers["retry-after"], "1");
    let span = server_span(&receiver, &rejected).await;
    assert_eq!(span.status_code, STATUS_ERROR);
    assert_eq!(
        span.event("exception").unwrap()["exception.type"],
        "Overloaded"
    );
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

/// A span batch that is malformed, too big or too long is refused with
/// what is wrong and where; the request and the host go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_span_batch_is_refused_with_where_it_went_wrong() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "bad-batch",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    let r = get(&host.url("/faults/bad-batch")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let errors: Vec<&str> = r.body.lines().collect();
    assert_eq!(
        errors,
        [
            "span batch: span handle 0 at byte 5",
            "span batch: unknown operation at byte 0",
            "span batch: unexpected end at byte 18",
            "span batch: malformed operation at operation 1",
            "span batch: not valid JSON at operation 0",
            "span batch: batch larger than 16 MiB at byte 0",
            "span batch: more than 65536 operations in one batch at byte 589824",
        ],
        "{}",
        r.body
    );
    // The well-formed span of the JSON batch after the bad operation was kept.
    let spans = receiver.trace(&r.trace_id(), 2).await;
    assert!(spans.iter().any(|s| s.name == "b"), "{spans:?}");
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_cannot_flood_the_host_with_spans_or_handles() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "flood",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    // 3000 spans in one request: the first 1000 are recorded, the rest counted.
    let many = get(&host.url("/faults/many-spans?n=3000")).await;
    assert_eq!(many.status, 200);
    let spans = receiver.trace(&many.trace_id(), 1001).await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(server.attributes["polytrace.spans.dropped"], 2000);
    assert_eq!(
        spans.iter().filter(|s| s.name == "one_of_many").count(),
        1000
    );
    assert_eq!(
        server.status_code, STATUS_UNSET,
        "telemetry limits never fail a request"
    );

    // Handles the guest never drops: past the handle limit it traps.
    let leak = get(&host.url("/faults/leak-handles?n=150000")).await;
    assert_eq!(leak.status, 500, "{}", leak.body);
    let message = leak.json()["error"].as_str().unwrap().to_string();
    // Whichever limit comes first (wasmtime's handle table or polytrace's
    // resource table), the guest traps with a message that says so.
    assert!(
        message.contains("handle") || message.contains("resource table"),
        "{message}"
    );
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
}

/// Status codes a guest may not send as they are (RFC 9110): an interim
/// `1xx` or an out-of-range code as the final response becomes `500` with
/// a JSON body; `204`/`205` are sent without the content the guest wrote.
/// The SERVER span and `http.server.request.duration` record what the
/// client received, with Error status where the host stepped in; the
/// connection stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn statuses_a_guest_may_not_send_as_they_are() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "statuses",
        &faults_manifest(""),
        &receiver,
        "http/protobuf",
        &[],
    );
    // (guest's code, what the client gets, its body, host intervened)
    for (code, sent, body, intervened) in [
        (101, 500, None, true),
        (103, 500, None, true),
        (999, 500, None, true),
        (205, 205, Some(""), true),
        (204, 204, Some(""), true),
        (418, 418, Some("status"), false),
        (200, 200, Some("status"), false),
    ] {
        let r = get(&host.url(&format!("/faults/status?code={code}"))).await;
        assert_eq!(r.status, sent, "guest {code}: {}", r.body);
        match body {
            Some(b) => assert_eq!(r.body, b, "guest {code}"),
            None => {
                let json = r.json();
                assert_eq!(json["kind"], "InvalidResponseStatus", "{json}");
                assert!(
                    json["error"].as_str().unwrap().contains(&code.to_string()),
                    "{json}"
                );
            }
        }
        if code == 205 {
            assert_eq!(r.headers["content-length"], "0");
        }
        let spans = receiver.trace(&r.trace_id(), 1).await;
        let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
        // The span ends after the guest; wait for it to carry the outcome.
        assert_eq!(
            server.attributes["http.response.status_code"], sent,
            "{code}"
        );
        if intervened {
            assert_eq!(server.status_code, STATUS_ERROR, "guest {code}");
            assert_eq!(server.attributes["error.type"], "InvalidResponseStatus");
            assert!(server.event("exception").is_some(), "guest {code}");
        } else {
            assert_eq!(server.status_code, STATUS_UNSET, "guest {code}");
        }
    }
    let durations = receiver
        .wait_metric("faults", "http.server.request.duration", |p| {
            p.iter().any(|p| {
                p.attr("http.response.status_code") == Some(&serde_json::json!(205))
                    && p.attr("error.type") == Some(&serde_json::json!("InvalidResponseStatus"))
            })
        })
        .await;
    assert!(
        durations
            .iter()
            .all(|p| p.attr("http.response.status_code") != Some(&serde_json::json!(101))),
        "the metric records what the client received: {durations:#?}"
    );
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
}
