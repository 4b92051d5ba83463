//! Results in the bench contract's shape: one row per (system, mode, workload, size, metric) with
//! every run's value and their median, min and max.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub mode: String,
    pub workload: String,
    pub size_mb: u64,
    pub metric: String,
    pub runs: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub suite: String,
    pub ferry_version: String,
    pub criu_version: String,
    pub kernel: String,
    pub rows: Vec<Row>,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Results {
    pub fn new(suite: &str, criu_version: &str) -> Results {
        Results {
            suite: suite.into(),
            ferry_version: ferry_core::VERSION.into(),
            criu_version: criu_version.into(),
            kernel: ferry_core::sys::host::kernel_release(),
            rows: Vec::new(),
        }
    }

    /// Adds one run's value to its row (creating the row on first use).
    pub fn add(
        &mut self,
        system: &str,
        mode: &str,
        workload: &str,
        size_mb: u64,
        metric: &str,
        value: f64,
    ) {
        let key = |r: &Row| {
            r.system == system
                && r.mode == mode
                && r.workload == workload
                && r.size_mb == size_mb
                && r.metric == metric
        };
        match self.rows.iter_mut().find(|r| key(r)) {
            Some(r) => r.runs.push(value),
            None => self.rows.push(Row {
                system: system.into(),
                mode: mode.into(),
                workload: workload.into(),
                size_mb,
                metric: metric.into(),
                runs: vec![value],
                median: 0.0,
                min: 0.0,
                max: 0.0,
            }),
        }
    }

    /// Computes medians, minima and maxima.
    pub fn finish(&mut self) {
        for r in &mut self.rows {
            r.median = median(&r.runs);
            r.min = r.runs.iter().copied().fold(f64::INFINITY, f64::min);
            r.max = r.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if r.runs.is_empty() {
                (r.min, r.max) = (0.0, 0.0);
            }
        }
    }

    pub fn get(&self, system: &str, mode: &str, size_mb: u64, metric: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.system == system && r.mode == mode && r.size_mb == size_mb && r.metric == metric
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut r = Results::new("local", "4.2");
        for v in [5.0, 1.0, 3.0] {
            r.add("ferry", "stop", "random", 128, "checkpoint_ms", v);
        }
        r.add("ferry", "stop", "random", 256, "checkpoint_ms", 9.0);
        r.finish();
        let row = r.get("ferry", "stop", 128, "checkpoint_ms").unwrap();
        assert_eq!(
            (row.median, row.min, row.max, row.runs.len()),
            (3.0, 1.0, 5.0, 3)
        );
        assert_eq!(r.rows.len(), 2);
    }
}
