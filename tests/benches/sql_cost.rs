//! What a SQL query costs through the host, side by side with the same
//! query from the native driver of the same language in the same run.
//!
//! Each guest runs primary-key SELECTs through its language's client,
//! timed in the guest: each is a host call (the statement, its CLIENT span
//! and its duration measurement) into the backend. The difference per
//! query from the native side is what the host path adds, together with
//! the guest's slower runtime (wasm).
//!
//! - SQLite: the Python guest (tests/guests/sql-probe, `polytrace.dbapi`)
//!   on a file the manifest grants (rusqlite), against CPython's own
//!   sqlite3 on a file of the same shape (tests/native/sql_cost.py).
//! - PostgreSQL: a server the benchmark starts (Debian's, on 127.0.0.1);
//!   each guest through the host's pool (tokio-postgres) against its
//!   language's native driver, one round trip per query on both sides:
//!   - Python (`polytrace.dbapi`) against psycopg 3 (its C implementation,
//!     libpq) from native CPython (tests/native/pg_cost.py);
//!   - JavaScript (tests/guests/sql-probe-js, polytrace.js's
//!     node-postgres-shaped client) against node-postgres on Node
//!     (tests/native/pg_cost.mjs);
//!   - Go (tests/guests/sql-probe-go, `database/sql` with polytrace's
//!     driver) against `database/sql` with lib/pq (tests/native/pg_cost_go).
//!
//! Environment: BENCH_QUERIES (per round, default 20000), BENCH_ROUNDS (5),
//! BENCH_LANGUAGES (python,javascript,go).
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

/// Nanoseconds per query of a native program given N and `target` (a
/// database file or a server's URL) as its last two arguments.
fn native(program: &[std::ffi::OsString], n: u64, target: &OsStr) -> f64 {
    let out = Command::new(&program[0])
        .args(&program[1..])
        .arg(n.to_string())
        .arg(target)
        .output()
        .unwrap_or_else(|e| panic!("{program:?} (run scripts/bench.sh): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["elapsed_ns"].as_f64().unwrap() / n as f64
}

/// The native Python running tests/native/SCRIPT.
fn python(script: &str) -> Vec<std::ffi::OsString> {
    vec![
        repo_dir().join(".tools/native-venv/bin/python").into(),
        repo_dir().join("tests/native").join(script).into(),
    ]
}

/// The probe guest `name` (a component built by build-guests.sh) in
/// `language`, with its database `bench` at `url`.
fn probe(
    receiver: &Receiver,
    name: &str,
    language: &str,
    url: &str,
    env: &[(&str, &str)],
) -> Polytrace {
    let manifest = format!(
        "app = \"sql-bench\"\n[[component]]\nid = \"bench\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"{language}\"\nsql = {{ bench = \"{url}\" }}\n\
         limits = {{ request_timeout_ms = 60000, memory_mb = 128 }}\n",
        component(name).display()
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
    program: &[std::ffi::OsString],
    target: &OsStr,
    n: u64,
    rounds: u64,
) -> (f64, f64) {
    guest(host, 2_000).await; // warm up: the instance, the connection
    let (mut g, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        g.push(guest(host, n).await);
        nat.push(native(program, n, target));
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
    let languages =
        std::env::var("BENCH_LANGUAGES").unwrap_or_else(|_| "python,javascript,go".into());
    let languages: Vec<&str> = languages.split(',').map(str::trim).collect();
    let receiver = Receiver::start_sink().await;

    if languages.contains(&"python") {
        let host = probe(&receiver, "sql_probe", "python", "sqlite:bench.db", &[]);
        let native_db = scratch_dir("sql-cost-native").join("bench.db");
        let sqlite = side_by_side(
            &host,
            &python("sql_cost.py"),
            native_db.as_os_str(),
            n,
            rounds,
        )
        .await;
        host.terminate();
        report(
            &format!("SQLite: primary-key SELECT, {n} per round, median of {rounds} rounds"),
            "Python guest → host → SQLite (polytrace.dbapi)",
            "CPython sqlite3, native",
            sqlite,
        );
    }

    let pg = Postgres::start("bench");
    let version = pg.psql("postgres", "SHOW server_version");
    let url = format!(
        "postgres://polytrace:${{BENCH_PG_PASSWORD}}@127.0.0.1:{}/postgres",
        pg.port
    );
    let native_url = std::ffi::OsString::from(pg.url("postgres"));
    let sides: [(&str, &str, Vec<std::ffi::OsString>, &str, &str); 3] = [
        (
            "python",
            "sql_probe",
            python("pg_cost.py"),
            "Python guest → host → PostgreSQL (polytrace.dbapi, tokio-postgres pool)",
            "CPython psycopg 3 (C, libpq), native",
        ),
        (
            "javascript",
            "sql_probe_js",
            vec![
                "node".into(),
                repo_dir().join("tests/native/pg_cost.mjs").into(),
            ],
            "JavaScript guest → host → PostgreSQL (polytrace.js `sql`, tokio-postgres pool)",
            "Node node-postgres (pg), native",
        ),
        (
            "go",
            "sql_probe_go",
            vec![repo_dir().join("target/native/pg_cost_go").into()],
            "Go guest → host → PostgreSQL (database/sql, polytrace driver)",
            "Go database/sql + lib/pq, native",
        ),
    ];
    for (language, component, program, guest_side, native_side) in sides {
        if !languages.contains(&language) {
            continue;
        }
        let host = probe(
            &receiver,
            component,
            language,
            &url,
            &[("BENCH_PG_PASSWORD", &pg.password)],
        );
        let figures = side_by_side(&host, &program, &native_url, n, rounds).await;
        host.terminate();
        report(
            &format!(
                "PostgreSQL {version} on 127.0.0.1, {language}: primary-key SELECT, {n} per round, median of {rounds} rounds"
            ),
            guest_side,
            native_side,
            figures,
        );
    }
}
