//! `GET /metrics` in Prometheus' text format: runtimes by state, memory per runtime (from the
//! monitor's latest samples), operations by kind/mode/result, and histograms of checkpoint,
//! restore and migration downtime (from the operations journal).

use super::Control;
use std::collections::BTreeMap;
use std::fmt::Write;

const BUCKETS_MS: [f64; 10] = [
    50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Control {
    pub async fn metrics(&self) -> String {
        let mut out = String::new();
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.db.runtimes().await.unwrap_or_default() {
            *by_state.entry(r.state).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP ferry_runtimes Runtimes by state.\n# TYPE ferry_runtimes gauge"
        );
        for (s, n) in &by_state {
            let _ = writeln!(out, "ferry_runtimes{{state=\"{}\"}} {n}", esc(s));
        }
        let _ = writeln!(out, "# HELP ferry_runtime_memory_bytes Memory a runtime uses (cgroup).\n# TYPE ferry_runtime_memory_bytes gauge");
        let _ = writeln!(out, "# HELP ferry_runtime_memory_limit_bytes A runtime's memory limit.\n# TYPE ferry_runtime_memory_limit_bytes gauge");
        for (name, host, s) in self.samples.lock().unwrap().values() {
            let labels = format!("runtime=\"{}\",host=\"{}\"", esc(name), esc(host));
            let _ = writeln!(
                out,
                "ferry_runtime_memory_bytes{{{labels}}} {}",
                s.memory_bytes
            );
            let _ = writeln!(
                out,
                "ferry_runtime_memory_limit_bytes{{{labels}}} {}",
                s.memory_limit_bytes
            );
        }
        let ops = self.db.operations(None, 10_000).await.unwrap_or_default();
        let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for o in &ops {
            let mode = o.detail["mode"].as_str().unwrap_or("").to_string();
            *counts
                .entry((o.kind.clone(), mode, o.result.clone()))
                .or_default() += 1;
        }
        let _ = writeln!(out, "# HELP ferry_operations_total Operations by kind, mode and result.\n# TYPE ferry_operations_total counter");
        for ((k, m, r), n) in &counts {
            let _ = writeln!(
                out,
                "ferry_operations_total{{kind=\"{}\",mode=\"{}\",result=\"{}\"}} {n}",
                esc(k),
                esc(m),
                esc(r)
            );
        }
        let hist = |out: &mut String, name: &str, help: &str, values: Vec<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for le in BUCKETS_MS {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{le}\"}} {}",
                    values.iter().filter(|v| **v <= le).count()
                );
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", values.len());
            let _ = writeln!(out, "{name}_sum {}", values.iter().sum::<f64>());
            let _ = writeln!(out, "{name}_count {}", values.len());
        };
        let ok = |kind: &str, key: &str| -> Vec<f64> {
            ops.iter()
                .filter(|o| o.kind == kind && o.result == "ok")
                .filter_map(|o| o.timings.get(key).copied())
                .collect()
        };
        hist(
            &mut out,
            "ferry_checkpoint_ms",
            "Checkpoint duration (ms).",
            ok("checkpoint", "total_ms"),
        );
        hist(
            &mut out,
            "ferry_restore_ms",
            "Restore duration (ms).",
            ok("restore", "total_ms"),
        );
        hist(
            &mut out,
            "ferry_migration_downtime_ms",
            "Migration freeze-to-switch time (ms).",
            ok("migrate", "downtime_ms"),
        );
        out
    }
}
