//! OTLP export to backends behind TLS, as SaaS backends and collectors run:
//! real TLS receivers (gRPC and HTTP/protobuf, from the official protocol
//! definitions) with a CA and certificates made at test time; the
//! `OTEL_EXPORTER_OTLP_*` certificate, client-certificate, insecure and
//! compression variables; and what happens when the server cannot be
//! trusted or demands a certificate polytrace does not have.

use polytrace_tests::pki::Pki;
use polytrace_tests::*;
use std::time::{Duration, Instant};

fn manifest() -> String {
    format!(
        "app = \"tls\"\n\n[[component]]\nid = \"faults\"\nsource = \"{}\"\nroute = \"/faults/...\"\nlanguage = \"rust\"\n",
        component("faults").display(),
    )
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// One request that makes a SERVER span, a child span and four log
/// records; waits until the receiver has the spans, the records and the
/// request's duration metric.
async fn all_three_signals_arrive(host: &Polytrace, receiver: &Receiver) {
    let r = get(&host.url("/faults/print")).await;
    assert_eq!(r.status, 200);
    let trace_id = r.trace_id();
    let spans = receiver.trace(&trace_id, 2).await;
    assert!(spans.iter().any(|s| s.kind == KIND_SERVER), "{spans:#?}");
    receiver
        .wait_logs(|l| l.trace_id == trace_id, |l| l.len() >= 4)
        .await;
    receiver
        .wait_metric("faults", "http.server.request.duration", |p| !p.is_empty())
        .await;
}

/// Wait (20 s at most) until the host's log contains every one of `needles`.
async fn wait_log(host: &Polytrace, needles: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let log = host.log();
        if needles.iter().all(|n| log.contains(n)) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the log never said {needles:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The form a typical SaaS setup uses (Uptrace's documentation):
/// `https://…:4317` over gRPC with an `uptrace-dsn` header, verified
/// against the system's roots (here `SSL_CERT_FILE`, which the system
/// root store honours), gzip-compressed.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_tls_with_system_roots_headers_and_gzip() {
    let dir = scratch_dir("tls-grpc");
    let pki = Pki::generate(&dir, "grpc");
    let receiver = Receiver::start_tls(&pki, false).await;
    let host = Polytrace::up(
        "tls-grpc",
        &manifest(),
        &receiver,
        "grpc",
        &[
            ("SSL_CERT_FILE", path(&pki.ca)),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "uptrace-dsn=https://token@api.uptrace.dev/1",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    assert!(receiver.endpoint("grpc").starts_with("https://localhost:"));
    all_three_signals_arrive(&host, &receiver).await;
    let exports = receiver.exports();
    assert!(
        exports.iter().all(|e| e
            .headers
            .iter()
            .any(|(k, v)| k == "uptrace-dsn" && v == "https://token@api.uptrace.dev/1")),
        "{:?}",
        exports.iter().map(|e| &e.headers).collect::<Vec<_>>()
    );
    let encodings = receiver.encodings();
    for signal in ["traces", "metrics", "logs"] {
        assert!(
            encodings
                .iter()
                .any(|(s, p, e)| s == signal && *p == "grpc" && e == "gzip"),
            "{signal}: {encodings:?}"
        );
    }
    assert!(
        encodings.iter().all(|(_, _, e)| e == "gzip"),
        "{encodings:?}"
    );
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("export failed"), "{log}");
}

/// OTLP/HTTP to `https://` with a private CA
/// (`OTEL_EXPORTER_OTLP_CERTIFICATE`) and `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`:
/// every signal arrives, gzip-encoded.
#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_over_tls_with_a_private_ca_and_gzip() {
    let dir = scratch_dir("tls-http");
    let pki = Pki::generate(&dir, "http");
    let receiver = Receiver::start_tls(&pki, false).await;
    let host = Polytrace::up(
        "tls-http",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    all_three_signals_arrive(&host, &receiver).await;
    let encodings = receiver.encodings();
    for signal in ["traces", "metrics", "logs"] {
        assert!(
            encodings
                .iter()
                .any(|(s, p, e)| s == signal && *p == "http/protobuf" && e == "gzip"),
            "{signal}: {encodings:?}"
        );
    }
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("export failed"), "{log}");
}

/// A receiver that demands a client certificate: with the per-signal
/// `OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE`/`_CLIENT_KEY` only spans
/// get through and the metric export is a logged, counted failure; with
/// the general variables every signal gets through. Both protocols.
#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_with_per_signal_and_general_client_certificates() {
    for protocol in ["http/protobuf", "grpc"] {
        let dir = scratch_dir("tls-mutual");
        let pki = Pki::generate(&dir, "mutual");
        let receiver = Receiver::start_tls(&pki, true).await;
        let host = Polytrace::up(
            "tls-mutual-traces",
            &manifest(),
            &receiver,
            protocol,
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                    path(&pki.client_cert),
                ),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                    path(&pki.client_key),
                ),
            ],
        );
        let r = get(&host.url("/faults/print")).await;
        assert_eq!(r.status, 200);
        receiver.trace(&r.trace_id(), 2).await;
        let log = wait_log(&host, &["metric export failed", "log export failed"]).await;
        assert!(!log.contains("span export failed"), "{protocol}: {log}");
        assert!(
            log.contains(&format!("endpoint=\"{}", receiver.endpoint(protocol))),
            "{protocol}: the failure names the endpoint: {log}"
        );
        assert!(receiver.metric_points().is_empty());
        assert!(receiver.log_records().is_empty());
        let (code, log) = host.terminate();
        assert_eq!(code, Some(0), "{log}");

        let host = Polytrace::up(
            "tls-mutual-all",
            &manifest(),
            &receiver,
            protocol,
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    path(&pki.client_cert),
                ),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki.client_key)),
            ],
        );
        all_three_signals_arrive(&host, &receiver).await;
        let (code, log) = host.terminate();
        assert_eq!(code, Some(0), "{log}");
        assert!(!log.contains("export failed"), "{protocol}: {log}");
    }
}

/// A server whose certificate does not verify (signed by a CA nobody
/// trusts): requests are served as ever; each signal's export fails with a
/// warning naming the endpoint and the TLS reason, and the spans are
/// counted as dropped — never a silent drop.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_server_is_a_named_counted_failure() {
    for protocol in ["http/protobuf", "grpc"] {
        let dir = scratch_dir("tls-untrusted");
        let pki = Pki::generate(&dir, "server");
        let other = Pki::generate(&scratch_dir("tls-other"), "unrelated");
        let receiver = Receiver::start_tls(&pki, false).await;
        let host = Polytrace::up(
            "tls-untrusted",
            &manifest(),
            &receiver,
            protocol,
            &[("SSL_CERT_FILE", path(&other.ca))],
        );
        for _ in 0..3 {
            assert_eq!(get(&host.url("/faults/print")).await.status, 200);
        }
        let endpoint = format!("endpoint=\"{}", receiver.endpoint(protocol));
        let log = wait_log(
            &host,
            &["span export failed", "spans not exported", &endpoint],
        )
        .await;
        let line = log
            .lines()
            .find(|l| l.contains("span export failed"))
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            line.contains("certificate") || line.contains("unknownissuer"),
            "{protocol}: the warning gives the TLS reason: {line}"
        );
        assert!(
            !log.contains("failed to verify TLS certificate"),
            "one warning per 30 s, not a line per attempt: {log}"
        );
        let metrics = get(&host.ui_url("/metrics")).await.body;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("polytrace_telemetry_dropped_total")
                    && l.contains("signal=\"spans\"")
                    && !l.ends_with(" 0")),
            "{protocol}: {metrics}"
        );
        assert!(receiver.spans().is_empty());
        let (code, log) = host.terminate();
        assert_eq!(code, Some(0), "{log}");
    }
}

/// `OTEL_EXPORTER_OTLP_INSECURE` decides the transport of a gRPC endpoint
/// given without a scheme: `true` means plaintext (which works on a machine
/// without any CA certificates); otherwise it is TLS.
#[tokio::test(flavor = "multi_thread")]
async fn insecure_decides_a_schemeless_grpc_endpoint() {
    let plain = Receiver::start().await;
    let host = Polytrace::up(
        "tls-insecure",
        &manifest(),
        &plain,
        "grpc",
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &plain.grpc.to_string(),
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),
            // No system CA bundle at all: plaintext export must not need one
            // (metrics and logs go to plain http:// gRPC here too).
            ("SSL_CERT_FILE", "/dev/null"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    let r = get(&host.url("/faults/print")).await;
    plain.trace(&r.trace_id(), 2).await;
    plain
        .wait_logs(|l| l.trace_id == r.trace_id(), |l| l.len() >= 4)
        .await;
    host.terminate();

    let pki = Pki::generate(&scratch_dir("tls-schemeless"), "schemeless");
    let secure = Receiver::start_tls(&pki, false).await;
    let host = Polytrace::up(
        "tls-schemeless",
        &manifest(),
        &secure,
        "grpc",
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("localhost:{}", secure.grpc.port()),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
        ],
    );
    let r = get(&host.url("/faults/print")).await;
    secure.trace(&r.trace_id(), 2).await;
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
}

/// `OTEL_RESOURCE_ATTRIBUTES` values are percent-decoded (Resource SDK
/// specification) and never change `service.name`; an invalid environment
/// value is a start-up warning and is ignored, not a refusal to start.
#[tokio::test(flavor = "multi_thread")]
async fn environment_variables_are_decoded_as_the_spec_says() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        "otel-env",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=hello%20world,service.name=ignored,team=a%2Cb",
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ],
    );
    let r = get(&host.url("/faults/print")).await;
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let resource = &spans[0].resource;
    assert_eq!(resource["deployment.environment"], "hello world");
    assert_eq!(resource["team"], "a,b");
    assert_eq!(resource["service.name"], "faults");
    let (code, log) = host.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("OTEL_BSP_MAX_QUEUE_SIZE=`lots` is ignored"),
        "{log}"
    );

    let host = Polytrace::up(
        "otel-env-broken",
        &manifest(),
        &receiver,
        "http/protobuf",
        &[("OTEL_RESOURCE_ATTRIBUTES", "good=1,broken%zz")],
    );
    let r = get(&host.url("/faults/print")).await;
    let spans = receiver.trace(&r.trace_id(), 2).await;
    assert!(
        !spans[0].resource.contains_key("good"),
        "{:?}",
        spans[0].resource
    );
    let (_, log) = host.terminate();
    assert!(
        log.contains("OTEL_RESOURCE_ATTRIBUTES=`good=1,broken%zz` is ignored"),
        "{log}"
    );
}
