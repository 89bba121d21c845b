//! Key-value stores supplied by the host (`wasi:keyvalue`), through each
//! language's client (tests/guests/kv-probe*: Python `polytrace.keyvalue`,
//! JavaScript `keyvalue` from polytrace.js, Go `polytrace/keyvalue`, Rust
//! `polytrace_guest::keyvalue`), against the embedded store and a real
//! Redis server: the operations' results, their CLIENT spans and duration
//! metric (the same in every language), the refusals (a store not granted,
//! a 1 MiB key) and the faults (Redis stopped mid-run).

use polytrace_tests::redis::Redis;
use polytrace_tests::*;
use serde_json::json;
use std::path::Path;

/// The probes: component and language.
const PROBES: [(&str, &str); 4] = [
    ("kv_probe", "python"),
    ("kv_probe_js", "javascript"),
    ("kv_probe_go", "go"),
    ("kv_probe_rust", "rust"),
];

/// The Python probe with the store `cache` at `store` (and `other` nowhere).
fn up(dir: &Path, receiver: &Receiver, store: &str, env: &[(&str, &str)]) -> Polytrace {
    up_probe(dir, receiver, PROBES[0], store, env)
}

/// `probe` with the store `cache` at `store`.
fn up_probe(
    dir: &Path,
    receiver: &Receiver,
    (wasm, language): (&str, &str),
    store: &str,
    env: &[(&str, &str)],
) -> Polytrace {
    let manifest = format!(
        "app = \"kv\"\nversion = \"0.1.0\"\n\n[[component]]\nid = \"probe\"\n\
         source = \"{}\"\nroute = \"/...\"\nlanguage = \"{language}\"\n\
         keyvalue = {{ cache = \"{store}\" }}\n\
         limits = {{ memory_mb = 256, request_timeout_ms = 10000 }}\n",
        component(wasm).display()
    );
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    Polytrace::up_dir(dir, receiver, "http/protobuf", env)
}

async fn ops(host: &Polytrace, ops: serde_json::Value) -> Response {
    let r = request(
        "POST",
        &host.url("/ops?store=cache"),
        &[("content-type", "application/json")],
        &ops.to_string(),
    )
    .await;
    let sent = ops.to_string();
    assert_eq!(
        r.status,
        200,
        "{}\n(for {})",
        r.body,
        &sent[..sent.len().min(120)]
    );
    r
}

/// The CLIENT spans of one request, each as its name, status and
/// attributes but `db.namespace` (a Redis database index per language
/// here), sorted: what must be the same from every language.
type Shape = Vec<(String, i32, Vec<(String, String)>)>;

fn client_shape(spans: &[FlatSpan]) -> Shape {
    let mut shape: Shape = spans
        .iter()
        .filter(|s| s.kind == KIND_CLIENT)
        .map(|s| {
            let attributes = s
                .attributes
                .iter()
                .filter(|(k, _)| *k != "db.namespace")
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            (s.name.clone(), s.status_code, attributes)
        })
        .collect();
    shape.sort();
    shape
}

/// The same operations give the same answers and the same spans on either
/// backend (but for `db.system.name`, `db.namespace` and the server).
/// Returns the shape of the operations' CLIENT spans.
async fn operations_are_traced(host: &Polytrace, receiver: &Receiver, system: &str) -> Shape {
    let r = ops(
        host,
        json!([
            ["set", "session:s-1", "alice-secret-value"],
            ["get", "session:s-1"],
            ["exists", "session:s-1"],
            ["exists", "nobody"],
            ["increment", "visits", 5],
            ["increment", "visits"],
            ["get_many", ["session:s-1", "visits", "nobody"]],
            ["set_many", {"a": "1", "b": "2"}],
            ["keys"],
            ["delete_many", ["a", "b"]],
            ["delete", "session:s-1"],
            ["get", "session:s-1"],
        ]),
    )
    .await;
    let setup = r.json();
    assert_eq!(
        setup,
        json!([
            null,
            "alice-secret-value",
            true,
            false,
            5,
            6,
            {"session:s-1": "alice-secret-value", "visits": "6", "nobody": null},
            null,
            ["a", "b", "session:s-1", "visits"],
            null,
            null,
            null
        ]),
        "{setup}"
    );
    // 12 operations under the SERVER span.
    let spans = receiver.trace(&r.trace_id(), 13).await;
    let shape = client_shape(&spans);
    assert_eq!(shape.len(), 12, "{shape:#?}");
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    let names: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind == KIND_CLIENT)
        .map(|s| s.name.as_str())
        .collect();
    for name in [
        "SET cache",
        "GET cache",
        "EXISTS cache",
        "INCRBY cache",
        "MGET cache",
        "MSET cache",
        "SCAN cache",
        "DEL cache",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let read = spans.iter().find(|s| s.name == "GET cache").unwrap();
    assert_eq!(read.kind, KIND_CLIENT);
    assert_eq!(read.parent_span_id, server.span_id);
    for (key, value) in [
        ("db.system.name", system),
        ("db.collection.name", "cache"),
        ("db.operation.name", "GET"),
        ("db.query.text", "GET ?"),
    ] {
        assert_eq!(read.attributes[key], value, "{key}: {read:#?}");
    }
    let mget = spans.iter().find(|s| s.name == "MGET cache").unwrap();
    assert_eq!(mget.attributes["db.operation.batch.size"], 3);
    // Neither keys nor values reach the trace.
    let everything = format!("{spans:?}");
    for secret in ["alice-secret-value", "session:s-1"] {
        assert!(!everything.contains(secret), "{secret}: {everything}");
    }
    receiver
        .wait_metric("probe", "db.client.operation.duration", |points| {
            points.iter().any(|p| {
                p.kind == "histogram"
                    && p.unit == "s"
                    && p.attr("db.system.name").is_some_and(|v| v == system)
                    && p.attr("db.operation.name").is_some_and(|v| v == "INCRBY")
            })
        })
        .await;

    // A store the manifest does not grant: refused, an Error span.
    let r = ops(host, json!([["open", "other"]])).await;
    assert_eq!(r.json()[0]["error"], "access-denied", "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let open = spans.iter().find(|s| s.name == "open other").unwrap();
    assert_eq!(open.status_code, STATUS_ERROR);
    assert_eq!(open.attributes["error.type"], "access-denied");

    // A 1 MiB key: refused before the store, an Error span; the same
    // instance goes on.
    let r = get(&host.url("/big-key?store=cache")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["error"], "too-large", "{}", r.body);
    assert_eq!(r.json()[3], "ok", "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 5).await;
    let refused = spans.iter().find(|s| s.name == "SET cache").unwrap();
    assert_eq!(refused.status_code, STATUS_ERROR);
    assert_eq!(refused.attributes["error.type"], "too-large");
    assert!(!format!("{spans:?}").contains("kkkkkkkk"));

    // A warm instance keeps its store open: request after request works
    // (the host allows 16 open stores per instance).
    for _ in 0..20 {
        let r = ops(host, json!([["exists", "visits"]])).await;
        assert_eq!(r.json(), json!([true]), "{}", r.body);
    }
    shape
}

/// The embedded store (a SQLite file beside the manifest): every
/// operation, traced the same way from every language; what was set is
/// still there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_is_traced_and_keeps_its_values() {
    let receiver = Receiver::start().await;
    let dir = scratch_dir("kv-embedded");
    let host = up(&dir, &receiver, "sqlite:cache.db", &[]);
    let python = operations_are_traced(&host, &receiver, "sqlite").await;
    for probe in &PROBES[1..] {
        let dir = scratch_dir(&format!("kv-embedded-{}", probe.1));
        let other = up_probe(&dir, &receiver, *probe, "sqlite:cache.db", &[]);
        let shape = operations_are_traced(&other, &receiver, "sqlite").await;
        assert_eq!(shape, python, "{} and Python differ", probe.1);
    }
    let r = ops(&host, json!([["set", "kept", "yes"]])).await;
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let set = spans.iter().find(|s| s.name == "SET cache").unwrap();
    assert_eq!(set.attributes["db.namespace"], "cache.db");
    drop(host);

    let host = up(&dir, &receiver, "sqlite:cache.db", &[]);
    let r = ops(&host, json!([["get", "kept"], ["get", "visits"]])).await;
    assert_eq!(r.json(), json!(["yes", "6"]));

    // An increment that would leave a counter below zero is refused and
    // changes nothing.
    let r = ops(
        &host,
        json!([
            ["set", "neg", "-3"],
            ["increment", "neg", 1],
            ["get", "neg"]
        ]),
    )
    .await;
    assert_eq!(r.json()[1]["error"], "data", "{}", r.body);
    assert_eq!(r.json()[2], "-3", "{}", r.body);
}

/// Redis: the same operations and spans (with the server's address and
/// the database index); a server error (`WRONGTYPE`) is the span's
/// status code; with the server stopped the guest gets `unavailable` and
/// the host keeps serving; once it is back, so is everything it
/// acknowledged. The password is in no span and no log line.
#[tokio::test(flavor = "multi_thread")]
async fn redis_is_traced_the_same_way_and_survives_a_restart() {
    let redis = Redis::start("kv");
    let receiver = Receiver::start().await;
    // Every other language on a database of its own (1, 2, 3).
    let mut shapes = Vec::new();
    for (index, probe) in PROBES.iter().enumerate().skip(1) {
        let dir = scratch_dir(&format!("kv-redis-{}", probe.1));
        let url = redis.url(index as u32);
        let host = up_probe(&dir, &receiver, *probe, &url, &[]);
        shapes.push((
            probe.1,
            operations_are_traced(&host, &receiver, "redis").await,
        ));
        let r = ops(&host, json!([["exists", "visits"]])).await;
        let spans = receiver.trace(&r.trace_id(), 2).await;
        let exists = spans.iter().find(|s| s.name == "EXISTS cache").unwrap();
        assert_eq!(exists.attributes["db.namespace"], index.to_string());
    }
    let dir = scratch_dir("kv-redis");
    let url = format!(
        "redis://:${{KV_TEST_REDIS_PASSWORD}}@127.0.0.1:{}/0",
        redis.port
    );
    let host = up(
        &dir,
        &receiver,
        &url,
        &[("KV_TEST_REDIS_PASSWORD", &redis.password)],
    );
    let python = operations_are_traced(&host, &receiver, "redis").await;
    for (language, shape) in shapes {
        assert_eq!(shape, python, "{language} and Python differ");
    }
    assert_eq!(redis.cli(&["GET", "visits"]), "6");

    // A batch whose values are past the cap together (a 4 MiB value named
    // ten times) is refused from the values' sizes, before any is read.
    redis.cli(&["SETRANGE", "four-mib", &((4 << 20) - 1).to_string(), "x"]);
    let r = ops(
        &host,
        json!([
            ["get_many", vec!["four-mib"; 10]],
            ["get_many", ["four-mib"]]
        ]),
    )
    .await;
    assert_eq!(
        r.json()[0]["error"],
        "too-large",
        "{}",
        &r.body[..200.min(r.body.len())]
    );
    assert_eq!(
        r.json()[1]["four-mib"].as_str().map(str::len),
        Some(4 << 20)
    );
    redis.cli(&["DEL", "four-mib"]);

    let r = ops(&host, json!([["get", "kept"]])).await;
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let get_span = spans.iter().find(|s| s.name == "GET cache").unwrap();
    assert_eq!(get_span.attributes["db.namespace"], "0");
    assert_eq!(get_span.attributes["server.address"], "127.0.0.1");
    assert_eq!(get_span.attributes["server.port"], i64::from(redis.port));

    // A value of another Redis type: the server's error, as Redis says it.
    redis.cli(&["RPUSH", "a-list", "x"]);
    let r = ops(&host, json!([["get", "a-list"]])).await;
    assert_eq!(r.json()[0]["error"], "data", "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let wrong = spans.iter().find(|s| s.name == "GET cache").unwrap();
    assert_eq!(wrong.status_code, STATUS_ERROR);
    assert_eq!(wrong.attributes["db.response.status_code"], "WRONGTYPE");
    assert_eq!(wrong.attributes["error.type"], "WRONGTYPE");

    // Acknowledged, then the server goes away.
    let r = ops(
        &host,
        json!([["set", "acknowledged", "1"], ["increment", "count", 3]]),
    )
    .await;
    assert_eq!(r.json(), json!([null, 3]));
    redis.stop();
    let r = ops(&host, json!([["get", "acknowledged"]])).await;
    assert_eq!(r.json()[0]["error"], "unavailable", "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let down = spans.iter().find(|s| s.name == "GET cache").unwrap();
    assert_eq!(down.status_code, STATUS_ERROR);
    assert_eq!(down.attributes["error.type"], "unavailable");
    assert_eq!(get(&host.url("/big-key")).await.status, 200);
    // A store opened while the server is down: an Error span `open cache`.
    let fresh_dir = scratch_dir("kv-redis-down");
    let url = format!(
        "redis://:${{KV_TEST_REDIS_PASSWORD}}@127.0.0.1:{}/0",
        redis.port
    );
    let fresh = up_probe(
        &fresh_dir,
        &receiver,
        PROBES[2],
        &url,
        &[("KV_TEST_REDIS_PASSWORD", &redis.password)],
    );
    let r = ops(&fresh, json!([["get", "acknowledged"]])).await;
    assert_eq!(r.json()[0]["error"], "unavailable", "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let open = spans.iter().find(|s| s.name == "open cache").unwrap();
    assert_eq!(open.status_code, STATUS_ERROR);
    assert_eq!(open.attributes["error.type"], "unavailable");
    drop(fresh);

    redis.start_server();
    let mut back = json!(null);
    for _ in 0..100 {
        let r = ops(&host, json!([["get", "acknowledged"], ["get", "count"]])).await;
        back = r.json();
        if back == json!(["1", "3"]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(back, json!(["1", "3"]));

    let (_, log) = host.terminate();
    let everything = format!("{:?}{log}", receiver.spans());
    assert!(!everything.contains(&redis.password), "the password leaked");
}

/// Bad grants are start-up errors naming the store, without credentials.
#[test]
fn bad_grants_are_refused_at_start() {
    let dir = scratch_dir("kv-bad-grants");
    std::fs::write(
        dir.join("polytrace.toml"),
        format!(
            "app = \"kv\"\nversion = \"0.1.0\"\n\n[[component]]\nid = \"probe\"\n\
             source = \"{}\"\nroute = \"/...\"\n\
             keyvalue = {{ cache = \"memcached://user:hunter2@x\", \"bad name\" = \"sqlite:x.db\", deep = \"sqlite:no/such/dir/x.db\" }}\n",
            component("kv_probe").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(polytrace_bin())
        .args(["check"])
        .arg(dir.join("polytrace.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("keyvalue.cache"), "{text}");
    assert!(text.contains("`bad name` is not a store name"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
