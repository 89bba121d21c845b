//! hello-axum-native: what examples/hello-rust does, as a native axum
//! service instrumented by hand with the OpenTelemetry Rust SDK, the way an
//! axum team without polytrace would: a SERVER span per request (continuing
//! a W3C `traceparent`), the child span `hello.work` with the same
//! attributes and `checkpoint` event, a batch span processor exporting
//! OTLP/HTTP protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT`;
//! `OTEL_SDK_DISABLED=true` turns the SDK off.
//!
//!     PORT=8084 OTEL_SERVICE_NAME=hello-axum OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!       tests/native/hello_axum/target/dist/hello-axum-native

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Array, Context, KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::collections::HashMap;
use std::sync::OnceLock;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

async fn hello(
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> impl IntoResponse {
    let tracer = TRACER.get().expect("tracer set in main");
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let mut server = tracer
        .span_builder("GET /hello/{*rest}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", request.uri().path().to_string()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.route", "/hello/{*rest}"),
        ])
        .start_with_context(tracer, &parent);
    let cx = Context::current().with_remote_span_context(server.span_context().clone());
    let mut work = tracer
        .span_builder("hello.work")
        .with_attributes([
            KeyValue::new(
                "hello.name",
                query.get("name").cloned().unwrap_or_else(|| "world".into()),
            ),
            KeyValue::new("hello.polite", true),
            KeyValue::new("hello.count", 3),
            KeyValue::new("hello.ratio", 0.5),
            KeyValue::new(
                "hello.tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
            KeyValue::new("hello.flags", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("hello.numbers", Value::Array(Array::I64(vec![1, 2, 3]))),
            KeyValue::new("hello.weights", Value::Array(Array::F64(vec![0.25, 0.75]))),
        ])
        .start_with_context(tracer, &cx);
    work.add_event("checkpoint", vec![KeyValue::new("step", 1)]);
    work.end();
    server.set_attribute(KeyValue::new("http.response.status_code", 200));
    server.set_status(Status::Unset);
    server.end();
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"service":"hello-axum","language":"rust","message":"hello","next":null}"#,
    )
}

#[tokio::main]
async fn main() {
    // OTEL_SDK_DISABLED=true (the spec's switch, which opentelemetry-rust
    // does not read itself): no exporter, no processor, and every span
    // sampled out, so the handler's tracing calls are no-ops on
    // non-recording spans. The overhead benchmark runs both to measure
    // what the SDK costs this service.
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let provider = if disabled {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build()
    } else {
        // The endpoint, batching and service.name come from OTEL_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .expect("an OTLP/HTTP exporter");
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build()
    };
    TRACER.set(provider.tracer("hello-axum")).ok();
    let app = Router::new().route("/hello/{*rest}", get(hello));
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .unwrap();
    let _ = provider.shutdown();
}
