//! The embedded store, its Jaeger-compatible query API and the viewer,
//! against the real binary serving examples/checkout: every endpoint, every
//! filter, the error cases, persistence across a restart, and the viewer in
//! headless Chromium (tests/browser/viewer.test.mjs).

use polytrace_tests::*;
use serde_json::{Value as Json, json};
use std::time::Duration;

fn order(session: &str, amount: &str, payment: &str) -> String {
    format!(
        r#"{{"user_id": "user-1", "session_id": "{session}", "amount": {amount},
            "items": [{{"sku": "book-42", "qty": 2}}], "payment_method": "{payment}"}}"#
    )
}

/// Send the checkouts of the demo; returns the trace ids by outcome.
async fn checkouts(host: &Polytrace) -> Vec<(&'static str, String)> {
    let mut ids = Vec::new();
    for (name, body) in [
        ("approved", order("abc", "42.5", "visa")),
        ("denied", order("abc", "20000", "visa")),
        ("unknown", order("nope", "42.5", "visa")),
        ("declined", order("xyz", "42.5", "declined")),
        ("failed", order("xyz", "666", "visa")),
    ] {
        let r = request("POST", &host.url("/checkout"), &[], &body).await;
        ids.push((name, r.trace_id()));
    }
    ids
}

async fn api(host: &Polytrace, path: &str) -> (u16, Json) {
    let r = get(&host.ui_url(path)).await;
    (r.status, r.json())
}

/// Wait until the store has `count` spans of `trace_id`.
async fn stored(host: &Polytrace, trace_id: &str, count: usize) -> Json {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api(host, &format!("/api/traces/{trace_id}")).await;
        if status == 200 && body["data"][0]["spans"].as_array().unwrap().len() >= count {
            return body["data"][0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trace {trace_id} not stored: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until span `operation` of `trace_id` has a guest log record
/// (records are stored on their own schedule, after the spans); returns it.
async fn stored_log(host: &Polytrace, trace_id: &str, operation: &str) -> Json {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let trace = stored(host, trace_id, 1).await;
        let found = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["operationName"] == operation)
            .and_then(|s| {
                s["logs"].as_array().unwrap().iter().find(|l| {
                    l["fields"]
                        .as_array()
                        .unwrap()
                        .contains(&json!({"key": "event", "type": "string", "value": "log"}))
                })
            })
            .cloned();
        if let Some(log) = found {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log on {operation}: {trace}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn trace_ids(body: &Json) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect()
}

/// examples/checkout with its data in a scratch directory and its
/// sessions created (the trace ids of those requests).
async fn start_checkout(store: &str) -> (Polytrace, Vec<String>) {
    let dir = repo_dir().join("examples/checkout");
    let (_, mut env) = checkout_data_env("viewer-checkout");
    env.extend([
        ("OTEL_TRACES_EXPORTER".into(), "none".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    let host = Polytrace::start_with_args(&dir, &["--store", store, "--ui", "127.0.0.1:0"], &env);
    let seeded = seed_checkout_sessions(&host.url("")).await;
    (host, seeded)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_api_answers_like_jaeger() {
    let (host, seeded) = start_checkout("memory").await;
    let ids = checkouts(&host).await;
    let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let failed = stored(&host, &id("failed"), 21).await;
    stored(&host, &id("approved"), 22).await;
    stored(&host, &id("declined"), 20).await;
    stored(&host, &id("denied"), 10).await;
    stored(&host, &id("unknown"), 10).await;

    // The trace in Jaeger's model.
    assert_eq!(failed["traceID"], id("failed"));
    let spans = failed["spans"].as_array().unwrap();
    let processes = failed["processes"].as_object().unwrap();
    let service_of = |s: &Json| {
        processes[s["processID"].as_str().unwrap()]["serviceName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let charge = spans
        .iter()
        .find(|s| s["operationName"] == "charge_card")
        .unwrap();
    assert_eq!(service_of(charge), "billing");
    let tags = charge["tags"].as_array().unwrap();
    let tag = |k: &str| tags.iter().find(|t| t["key"] == k).cloned();
    assert_eq!(
        tag("error").unwrap(),
        json!({"key": "error", "type": "bool", "value": true})
    );
    assert_eq!(tag("payment.method").unwrap()["type"], "string");
    assert_eq!(tag("payment.amount").unwrap()["type"], "float64");
    assert_eq!(tag("span.kind").unwrap()["value"], "internal");
    let exception = &charge["logs"][0];
    assert!(exception["timestamp"].as_i64().unwrap() >= charge["startTime"].as_i64().unwrap());
    let fields = exception["fields"].as_array().unwrap();
    assert!(fields.contains(&json!({"key": "event", "type": "string", "value": "exception"})));
    assert!(
        fields
            .iter()
            .any(|f| f["key"] == "exception.type" && f["value"] == "app.PaymentProcessorError")
    );
    // The guest's log record (Python logging, inside charge_card) is a
    // Jaeger log of its span: event "log", level, message.
    let log = stored_log(&host, &id("failed"), "charge_card").await;
    let fields = log["fields"].as_array().unwrap();
    assert!(fields.contains(&json!({"key": "level", "type": "string", "value": "ERROR"})));
    assert!(fields.contains(&json!(
        {"key": "message", "type": "string", "value": "payment processor did not answer in time"}
    )));
    assert!(
        fields
            .iter()
            .any(|f| f["key"] == "code.function.name" && f["value"] == "charge")
    );
    let parent = &charge["references"][0];
    assert_eq!(parent["refType"], "CHILD_OF");
    let parent_span = spans
        .iter()
        .find(|s| s["spanID"] == parent["spanID"])
        .unwrap();
    assert_eq!(parent_span["operationName"], "POST");
    assert!(charge["duration"].as_i64().unwrap() > 0);
    assert!(charge["startTime"].as_i64().unwrap() > 1_700_000_000_000_000);
    let billing_process = processes
        .values()
        .find(|p| p["serviceName"] == "billing")
        .unwrap();
    assert!(billing_process["tags"].as_array().unwrap().contains(&json!(
        {"key": "polytrace.guest.language", "type": "string", "value": "python"}
    )));

    // Services and operations.
    let (_, services) = api(&host, "/api/services").await;
    assert_eq!(
        services["data"],
        json!(["api-gateway", "billing", "fraud-service", "session-service"])
    );
    assert_eq!(services["total"], 4);
    let (_, ops) = api(&host, "/api/services/fraud-service/operations").await;
    assert_eq!(ops["data"], json!(["GET", "POST", "check_fraud_rules"]));

    // Search filters.
    let h = &host;
    let search = |q: &str| {
        let path = format!("/api/traces?lookback=1h&limit=50&{q}");
        async move { api(h, &path).await }
    };
    let (_, all) = search("").await;
    // The five checkouts and the two requests that created their sessions.
    assert_eq!(all["data"].as_array().unwrap().len(), 7);
    // Newest first.
    assert_eq!(trace_ids(&all)[0], id("failed"));
    let (_, billing) = search("service=billing").await;
    let mut got = trace_ids(&billing);
    got.sort();
    let mut want = vec![id("approved"), id("declined"), id("failed")];
    want.sort();
    assert_eq!(got, want);
    let (_, errors) = search("service=billing&tags=%7B%22error%22%3A%22true%22%7D").await;
    assert_eq!(trace_ids(&errors), vec![id("failed")]);
    let (_, logfmt) = search("service=billing&tags=payment.method%3Ddeclined").await;
    assert_eq!(trace_ids(&logfmt), vec![id("declined")]);
    let (_, typed) = search("service=fraud-service&tags=fraud.detected%3Dtrue").await;
    assert_eq!(trace_ids(&typed), vec![id("denied")]);
    let (_, op) =
        search("service=session-service&operation=load_session&tags=session.id%3Dnope").await;
    assert_eq!(trace_ids(&op), vec![id("unknown")]);
    let (_, status_error) = search("status=error").await;
    let mut got = trace_ids(&status_error);
    got.sort();
    // CLIENT spans of 4xx answers are errors too (HTTP conventions).
    let mut want = vec![id("failed"), id("denied"), id("unknown"), id("declined")];
    want.sort();
    assert_eq!(got, want);
    let (_, status_ok) = search("status=ok").await;
    let mut got = trace_ids(&status_ok);
    got.sort();
    let mut want = vec![id("approved")];
    want.extend(seeded.iter().cloned());
    want.sort();
    assert_eq!(got, want);
    let (_, slow) = search("service=api-gateway&minDuration=1h").await;
    assert_eq!(slow["data"], json!([]));
    let (_, fast) = search("service=api-gateway&maxDuration=1us").await;
    assert_eq!(fast["data"], json!([]));
    let (_, any) = search("service=api-gateway&minDuration=1us&maxDuration=1h").await;
    assert_eq!(any["data"].as_array().unwrap().len(), 5);
    // Not through `search`: a repeated parameter counts once, first value
    // first (as Jaeger's parser reads it).
    let (_, limited) = api(h, "/api/traces?lookback=1h&limit=2").await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 2);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let (_, past) = api(
        &host,
        &format!(
            "/api/traces?start={}&end={}",
            now_us - 7_200_000_000,
            now_us - 3_600_000_000
        ),
    )
    .await;
    assert_eq!(past["data"], json!([]));

    // Dependencies, as Jaeger's (milliseconds).
    let now_ms = now_us / 1000;
    let (_, deps) = api(
        &host,
        &format!("/api/dependencies?endTs={now_ms}&lookback=3600000"),
    )
    .await;
    let mut edges: Vec<(String, String, i64)> = deps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().into(),
                d["child"].as_str().unwrap().into(),
                d["callCount"].as_i64().unwrap(),
            )
        })
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        vec![
            ("api-gateway".into(), "billing".into(), 3),
            ("api-gateway".into(), "fraud-service".into(), 5),
            ("api-gateway".into(), "session-service".into(), 3),
            ("fraud-service".into(), "session-service".into(), 5),
        ]
    );

    // Service map and summary.
    let (_, map) = api(&host, "/api/polytrace/service-map?lookback=1h").await;
    let billing_edge = map["data"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "billing")
        .unwrap()
        .clone();
    assert_eq!(billing_edge["requests"], 3);
    assert_eq!(billing_edge["errors"], 1);
    assert!(
        billing_edge["latency_us"]["p95"].as_i64().unwrap()
            >= billing_edge["latency_us"]["p50"].as_i64().unwrap()
    );
    let languages: Vec<(String, String)> = map["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["service"].as_str().unwrap().into(),
                n["language"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(languages.contains(&("fraud-service".into(), "go".into())));
    let (_, summary) = api(&host, "/api/polytrace/summary?lookback=1h").await;
    let gateway = summary["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "api-gateway" && r["operation"] == "POST /checkout")
        .unwrap()
        .clone();
    assert_eq!(gateway["count"], 5);
    assert_eq!(gateway["error_percent"], 20.0);

    // Bad input: Jaeger's error shape with 400, never a 500.
    for bad in [
        "/api/traces?minDuration=fast",
        "/api/traces?limit=many",
        "/api/traces?lookback=3weeks",
        "/api/traces?start=10&end=5",
        "/api/traces?tags=%7Bbroken",
        "/api/traces?operation=POST",
        "/api/traces?status=maybe",
        "/api/traces?minDuration=2s&maxDuration=1s",
        "/api/traces/not-a-trace-id",
        "/api/dependencies?endTs=yesterday",
    ] {
        let (status, body) = api(&host, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errors"][0]["code"], 400, "{bad}: {body}");
        assert!(
            body["errors"][0]["msg"].as_str().unwrap().len() > 5,
            "{bad}"
        );
        assert_eq!(body["data"], Json::Null);
    }
    let (status, body) = api(&host, &format!("/api/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, 404, "{body}");
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_survive_a_restart() {
    let dir = scratch_dir("store-restart");
    let db = dir.join("traces.db");
    let db = db.to_str().unwrap();
    let (host, _) = start_checkout(db).await;
    let r = request(
        "POST",
        &host.url("/checkout"),
        &[],
        &order("abc", "5", "visa"),
    )
    .await;
    assert_eq!(r.status, 200);
    let trace_id = r.trace_id();
    stored(&host, &trace_id, 22).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("trace store flushed"), "{log}");

    let (again, _) = start_checkout(db).await;
    let trace = stored(&again, &trace_id, 22).await;
    assert_eq!(trace["spans"].as_array().unwrap().len(), 22);
    again.terminate();

    // A shorter retention applies at start: the old trace is gone.
    let (_, mut env) = checkout_data_env("viewer-retention");
    env.push(("OTEL_TRACES_EXPORTER".into(), "none".into()));
    let strict = Polytrace::start_with_args(
        &repo_dir().join("examples/checkout"),
        &["--store", db, "--ui", "127.0.0.1:0", "--retention", "1ms"],
        &env,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = api(&strict, &format!("/api/traces/{trace_id}")).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "trace not expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    strict.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_viewer_works_in_a_real_browser() {
    let (host, _) = start_checkout("memory").await;
    let ids = checkouts(&host).await;
    for (name, id) in &ids {
        let count = match *name {
            "denied" | "unknown" => 10,
            "declined" => 20,
            "failed" => 21,
            _ => 22,
        };
        stored(&host, id, count).await;
    }
    let failed = &ids.iter().find(|(n, _)| *n == "failed").unwrap().1;
    stored_log(&host, failed, "charge_card").await;
    let shots = target_dir().join("screenshots");
    let out = std::process::Command::new("node")
        .arg(repo_dir().join("tests/browser/viewer.test.mjs"))
        .arg(host.ui_url(""))
        .arg(&shots)
        .current_dir(repo_dir().join("tests/browser"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n(screenshots in {})",
        shots.display()
    );
    assert!(stdout.contains("all expectations met"));
    for shot in ["1-search.png", "2-trace.png", "3-map.png", "4-summary.png"] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
    host.terminate();
}

/// A trace of ~5,000 spans (five components, 999 spans each, calling one
/// another) is stored whole and the viewer renders it without freezing.
#[tokio::test(flavor = "multi_thread")]
async fn a_trace_of_five_thousand_spans() {
    let mut manifest = String::from("app = \"big\"\n");
    for i in 1..=5 {
        manifest += &format!(
            "[[component]]\nid = \"hop{i}\"\nsource = \"{}\"\n{}",
            component("faults").display(),
            if i == 1 {
                "route = \"/faults/...\"\n"
            } else {
                ""
            }
        );
    }
    let dir = scratch_dir("big-trace");
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    let host = Polytrace::start(
        &dir,
        &[
            ("OTEL_TRACES_EXPORTER".into(), "none".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE".into(), "20000".into()),
        ],
    );
    // hop1 → hop2 → ... → hop5, each URL nested in the previous one's `next`.
    let mut url = "http://hop5/faults/many-spans?n=999".to_string();
    for hop in (2..=4).rev() {
        url = format!(
            "http://hop{hop}/faults/many-spans?n=999&next={}",
            url.replace('%', "%25")
                .replace('&', "%26")
                .replace('=', "%3D")
                .replace('?', "%3F")
        );
    }
    let first = format!(
        "/faults/many-spans?n=999&next={}",
        url.replace('%', "%25")
            .replace('&', "%26")
            .replace('=', "%3D")
            .replace('?', "%3F")
    );
    let response = get(&host.url(&first)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let trace_id = response.trace_id();
    // 5 × (SERVER + 999) + 4 CLIENT spans.
    let trace = stored(&host, &trace_id, 5004).await;
    assert_eq!(trace["spans"].as_array().unwrap().len(), 5004);
    assert_eq!(trace["processes"].as_object().unwrap().len(), 5);

    let shots = target_dir().join("screenshots");
    let out = std::process::Command::new("node")
        .arg(repo_dir().join("tests/browser/big-trace.test.mjs"))
        .arg(host.ui_url(""))
        .arg(&trace_id)
        .arg(&shots)
        .current_dir(repo_dir().join("tests/browser"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5004 rows rendered"), "{stdout}");
    host.terminate();
}

/// `--store none`: no store, no viewer (the address serves only Prometheus
/// `/metrics`); the app serves as before.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_can_be_turned_off() {
    let (_, mut env) = checkout_data_env("viewer-store-off");
    env.extend([
        ("OTEL_TRACES_EXPORTER".into(), "none".into()),
        ("OTEL_METRICS_EXPORTER".into(), "none".into()),
        ("OTEL_LOGS_EXPORTER".into(), "none".into()),
    ]);
    let host = Polytrace::start_with_args(
        &repo_dir().join("examples/checkout"),
        &["--store", "none"],
        &env,
    );
    seed_checkout_sessions(&host.url("")).await;
    assert_eq!(get(&host.ui_url("/api/services")).await.status, 404);
    assert_eq!(get(&host.ui_url("/")).await.status, 404);
    let metrics = get(&host.ui_url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("target_info{"), "{}", metrics.body);
    let r = request(
        "POST",
        &host.url("/checkout"),
        &[],
        &order("abc", "5", "visa"),
    )
    .await;
    assert_eq!(r.status, 200);
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0));
    assert!(
        log.contains("trace store off (--store none); no viewer; Prometheus metrics on http://"),
        "{log}"
    );
    assert!(!log.contains("trace store flushed"), "{log}");
}
