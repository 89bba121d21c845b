//! The `console` span exporter (`OTEL_TRACES_EXPORTER=console`).

use opentelemetry_sdk::trace::SpanData;

/// The console exporter: one line per span, readable in a terminal, and
/// stable for scripts (scripts/demo.py reads it): service, kind, name, ids,
/// start (Unix seconds), duration, status, attributes.
pub fn print_spans(service: &str, batch: &[SpanData]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for s in batch {
        let micros = s
            .end_time
            .duration_since(s.start_time)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        let status = match &s.status {
            opentelemetry::trace::Status::Error { description } if description.is_empty() => {
                "ERROR".to_string()
            }
            opentelemetry::trace::Status::Error { description } => format!("ERROR ({description})"),
            opentelemetry::trace::Status::Ok => "OK".into(),
            opentelemetry::trace::Status::Unset => "-".into(),
        };
        let parent = if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            "root".to_string()
        } else {
            s.parent_span_id.to_string()
        };
        let attrs: Vec<String> = s
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        let start = s
            .start_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "span {service:>16} {:<8} {:<28} trace={} span={} parent={parent:<16} start={}.{:06} {micros:>8.2}ms status={status} {}",
            format!("{:?}", s.span_kind).to_uppercase(),
            s.name,
            s.span_context.trace_id(),
            s.span_context.span_id(),
            start.as_secs(),
            start.subsec_micros(),
            attrs.join(" ")
        );
    }
}
