//! What a SQL query costs through the host, side by side with the same
//! query from the native driver of the same language in the same run.
//!
//! The guest (tests/guests/sql-probe, Python) runs primary-key SELECTs
//! through `polytrace.dbapi` on an SQLite file the manifest grants, timed
//! in the guest: each is a host call (the statement, its CLIENT span and
//! its duration measurement) into rusqlite. The native side
//! (tests/native/sql_cost.py) runs the same query with CPython's own
//! sqlite3 on a file of the same shape. The difference per query is what
//! the host path adds, together with the guest's slower CPython (wasm).
//!
//! Environment: BENCH_QUERIES (per round, default 20000), BENCH_ROUNDS (5).
//! Run with `scripts/bench.sh sql_cost`.

use polytrace_tests::bench::{env_or, median};
use polytrace_tests::{Polytrace, Receiver, component, get, repo_dir, scratch_dir};
use std::path::Path;
use std::process::Command;

/// Queries one request runs, so no request nears its deadline.
const PER_REQUEST: u64 = 5_000;

/// Nanoseconds per query in the guest, over `n` queries.
async fn guest(host: &Polytrace, n: u64) -> f64 {
    let (mut elapsed, mut done) = (0.0, 0);
    while done < n {
        let batch = PER_REQUEST.min(n - done);
        let r = get(&host.url(&format!("/sql-cost?n={batch}"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        elapsed += r.json()["elapsed_ns"].as_f64().unwrap();
        done += batch;
    }
    elapsed / n as f64
}

/// Nanoseconds per query with CPython's sqlite3 on `db`.
fn native(n: u64, db: &Path) -> f64 {
    let out = Command::new(repo_dir().join(".tools/native-venv/bin/python"))
        .arg(repo_dir().join("tests/native/sql_cost.py"))
        .arg(n.to_string())
        .arg(db)
        .output()
        .expect("the native Python (run scripts/bench.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["elapsed_ns"].as_f64().unwrap() / n as f64
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_QUERIES", 20_000);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let receiver = Receiver::start_sink().await;
    let manifest = format!(
        "app = \"sql-bench\"\n[[component]]\nid = \"bench\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"python\"\nsql = {{ bench = \"sqlite:bench.db\" }}\n\
         limits = {{ request_timeout_ms = 60000, memory_mb = 128 }}\n",
        component("sql_probe").display()
    );
    let host = Polytrace::up(
        "sql-cost",
        &manifest,
        &receiver,
        "http/protobuf",
        &[
            // Spans are made and ended as always; only their export is off.
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("POLYTRACE_STORE", "none"),
            ("POLYTRACE_GUEST_LOGS", "off"),
        ],
    );
    let native_db = scratch_dir("sql-cost-native").join("bench.db");
    guest(&host, 2_000).await; // warm up: the instance, the connection
    let (mut g, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        g.push(guest(&host, n).await);
        nat.push(native(n, &native_db));
    }
    let (g, nat) = (median(g), median(nat));
    println!("primary-key SELECT, {n} per round, median of {rounds} rounds\n");
    println!("| side | ns/query | µs/query |");
    println!("|---|---:|---:|");
    println!(
        "| Python guest → host → SQLite (polytrace.dbapi) | {g:.0} | {:.1} |",
        g / 1000.0
    );
    println!(
        "| CPython sqlite3, native | {nat:.0} | {:.1} |",
        nat / 1000.0
    );
    println!(
        "\nadded per query: {:.1} µs (target for the host path: ≤ 50 µs)",
        (g - nat) / 1000.0
    );
    host.terminate();
}
