//! `bank bench` runs briefly over two variants and writes a well-formed JSON report in which
//! every operation succeeded. No timing is asserted.

use std::process::Command;

fn bench(variant: &str, workload: &str, clients: &str, ops: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args([
            "bench",
            "--variant",
            variant,
            "--workload",
            workload,
            "--clients",
            clients,
            "--ops",
            ops,
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run bank bench");
    assert!(
        out.status.success(),
        "bank bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

fn check_shape(report: &serde_json::Value, variant: &str, ops: &[&str]) {
    assert_eq!(report["variant"], variant);
    for key in ["clients", "seconds", "ops_per_sec"] {
        assert!(report[key].is_number(), "{key} missing in {report}");
    }
    let overall = &report["overall"];
    for key in [
        "count", "errors", "mean_us", "p50_us", "p90_us", "p99_us", "max_us",
    ] {
        assert!(
            overall[key].is_number(),
            "overall.{key} missing in {report}"
        );
    }
    assert_eq!(
        overall["errors"], 0,
        "every operation must succeed: {report}"
    );
    assert!(overall["count"].as_u64().unwrap_or(0) > 0);
    let per_op = report["per_op"].as_object().expect("per_op");
    for op in ops {
        let entry = &per_op[*op];
        assert!(
            entry["count"].as_u64().unwrap_or(0) > 0,
            "{op} not measured: {report}"
        );
        assert_eq!(entry["errors"], 0, "{op} failed: {report}");
    }
}

#[test]
fn collector_writes_report() {
    let report = bench("collector", "writes", "2", "60");
    check_shape(&report, "collector", &["deposit", "withdraw", "transfer"]);
    assert_eq!(report["overall"]["count"], 60);
}

#[test]
fn grpc_walkthrough_report() {
    let report = bench("grpc", "walkthrough", "2", "80");
    check_shape(
        &report,
        "grpc",
        &[
            "create_account",
            "deposit",
            "withdraw",
            "transfer",
            "cash_check",
        ],
    );
}
