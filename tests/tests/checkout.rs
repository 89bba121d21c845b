//! examples/checkout, as users run it (`polytrace up examples/checkout`):
//! every outcome of the contract is one trace across four services in three
//! languages, with the error exactly where it happened and on its ancestors
//! as far as the HTTP status carries it, no further. The whole tree of each
//! outcome is compared with tests/checkout/<outcome>.txt. The services own
//! real data (orders and charges in SQL, sessions in a key-value store):
//! embedded files by default, PostgreSQL and Redis servers in the last test.

use polytrace_tests::tree;
use polytrace_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const REMOTE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const REMOTE_SPAN: &str = "b7ad6b7169203331";

/// examples/checkout up with its data in a scratch directory (plus `env`),
/// exporting to `receiver`, its sessions created; with the trace ids of
/// the requests that created them, and the data's directory.
async fn start(
    receiver: &Receiver,
    protocol: &str,
    name: &str,
    env: &[(&str, &str)],
) -> (Polytrace, Vec<String>, String) {
    let (dir, mut all) = checkout_data_env(name);
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let host = Polytrace::up_dir(
        &repo_dir().join("examples/checkout"),
        receiver,
        protocol,
        &all,
    );
    let seeded = seed_checkout_sessions(&host.url("")).await;
    (host, seeded, dir.display().to_string())
}

fn order(session: &str, amount: &str, payment: &str) -> String {
    format!(
        r#"{{"user_id": "user-1", "session_id": "{session}", "amount": {amount},
            "items": [{{"sku": "book-42", "qty": 2}}, {{"sku": "pen-7", "qty": 1}}],
            "payment_method": "{payment}"}}"#
    )
}

struct Case {
    name: &'static str,
    body: String,
    status: u16,
    /// Spans in the trace.
    spans: usize,
    /// (service, span name) of every span whose status is Error.
    errors: &'static [(&'static str, &'static str)],
    /// (service, span name) of every span with an `exception` event.
    exceptions: &'static [(&'static str, &'static str)],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "approved",
            body: order("abc", "42.5", "visa"),
            status: 200,
            spans: 22,
            errors: &[],
            exceptions: &[],
        },
        Case {
            name: "fraud-denied",
            body: order("abc", "20000", "visa"),
            status: 403,
            spans: 10,
            // A 403 is an error for the caller's CLIENT span, not for the
            // answering SERVER spans (HTTP semantic conventions).
            errors: &[("api-gateway", "POST")],
            exceptions: &[],
        },
        Case {
            name: "unknown-session",
            body: order("nope", "42.5", "visa"),
            status: 404,
            spans: 10,
            errors: &[("api-gateway", "POST"), ("fraud-service", "GET")],
            exceptions: &[],
        },
        Case {
            name: "card-declined",
            body: order("xyz", "42.5", "declined"),
            status: 402,
            spans: 20,
            errors: &[("api-gateway", "POST")],
            exceptions: &[],
        },
        Case {
            name: "billing-fails",
            body: order("xyz", "666", "visa"),
            status: 500,
            spans: 21,
            // Failed in billing's charge_card; the 500 travels up to the
            // gateway's answer and marks every span on the way.
            errors: &[
                ("billing", "charge_card"),
                ("billing", "POST"),
                ("api-gateway", "POST"),
                ("api-gateway", "checkout_flow"),
                ("api-gateway", "POST /checkout"),
            ],
            exceptions: &[("billing", "charge_card")],
        },
    ]
}

/// The spans of a finished trace: waits for `count`, then makes sure no
/// more arrive.
async fn whole_trace(receiver: &Receiver, trace_id: &str, count: usize) -> Vec<FlatSpan> {
    receiver.trace(trace_id, count).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans: Vec<FlatSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    assert_eq!(spans.len(), count, "{spans:#?}");
    spans
}

fn with_status(spans: &[FlatSpan], pick: impl Fn(&FlatSpan) -> bool) -> BTreeSet<(String, String)> {
    spans
        .iter()
        .filter(|s| pick(s))
        .map(|s| (s.service().to_string(), s.name.clone()))
        .collect()
}

fn names(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_checkout_outcome_is_one_readable_trace() {
    let receiver = Receiver::start().await;
    let (host, _, data) = start(&receiver, "http/protobuf", "checkout-outcomes", &[]).await;
    for case in cases() {
        let response = request(
            "POST",
            &host.url("/checkout"),
            &[("content-type", "application/json")],
            &case.body,
        )
        .await;
        assert_eq!(
            response.status, case.status,
            "{}: {}",
            case.name, response.body
        );
        let body = response.json();
        let spans = whole_trace(&receiver, &response.trace_id(), case.spans).await;

        // One root: the gateway's SERVER span; every other parent is in the trace.
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let roots: Vec<&FlatSpan> = spans
            .iter()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .collect();
        assert_eq!(roots.len(), 1, "{}: {roots:#?}", case.name);
        assert_eq!(roots[0].name, "POST /checkout");
        assert_eq!(roots[0].parent_span_id, "");

        assert_eq!(
            with_status(&spans, |s| s.status_code == STATUS_ERROR),
            names(case.errors),
            "{}: spans with status Error",
            case.name
        );
        assert_eq!(
            with_status(&spans, |s| s.event("exception").is_some()),
            names(case.exceptions),
            "{}: spans with an exception",
            case.name
        );

        // The whole tree, with the run's generated ids named.
        let mut aliases = vec![(data.clone(), "<data>")];
        for (key, alias) in [
            ("transaction_id", "<transaction-id>"),
            ("order_id", "<order-id>"),
            ("charge_id", "<charge-id>"),
        ] {
            if let Some(v) = body[key].as_str() {
                aliases.push((v.to_string(), alias));
            }
        }
        let aliases: Vec<(&str, &str)> = aliases.iter().map(|(v, a)| (v.as_str(), *a)).collect();
        let rendered = tree::render_services(&spans, &aliases);
        let file = repo_dir()
            .join("tests/checkout")
            .join(format!("{}.txt", case.name));
        tree::assert_expected(&file, &[(case.name, rendered)]);
    }
    host.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_continues_the_callers_trace() {
    let receiver = Receiver::start().await;
    let (host, _, _) = start(&receiver, "grpc", "checkout-continued", &[]).await;
    let response = request(
        "POST",
        &host.url("/checkout"),
        &[(
            "traceparent",
            &format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"),
        )],
        &order("abc", "10", "visa"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.trace_id(), REMOTE_TRACE);
    let spans = whole_trace(&receiver, REMOTE_TRACE, 22).await;
    let root = spans.iter().find(|s| s.name == "POST /checkout").unwrap();
    assert_eq!(root.parent_span_id, REMOTE_SPAN);
    // Four services, one trace.
    let services: BTreeSet<&str> = spans.iter().map(FlatSpan::service).collect();
    assert_eq!(
        services,
        BTreeSet::from(["api-gateway", "billing", "fraud-service", "session-service"])
    );
}

/// 1,000 checkouts at concurrency 16: 1,000 complete traces of the
/// approved shape, none broken (a missing parent) or merged (two requests
/// in one trace).
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_checkouts_are_a_thousand_whole_traces() {
    const REQUESTS: usize = 1000;
    const CONCURRENCY: usize = 16;
    let receiver = Receiver::start().await;
    let (host, seeded, _) = start(
        &receiver,
        "grpc",
        "checkout-thousand",
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "100000")],
    )
    .await;
    let url = host.url("/checkout");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (url, next) = (url.clone(), next.clone());
            tokio::spawn(async move {
                let mut traces = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                    let r = request("POST", &url, &[], &order("xyz", "12.5", "visa")).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    traces.push(r.trace_id());
                }
                traces
            })
        })
        .collect();
    let mut trace_ids = BTreeSet::new();
    for w in workers {
        trace_ids.extend(w.await.unwrap());
    }
    assert_eq!(trace_ids.len(), REQUESTS, "every request has its own trace");

    // All spans in: 22 per checkout (15 of the services and the calls
    // between them, 7 of their data: two session reads, billing's
    // transaction of four statements, the order's INSERT).
    let checkout_spans = || -> Vec<FlatSpan> {
        receiver
            .spans()
            .into_iter()
            .filter(|s| !seeded.contains(&s.trace_id))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut spans = checkout_spans();
    while spans.len() < REQUESTS * 22 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        spans = checkout_spans();
    }
    let mut by_trace: BTreeMap<&str, Vec<&FlatSpan>> = BTreeMap::new();
    for s in &spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
    }
    assert_eq!(by_trace.len(), REQUESTS);
    let shape = |t: &[&FlatSpan]| {
        let mut v: Vec<(String, String)> = t
            .iter()
            .map(|s| (s.service().to_string(), s.name.clone()))
            .collect();
        v.sort();
        v
    };
    let expected_shape = shape(by_trace.values().next().unwrap());
    assert_eq!(expected_shape.len(), 22);
    for (trace_id, t) in &by_trace {
        assert!(
            trace_ids.contains(*trace_id),
            "a trace nobody asked for: {trace_id}"
        );
        assert_eq!(shape(t), expected_shape, "trace {trace_id}");
        let ids: BTreeSet<&str> = t.iter().map(|s| s.span_id.as_str()).collect();
        let roots = t
            .iter()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .count();
        assert_eq!(roots, 1, "trace {trace_id} is broken: {t:#?}");
    }
    let (_, log) = host.terminate();
    assert!(log.contains("dropped=0"), "{log}");
}

/// The checkout's own metrics, with the same names whatever the language
/// (gateway Python, fraud Go, sessions JavaScript), and its logs in the
/// traces they belong to.
#[tokio::test(flavor = "multi_thread")]
async fn checkout_metrics_and_logs() {
    let receiver = Receiver::start().await;
    let (host, _, _) = start(&receiver, "grpc", "checkout-metrics", &[]).await;
    let mut expected_orders: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut failed_trace = None;
    for case in cases() {
        let response = request(
            "POST",
            &host.url("/checkout"),
            &[("content-type", "application/json")],
            &case.body,
        )
        .await;
        assert_eq!(response.status, case.status, "{}", case.name);
        let outcome = match case.status {
            200 => "approved",
            400 => "invalid",
            402 => "declined",
            403 | 404 => "rejected",
            _ => "failed",
        };
        let order: serde_json::Value = serde_json::from_str(&case.body).unwrap();
        let method = order["payment_method"].as_str().unwrap_or("unknown");
        *expected_orders
            .entry((outcome.to_string(), method.to_string()))
            .or_default() += 1.0;
        if case.status == 500 {
            failed_trace = Some(response.trace_id());
        }
    }
    let total = expected_orders.values().sum::<f64>();
    let sum = |points: &[MetricPoint]| points.iter().map(|p| p.value).sum::<f64>();
    let latest = |points: Vec<MetricPoint>| {
        // Cumulative: the last export holds every series at its total.
        let mut by_attrs: BTreeMap<String, MetricPoint> = BTreeMap::new();
        for p in points {
            by_attrs.insert(serde_json::to_string(&p.attributes).unwrap(), p);
        }
        by_attrs.into_values().collect::<Vec<_>>()
    };
    let orders = latest(
        receiver
            .wait_metric("api-gateway", "orders.created", |p| {
                latest(p.to_vec()).iter().map(|p| p.value).sum::<f64>() >= total
            })
            .await,
    );
    let got: BTreeMap<(String, String), f64> = orders
        .iter()
        .map(|p| {
            (
                (
                    p.attributes["status"].as_str().unwrap().to_string(),
                    p.attributes["payment_method"].as_str().unwrap().to_string(),
                ),
                p.value,
            )
        })
        .collect();
    assert_eq!(got, expected_orders);
    assert!(orders.iter().all(|p| p.monotonic && p.unit == "{order}"));

    let verifications = latest(
        receiver
            .wait_metric("fraud-service", "verifications.performed", |p| {
                latest(p.to_vec()).iter().map(|p| p.value).sum::<f64>() >= 1.0
            })
            .await,
    );
    let results: BTreeSet<&str> = verifications
        .iter()
        .map(|p| p.attributes["result"].as_str().unwrap())
        .collect();
    assert!(
        results.is_superset(&BTreeSet::from(["approved", "denied", "no_session"])),
        "{results:?}"
    );
    let sessions = latest(
        receiver
            .wait_metric("session-service", "sessions.loaded", |p| {
                latest(p.to_vec())
                    .iter()
                    .any(|p| p.attributes["status"] == "not_found")
            })
            .await,
    );
    assert!(sum(&sessions) >= 2.0);

    // billing's failure is an ERROR record with the exception, in its trace.
    let failed_trace = failed_trace.expect("a failing case");
    let records = receiver
        .wait_logs(
            |r| r.trace_id == failed_trace && r.service() == "billing",
            |r| r.len() >= 2,
        )
        .await;
    let error = records
        .iter()
        .find(|r| r.body == "charge failed")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        (error.severity_number, error.body.as_str()),
        (17, Some("charge failed"))
    );
    assert_eq!(error.attributes["exception.type"], "PaymentProcessorError");
    assert!(
        error.attributes["exception.stacktrace"]
            .as_str()
            .unwrap()
            .contains("Traceback"),
        "{error:?}"
    );
    let spans = whole_trace(&receiver, &failed_trace, 21).await;
    let span = spans.iter().find(|s| s.span_id == error.span_id).unwrap();
    assert_eq!((span.service(), span.kind), ("billing", KIND_SERVER));
    // The record logged inside charge_card belongs to charge_card.
    let inside = records
        .iter()
        .find(|r| r.body == "payment processor did not answer in time")
        .unwrap_or_else(|| panic!("{records:#?}"));
    let span = spans.iter().find(|s| s.span_id == inside.span_id).unwrap();
    assert_eq!(span.name, "charge_card");
    host.terminate();
}

/// The span headers of a rendered tree (kind, name, service, status),
/// indented: the trace's shape without its attributes.
fn outline(rendered: &str) -> String {
    rendered
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            ["SERVER \"", "CLIENT \"", "INTERNAL \""]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The same checkout with its data on servers: orders and charges in a
/// PostgreSQL database (its tables made by the host from the schema files
/// at start), sessions in Redis. Every outcome's trace has the shape of the
/// embedded run's (tests/checkout/<outcome>.txt), the database spans say
/// where the data went, the rows are there, and a Redis that stops shows as
/// the failing `GET sessions` in the JavaScript session service.
#[tokio::test(flavor = "multi_thread")]
async fn the_checkout_keeps_its_data_in_postgresql_and_redis() {
    let pg = polytrace_tests::postgres::Postgres::start("checkout");
    let redis = polytrace_tests::redis::Redis::start("checkout");
    let receiver = Receiver::start().await;
    let (database, store) = (pg.url("postgres"), redis.url(2));
    let (host, _, _) = start(
        &receiver,
        "grpc",
        "checkout-servers",
        &[
            ("CHECKOUT_ORDERS_DB", &database),
            ("CHECKOUT_BILLING_DB", &database),
            ("CHECKOUT_SESSIONS_STORE", &store),
        ],
    )
    .await;
    assert_eq!(redis.cli(&["-n", "2", "EXISTS", "session:abc"]), "1");

    let mut approved = None;
    for case in cases() {
        let r = request("POST", &host.url("/checkout"), &[], &case.body).await;
        assert_eq!(r.status, case.status, "{}: {}", case.name, r.body);
        let spans = whole_trace(&receiver, &r.trace_id(), case.spans).await;
        let expected =
            std::fs::read_to_string(repo_dir().join(format!("tests/checkout/{}.txt", case.name)))
                .unwrap();
        assert_eq!(
            outline(&tree::render_services(&spans, &[])),
            outline(&expected),
            "{}: the trace's shape on PostgreSQL and Redis",
            case.name
        );
        let systems: BTreeSet<(&str, &str)> = spans
            .iter()
            .filter_map(|s| Some((s.service(), s.attributes.get("db.system.name")?.as_str()?)))
            .collect();
        let expected_systems: BTreeSet<(&str, &str)> = match case.status {
            200 | 402 | 500 => [
                ("session-service", "redis"),
                ("billing", "postgresql"),
                ("api-gateway", "postgresql"),
            ]
            .into_iter()
            .filter(|(service, _)| case.status == 200 || *service != "api-gateway")
            .collect(),
            _ => [("session-service", "redis")].into(),
        };
        assert_eq!(systems, expected_systems, "{}", case.name);
        if case.status == 200 {
            approved = Some((r.json(), spans));
        }
    }

    // The approved order and its charge are rows; the failed charge was
    // rolled back, the declined one kept.
    let (body, spans) = approved.unwrap();
    let order_id = body["order_id"].as_str().unwrap();
    let charge_id = body["charge_id"].as_str().unwrap();
    assert_eq!(
        pg.psql(
            "postgres",
            &format!("SELECT charge_id, amount_cents FROM orders WHERE id = '{order_id}'")
        ),
        format!("{charge_id}|4250")
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT status, count(*) FROM charges GROUP BY status ORDER BY status"
        ),
        "charged|1\ndeclined|1"
    );
    let insert = spans
        .iter()
        .find(|s| s.name == "INSERT orders")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(insert.attributes["db.namespace"], "postgres");
    assert_eq!(insert.attributes["server.port"], pg.port as i64);
    let get = spans.iter().find(|s| s.name == "GET sessions").unwrap();
    assert_eq!(get.attributes["db.namespace"], "2");
    assert_eq!(get.attributes["server.port"], redis.port as i64);
    for s in &spans {
        let text = format!("{:?}", s.attributes);
        assert!(
            !text.contains(&pg.password) && !text.contains(&redis.password),
            "{s:#?}"
        );
    }

    // Redis stops: the checkout fails, and the trace says where.
    redis.stop();
    let r = request(
        "POST",
        &host.url("/checkout"),
        &[],
        &order("abc", "10", "visa"),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.body);
    let spans = whole_trace(&receiver, &r.trace_id(), 10).await;
    let failing: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| {
            s.status_code == STATUS_ERROR
                && s.kind == KIND_CLIENT
                && s.attributes.contains_key("db.system.name")
        })
        .collect();
    assert_eq!(failing.len(), 1, "{spans:#?}");
    assert_eq!(
        (failing[0].service(), failing[0].name.as_str()),
        ("session-service", "GET sessions")
    );
    let load = spans
        .iter()
        .find(|s| s.span_id == failing[0].parent_span_id)
        .unwrap();
    assert_eq!(
        (load.name.as_str(), load.status_code),
        ("load_session", STATUS_ERROR)
    );
    assert!(load.event("exception").is_some(), "{load:#?}");

    // Back up (the host reconnects in the background): the sessions Redis
    // acknowledged are still there.
    redis.start_server();
    let mut status = 0;
    for _ in 0..100 {
        let r = request(
            "POST",
            &host.url("/checkout"),
            &[],
            &order("xyz", "10", "visa"),
        )
        .await;
        status = r.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    host.terminate();
}
