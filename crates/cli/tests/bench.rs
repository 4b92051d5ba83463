//! Smoke runs of every bench suite (one small size, one run), so that the bench cannot silently
//! rot: each must finish, write its three files, and its JSON must follow the bench contract.

mod common;
use serde_json::Value;
use std::process::Command;

fn bench(suite: &str, extra: &[&str]) -> Option<Value> {
    if !common::environment_ready() {
        return None;
    }
    let out =
        std::env::temp_dir().join(format!("ferry-bench-smoke-{}-{suite}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "bench",
        suite,
        "--sizes",
        "64",
        "--runs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(common::BIN).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "ferry bench {suite} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for ext in ["json", "md", "svg"] {
        let p = out.join(format!("{suite}.{ext}"));
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 100)
                .unwrap_or(false),
            "{} missing or empty",
            p.display()
        );
    }
    let v: Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{suite}.json"))).unwrap()).unwrap();
    assert_eq!(v["suite"], suite);
    for k in ["ferry_version", "criu_version", "kernel"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k} missing");
    }
    for row in v["rows"].as_array().unwrap() {
        for k in ["system", "mode", "workload", "metric"] {
            assert!(row[k].is_string(), "row without {k}: {row}");
        }
        assert!(
            row["size_mb"].is_u64()
                && row["runs"].is_array()
                && row["median"].is_number()
                && row["min"].is_number()
                && row["max"].is_number(),
            "{row}"
        );
        assert!(
            row["min"].as_f64() <= row["median"].as_f64()
                && row["median"].as_f64() <= row["max"].as_f64(),
            "{row}"
        );
    }
    assert!(std::fs::read_to_string(out.join(format!("{suite}.svg")))
        .unwrap()
        .starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&out);
    Some(v)
}

fn metric(v: &Value, system: &str, mode: &str, m: &str) -> f64 {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["system"] == system && r["mode"] == mode && r["metric"] == m)
        .unwrap_or_else(|| panic!("no {system}/{mode}/{m} row"))["median"]
        .as_f64()
        .unwrap()
}

#[test]
fn bench_local_and_migrate_smoke() {
    let Some(v) = bench("local", &[]) else { return };
    assert!(metric(&v, "ferry", "local", "checkpoint_ms") > 0.0);
    assert!(
        metric(&v, "ferry", "local", "image_bytes") > 64.0 * 1024.0 * 1024.0,
        "a 64 MB random workload makes a >64 MB image"
    );
    let v = bench("migrate", &["--baseline", "--observe-after", "2s"]).unwrap();
    for mode in ["stop-copy", "lazy"] {
        assert!(
            metric(&v, "ferry", mode, "polls") > 0.0,
            "{mode}: the probe ran"
        );
        for m in ["lost_updates", "failures", "duplicated", "lost_writes"] {
            assert_eq!(metric(&v, "ferry", mode, m), 0.0, "{mode} {m}");
        }
        // The latency after the switch was measured, from polls made after it.
        let p99 = metric(&v, "ferry", mode, "p99_after_ms");
        assert!(
            p99 > 0.0 && p99 < 10_000.0,
            "{mode} p99 after the switch: {p99}"
        );
        // The freeze the client saw is bounded.
        assert!(
            metric(&v, "ferry", mode, "downtime_ms") < 10_000.0,
            "{mode} downtime"
        );
    }
    // The baseline's figures stand beside ferry's (whatever they are: the seed's method may lose
    // writes, which is what the table shows).
    assert!(metric(&v, "baseline", "baseline", "polls") > 0.0);
    for m in ["duplicated", "lost_writes", "lost_updates"] {
        metric(&v, "baseline", "baseline", m);
    }
    assert!(metric(&v, "baseline", "baseline", "total_ms") > 0.0);
}

#[test]
fn bench_roundtrip_proxy_soak_smoke() {
    let Some(v) = bench("roundtrip", &["--modes", "stop-copy"]) else {
        return;
    };
    assert!(metric(&v, "ferry", "stop-copy", "total_ms") > 0.0);
    let v = bench("proxy", &[]).unwrap();
    assert!(metric(&v, "ferry", "http", "p50_us") > 0.0);
    // The proxy's credential check is an in-memory lookup: far under the 0.2 ms budget.
    let check = metric(&v, "ferry", "http", "credential_check_us");
    assert!(check > 0.0 && check < 200.0, "credential check: {check} us");
    let v = bench("soak", &["--migrations", "4"]).unwrap();
    assert!(metric(&v, "ferry", "soak", "polls") > 0.0, "the probe ran");
    for m in [
        "failures",
        "lost_updates",
        "duplicated",
        "lost_writes",
        "leaked",
    ] {
        assert_eq!(metric(&v, "ferry", "soak", m), 0.0, "soak {m}");
    }
    assert!(metric(&v, "ferry", "soak", "downtime_ms") < 10_000.0);
}

#[test]
fn bench_migrate_fails_loudly_on_a_refused_mode() {
    if !common::environment_ready() {
        return;
    }
    // A mode the control plane refuses (here one it does not know): the run must fail, not
    // write a table without its rows.
    let out = std::env::temp_dir().join(format!("ferry-bench-refused-{}", std::process::id()));
    let o = Command::new(common::BIN)
        .args([
            "bench", "migrate", "--sizes", "64", "--runs", "1", "--modes", "sideways",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a refused mode fails the run");
    assert!(err.contains("sideways"), "and says which: {err}");
}
