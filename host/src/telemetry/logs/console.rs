//! How guest log records print on the host console (`--guest-logs`):
//! readable lines or JSON lines on stdout.

use crate::telemetry::printable::printable;
use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::logs::SdkLogRecord;
use std::time::SystemTime;

/// Print guest records readably (`[service 0af7651b] WARN  body k=v`) or as
/// JSON lines, on stdout.
pub fn print_records(service: &str, batch: &[SdkLogRecord], min: u8, json: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for r in batch {
        let n = r.severity_number().map_or(0, |s| s as u8);
        if n != 0 && n < min {
            continue;
        }
        let text = r.severity_text().unwrap_or("-");
        let body = match r.body() {
            Some(AnyValue::String(s)) => s.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let (trace_id, span_id) = r
            .trace_context()
            .map_or((TraceId::INVALID, SpanId::INVALID), |t| {
                (t.trace_id, t.span_id)
            });
        let time = r.timestamp().unwrap_or(SystemTime::UNIX_EPOCH);
        if json {
            let attrs: serde_json::Map<String, serde_json::Value> = r
                .attributes_iter()
                .map(|(k, v)| (k.to_string(), json_value(v)))
                .collect();
            let mut line = serde_json::json!({
                "time": rfc3339(time),
                "service": service,
                "severity": text,
                "severity_number": n,
                "body": body,
                "attributes": attrs,
            });
            if trace_id != TraceId::INVALID {
                line["trace_id"] = trace_id.to_string().into();
                line["span_id"] = span_id.to_string().into();
            }
            let _ = writeln!(out, "{line}");
        } else {
            let short = if trace_id == TraceId::INVALID {
                "--------".to_string()
            } else {
                trace_id.to_string()[..8].to_string()
            };
            let attrs: Vec<String> = r
                .attributes_iter()
                .filter(|(k, _)| k.as_str() != "log.iostream")
                .map(|(k, v)| format!("{}={}", printable(k.as_str()), printable(&plain(v))))
                .collect();
            let _ = writeln!(
                out,
                "{} [{service} {short}] {:<5} {}{}{}",
                rfc3339(time),
                printable(text),
                printable(&body),
                if attrs.is_empty() { "" } else { "  " },
                attrs.join(" ")
            );
        }
    }
}

fn plain(v: &AnyValue) -> String {
    match v {
        AnyValue::String(s) => s.to_string(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Double(f) => f.to_string(),
        AnyValue::Boolean(b) => b.to_string(),
        other => json_value(other).to_string(),
    }
}

fn json_value(v: &AnyValue) -> serde_json::Value {
    match v {
        AnyValue::String(s) => s.as_str().into(),
        AnyValue::Int(i) => (*i).into(),
        AnyValue::Double(f) => (*f).into(),
        AnyValue::Boolean(b) => (*b).into(),
        AnyValue::ListAny(l) => l.iter().map(json_value).collect(),
        other => format!("{other:?}").into(),
    }
}

/// `2026-11-22T08:31:02.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_print_as_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_336_262_123);
        assert_eq!(rfc3339(t), "2026-11-22T08:31:02.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
