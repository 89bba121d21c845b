//! A trace as a normalized, readable tree: what the conformance suite
//! compares across languages and against `tests/conformance/expected.txt`.
//!
//! Normalization drops what legitimately differs between runs and
//! languages — ids, timestamps, durations, stack traces, per-run ports, the
//! component's own name and language — and orders children canonically, so
//! two guests that did the same thing render to the same text.

use crate::{FlatSpan, KIND_CLIENT, KIND_INTERNAL, KIND_SERVER};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// Span attributes whose values change from run to run.
const VOLATILE_ATTRIBUTES: &[&str] = &["server.port", "client.port", "network.peer.port"];
/// Event attributes that carry language-specific detail.
const VOLATILE_EVENT_ATTRIBUTES: &[&str] = &["exception.stacktrace"];
/// Resource attributes that name the component or its language.
const VOLATILE_RESOURCE: &[&str] = &["service.name", "polytrace.guest.language"];

/// Render the trace rooted at the span whose parent is not in `spans`,
/// without service names and languages (to compare one scenario across
/// components). Every occurrence of a string in `aliases` (such as the
/// component's id) is replaced by its placeholder.
pub fn render(spans: &[FlatSpan], aliases: &[(&str, &str)]) -> String {
    render_with(spans, aliases, false)
}

/// Like [`render`], and each service boundary (the root and every SERVER
/// span) names the service and its language.
pub fn render_services(spans: &[FlatSpan], aliases: &[(&str, &str)]) -> String {
    render_with(spans, aliases, true)
}

fn render_with(spans: &[FlatSpan], aliases: &[(&str, &str)], services: bool) -> String {
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| !ids.contains(&s.parent_span_id.as_str()))
        .collect();
    let mut blocks: Vec<String> = roots
        .iter()
        .map(|root| render_span(root, spans, aliases, services, 0))
        .collect();
    blocks.sort();
    blocks.concat()
}

fn render_span(
    span: &FlatSpan,
    all: &[FlatSpan],
    aliases: &[(&str, &str)],
    services: bool,
    depth: usize,
) -> String {
    let pad = "  ".repeat(depth);
    let alias = |s: &str| {
        aliases
            .iter()
            .fold(s.to_string(), |acc, (from, to)| acc.replace(from, to))
    };
    let kind = match span.kind {
        KIND_INTERNAL => "INTERNAL",
        KIND_SERVER => "SERVER",
        KIND_CLIENT => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    };
    let status = match span.status_code {
        1 => "OK".to_string(),
        2 => format!("ERROR {:?}", alias(&span.status_message)),
        _ => "UNSET".to_string(),
    };
    let boundary = depth == 0 || span.kind == KIND_SERVER;
    let service = if services && boundary {
        let language = span.resource.get("polytrace.guest.language");
        format!(
            " service={} ({})",
            span.service(),
            language.and_then(Json::as_str).unwrap_or("?")
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "{pad}{kind} {:?}{service} status={status}\n",
        alias(&span.name)
    );
    if boundary {
        let resource: BTreeMap<&String, &Json> = span
            .resource
            .iter()
            .filter(|(k, _)| !VOLATILE_RESOURCE.contains(&k.as_str()))
            .collect();
        for (k, v) in resource {
            out += &format!("{pad}  resource {k}: {}\n", typed(v, &alias));
        }
    }
    for (k, v) in &span.attributes {
        if !VOLATILE_ATTRIBUTES.contains(&k.as_str()) {
            out += &format!("{pad}  {k}: {}\n", typed(v, &alias));
        }
    }
    if span.dropped_attributes_count > 0 || span.dropped_events_count > 0 {
        out += &format!(
            "{pad}  dropped: {} attributes, {} events\n",
            span.dropped_attributes_count, span.dropped_events_count
        );
    }
    for (name, attrs) in &span.events {
        out += &format!("{pad}  event {name:?}\n");
        for (k, v) in attrs {
            if VOLATILE_EVENT_ATTRIBUTES.contains(&k.as_str()) {
                continue;
            }
            // exception.type is the fully-qualified class name, qualified
            // each language's way (Python's SDK writes `app.ConformanceError`):
            // compared by the class's own name.
            let v = match (k.as_str(), v) {
                ("exception.type", Json::String(t)) => {
                    Json::String(t.rsplit('.').next().unwrap_or(t).to_string())
                }
                _ => v.clone(),
            };
            out += &format!("{pad}    {k}: {}\n", typed(&v, &alias));
        }
    }
    let mut children: Vec<String> = all
        .iter()
        .filter(|c| c.parent_span_id == span.span_id)
        .map(|c| render_span(c, all, aliases, services, depth + 1))
        .collect();
    children.sort();
    out + &children.concat()
}

/// A value with its OTLP type, so `42` (int) and `42.0` (double) differ.
fn typed(v: &Json, alias: &dyn Fn(&str) -> String) -> String {
    fn type_of(v: &Json) -> &'static str {
        match v {
            Json::String(_) => "string",
            Json::Bool(_) => "bool",
            Json::Number(n) if n.is_f64() => "double",
            Json::Number(_) => "int",
            Json::Array(_) => "array",
            Json::Null => "empty",
            Json::Object(_) => "map",
        }
    }
    match v {
        Json::String(s) => {
            // Long values (the limits' 4096-byte cut) as their length and
            // start, measured once the run's own parts are named.
            let s = alias(s);
            if s.len() > 80 {
                let mut start = 32;
                while !s.is_char_boundary(start) {
                    start -= 1;
                }
                format!("string ({} bytes) {:?}…", s.len(), &s[..start])
            } else {
                format!("string {s:?}")
            }
        }
        Json::Array(items) if items.len() > 16 => {
            let inner = items.first().map_or("empty", type_of);
            let head: Vec<String> = items[..4].iter().map(Json::to_string).collect();
            format!(
                "array<{inner}> ({} elements) [{},…]",
                items.len(),
                head.join(",")
            )
        }
        Json::Array(items) => {
            let inner = items.first().map_or("empty", type_of);
            format!("array<{inner}> {v}")
        }
        other => format!("{} {other}", type_of(other)),
    }
}

/// A line diff of `expected` against `actual`, `-` for expected lines that
/// are missing and `+` for lines that are not expected.
pub fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// Compare rendered trees, labelled, with the expected file: each must be
/// equal to it, or the assertion lists a unified diff per label. With
/// `POLYTRACE_BLESS=1` the first tree is written to the file first (review
/// the diff before committing it).
pub fn assert_expected(expected_file: &std::path::Path, rendered: &[(&str, String)]) {
    if std::env::var_os("POLYTRACE_BLESS").is_some() {
        std::fs::write(expected_file, &rendered[0].1).unwrap();
        eprintln!("wrote {}", expected_file.display());
    }
    let expected = std::fs::read_to_string(expected_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write it with POLYTRACE_BLESS=1)",
            expected_file.display()
        )
    });
    let mut failures = String::new();
    for (label, text) in rendered {
        if *text != expected {
            failures += &format!(
                "\n=== {label} differs from {}:\n{}",
                expected_file.display(),
                diff(&expected, text)
            );
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
