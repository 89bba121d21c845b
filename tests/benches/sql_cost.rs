//! What a SQL query costs through the host, side by side with the same
//! query from the native driver of the same language in the same run.
//!
//! The guest (tests/guests/sql-probe, Python) runs primary-key SELECTs
//! through `polytrace.dbapi`, timed in the guest: each is a host call (the
//! statement, its CLIENT span and its duration measurement) into the
//! backend. The difference per query from the native side is what the
//! host path adds, together with the guest's slower CPython (wasm).
//!
//! - SQLite: the guest on a file the manifest grants (rusqlite), against
//!   CPython's own sqlite3 on a file of the same shape
//!   (tests/native/sql_cost.py).
//! - PostgreSQL: a server the benchmark starts (Debian's, on 127.0.0.1);
//!   the guest through the host's pool (tokio-postgres) against psycopg 3
//!   (its C implementation, libpq) from native CPython
//!   (tests/native/pg_cost.py); one round trip per query on both sides.
//!
//! Environment: BENCH_QUERIES (per round, default 20000), BENCH_ROUNDS (5).
//! Run with `scripts/bench.sh sql_cost`.

use polytrace_tests::bench::{env_or, median};
use polytrace_tests::postgres::Postgres;
use polytrace_tests::{Polytrace, Receiver, component, get, repo_dir, scratch_dir};
use std::ffi::OsStr;
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

/// Nanoseconds per query of the native script tests/native/SCRIPT given
/// N and `target` (a database file or a server's URL).
fn native(script: &str, n: u64, target: &OsStr) -> f64 {
    let out = Command::new(repo_dir().join(".tools/native-venv/bin/python"))
        .arg(repo_dir().join("tests/native").join(script))
        .arg(n.to_string())
        .arg(target)
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

/// The probe guest with its database `bench` at `url`.
fn probe(receiver: &Receiver, url: &str, env: &[(&str, &str)]) -> Polytrace {
    let manifest = format!(
        "app = \"sql-bench\"\n[[component]]\nid = \"bench\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"python\"\nsql = {{ bench = \"{url}\" }}\n\
         limits = {{ request_timeout_ms = 60000, memory_mb = 128 }}\n",
        component("sql_probe").display()
    );
    let mut all = vec![
        // Spans are made and ended as always; only their export is off.
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("POLYTRACE_STORE", "none"),
        ("POLYTRACE_GUEST_LOGS", "off"),
    ];
    all.extend_from_slice(env);
    Polytrace::up("sql-cost", &manifest, receiver, "http/protobuf", &all)
}

/// Rounds of guest and native side by side; the medians.
async fn side_by_side(
    host: &Polytrace,
    script: &str,
    target: &OsStr,
    n: u64,
    rounds: u64,
) -> (f64, f64) {
    guest(host, 2_000).await; // warm up: the instance, the connection
    let (mut g, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        g.push(guest(host, n).await);
        nat.push(native(script, n, target));
    }
    (median(g), median(nat))
}

fn report(title: &str, guest_side: &str, native_side: &str, (g, nat): (f64, f64)) {
    println!("{title}\n");
    println!("| side | ns/query | µs/query |");
    println!("|---|---:|---:|");
    println!("| {guest_side} | {g:.0} | {:.1} |", g / 1000.0);
    println!("| {native_side} | {nat:.0} | {:.1} |", nat / 1000.0);
    println!(
        "\nadded per query: {:.1} µs (target for the host path: ≤ 50 µs)\n",
        (g - nat) / 1000.0
    );
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_QUERIES", 20_000);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let receiver = Receiver::start_sink().await;

    let host = probe(&receiver, "sqlite:bench.db", &[]);
    let native_db = scratch_dir("sql-cost-native").join("bench.db");
    let sqlite = side_by_side(&host, "sql_cost.py", native_db.as_os_str(), n, rounds).await;
    host.terminate();
    report(
        &format!("SQLite: primary-key SELECT, {n} per round, median of {rounds} rounds"),
        "Python guest → host → SQLite (polytrace.dbapi)",
        "CPython sqlite3, native",
        sqlite,
    );

    let pg = Postgres::start("bench");
    let url = format!(
        "postgres://polytrace:${{BENCH_PG_PASSWORD}}@127.0.0.1:{}/postgres",
        pg.port
    );
    let host = probe(&receiver, &url, &[("BENCH_PG_PASSWORD", &pg.password)]);
    let native_url = std::ffi::OsString::from(pg.url("postgres"));
    let postgres = side_by_side(&host, "pg_cost.py", &native_url, n, rounds).await;
    host.terminate();
    report(
        &format!(
            "PostgreSQL {} on 127.0.0.1: primary-key SELECT, {n} per round, median of {rounds} rounds",
            pg.psql("postgres", "SHOW server_version")
        ),
        "Python guest → host → PostgreSQL (polytrace.dbapi, tokio-postgres pool)",
        "CPython psycopg 3 (C, libpq), native",
        postgres,
    );
}
