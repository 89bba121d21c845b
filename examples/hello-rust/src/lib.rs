//! hello-rust: a wasi:http handler that adds its own span to the trace the
//! host started, and calls the next service when asked to.
//!
//! `GET /hello?next=URL` → span `hello.work` with one attribute of each type
//! and a `checkpoint` event; when `next` is given, an outgoing request to it
//! (the host makes the CLIENT span and propagates the trace).

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond, send};
use polytrace_guest::{Span, kv};

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        let span = Span::start(
            "hello.work",
            [
                kv(
                    "hello.name",
                    request.query("name").unwrap_or_else(|| "world".into()),
                ),
                kv("hello.polite", true),
                kv("hello.count", 3),
                kv("hello.ratio", 0.5),
                kv("hello.tags", vec!["a", "b"]),
                kv("hello.flags", vec![true, false]),
                kv("hello.numbers", vec![1i64, 2, 3]),
                kv("hello.weights", vec![0.25, 0.75]),
            ],
        );
        span.add_event("checkpoint", [kv("step", 1)]);
        let next = request
            .query("next")
            .map(|url| match send("GET", &url, b"") {
                Ok(r) => format!("{{\"url\":{url:?},\"status\":{}}}", r.status),
                Err(e) => {
                    span.record_error(&e);
                    format!("{{\"url\":{url:?},\"error\":{:?}}}", e.to_string())
                }
            });
        drop(span);
        let body = format!(
            "{{\"service\":\"hello-rust\",\"language\":\"rust\",\"message\":\"hello\",\"next\":{}}}",
            next.unwrap_or_else(|| "null".into())
        );
        respond(out, 200, "application/json", body.as_bytes());
    }
}

polytrace_guest::http::wasip2::http::proxy::export!(Hello with_types_in polytrace_guest::http::wasip2);
