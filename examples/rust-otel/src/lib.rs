//! billing, written against the `opentelemetry` crate's API: the spans,
//! attributes, status and counter below are the API's; polytrace's only
//! line is `otel::init()`, where a native service would build its SDK.
//!
//! `POST /charge?amount=N` → span `charge_card` (`charge.amount`) with a
//! child `ledger.write`; an amount above 1000 is declined (402, the span's
//! status Error with the error recorded). Counter `charges.created`.

use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _};
use opentelemetry::{KeyValue, global};
use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond};
use polytrace_guest::otel;

struct Billing;

#[derive(Debug)]
struct Declined(f64);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "card declined for {:.2}", self.0)
    }
}

impl std::error::Error for Declined {}

impl Guest for Billing {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        otel::init();
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        let amount: f64 = request
            .query("amount")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0.0);
        let tracer = global::tracer("billing");
        let declined = tracer.in_span("charge_card", |cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("charge.amount", amount));
            tracer.in_span("ledger.write", |cx| {
                cx.span()
                    .add_event("ledger.appended", vec![KeyValue::new("ledger.entries", 1)]);
            });
            if amount > 1000.0 {
                let error = Declined(amount);
                span.record_error(&error);
                span.set_status(Status::error(error.to_string()));
                return Some(error);
            }
            None
        });
        let status = if declined.is_some() {
            "declined"
        } else {
            "charged"
        };
        global::meter("billing")
            .u64_counter("charges.created")
            .with_unit("{charge}")
            .build()
            .add(1, &[KeyValue::new("charge.status", status)]);
        let body = format!("{{\"status\":\"{status}\",\"amount\":{amount}}}");
        let code = if declined.is_some() { 402 } else { 200 };
        respond(out, code, "application/json", body.as_bytes());
    }
}

polytrace_guest::http::wasip2::http::proxy::export!(Billing with_types_in polytrace_guest::http::wasip2);
