//! A component that misbehaves on request, for the host's fault tests.

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond, send};
use polytrace_guest::{Span, kv};

struct Faults;

/// Requests this instance has served: grows under reuse, stays 1 with
/// `isolation = "per-request"`.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Memory kept across requests by `/faults/hoard`.
static HOARD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A span one request leaves open for the next to misuse (`/faults/leave-open`).
static LEFT_OPEN: std::sync::Mutex<Option<Span>> = std::sync::Mutex::new(None);

impl Guest for Faults {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // Mounted anywhere: `/any/prefix/faults/ok` is `/faults/ok`.
        let path = request.path();
        let path = &path[path.find("/faults/").unwrap_or(0)..];
        match path {
            "/faults/ok" => respond(out, 200, "text/plain", b"ok"),
            // Tries to pass for the host: its metric names, its console lines.
            "/faults/forge" => {
                let refused: Vec<String> = [
                    polytrace_guest::metrics::counter("polytrace.guest.traps", "", "{trap}").err(),
                    polytrace_guest::metrics::histogram("http.client.request.duration", "", "s")
                        .err(),
                    polytrace_guest::metrics::counter("Polytrace_Guest_Instantiations", "", "")
                        .err(),
                ]
                .into_iter()
                .map(|e| format!("{e:?}"))
                .collect();
                println!("\u{1b}[2J\u{1b}[31mforged ansi");
                polytrace_guest::logs::info(
                    "first\n2026-11-30T10:00:00.000Z  WARN polytrace: forged host line",
                    [],
                );
                respond(out, 200, "text/plain", refused.join("\n").as_bytes())
            }
            // Calls itself at `via` (`http://faults` in-process, or the
            // host's listener through the network) until a call fails: the
            // body has a `hop` per call that succeeded, then why it stopped.
            "/faults/recurse" => {
                let via = request.query("via").unwrap_or_default();
                let url = format!("{via}/faults/recurse?via={via}");
                match send("GET", &url, b"") {
                    Ok(r) => {
                        let mut body = b"hop ".to_vec();
                        body.extend_from_slice(&r.body);
                        respond(out, 200, "text/plain", &body)
                    }
                    Err(e) => respond(out, 200, "text/plain", format!("stopped: {e}").as_bytes()),
                }
            }
            // The length of the body it read.
            "/faults/echo" => respond(out, 200, "text/plain", request.body.len().to_string().as_bytes()),
            // A response of `kb` KiB, for clients that do not read it.
            "/faults/big" => {
                let kb: usize = request.query("kb").and_then(|n| n.parse().ok()).unwrap_or(1024);
                respond(out, 200, "application/octet-stream", &vec![b'x'; kb << 10])
            }
            // Returns without answering (the outparam is dropped unset).
            "/faults/no-response" => drop(out),
            "/faults/served" => respond(
                out,
                200,
                "application/json",
                format!("{{\"served\":{served}}}").as_bytes(),
            ),
            // Keeps `mb` MiB in a global, so the instance stays big.
            "/faults/hoard" => {
                let mb: usize = request.query("mb").and_then(|n| n.parse().ok()).unwrap_or(1);
                let mut chunk = vec![1u8; mb << 20];
                chunk[0] = 2;
                HOARD.lock().unwrap().push(std::hint::black_box(chunk));
                respond(out, 200, "text/plain", b"hoarded")
            }
            // Misbehaves with telemetry across requests on one instance: uses
            // the span the last request left open (after its response), then
            // leaves one open itself and keeps working after responding.
            "/faults/leave-open" => {
                let mut left = LEFT_OPEN.lock().unwrap();
                if let Some(old) = left.take() {
                    old.set_attribute("set.by.next.request", true);
                    old.add_event("next request", []);
                    drop(old);
                }
                let span = Span::start("left_open", [kv("served", served as i64)]);
                respond(out, 200, "text/plain", b"left open");
                // After the response: a child of `left_open`, still in this request.
                let late = Span::start("after_response", []);
                late.set_attribute("late", true);
                drop(late);
                *left = Some(span);
            }
            // Prints inside a span and outside, on stdout and stderr, and
            // leaves a last line without its newline.
            "/faults/print" => {
                println!("before the span");
                let span = Span::start("printing", []);
                println!("inside the span");
                eprintln!("a warning on stderr");
                span.end();
                print!("no newline at the end");
                // std buffers stdout by line; a reactor never exits to flush it.
                let _ = std::io::Write::flush(&mut std::io::stdout());
                respond(out, 200, "text/plain", b"printed")
            }
            // Prints `n` lines as fast as it can.
            "/faults/flood" => {
                let n: u64 = request.query("n").and_then(|n| n.parse().ok()).unwrap_or(1000);
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                for i in 0..n {
                    let _ = writeln!(stdout, "flood line {i}");
                }
                respond(out, 200, "text/plain", b"flooded")
            }
            // A counter with a new attribute value on every add.
            "/faults/cardinality" => {
                let n: i64 = request.query("n").and_then(|n| n.parse().ok()).unwrap_or(1000);
                let from: i64 = request.query("from").and_then(|n| n.parse().ok()).unwrap_or(0);
                let c = polytrace_guest::metrics::counter("faults.ids", "", "").unwrap();
                for i in from..from + n {
                    c.add(1.0, [kv("id", i)]);
                }
                respond(out, 200, "text/plain", b"counted")
            }
            "/faults/status" => {
                let code = request
                    .query("code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
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
            // Answers 200, sends the first bytes of its body, then traps
            // (`answer-then-trap`) or spins until the host stops it: a fault
            // after the response went out.
            "/faults/answer-then-loop" | "/faults/answer-then-trap" => {
                use polytrace_guest::http::wasip2::http::types::{
                    Fields, OutgoingBody, OutgoingResponse,
                };
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("a body");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("a stream");
                stream
                    .blocking_write_and_flush(b"partial")
                    .expect("the first bytes written");
                if path.ends_with("trap") {
                    trap_here()
                }
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                #[allow(unreachable_code)]
                {
                    drop(stream);
                    let _ = OutgoingBody::finish(body, None);
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
                span.set_attribute("huge", "x".repeat(1 << 20));
                for i in 0..300 {
                    span.set_attribute(&format!("attr.{i:03}"), i);
                }
                for i in 0..200 {
                    span.add_event("tick", [kv("i", i)]);
                }
                drop(span);
                respond(out, 200, "text/plain", b"attributes");
            }
            "/faults/many-spans" => {
                let n: u32 = request
                    .query("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(10);
                for i in 0..n {
                    let span = Span::start("one_of_many", [kv("i", i)]);
                    drop(span);
                }
                // Then, when asked, the next hop of a chain (one big trace).
                if let Some(next) = request.query("next") {
                    let _ = send("GET", &next, b"");
                }
                respond(out, 200, "text/plain", b"many");
            }
            // Span batches a broken SDK could send: each is refused with
            // what and where, and the request goes on.
            "/faults/bad-batch" => {
                use polytrace_guest::bindings::polytrace::telemetry::span_batch::apply;
                let mut errors = Vec::new();
                let mut case = |ops: &[u8]| errors.push(match apply(ops) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e,
                });
                case(&[1, 0, 0, 0, 0]); // handle 0
                case(&[9]); // no such operation
                // A name longer than the batch.
                case(&[1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
                // Attributes that are not an object: skipped, the rest applied.
                case(b"[\"0\",[1,1,0,null,\"a\",7],[1,2,0,null,\"b\",{}],[8,2,null]]");
                case(b"[\"0\",[1,"); // not valid JSON
                case(&vec![8u8; (16 << 20) + 1]); // past 16 MiB
                let mut many = Vec::new();
                for _ in 0..70_000 {
                    many.extend_from_slice(&[7, 1, 0, 0, 0, 0, 0, 0, 0]);
                }
                case(&many); // past 65,536 operations
                let body = errors.join("\n");
                respond(out, 200, "text/plain", body.as_bytes())
            }
            "/faults/leak-handles" => {
                let n: u32 = request
                    .query("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(10);
                for _ in 0..n {
                    // A span never ended, and a resource never dropped: the
                    // span lives in the request's state (trapped past 10,000
                    // open), the resource in the instance's handle table.
                    std::mem::forget(Span::start("leaked", []));
                    std::mem::forget(polytrace_guest::http::wasip2::http::types::Fields::new());
                }
                respond(out, 200, "text/plain", b"leaked");
            }
            "/faults/unended" => {
                // Leaked on purpose: the host must end it when the request ends.
                std::mem::forget(Span::start("never_ended", [kv("leaked", true)]));
                respond(out, 200, "text/plain", b"unended");
            }
            "/faults/after-end" => {
                // The raw WIT handle outlives `end`, unlike the SDK's Span.
                use polytrace_guest::bindings::polytrace::telemetry::tracing as wit;
                let raw = wit::Span::new(
                    "after_end_probe",
                    wit::SpanKind::Internal,
                    &[kv("before", true)],
                );
                raw.end(None);
                raw.set_attribute("after", &true.into());
                raw.add_event("late", &[], None);
                raw.update_name("renamed_after_end");
                let recording = raw.is_recording();
                drop(raw);
                let sibling = Span::start("sibling", []);
                drop(sibling);
                respond(
                    out,
                    200,
                    "application/json",
                    format!("{{\"recording_after_end\":{recording}}}").as_bytes(),
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
            "/faults/sleep" => {
                let ms = request
                    .query("ms")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(100);
                let _span = Span::start("sleeping", [kv("sleep.ms", ms as i64)]);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, "text/plain", b"slept");
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
                    Ok(r) => respond(
                        out,
                        200,
                        "text/plain",
                        format!("status {}", r.status).as_bytes(),
                    ),
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
