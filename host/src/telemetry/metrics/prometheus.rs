//! The Prometheus text exposition (version 0.0.4) of OpenTelemetry metrics,
//! with the OpenTelemetry-to-Prometheus translation of the specification:
//! names sanitized, unit suffixes (`_seconds`, `_bytes`, `_ratio`), `_total`
//! on monotonic sums, `job` from the resource's service namespace and name,
//! the instrumentation scope as `otel_scope_name`, and every other resource
//! attribute on one `target_info` series per service.

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The content type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its type, help and sample lines, in arrival order.
#[derive(Default)]
struct Family {
    kind: &'static str,
    help: String,
    samples: Vec<String>,
}

/// Render every component's collection as one exposition.
pub fn render(collections: &[ResourceMetrics]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut targets = Vec::new();
    for rm in collections {
        let resource: Vec<KeyValue> = rm
            .resource()
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let get = |key: &str| {
            resource
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name,
            (_, None) => "unknown_service".to_string(),
        };
        let mut target = vec![("job".to_string(), job.clone())];
        target.extend(
            resource
                .iter()
                .filter(|kv| {
                    !matches!(
                        kv.key.as_str(),
                        "service.name" | "service.namespace" | "service.instance.id"
                    )
                })
                .map(|kv| (label_name(kv.key.as_str()), value_text(&kv.value)))
                .filter(|(k, _)| !RESERVED.contains(&k.as_str())),
        );
        targets.push(labels(target));
        for scope in rm.scope_metrics() {
            let base = vec![
                ("job".to_string(), job.clone()),
                (
                    "otel_scope_name".to_string(),
                    scope.scope().name().to_string(),
                ),
            ];
            for metric in scope.metrics() {
                let (kind, monotonic) = match metric.data() {
                    AggregatedMetrics::F64(d) => shape(d),
                    AggregatedMetrics::U64(d) => shape(d),
                    AggregatedMetrics::I64(d) => shape(d),
                };
                let Some(kind) = kind else { continue };
                let name = metric_name(metric.name(), metric.unit(), kind, monotonic);
                let family = families.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    Family {
                        kind,
                        help: escape_help(metric.description()),
                        samples: Vec::new(),
                    }
                });
                if family.kind != kind {
                    // Same Prometheus name, different type in another
                    // component: a family can only have one type.
                    continue;
                }
                match metric.data() {
                    AggregatedMetrics::F64(d) => samples(&name, d, &base, &mut family.samples),
                    AggregatedMetrics::U64(d) => samples(&name, d, &base, &mut family.samples),
                    AggregatedMetrics::I64(d) => samples(&name, d, &base, &mut family.samples),
                }
            }
        }
    }
    let mut out = String::new();
    for name in &order {
        let f = &families[name];
        if !f.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
        }
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for s in &f.samples {
            out.push_str(s);
            out.push('\n');
        }
    }
    if !targets.is_empty() {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
        for t in targets {
            let _ = writeln!(out, "target_info{t} 1");
        }
    }
    out
}

/// A number the way Prometheus spells it.
pub trait Number: Copy {
    fn text(self) -> String;
}

impl Number for f64 {
    fn text(self) -> String {
        if self.is_nan() {
            "NaN".into()
        } else if self == f64::INFINITY {
            "+Inf".into()
        } else if self == f64::NEG_INFINITY {
            "-Inf".into()
        } else {
            format!("{self}")
        }
    }
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

/// The Prometheus type of a metric, and whether it is a monotonic sum.
fn shape<T>(d: &MetricData<T>) -> (Option<&'static str>, bool) {
    match d {
        MetricData::Gauge(_) => (Some("gauge"), false),
        MetricData::Sum(s) if s.is_monotonic() => (Some("counter"), true),
        MetricData::Sum(_) => (Some("gauge"), false),
        MetricData::Histogram(_) => (Some("histogram"), false),
        // Not produced by polytrace's instruments.
        MetricData::ExponentialHistogram(_) => (None, false),
    }
}

fn samples<T: Number>(
    name: &str,
    d: &MetricData<T>,
    base: &[(String, String)],
    out: &mut Vec<String>,
) {
    let with = |attrs: &mut dyn Iterator<Item = &KeyValue>, extra: Option<(&str, String)>| {
        let mut l: Vec<(String, String)> = base.to_vec();
        // Labels polytrace sets win over attributes of the same name.
        l.extend(
            attrs
                .map(|kv| (label_name(kv.key.as_str()), value_text(&kv.value)))
                .filter(|(k, _)| !RESERVED.contains(&k.as_str())),
        );
        l.extend(extra.map(|(k, v)| (k.to_string(), v)));
        labels(l)
    };
    match d {
        MetricData::Gauge(g) => {
            for p in g.data_points() {
                out.push(format!(
                    "{name}{} {}",
                    with(&mut p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Sum(s) => {
            for p in s.data_points() {
                out.push(format!(
                    "{name}{} {}",
                    with(&mut p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Histogram(h) => {
            for p in h.data_points() {
                let mut cumulative = 0u64;
                let counts: Vec<u64> = p.bucket_counts().collect();
                for (i, bound) in p.bounds().enumerate() {
                    cumulative += counts.get(i).copied().unwrap_or(0);
                    out.push(format!(
                        "{name}_bucket{} {cumulative}",
                        with(&mut p.attributes(), Some(("le", bound.text())))
                    ));
                }
                out.push(format!(
                    "{name}_bucket{} {}",
                    with(&mut p.attributes(), Some(("le", "+Inf".into()))),
                    p.count()
                ));
                out.push(format!(
                    "{name}_sum{} {}",
                    with(&mut p.attributes(), None),
                    p.sum().text()
                ));
                out.push(format!(
                    "{name}_count{} {}",
                    with(&mut p.attributes(), None),
                    p.count()
                ));
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// Label names polytrace sets itself; attributes of these names are left out.
const RESERVED: &[&str] = &["job", "instance", "otel_scope_name", "le"];

/// `{a="1",b="2"}`; values of attributes whose names collide after
/// sanitizing are joined with `;`, as the specification says.
fn labels(pairs: Vec<(String, String)>) -> String {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match merged.iter_mut().find(|(n, _)| *n == k) {
            Some((_, existing)) => {
                existing.push(';');
                existing.push_str(&v);
            }
            None => merged.push((k, v)),
        }
    }
    let inner: Vec<String> = merged
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A label value from an attribute value; arrays as JSON-like lists.
fn value_text(v: &Value) -> String {
    v.to_string()
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Replace what Prometheus does not allow with `_`, collapsing runs.
fn sanitize(name: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// A label name from an attribute key.
pub fn label_name(key: &str) -> String {
    let s = sanitize(key, false);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else if s.is_empty() {
        "key_".into()
    } else {
        s
    }
}

/// The Prometheus name of a metric: sanitized, with its unit and `_total`.
pub fn metric_name(name: &str, unit: &str, kind: &str, monotonic: bool) -> String {
    let mut out = sanitize(name, true).trim_end_matches('_').to_string();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    let suffix = if unit == "1" && kind == "gauge" {
        Some("ratio".to_string())
    } else {
        unit_suffix(unit)
    };
    if let Some(suffix) = suffix
        && !out.ends_with(&format!("_{suffix}"))
    {
        out.push('_');
        out.push_str(&suffix);
    }
    if monotonic && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// The name suffix of a UCUM unit: `s` is `seconds`, `By/s` is
/// `bytes_per_second`; annotations (`{request}`) and `1` have none.
fn unit_suffix(unit: &str) -> Option<String> {
    // Annotations in braces carry no unit.
    let mut plain = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let plain = plain.trim();
    if plain.is_empty() || plain == "1" {
        return None;
    }
    let (main, per) = match plain.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (plain, None),
    };
    let main = match main {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => other,
    };
    let per = per.map(|p| match p {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    });
    let text = match (main, per) {
        ("", Some(p)) => format!("per_{p}"),
        (m, Some(p)) => format!("{m}_per_{p}"),
        (m, None) => m.to_string(),
    };
    let text = sanitize(&text, false).trim_matches('_').to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_translate_as_the_specification_says() {
        assert_eq!(
            metric_name("http.server.request.duration", "s", "histogram", false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("orders.created", "{order}", "counter", true),
            "orders_created_total"
        );
        assert_eq!(
            metric_name("http.server.active_requests", "{request}", "gauge", false),
            "http_server_active_requests"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", "gauge", false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("net.io", "By/s", "counter", true),
            "net_io_bytes_per_second_total"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", "histogram", false),
            "latency_seconds"
        );
        assert_eq!(
            metric_name("requests_total", "", "counter", true),
            "requests_total"
        );
        assert_eq!(
            metric_name("a-b/c", "ms", "gauge", false),
            "a_b_c_milliseconds"
        );
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        // Attributes that collide after sanitizing are joined; reserved
        // names are left to polytrace.
        assert_eq!(
            labels(vec![
                ("job".into(), "app/svc".into()),
                ("a_b".into(), "1".into()),
                ("a_b".into(), "2".into()),
            ]),
            "{job=\"app/svc\",a_b=\"1;2\"}"
        );
    }
}
