//! The `console` span exporter (`OTEL_TRACES_EXPORTER=console`).

use super::encoded::EncodedSpan;
use crate::telemetry::printable::printable;
use opentelemetry::trace::{SpanId, TraceId};

/// The console exporter: one line per span, readable in a terminal, and
/// stable for scripts (scripts/demo.py reads it): service, kind, name, ids,
/// start (Unix seconds), duration, status, attributes.
pub fn print_spans(service: &str, batch: &[EncodedSpan]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for s in batch {
        let s = s.view();
        let millis = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
        let status = match s.status_code {
            2 if s.status_message.is_empty() => "ERROR".to_string(),
            2 => format!("ERROR ({})", printable(s.status_message)),
            1 => "OK".into(),
            _ => "-".into(),
        };
        let parent = s
            .parent_span_id
            .map_or("root".to_string(), |p| SpanId::from_bytes(p).to_string());
        let attrs: Vec<String> = s
            .attributes()
            .map(|a| {
                let value = a.value.to_value().to_string();
                format!("{}={}", printable(a.key), printable(&value))
            })
            .collect();
        let start_us = s.start_time_unix_nano / 1_000;
        let _ = writeln!(
            out,
            "span {service:>16} {:<8} {:<28} trace={} span={} parent={parent:<16} start={}.{:06} {millis:>8.2}ms status={status} {}",
            format!("{:?}", s.kind()).to_uppercase(),
            printable(s.name),
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            start_us / 1_000_000,
            start_us % 1_000_000,
            attrs.join(" ")
        );
    }
}
