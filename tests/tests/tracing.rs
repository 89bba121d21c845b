//! The span tree the host produces, checked end to end: the real binary,
//! real components, a real OTLP receiver.

use polytrace_tests::*;
use serde_json::json;

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

fn two_hellos() -> String {
    two_hellos_of("hello_rust", "rust")
}

/// Two components from the same hello example: front (routed) and back.
fn two_hellos_of(wasm: &str, language: &str) -> String {
    let wasm = component(wasm);
    format!(
        r#"
app = "shop"
version = "1.2.3"

[[component]]
id = "hello-front"
source = "{wasm}"
route = "/hello/..."
language = "{language}"

[[component]]
id = "hello-back"
source = "{wasm}"
language = "{language}"
version = "9.9.9"
"#,
        wasm = wasm.display()
    )
}

/// SERVER → guest span → CLIENT → next component's SERVER → guest span,
/// one trace continued from the caller's traceparent.
async fn span_tree_across_components(protocol: &str, wasm: &str, language: &str) {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "tree",
        &two_hellos_of(wasm, language),
        &receiver,
        protocol,
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "uptrace-dsn=http://project1_secret@localhost:14318/1",
        )],
    );
    let traceparent = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    let response = request(
        "GET",
        &host.url("/hello/greet?name=ada&next=http://hello-back/hello/inner"),
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=abc"),
            ("baggage", "user.id=42"),
            ("user-agent", "polytrace-tests/1"),
        ],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["next"]["status"], 200);
    assert_eq!(response.trace_id(), REMOTE_TRACE);

    let spans = receiver.trace(REMOTE_TRACE, 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service() == service && s.name == name)
            .unwrap_or_else(|| panic!("no span {name} of {service}: {spans:#?}"))
    };
    let front = find("hello-front", "GET /hello/*");
    let work = find("hello-front", "hello.work");
    let client = find("hello-front", "GET");
    let back = find("hello-back", "GET");
    let back_work = find("hello-back", "hello.work");

    // Parent links, across the component boundary.
    assert_eq!(front.parent_span_id, REMOTE_SPAN);
    assert_eq!(work.parent_span_id, front.span_id);
    assert_eq!(client.parent_span_id, work.span_id);
    assert_eq!(back.parent_span_id, client.span_id);
    assert_eq!(back_work.parent_span_id, back.span_id);

    // Kinds.
    assert_eq!(front.kind, KIND_SERVER);
    assert_eq!(work.kind, KIND_INTERNAL);
    assert_eq!(client.kind, KIND_CLIENT);
    assert_eq!(back.kind, KIND_SERVER);

    // Semantic conventions on the SERVER span.
    let a = &front.attributes;
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/hello/greet");
    assert_eq!(
        a["url.query"],
        "name=ada&next=http://hello-back/hello/inner"
    );
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["http.route"], "/hello/*");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["server.address"], "127.0.0.1");
    assert_eq!(a["server.port"], host.addr.port());
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["network.protocol.version"], "1.1");
    assert_eq!(a["user_agent.original"], "polytrace-tests/1");
    assert!(a.get("error.type").is_none());
    assert_eq!(front.status_code, STATUS_UNSET);

    // The CLIENT span.
    let c = &client.attributes;
    assert_eq!(c["http.request.method"], "GET");
    assert_eq!(c["url.full"], "http://hello-back/hello/inner");
    assert_eq!(c["server.address"], "hello-back");
    assert_eq!(c["server.port"], 80);
    assert_eq!(c["http.response.status_code"], 200);

    // The callee has no route for the path: its span name is the method alone.
    assert!(back.attr("http.route").is_none());
    assert_eq!(back.attributes["polytrace.caller.component"], "hello-front");

    // Guest attributes keep their types; events arrive.
    let w = &work.attributes;
    assert_eq!(w["hello.name"], "ada");
    assert_eq!(w["hello.polite"], true);
    assert_eq!(w["hello.count"], 3);
    assert_eq!(w["hello.ratio"], 0.5);
    assert_eq!(w["hello.tags"], json!(["a", "b"]));
    assert_eq!(w["hello.flags"], json!([true, false]));
    assert_eq!(w["hello.numbers"], json!([1, 2, 3]));
    assert_eq!(w["hello.weights"], json!([0.25, 0.75]));
    assert_eq!(work.event("checkpoint").unwrap()["step"], 1);

    // One service per component.
    assert_eq!(front.resource["service.name"], "hello-front");
    assert_eq!(front.resource["service.namespace"], "shop");
    assert_eq!(front.resource["service.version"], "1.2.3");
    assert_eq!(front.resource["polytrace.guest.language"], language);
    assert_eq!(back.resource["service.version"], "9.9.9");

    // The exporter sent the configured header to the backend.
    let exports = receiver.exports();
    assert!(exports.iter().all(|e| e.protocol == protocol));
    assert!(
        exports
            .iter()
            .all(|e| e.headers.iter().any(
                |(k, v)| k == "uptrace-dsn" && v == "http://project1_secret@localhost:14318/1"
            )),
        "uptrace-dsn header missing: {:?}",
        exports.iter().map(|e| &e.headers).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn span_tree_over_http_protobuf() {
    span_tree_across_components("http/protobuf", "hello_rust", "rust").await;
}

/// The same tree, attribute for attribute, from each SDK's hello.
#[tokio::test(flavor = "multi_thread")]
async fn span_tree_from_the_python_sdk() {
    span_tree_across_components("http/protobuf", "hello_python", "python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn span_tree_from_the_javascript_sdk() {
    span_tree_across_components("http/protobuf", "hello_js", "javascript").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn span_tree_from_the_go_sdk() {
    span_tree_across_components("grpc", "hello_go", "go").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn span_tree_over_grpc() {
    span_tree_across_components("grpc", "hello_rust", "rust").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn propagation_headers_reach_the_next_service() {
    let receiver = Receiver::start().await;
    let manifest = format!(
        r#"
app = "prop"
[[component]]
id = "echo"
source = "{}"
route = "/faults/..."
"#,
        component("faults").display()
    );
    let host = Polytrace::up("prop", &manifest, &receiver, "http/protobuf", &[]);
    let response = request(
        "GET",
        &host.url("/faults/headers-via?url=http://echo/faults/headers"),
        &[
            (
                "traceparent",
                &format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"),
            ),
            ("tracestate", "vendor=abc,other=x"),
            ("baggage", "user.id=42"),
        ],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = response.json();
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{REMOTE_TRACE}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    assert_eq!(seen["tracestate"], "vendor=abc,other=x");
    assert_eq!(seen["baggage"], "user.id=42");
    // The injected parent is the CLIENT span of the call.
    let spans = receiver.trace(REMOTE_TRACE, 3).await;
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(traceparent.split('-').nth(2).unwrap(), client.span_id);
}

/// Trace context to third parties is a choice (`[component.propagation]`):
/// another component gets `traceparent`, `tracestate` and `baggage`; a
/// network host gets nothing unless listed in `internal_hosts` (all three)
/// or allowed by `external` (`traceparent`, or `trace-context` with
/// `tracestate`), and `baggage` never goes to a host not listed. The
/// callee here is the app itself, reached over the network.
#[tokio::test(flavor = "multi_thread")]
async fn propagation_headers_follow_the_component_policy() {
    let receiver = Receiver::start().await;
    let incoming = [
        ("traceparent", format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01")),
        // A Level 2 key opentelemetry's TraceState cannot hold.
        ("tracestate", "vendor@@x=abc,other=x".to_string()),
        ("baggage", "user.email=a%40b.c".to_string()),
    ];
    for (policy, expected) in [
        ("", [false, false, false]),
        (
            "propagation = { external = \"traceparent\" }",
            [true, false, false],
        ),
        (
            "propagation = { external = \"trace-context\" }",
            [true, true, false],
        ),
        (
            "propagation = { internal_hosts = [\"http://127.0.0.1:*\"] }",
            [true, true, true],
        ),
    ] {
        let manifest = format!(
            "app = \"policy\"\n[[component]]\nid = \"echo\"\nsource = \"{}\"\nroute = \"/faults/...\"\n\
             allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n{policy}\n",
            component("faults").display()
        );
        let host = Polytrace::up("policy", &manifest, &receiver, "http/protobuf", &[]);
        let headers: Vec<(&str, &str)> = incoming.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let over_network = host.url("/faults/headers");
        for (url, expected) in [
            (over_network.as_str(), expected),
            ("http://echo/faults/headers", [true, true, true]),
        ] {
            let response = request(
                "GET",
                &host.url(&format!("/faults/headers-via?url={url}")),
                &headers,
                "",
            )
            .await;
            assert_eq!(response.status, 200, "{}", response.body);
            let seen = response.json();
            let got = ["traceparent", "tracestate", "baggage"].map(|h| seen[h].is_string());
            assert_eq!(got, expected, "{policy:?} to {url}: {seen}");
            if got[0] {
                assert!(
                    seen["traceparent"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("00-{REMOTE_TRACE}-")),
                    "{seen}"
                );
            }
            if got[1] {
                assert_eq!(seen["tracestate"], "vendor@@x=abc,other=x", "{seen}");
            }
            if got[2] {
                assert_eq!(seen["baggage"], "user.email=a%40b.c", "{seen}");
            }
        }
        host.terminate();
    }
}

/// What the host records from the network is bounded: a 60 KB query
/// string and a 9 KB user agent reach the guest whole but are recorded at
/// the attribute cap (4096 bytes by default), with signed-URL secrets
/// redacted as the HTTP semantic conventions say.
#[tokio::test(flavor = "multi_thread")]
async fn client_values_are_capped_and_secrets_redacted() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("caps", &two_hellos(), &receiver, "http/protobuf", &[]);
    let query = format!("Signature=s3cr3t&q={}", "x".repeat(60_000));
    let ua = "u".repeat(9_000);
    let response = request(
        "GET",
        &host.url(&format!("/hello/cap?{query}")),
        &[("user-agent", &ua)],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let spans = receiver.trace(&response.trace_id(), 1).await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    let q = server.attributes["url.query"].as_str().unwrap();
    assert_eq!(q.len(), 4096);
    assert!(q.starts_with("Signature=REDACTED&q=xxx"), "{}", &q[..40]);
    assert_eq!(
        server.attributes["user_agent.original"]
            .as_str()
            .unwrap()
            .len(),
        4096
    );
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_traceparent_starts_a_new_trace() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("invalid-tp", &two_hellos(), &receiver, "http/protobuf", &[]);
    let cases = [
        vec![(
            "traceparent",
            format!("00-{}-{REMOTE_SPAN}-01", "0".repeat(32)),
        )],
        vec![("traceparent", format!("ff-{REMOTE_TRACE}-{REMOTE_SPAN}-01"))],
        vec![(
            "traceparent",
            format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01-junk"),
        )],
        vec![(
            "traceparent",
            format!("00-{}-{REMOTE_SPAN}-01", REMOTE_TRACE.to_uppercase()),
        )],
        // Duplicated traceparent headers.
        vec![
            ("traceparent", format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01")),
            ("traceparent", format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01")),
        ],
    ];
    for headers in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = request("GET", &host.url("/hello/x"), &h, "").await;
        assert_eq!(response.status, 200);
        let trace_id = response.trace_id();
        assert_ne!(trace_id, REMOTE_TRACE, "{headers:?} must not be continued");
        // A new trace: random trace id, Level 2 random flag set.
        assert!(
            response.headers["traceresponse"]
                .to_str()
                .unwrap()
                .ends_with("-03")
        );
        let spans = receiver.trace(&trace_id, 2).await;
        let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
        assert_eq!(
            server.parent_span_id, "",
            "{headers:?}: a new trace has no parent"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsampled_parent_is_respected() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("unsampled", &two_hellos(), &receiver, "http/protobuf", &[]);
    let unsampled = "5bf92f3577b34da6a3ce929d0e0e4736";
    let response = request(
        "GET",
        &host.url("/hello/x"),
        &[("traceparent", &format!("00-{unsampled}-{REMOTE_SPAN}-00"))],
        "",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.trace_id(), unsampled);
    // A sampled request after it proves the pipeline is flowing.
    let sampled = get(&host.url("/hello/y")).await;
    receiver.trace(&sampled.trace_id(), 2).await;
    assert!(receiver.spans().iter().all(|s| s.trace_id != unsampled));
}

/// One request through four languages, each service calling the next with
/// its SDK's HTTP helper: Python → Go → JavaScript → Rust, one trace.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_across_four_languages() {
    let receiver = Receiver::start().await;
    let chain = [
        ("py", "hello_python", "python"),
        ("go", "hello_go", "go"),
        ("js", "hello_js", "javascript"),
        ("rs", "hello_rust", "rust"),
    ];
    let mut manifest = String::from("app = \"polyglot\"\n");
    for (id, wasm, language) in chain {
        manifest += &format!(
            "[[component]]\nid = \"{id}\"\nsource = \"{}\"\nlanguage = \"{language}\"\n",
            component(wasm).display()
        );
        if id == "py" {
            manifest += "route = \"/hello/...\"\n";
        }
    }
    let host = Polytrace::up("polyglot", &manifest, &receiver, "grpc", &[]);
    // Each hop's `next` is the rest of the chain, percent-encoded once more.
    let encode = |s: &str| {
        s.replace('%', "%25")
            .replace('?', "%3F")
            .replace('=', "%3D")
    };
    let url = format!(
        "/hello/start?next={}",
        encode(&format!(
            "http://go/hello?next={}",
            encode(&format!(
                "http://js/hello?next={}",
                encode("http://rs/hello")
            ))
        ))
    );
    let response = request(
        "GET",
        &host.url(&url),
        &[(
            "traceparent",
            &format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"),
        )],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["next"]["status"], 200, "{}", response.body);
    // Per service: SERVER and hello.work; per hop: one CLIENT.
    let spans = receiver.trace(REMOTE_TRACE, 11).await;
    assert_eq!(spans.len(), 11, "{spans:#?}");
    let find = |service: &str, kind: i32| {
        spans
            .iter()
            .find(|s| s.service() == service && s.kind == kind)
            .unwrap_or_else(|| panic!("no kind {kind} span of {service}: {spans:#?}"))
    };
    let mut parent = REMOTE_SPAN.to_string();
    for (i, (id, _, language)) in chain.iter().enumerate() {
        let server = find(id, KIND_SERVER);
        assert_eq!(server.parent_span_id, parent, "{id}");
        let work = spans
            .iter()
            .find(|s| s.service() == *id && s.name == "hello.work")
            .unwrap();
        assert_eq!(work.parent_span_id, server.span_id, "{id}");
        assert_eq!(work.resource["polytrace.guest.language"], *language);
        assert_eq!(work.attributes["hello.count"], 3, "{id}");
        assert_eq!(work.attributes["hello.ratio"], 0.5, "{id}");
        if i + 1 < chain.len() {
            let client = find(id, KIND_CLIENT);
            assert_eq!(client.parent_span_id, work.span_id, "{id}");
            assert_eq!(client.attributes["server.address"], chain[i + 1].0);
            parent = client.span_id.clone();
        }
    }
}

/// Python spans go through `span-batch` in marshal form: a value that is
/// not an attribute value (None, an object marshal cannot write) is left
/// out and counted on the SERVER span, never raised (one nested deeper than
/// a batch may hold too: the span is not lost); subclasses of str and
/// int keep their base type; a span is inert after its end; a span nobody
/// holds ends when it goes, so the next one is its sibling, not its child.
#[tokio::test(flavor = "multi_thread")]
async fn python_span_values_and_lifetimes() {
    let receiver = Receiver::start().await;
    let (_host, r, spans) = one_request(&receiver, "py-spans", "py_spans", "python", 5).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"context_after_end": null, "recording_after_end": false})
    );
    let named = |name: &str| named(&spans, name);
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let values = named("py.values");
    let keys: Vec<&str> = values.attributes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["numbers", "plain", "set.int", "sub.int", "sub.str"]);
    assert_eq!(values.attributes["numbers"], serde_json::json!([1.0, 2.5]));
    assert_eq!(values.attributes["sub.int"], 1);
    assert_eq!(values.attributes["sub.str"], "t");
    assert_eq!(values.attributes["set.int"], 7);
    // none, object, nested, set.object
    assert_eq!(server.attributes["polytrace.attributes.invalid"], 4);
    assert!(
        named("py.ended").attributes.is_empty(),
        "inert after its end"
    );
    for name in ["py.values", "py.ended", "py.dropped", "py.after"] {
        assert_eq!(named(name).parent_span_id, server.span_id, "{name}");
    }
    assert!(
        named("py.dropped")
            .attr("polytrace.span.auto_ended")
            .is_none()
    );
}

/// Go spans through the OpenTelemetry API shapes nest by the context they
/// are started from, also when that context's span is not the host's
/// current one (the SDK then sends the parent explicitly); a remote parent
/// keeps its trace and tracestate; ids that are not hex are no parent.
#[tokio::test]
async fn go_spans_nest_by_their_context() {
    let receiver = Receiver::start().await;
    let (_host, r, spans) = one_request(&receiver, "go-spans", "go_spans", "go", 5).await;
    let remote_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        r.json()["remote_child"],
        serde_json::json!({"trace_id": remote_trace, "trace_state": "vendor=value",
                           "sampled": true, "remote": false})
    );
    let named = |name: &str| named(&spans, name);
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(named("go.a").parent_span_id, server.span_id);
    assert_eq!(named("go.b").parent_span_id, server.span_id, "go.b");
    assert_eq!(named("go.c").parent_span_id, named("go.a").span_id, "go.c");
    assert_eq!(named("go.invalid").parent_span_id, server.span_id);
    let remote = receiver.trace(remote_trace, 1).await;
    assert_eq!(remote[0].name, "go.remote");
    assert_eq!(remote[0].parent_span_id, "00f067aa0ba902b7");
}

/// One test guest, `id` built as `wasm`, served at `/{id}/...`, and one
/// GET of `/{id}/`: the host (kept up while the test reads), the answer
/// (200, or the test fails) and the request's trace of `spans` spans.
async fn one_request(
    receiver: &Receiver,
    id: &str,
    wasm: &str,
    language: &str,
    spans: usize,
) -> (Polytrace, Response, Vec<FlatSpan>) {
    let manifest = format!(
        "app = \"{id}\"\n[[component]]\nid = \"{id}\"\nsource = \"{}\"\nroute = \"/{id}/...\"\nlanguage = \"{language}\"\n",
        component(wasm).display()
    );
    let host = Polytrace::up(id, &manifest, receiver, "http/protobuf", &[]);
    let r = get(&host.url(&format!("/{id}/"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let trace = receiver.trace(&r.trace_id(), spans).await;
    (host, r, trace)
}

/// The span called `name`, or the test fails showing them all.
fn named<'a>(spans: &'a [FlatSpan], name: &str) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}
