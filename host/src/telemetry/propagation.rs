//! W3C Trace Context (Level 1 and Level 2's random flag) and W3C Baggage.
//!
//! Written here rather than taken from `opentelemetry_sdk::propagation`
//! because the edge cases the specification spells out (future versions,
//! duplicated headers, tracestate grammar and limits) must hold exactly and
//! are tested one by one below.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Trace flag bit 0: the caller may have recorded this trace.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Trace flag bit 1 (Level 2): the right-most 7 bytes of the trace id are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flag bits this implementation understands and forwards. The W3C
/// specification asks participants to zero bits they do not understand.
const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// At most this many list members in `tracestate`.
const TRACESTATE_MAX_MEMBERS: usize = 32;
/// `baggage` limits from the W3C Baggage specification.
const BAGGAGE_MAX_BYTES: usize = 8192;
const BAGGAGE_MAX_MEMBERS: usize = 180;

/// The propagation headers of one request, as extracted from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The remote parent, when a valid `traceparent` was present.
    pub parent: Option<SpanContext>,
    /// The `baggage` header, validated and re-serialised ("" when absent).
    pub baggage: String,
}

/// Extract trace context and baggage from a list of headers (names compared
/// case-insensitively, values in order of appearance).
pub fn extract<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Extracted {
    let mut traceparents = Vec::new();
    let mut tracestates = Vec::new();
    let mut baggages = Vec::new();
    for (name, value) in headers {
        let Ok(value) = std::str::from_utf8(value) else {
            if name.eq_ignore_ascii_case("traceparent") {
                // Not text: still counts as a (broken) traceparent.
                traceparents.push(None);
            }
            continue;
        };
        if name.eq_ignore_ascii_case("traceparent") {
            traceparents.push(Some(value));
        } else if name.eq_ignore_ascii_case("tracestate") {
            tracestates.push(value);
        } else if name.eq_ignore_ascii_case("baggage") {
            baggages.push(value);
        }
    }
    let parent = match traceparents.as_slice() {
        // A duplicated traceparent is invalid: restart the trace.
        [Some(tp)] => parse_traceparent(tp).map(|(trace_id, span_id, flags)| {
            // tracestate is only parsed alongside a valid traceparent.
            let state = parse_tracestate(&tracestates.join(",")).unwrap_or_default();
            SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state)
        }),
        _ => None,
    };
    Extracted {
        parent,
        baggage: parse_baggage(&baggages.join(",")),
    }
}

/// Parse a `traceparent` header into trace id, parent id and the known flags.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let bytes = value.as_bytes();
    // ASCII only: the slicing below is by byte and must not split a character.
    if bytes.len() < 55 || !value.is_ascii() {
        return None;
    }
    let version = u8::from_str_radix(lower_hex(&value[0..2])?, 16).ok()?;
    if version == 0xff {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    match version {
        // Version 00 has exactly four fields.
        0 if bytes.len() != 55 => return None,
        // A later version may add fields; the first four keep their meaning
        // and anything further must start with '-'.
        _ if bytes.len() > 55 && bytes[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = u128::from_str_radix(lower_hex(&value[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&value[36..52])?, 16).ok()?;
    let flags = u8::from_str_radix(lower_hex(&value[53..55])?, 16).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((
        TraceId::from(trace_id),
        SpanId::from(span_id),
        flags & KNOWN_FLAGS,
    ))
}

fn lower_hex(s: &str) -> Option<&str> {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then_some(s)
}

/// Format a span context as a `traceparent` header value (version 00).
pub fn format_traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8() & KNOWN_FLAGS
    )
}

/// Parse a combined `tracestate` value. `None` means the list is invalid and
/// must be dropped whole.
pub fn parse_tracestate(value: &str) -> Option<TraceState> {
    let mut members: Vec<(String, String)> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            // Empty list members are allowed and ignored.
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_tracestate_key(key) || !valid_tracestate_value(val) {
            return None;
        }
        if members.iter().any(|(k, _)| k == key) {
            return None;
        }
        members.push((key.to_string(), val.to_string()));
    }
    if members.len() > TRACESTATE_MAX_MEMBERS {
        return None;
    }
    TraceState::from_key_value(members).ok()
}

fn valid_tracestate_key(key: &str) -> bool {
    fn simple_char(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
    }
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| simple_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| simple_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| simple_char(c))
        }
    }
}

fn valid_tracestate_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && *b.last().unwrap() != b' '
}

/// Validate a combined `baggage` value and return it re-serialised without
/// optional whitespace; an invalid member or an oversized header yields "".
pub fn parse_baggage(value: &str) -> String {
    if value.len() > BAGGAGE_MAX_BYTES {
        return String::new();
    }
    let mut out = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let mut parts = member.split(';');
        let kv = parts.next().unwrap_or_default();
        let Some((k, v)) = kv.split_once('=') else {
            return String::new();
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.bytes().all(is_token_char) || !v.bytes().all(is_baggage_octet) {
            return String::new();
        }
        let mut normalised = format!("{k}={v}");
        for prop in parts {
            normalised.push(';');
            normalised.push_str(prop.trim());
        }
        out.push(normalised);
    }
    if out.len() > BAGGAGE_MAX_MEMBERS {
        return String::new();
    }
    out.join(",")
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_baggage_octet(b: u8) -> bool {
    b == 0x21
        || (0x23..=0x2b).contains(&b)
        || (0x2d..=0x3a).contains(&b)
        || (0x3c..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
}

/// The headers that carry `cx` (and `baggage`) to the next participant.
pub fn inject(cx: &SpanContext, baggage: &str) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(3);
    if !cx.is_valid() {
        return headers;
    }
    headers.push(("traceparent", format_traceparent(cx)));
    let state = cx.trace_state().header();
    if !state.is_empty() {
        headers.push(("tracestate", state));
    }
    if !baggage.is_empty() {
        headers.push(("baggage", baggage.to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn one(tp: &str) -> Option<(TraceId, SpanId, u8)> {
        parse_traceparent(tp)
    }

    #[test]
    fn valid_traceparent() {
        let (t, s, f) = one(TP).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert_eq!(f, 1);
    }

    #[test]
    fn invalid_traceparents_restart_the_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with trailing data
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // future version with trailing data not starting with '-'
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // wrong delimiters and lengths
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(one(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn future_versions_parse_their_first_four_fields() {
        let (t, _, f) = one("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(f, 1);
        assert!(
            one("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future")
                .is_some()
        );
    }

    #[test]
    fn flags_keep_sampled_and_random_and_zero_unknown_bits() {
        let (_, _, f) = one("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert_eq!(f, FLAG_SAMPLED | FLAG_RANDOM);
        let (_, _, f) = one("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
        assert_eq!(f, FLAG_RANDOM);
    }

    fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        list.iter().map(|(k, v)| (*k, v.as_bytes()))
    }

    #[test]
    fn duplicated_traceparent_is_ignored_with_its_tracestate() {
        let e = extract(hdrs(&[
            ("traceparent", TP),
            ("Traceparent", TP),
            ("tracestate", "a=1"),
        ]));
        assert_eq!(e.parent, None);
    }

    #[test]
    fn tracestate_headers_are_concatenated_in_order() {
        let e = extract(hdrs(&[
            ("TraceParent", TP),
            ("tracestate", "a=1,b=2"),
            ("tracestate", "c=3"),
        ]));
        let p = e.parent.unwrap();
        assert!(p.is_remote());
        assert_eq!(p.trace_state().header(), "a=1,b=2,c=3");
    }

    #[test]
    fn tracestate_grammar_and_limits() {
        assert!(parse_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").is_some());
        assert!(parse_tracestate("tenant1@vendor=x, 0tenant@sys=y").is_some());
        assert!(parse_tracestate(" a=1 ,, b=2 ").is_some());
        // Spaces around a member are optional whitespace, not part of the value.
        assert_eq!(
            parse_tracestate("a=x y ,b=1").unwrap().header(),
            "a=x y,b=1"
        );
        for bad in [
            "A=1",      // uppercase key
            "1a=1",     // simple key must start with a letter
            "a=1,a=2",  // duplicate key
            "a",        // no value
            "a=",       // empty value
            "a=x\ty",   // control character in value
            "a=b=c",    // '=' in value
            "t@1sys=1", // system must start with a letter
            "t@systemtoolong1=1",
        ] {
            assert!(parse_tracestate(bad).is_none(), "{bad:?} must be rejected");
        }
        let long_key = format!("a{}=1", "b".repeat(255));
        assert!(parse_tracestate(&long_key).is_some());
        let too_long_key = format!("a{}=1", "b".repeat(256));
        assert!(parse_tracestate(&too_long_key).is_none());
        let value_256 = format!("a={}", "v".repeat(256));
        assert!(parse_tracestate(&value_256).is_some());
        let value_257 = format!("a={}", "v".repeat(257));
        assert!(parse_tracestate(&value_257).is_none());
        let thirty_two: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(&thirty_two.join(",")).is_some());
        let thirty_three: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(&thirty_three.join(",")).is_none());
    }

    #[test]
    fn invalid_tracestate_is_dropped_but_the_parent_kept() {
        let e = extract(hdrs(&[("traceparent", TP), ("tracestate", "a=1,A=2")]));
        let p = e.parent.unwrap();
        assert_eq!(p.trace_state().header(), "");
    }

    #[test]
    fn baggage_is_validated_and_propagated() {
        let e = extract(hdrs(&[("baggage", "userId=alice, isProduction=false;p=1")]));
        assert_eq!(e.baggage, "userId=alice,isProduction=false;p=1");
        assert_eq!(parse_baggage("bad key=1"), "");
        assert_eq!(parse_baggage("k=va\"lue"), "");
        assert_eq!(parse_baggage(&format!("k={}", "v".repeat(9000))), "");
    }

    /// Arbitrary bytes in any header never panic the parser; a fixed-seed
    /// generator keeps the test repeatable.
    #[test]
    fn arbitrary_headers_never_panic() {
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<char> = "0123456789abcdefABCDEF-=,;@ \t*/_%é€\u{0}ÿ"
            .chars()
            .collect();
        for round in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if round % 3 == 0 {
                // Start from a valid header and damage it.
                let mut valid: Vec<char> = TP.chars().collect();
                let at = (next() % valid.len() as u64) as usize;
                valid[at] = alphabet[(next() % alphabet.len() as u64) as usize];
                text = valid.into_iter().collect();
            }
            let _ = parse_traceparent(&text);
            let _ = parse_tracestate(&text);
            let _ = parse_baggage(&text);
            let raw = text.as_bytes();
            let _ = extract([("traceparent", raw), ("tracestate", raw), ("baggage", raw)]);
        }
        // Multi-byte characters at the byte offsets the parser slices at.
        let tricky = format!("0é-{}", &TP[4..]);
        assert_eq!(parse_traceparent(&tricky), None);
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn inject_round_trips() {
        let (t, s, f) = one(TP).unwrap();
        let state = parse_tracestate("a=1").unwrap();
        let cx = SpanContext::new(t, s, TraceFlags::new(f), false, state);
        let headers = inject(&cx, "k=v");
        assert_eq!(
            headers,
            vec![
                ("traceparent", TP.to_string()),
                ("tracestate", "a=1".to_string()),
                ("baggage", "k=v".to_string())
            ]
        );
        assert!(inject(&SpanContext::empty_context(), "").is_empty());
    }
}
