//! Metrics and logs end to end: the host's automatic HTTP and health
//! metrics and guests' instruments reach a real OTLP receiver (gRPC and
//! HTTP/protobuf) and the Prometheus `/metrics` endpoint (checked with the
//! reference parser from `prometheus_client`); what guests print becomes log
//! records correlated with their spans; floods and unbounded attribute
//! values cost dropped records and an overflow series, not the host.

use polytrace_tests::*;
use serde_json::{Value as Json, json};
use std::io::Write as _;
use std::process::{Command, Stdio};

fn manifest() -> String {
    format!(
        "app = \"metrics\"\n\n[[component]]\nid = \"faults\"\nsource = \"{}\"\nroute = \"/faults/...\"\nlanguage = \"rust\"\n\n\
         [[component]]\nid = \"hello\"\nsource = \"{}\"\nroute = \"/hello/...\"\nlanguage = \"rust\"\n",
        component("faults").display(),
        component("hello_rust").display()
    )
}

/// Scrape until `done` holds (20 s at most): a request's duration is
/// recorded when it has finished, which can be just after its response.
async fn scrape_until(url: &str, done: impl Fn(&[Json]) -> bool) -> (String, Vec<Json>) {
    let started = std::time::Instant::now();
    loop {
        let (text, families) = scrape(url).await;
        if done(&families) || started.elapsed() > std::time::Duration::from_secs(20) {
            return (text, families);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The exposition at `url`, parsed by prometheus_client's parser.
async fn scrape(url: &str) -> (String, Vec<Json>) {
    let response = get(url).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers
    );
    let python = repo_dir().join(".tools/native-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-native.sh",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(repo_dir().join("tests/native/parse_prometheus.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(response.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        response.body
    );
    let families: Json = serde_json::from_slice(&out.stdout).unwrap();
    (response.body, families.as_array().unwrap().clone())
}

fn family<'a>(families: &'a [Json], name: &str) -> &'a Json {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:#?}"))
}

/// Samples of `family` named `sample` whose labels include `labels`.
fn samples<'a>(family: &'a Json, sample: &str, labels: &Json) -> Vec<&'a Json> {
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["name"] == sample
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &s["labels"][k] == v)
        })
        .collect()
}

async fn http_metrics_over(protocol: &str) {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("metrics", &manifest(), &receiver, protocol, &[]);
    for _ in 0..5 {
        assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    }
    assert_eq!(get(&host.url("/faults/status?code=503")).await.status, 503);
    assert_eq!(get(&host.url("/faults/trap")).await.status, 500);

    let points = receiver
        .wait_metric("faults", "http.server.request.duration", |p| {
            p.iter().map(|p| p.count).sum::<u64>() >= 7
        })
        .await;
    assert!(points.iter().all(|p| p.protocol == protocol));
    let ok = points
        .iter()
        .find(|p| p.attr("http.response.status_code") == Some(&json!(200)))
        .unwrap_or_else(|| panic!("{points:#?}"));
    assert_eq!(ok.kind, "histogram");
    assert_eq!(ok.unit, "s");
    assert_eq!(ok.temporality, 2, "cumulative by default");
    assert_eq!(ok.count, 5);
    assert_eq!(
        ok.bounds,
        [
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
        ]
    );
    assert_eq!(ok.bucket_counts.iter().sum::<u64>(), 5);
    assert_eq!(ok.attr("http.request.method"), Some(&json!("GET")));
    assert_eq!(ok.attr("http.route"), Some(&json!("/faults/*")));
    assert_eq!(ok.attr("url.scheme"), Some(&json!("http")));
    assert_eq!(ok.attr("error.type"), None);
    assert_eq!(ok.resource["service.name"], "faults");
    assert_eq!(ok.resource["service.namespace"], "metrics");
    let with_error = |code: i64| {
        points
            .iter()
            .find(|p| p.attr("http.response.status_code") == Some(&json!(code)))
            .unwrap_or_else(|| panic!("no {code}: {points:#?}"))
    };
    assert_eq!(with_error(503).attr("error.type"), Some(&json!("503")));
    assert_eq!(
        with_error(500).attr("error.type"),
        Some(&json!("Trap::UnreachableCodeReached"))
    );

    // Health: every request in a new or a reused instance; one trap, whose
    // instance was thrown away.
    let latest = |name: &'static str| {
        let receiver = &receiver;
        async move {
            receiver
                .wait_metric("faults", name, |p| !p.is_empty())
                .await
                .last()
                .map_or(0.0, |p| p.value)
        }
    };
    let started = std::time::Instant::now();
    loop {
        let made = latest("polytrace.guest.instantiations").await;
        let reused = latest("polytrace.guest.instance_reuses").await;
        if made + reused >= 7.0 {
            assert_eq!(made + reused, 7.0);
            assert!(made >= 1.0);
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "made {made} reused {reused}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let inst = receiver
        .wait_metric("faults", "polytrace.guest.instantiations", |p| {
            !p.is_empty()
        })
        .await;
    assert!(inst[0].monotonic);
    let discards = receiver
        .wait_metric("faults", "polytrace.guest.instance_discards", |p| {
            p.iter()
                .any(|p| p.attr("polytrace.instance.discard_reason") == Some(&json!("trap")))
        })
        .await;
    assert!(discards.iter().all(|p| p.value <= 1.0), "{discards:#?}");
    let traps = receiver
        .wait_metric("faults", "polytrace.guest.traps", |p| !p.is_empty())
        .await;
    assert_eq!(traps.last().unwrap().value, 1.0);
    assert_eq!(
        traps.last().unwrap().attr("error.type"),
        Some(&json!("Trap::UnreachableCodeReached"))
    );
    // Nothing in flight once the requests are answered.
    let active = receiver
        .wait_metric("faults", "http.server.active_requests", |p| !p.is_empty())
        .await;
    assert_eq!(active.last().unwrap().value, 0.0);
    assert!(!active.last().unwrap().monotonic);
    assert_eq!(active.last().unwrap().unit, "{request}");
    assert_eq!(
        active.last().unwrap().attr("http.request.method"),
        Some(&json!("GET"))
    );
    assert_eq!(
        active.last().unwrap().attr("url.scheme"),
        Some(&json!("http"))
    );
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_health_metrics_over_http_protobuf() {
    http_metrics_over("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_health_metrics_over_grpc() {
    http_metrics_over("grpc").await;
}

/// An in-process call records `http.client.request.duration` in the caller.
#[tokio::test(flavor = "multi_thread")]
async fn client_metrics_of_in_process_calls() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("client", &manifest(), &receiver, "http/protobuf", &[]);
    let r = get(&host.url("/faults/call?url=http://hello/hello/x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let points = receiver
        .wait_metric("faults", "http.client.request.duration", |p| {
            p.iter().any(|p| p.count >= 1)
        })
        .await;
    let p = &points[0];
    assert_eq!(p.unit, "s");
    assert_eq!(p.attr("server.address"), Some(&json!("hello")));
    assert_eq!(p.attr("http.response.status_code"), Some(&json!(200)));
    assert_eq!(p.attr("http.request.method"), Some(&json!("GET")));
    host.terminate();
}

/// The exposition is valid for the reference parser, and its counts match
/// the requests sent.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_endpoint_matches_the_requests() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "prometheus",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[("OTEL_METRICS_EXPORTER", "none")],
    );
    for _ in 0..4 {
        assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&host.url("/faults/sleep?ms=30")).await.status, 200);
    }
    assert_eq!(get(&host.url("/faults/cardinality?n=3")).await.status, 200);
    let labels = json!({"job": "metrics/faults", "http_request_method": "GET",
                        "http_response_status_code": "200", "http_route": "/faults/*"});
    let count_of = |families: &[Json]| -> f64 {
        families
            .iter()
            .find(|f| f["name"] == "http_server_request_duration_seconds")
            .map_or(0.0, |d| {
                samples(d, "http_server_request_duration_seconds_count", &labels)
                    .iter()
                    .map(|s| s["value"].as_f64().unwrap())
                    .sum()
            })
    };
    let (text, families) = scrape_until(&host.ui_url("/metrics"), |f| count_of(f) >= 8.0).await;
    let duration = family(&families, "http_server_request_duration_seconds");
    assert_eq!(duration["type"], "histogram");
    let total = count_of(&families);
    // 4 ok + 3 sleep + 1 cardinality.
    assert_eq!(total, 8.0, "{text}");
    // Buckets are cumulative and end at +Inf = count; the 30 ms sleeps are
    // above 25 ms.
    let buckets = samples(
        duration,
        "http_server_request_duration_seconds_bucket",
        &labels,
    );
    let le = |bound: &str| {
        buckets
            .iter()
            .find(|s| s["labels"]["le"] == bound)
            .map(|s| s["value"].as_f64().unwrap())
            .unwrap_or_else(|| panic!("no le={bound}: {text}"))
    };
    assert_eq!(le("+Inf"), 8.0);
    assert!(le("0.025") <= 5.0, "{text}");
    let values: Vec<f64> = buckets
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");

    // Counters get _total; the guest's counter too, by attribute. Every
    // request ran in a new instance or a reused one.
    let total_of = |name: &str| -> f64 {
        let f = family(&families, name);
        assert_eq!(f["type"], "counter");
        samples(
            f,
            &format!("{name}_total"),
            &json!({"job": "metrics/faults"}),
        )
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
    };
    let made = total_of("polytrace_guest_instantiations");
    let reused = total_of("polytrace_guest_instance_reuses");
    assert!(made >= 1.0, "{text}");
    assert_eq!(made + reused, 8.0, "{text}");
    let ids = family(&families, "faults_ids");
    assert_eq!(
        samples(ids, "faults_ids_total", &json!({"id": "2"}))[0]["value"],
        1.0
    );
    // Up-down counters are gauges.
    assert_eq!(
        family(&families, "http_server_active_requests")["type"],
        "gauge"
    );
    // The resource as target_info, one per service.
    let target = family(&families, "target_info");
    let faults = samples(target, "target_info", &json!({"job": "metrics/faults"}));
    assert_eq!(faults.len(), 1, "{text}");
    assert_eq!(faults[0]["labels"]["polytrace_guest_language"], "rust");
    assert_eq!(
        samples(target, "target_info", &json!({"job": "metrics/hello"})).len(),
        1
    );
    host.terminate();
}

/// A guest adding with a new attribute value each time: the SDK keeps 2000
/// series per instrument and folds the rest into one overflow series.
#[tokio::test(flavor = "multi_thread")]
async fn unbounded_attribute_values_overflow() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("overflow", &manifest(), &receiver, "http/protobuf", &[]);
    for from in (0..5000).step_by(1000) {
        let r = get(&host.url(&format!("/faults/cardinality?n=1000&from={from}"))).await;
        assert_eq!(r.status, 200);
    }
    let (text, families) = scrape(&host.ui_url("/metrics")).await;
    let ids = family(&families, "faults_ids");
    let series = ids["samples"].as_array().unwrap();
    assert!(series.len() <= 2001, "{} series", series.len());
    let overflow = samples(
        ids,
        "faults_ids_total",
        &json!({"otel_metric_overflow": "true"}),
    );
    assert_eq!(overflow.len(), 1, "{text}");
    let sum: f64 = series.iter().map(|s| s["value"].as_f64().unwrap()).sum();
    assert_eq!(sum, 5000.0, "no add is lost");
    // The same over OTLP: the (cumulative) overflow series reaches the
    // value /metrics shows.
    let folded = overflow[0]["value"].as_f64().unwrap();
    let points = receiver
        .wait_metric("faults", "faults.ids", |p| {
            p.iter()
                .any(|p| p.attr("otel.metric.overflow") == Some(&json!(true)) && p.value == folded)
        })
        .await;
    assert!(
        points
            .iter()
            .filter(|p| p.attr("otel.metric.overflow") == Some(&json!(true)))
            .all(|p| p.value <= folded),
        "{points:#?}"
    );
    host.terminate();
}

/// Every line a guest prints is a log record of the span it was printed in.
#[tokio::test(flavor = "multi_thread")]
async fn printed_lines_are_trace_correlated_log_records() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("print", &manifest(), &receiver, "grpc", &[]);
    let r = get(&host.url("/faults/print")).await;
    assert_eq!(r.status, 200);
    let trace_id = r.trace_id();
    let spans = receiver.trace(&trace_id, 2).await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    let printing = spans.iter().find(|s| s.name == "printing").unwrap();
    let records = receiver
        .wait_logs(|r| r.trace_id == trace_id, |r| r.len() >= 4)
        .await;
    let by_body = |body: &str| {
        records
            .iter()
            .find(|r| r.body == body)
            .unwrap_or_else(|| panic!("no record {body:?}: {records:#?}"))
    };
    let before = by_body("before the span");
    assert_eq!(before.span_id, server.span_id);
    assert_eq!(
        (before.severity_number, before.severity_text.as_str()),
        (9, "INFO")
    );
    assert_eq!(before.attributes["log.iostream"], "stdout");
    assert_eq!(before.service(), "faults");
    assert_eq!(before.protocol, "grpc");
    let inside = by_body("inside the span");
    assert_eq!(inside.span_id, printing.span_id);
    let warning = by_body("a warning on stderr");
    assert_eq!(
        (warning.severity_number, warning.severity_text.as_str()),
        (13, "WARN")
    );
    assert_eq!(warning.attributes["log.iostream"], "stderr");
    assert_eq!(warning.span_id, printing.span_id);
    // The unterminated last line is emitted when the instance goes away.
    assert_eq!(by_body("no newline at the end").span_id, server.span_id);
    // And printed on the console, prefixed by component and trace.
    let (_, _, stdout) = host.terminate_with_stdout();
    assert!(
        stdout.contains(&format!(
            "[faults {}] WARN  a warning on stderr",
            &trace_id[..8]
        )),
        "{stdout}"
    );
}

/// `--guest-logs warn,json`: only WARN and above, as JSON lines.
#[tokio::test(flavor = "multi_thread")]
async fn console_guest_logs_level_and_json() {
    let receiver = Receiver::start().await;
    let dir = scratch_dir("guest-logs");
    std::fs::write(dir.join("polytrace.toml"), manifest()).unwrap();
    let host = Polytrace::start_with_args(
        &dir,
        &["--guest-logs", "warn,json"],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                receiver.endpoint("http/protobuf"),
            ),
            ("OTEL_BLRP_SCHEDULE_DELAY".into(), "50".into()),
        ],
    );
    let r = get(&host.url("/faults/print")).await;
    assert_eq!(r.status, 200);
    receiver
        .wait_logs(|l| l.trace_id == r.trace_id(), |l| l.len() >= 4)
        .await;
    let (_, _, stdout) = host.terminate_with_stdout();
    let lines: Vec<Json> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["body"], "a warning on stderr");
    assert_eq!(lines[0]["severity"], "WARN");
    assert_eq!(lines[0]["service"], "faults");
    assert_eq!(lines[0]["trace_id"], r.trace_id());
    assert!(!stdout.contains("inside the span"), "{stdout}");
}

/// A guest printing a million lines: the request completes, others are
/// served meanwhile, and what the queue could not hold is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_flood_never_blocks_requests() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "flood",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[("POLYTRACE_GUEST_LOGS", "off")],
    );
    let flood = tokio::spawn({
        let url = host.url("/faults/flood?n=1000000");
        async move { get(&url).await }
    });
    // Requests keep being served while the flood runs.
    for _ in 0..20 {
        assert_eq!(get(&host.url("/hello/x")).await.status, 200);
    }
    let r = flood.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, families) = scrape(&host.ui_url("/metrics")).await;
    let dropped = family(&families, "polytrace_telemetry_dropped");
    let logs_dropped = samples(
        dropped,
        "polytrace_telemetry_dropped_total",
        &json!({"job": "metrics/faults", "signal": "log_records"}),
    )[0]["value"]
        .as_f64()
        .unwrap();
    // The queue holds 2048; a million lines cannot all fit.
    assert!(logs_dropped > 0.0, "{families:#?}");
    // The host is fine afterwards.
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    // Nothing is lost silently: every line was exported or counted.
    host.terminate();
    let kept = receiver
        .log_records()
        .iter()
        .filter(|l| {
            l.body
                .as_str()
                .is_some_and(|b| b.starts_with("flood line "))
        })
        .count();
    assert_eq!(
        kept as f64 + logs_dropped,
        1_000_000.0,
        "{kept} exported + {logs_dropped} dropped"
    );
}

/// An OTLP backend that is down: requests are served as ever, and the
/// metric points and log records that could not be sent are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_is_down_costs_counted_drops() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = scratch_dir("backend-down");
    std::fs::write(dir.join("polytrace.toml"), manifest()).unwrap();
    let host = Polytrace::start(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "100".into()),
            ("OTEL_BLRP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
    );
    for _ in 0..3 {
        assert_eq!(get(&host.url("/faults/print")).await.status, 200);
    }
    let dropped = |families: &[Json], signal: &str| -> f64 {
        families
            .iter()
            .find(|f| f["name"] == "polytrace_telemetry_dropped")
            .map_or(0.0, |f| {
                samples(
                    f,
                    "polytrace_telemetry_dropped_total",
                    &json!({"job": "metrics/faults", "signal": signal}),
                )
                .first()
                .and_then(|s| s["value"].as_f64())
                .unwrap_or(0.0)
            })
    };
    let (_, families) = scrape_until(&host.ui_url("/metrics"), |f| {
        dropped(f, "metric_points") > 0.0
            && dropped(f, "log_records") >= 12.0
            && dropped(f, "spans") >= 6.0
    })
    .await;
    assert!(dropped(&families, "metric_points") > 0.0, "{families:#?}");
    // Four lines per request, three requests.
    assert!(dropped(&families, "log_records") >= 12.0, "{families:#?}");
    // SERVER + `printing` per request.
    assert!(dropped(&families, "spans") >= 6.0, "{families:#?}");
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("metric export failed"), "{log}");
    assert!(log.contains("log export failed"), "{log}");
}

/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`: counters and
/// histograms are exported as deltas (each interval counts what happened in
/// it); up-down counters stay cumulative, as the specification says.
#[tokio::test(flavor = "multi_thread")]
async fn delta_temporality_when_preferred() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "delta",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")],
    );
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    let first = receiver
        .wait_metric("faults", "http.server.request.duration", |p| {
            p.iter().any(|p| p.count == 1)
        })
        .await;
    assert!(first.iter().all(|p| p.temporality == 1), "{first:#?}");
    assert_eq!(get(&host.url("/faults/ok")).await.status, 200);
    // The second request is a point of its own with count 1, not a total of 2.
    let points = receiver
        .wait_metric("faults", "http.server.request.duration", |p| {
            p.iter().filter(|p| p.count == 1).count() >= 2
        })
        .await;
    assert!(points.iter().all(|p| p.count <= 1), "{points:#?}");
    let active = receiver
        .wait_metric("faults", "http.server.active_requests", |p| !p.is_empty())
        .await;
    assert!(active.iter().all(|p| p.temporality == 2), "{active:#?}");
    host.terminate();
}

/// `OTEL_SDK_DISABLED=true` turns every signal off: nothing is aggregated or
/// exported, `/metrics` is empty, and what guests print still shows on the
/// console.
#[tokio::test(flavor = "multi_thread")]
async fn sdk_disabled_turns_metrics_and_logs_off() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "disabled",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[("OTEL_SDK_DISABLED", "true")],
    );
    for _ in 0..3 {
        assert_eq!(get(&host.url("/faults/print")).await.status, 200);
    }
    let (text, families) = scrape(&host.ui_url("/metrics")).await;
    assert!(families.is_empty(), "{text}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (code, _, stdout) = host.terminate_with_stdout();
    assert_eq!(code, Some(0));
    assert!(receiver.metric_points().is_empty());
    assert!(receiver.log_records().is_empty());
    assert!(stdout.contains("INFO  inside the span"), "{stdout}");
}
