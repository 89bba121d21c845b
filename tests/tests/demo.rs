//! README command (1)'s run, `scripts/demo.py --once`: the checkout app
//! answers every demo request and each trace prints as a whole tree.

use polytrace_tests::{checkout_data_env, polytrace_bin, repo_dir, target_dir};
use std::process::Command;

#[test]
fn the_demo_prints_every_checkout_as_a_tree() {
    let (_, data) = checkout_data_env("demo");
    let out = Command::new("python3")
        .arg(repo_dir().join("scripts/demo.py"))
        .args(["--once", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0"])
        .args(["--store", "memory", "--polytrace"])
        .arg(polytrace_bin())
        .env("POLYTRACE_CACHE_DIR", target_dir().join("test-cache"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Each request's block: its heading, then its tree.
    let blocks: Vec<&str> = stdout.split("── ").skip(1).collect();
    let block = |label: &str| {
        *blocks
            .iter()
            .find(|b| b.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{stdout}"))
    };
    let tree_lines = |b: &str| {
        b.lines()
            .filter(|l| l.starts_with("    ") && l.contains(" ms"))
            .count()
    };
    let approved = block("approved: POST /checkout → 200");
    assert_eq!(tree_lines(approved), 22, "{approved}");
    for service in ["api-gateway", "fraud-service", "session-service", "billing"] {
        assert!(
            approved.contains(&format!("{service}: server")),
            "{approved}"
        );
    }
    assert_eq!(
        tree_lines(block("fraud: amount over 10000: POST /checkout → 403")),
        10
    );
    assert_eq!(
        tree_lines(block("unknown session: POST /checkout → 404")),
        10
    );
    assert_eq!(tree_lines(block("card declined: POST /checkout → 402")), 20);
    let failed = block("billing fails (amount 666): POST /checkout → 500");
    assert!(
        failed
            .lines()
            .any(|l| l.contains("billing: internal charge_card")
                && l.contains("ERROR (payment processor unavailable")),
        "{failed}"
    );
    let continued = block("approved, continuing a caller's trace: POST /checkout → 200");
    assert!(
        continued.contains("trace 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{continued}"
    );
    assert_eq!(tree_lines(continued), 22, "{continued}");
    assert!(stdout.contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"));
    // Each trace links into the viewer, which the demo names.
    assert!(
        continued.contains("/trace/4bf92f3577b34da6a3ce929d0e0e4736"),
        "{continued}"
    );
    assert!(
        stdout.contains("demo: the viewer is at http://127.0.0.1:"),
        "{stdout}"
    );
    // The services' log records print under their trace, and the checkout
    // metrics at the end.
    assert!(
        failed.contains("log  billing: ERROR charge failed"),
        "{failed}"
    );
    let metrics = block("metrics (Prometheus");
    assert!(
        metrics.lines().any(|l| l.contains("api-gateway")
            && l.contains("orders_created_total")
            && l.contains("status=approved")
            && l.trim_end().ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        metrics.contains("verifications_performed_total"),
        "{metrics}"
    );
    assert!(metrics.contains("sessions_loaded_total"), "{metrics}");
}
