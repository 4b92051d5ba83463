//! Printing: JSON with `--json`, aligned tables otherwise.

pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap());
}

pub fn table(rows: Vec<Vec<String>>) {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|c| c.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

/// One line of an operation's figures: times (keys ending in `_ms`) with their unit, counts
/// (CRIU's page counts, ...) as plain numbers.
pub fn timings(t: &ferry_core::api::Timings) -> String {
    t.iter()
        .map(|(k, v)| match k.strip_suffix("_ms") {
            Some(name) => format!("{name}={v:.0}ms"),
            None => format!("{k}={v:.0}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_carry_ms_and_counts_do_not() {
        let mut t = ferry_core::api::Timings::new();
        t.insert("dump_ms".into(), 412.4);
        t.insert("criu_pages_scanned".into(), 18301.0);
        let line = super::timings(&t);
        assert!(line.contains("dump=412ms"), "{line}");
        assert!(line.contains("criu_pages_scanned=18301"), "{line}");
        assert!(!line.contains("18301ms"), "a count is not a time: {line}");
    }
}
