//! A component that misbehaves on request, for the host's fault tests.

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond, send};
use polytrace_guest::{Span, kv};

struct Faults;

impl Guest for Faults {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::read(request);
        match request.path() {
            "/faults/ok" => respond(out, 200, "text/plain", b"ok"),
            "/faults/status" => {
                let code = request.query("code").and_then(|c| c.parse().ok()).unwrap_or(200);
                respond(out, code, "text/plain", b"status")
            }
            "/faults/trap" => {
                let _span = Span::start("about_to_trap", []);
                trap_here()
            }
            "/faults/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/faults/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 8 << 20];
                    chunk[0] = 1;
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            "/faults/attributes" => {
                let span = Span::start("many_attributes", []);
                for i in 0..300 {
                    span.set_attribute(&format!("attr.{i:03}"), i);
                }
                span.set_attribute("huge", "x".repeat(1 << 20));
                for i in 0..200 {
                    span.add_event("tick", [kv("i", i)]);
                }
                drop(span);
                respond(out, 200, "text/plain", b"attributes");
            }
            "/faults/unended" => {
                // Leaked on purpose: the host must end it when the request ends.
                std::mem::forget(Span::start("never_ended", [kv("leaked", true)]));
                respond(out, 200, "text/plain", b"unended");
            }
            "/faults/after-end" => {
                let span = Span::start("ended_early", []);
                let context = span.context();
                span.end();
                // A fresh handle to an ended span is not possible from the SDK,
                // so the WIT handle is used through `end` then `set`:
                let again = Span::start("after_end_probe", []);
                again.set_attribute("before", true);
                let raw = again;
                raw.update_name("after_end_probe");
                let ctx = raw.context();
                raw.end();
                respond(
                    out,
                    200,
                    "application/json",
                    format!("{{\"first\":{:?},\"second\":{:?}}}", context.span_id, ctx.span_id).as_bytes(),
                );
            }
            "/faults/headers" => {
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| format!("{:?}", String::from_utf8_lossy(v)))
                        .unwrap_or_else(|| "null".into())
                };
                let body = format!(
                    "{{\"traceparent\":{},\"tracestate\":{},\"baggage\":{}}}",
                    header("traceparent"),
                    header("tracestate"),
                    header("baggage")
                );
                respond(out, 200, "application/json", body.as_bytes());
            }
            "/faults/headers-via" => {
                let url = request.query("url").unwrap_or_default();
                match send("GET", &url, b"") {
                    Ok(r) => respond(out, r.status, "application/json", &r.body),
                    Err(e) => respond(out, 502, "text/plain", format!("failed: {e}").as_bytes()),
                }
            }
            "/faults/env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                respond(out, 200, "text/plain", vars.join("\n").as_bytes());
            }
            "/faults/fs" => {
                let result = std::fs::read_to_string("/etc/passwd");
                let body = match result {
                    Ok(_) => "readable".to_string(),
                    Err(e) => format!("denied: {e}"),
                };
                respond(out, 200, "text/plain", body.as_bytes());
            }
            "/faults/call" => {
                let url = request.query("url").unwrap_or_default();
                match send("GET", &url, b"") {
                    Ok(r) => respond(out, 200, "text/plain", format!("status {}", r.status).as_bytes()),
                    Err(e) => respond(out, 502, "text/plain", format!("failed: {e}").as_bytes()),
                }
            }
            _ => respond(out, 404, "text/plain", b"unknown fault"),
        }
    }
}

#[inline(never)]
fn trap_here() -> ! {
    panic!("the guest chose to trap")
}

polytrace_guest::http::wasip2::http::proxy::export!(Faults with_types_in polytrace_guest::http::wasip2);
