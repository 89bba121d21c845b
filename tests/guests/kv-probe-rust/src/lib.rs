//! The key-value test guest in Rust (tests/tests/keyvalue.rs): the same
//! routes and answers as tests/guests/kv-probe (Python), through
//! `polytrace_guest::keyvalue`.

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond};
use polytrace_guest::keyvalue::{Error, Store};
use serde_json::{Value, json};

struct Probe;

fn text(v: Option<Vec<u8>>) -> Value {
    v.map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(&b).into_owned())
    })
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn run(store: &Store, op: &str, args: &[Value]) -> Result<Value, Error> {
    let s = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or_default();
    Ok(match op {
        "get" => text(store.get(s(0))?),
        "set" => {
            store.set(s(0), s(1))?;
            Value::Null
        }
        "delete" => {
            store.delete(s(0))?;
            Value::Null
        }
        "exists" => json!(store.exists(s(0))?),
        "increment" => {
            json!(store.increment(s(0), args.get(1).and_then(Value::as_u64).unwrap_or(1))?)
        }
        "get_many" => {
            let keys = strings(&args[0]);
            let values = store.get_many(&keys)?;
            Value::Object(
                keys.iter()
                    .zip(values)
                    .map(|(k, v)| (k.to_string(), text(v)))
                    .collect(),
            )
        }
        "set_many" => {
            let pairs: Vec<(&str, &[u8])> = args[0]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().as_bytes()))
                        .collect()
                })
                .unwrap_or_default();
            store.set_many(&pairs)?;
            Value::Null
        }
        "delete_many" => {
            store.delete_many(&strings(&args[0]))?;
            Value::Null
        }
        "keys" => {
            let mut keys = store.keys()?;
            keys.sort();
            json!(keys)
        }
        other => json!({"error": "other", "message": format!("unknown op {other}")}),
    })
}

impl Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        let name = request
            .query("store")
            .unwrap_or_else(|| "cache".to_string());
        let big = "k".repeat(1 << 20);
        let ops: Vec<Value> = if request.path() == "/big-key" {
            vec![
                json!(["set", big, "v"]),
                json!(["get", big]),
                json!(["set", "small", "ok"]),
                json!(["get", "small"]),
            ]
        } else {
            serde_json::from_slice(&request.body).unwrap_or_default()
        };
        let failure = |e: Error| json!({"error": e.kind, "message": e.message});
        let mut results = Vec::new();
        let mut store: Option<Store> = None;
        for op in &ops {
            let parts = op.as_array().cloned().unwrap_or_default();
            let verb = parts.first().and_then(Value::as_str).unwrap_or_default();
            let args = &parts[1.min(parts.len())..];
            if verb == "open" {
                let which = args.first().and_then(Value::as_str).unwrap_or(&name);
                match Store::open(which) {
                    Ok(s) => {
                        store = Some(s);
                        results.push(Value::Null);
                    }
                    Err(e) => results.push(failure(e)),
                }
                continue;
            }
            if store.is_none() {
                match Store::open(&name) {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        results.push(failure(e));
                        continue;
                    }
                }
            }
            let s = store.as_ref().unwrap();
            results.push(run(s, verb, args).unwrap_or_else(failure));
        }
        respond(
            out,
            200,
            "application/json",
            Value::Array(results).to_string().as_bytes(),
        );
    }
}

polytrace_guest::http::wasip2::http::proxy::export!(Probe with_types_in polytrace_guest::http::wasip2);
