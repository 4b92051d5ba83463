//! Writes `SUITE.json` (the bench contract), `SUITE.md` (tables, with the seed report's numbers
//! for reference and ferry/baseline ratios) and `SUITE.svg` (time against memory size, one line
//! per system and mode).

use crate::stats::{Results, Row};
use crate::BenchOptions;
use anyhow::Result;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The seed report's numbers (ms), by size: checkpoint, restore, leave-running; migration total.
const SEED_LOCAL: [(u64, f64, f64, f64); 3] = [
    (128, 800.0, 1359.0, 428.0),
    (256, 1381.0, 2366.0, 908.0),
    (512, 3835.0, 5682.0, 3938.0),
];
const SEED_MIGRATE: [(u64, f64, f64, f64, f64); 3] = [
    (128, 513.0, 605.0, 352.0, 1470.0),
    (256, 737.0, 467.0, 348.0, 1560.0),
    (512, 3066.0, 487.0, 376.0, 3938.0),
];
const SEED_ROUNDTRIP_MS: f64 = 2314.0;

pub fn write(r: &Results, o: &BenchOptions) -> Result<()> {
    let base = o.out.join(&r.suite);
    std::fs::write(base.with_extension("json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(base.with_extension("md"), markdown(r, o))?;
    svg(r, &base.with_extension("svg"))?;
    Ok(())
}

fn cell(row: Option<&Row>) -> String {
    match row {
        None => "–".into(),
        Some(r) if r.metric.ends_with("_bytes") => format!(
            "{} ({}–{})",
            human_bytes(r.median),
            human_bytes(r.min),
            human_bytes(r.max)
        ),
        Some(r) if r.runs.len() == 1 => format!("{:.0}", r.median),
        Some(r) => format!("{:.0} ({:.0}–{:.0})", r.median, r.min, r.max),
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1048576.0 {
        format!("{:.1} MB", b / 1048576.0)
    } else {
        format!("{:.0} KB", b / 1024.0)
    }
}

fn markdown(r: &Results, o: &BenchOptions) -> String {
    let mut s = String::new();
    let runs = r.rows.iter().map(|x| x.runs.len()).max().unwrap_or(0);
    let _ = writeln!(s, "# ferry bench {}\n", r.suite);
    let _ = writeln!(s, "ferry {}, CRIU {}, kernel {}; workload `{}`; {} run(s) each; cells are median (min–max), times in ms.\n", r.ferry_version, r.criu_version, r.kernel, o.workload.name(), runs);
    // One table per (system, mode): a row per size, a column per metric.
    let mut groups: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for row in &r.rows {
        groups
            .entry((row.system.clone(), row.mode.clone()))
            .or_default()
            .push(row);
    }
    for ((system, mode), rows) in &groups {
        let mut metrics: Vec<&str> = Vec::new();
        for row in rows {
            if !metrics.contains(&row.metric.as_str()) {
                metrics.push(&row.metric);
            }
        }
        let mut sizes: Vec<u64> = rows.iter().map(|x| x.size_mb).collect();
        sizes.sort();
        sizes.dedup();
        let _ = writeln!(s, "## {system} — {mode}\n");
        let _ = writeln!(s, "| MB | {} |", metrics.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(metrics.len()));
        for size in sizes {
            let cells: Vec<String> = metrics
                .iter()
                .map(|m| {
                    cell(
                        rows.iter()
                            .copied()
                            .find(|x| x.size_mb == size && x.metric == *m),
                    )
                })
                .collect();
            let _ = writeln!(s, "| {size} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    match r.suite.as_str() {
        "local" => {
            let _ = writeln!(
                s,
                "## Against the seed report (podman + runc + CRIU 4.2 on t3.small)\n"
            );
            let _ = writeln!(s, "| MB | checkpoint seed / ferry | restore seed / ferry | leave-running seed / ferry |\n|---|---|---|---|");
            for (mb, c, rs, lr) in SEED_LOCAL {
                let f = |m: &str| r.get("ferry", "local", mb, m).map(|x| x.median);
                let pair = |seed: f64, v: Option<f64>| {
                    v.map(|v| format!("{seed:.0} / {v:.0} ({:.1}× faster)", seed / v.max(0.001)))
                        .unwrap_or_else(|| format!("{seed:.0} / –"))
                };
                let _ = writeln!(
                    s,
                    "| {mb} | {} | {} | {} |",
                    pair(c, f("checkpoint_ms")),
                    pair(rs, f("restore_ms")),
                    pair(lr, f("leave_running_ms"))
                );
            }
        }
        "migrate" => {
            let _ = writeln!(s, "## Against the baseline (the seed's method, same machine, same run) and the seed report\n");
            let _ = writeln!(s, "| MB | mode | total ferry / baseline | downtime ferry / baseline | lost updates ferry / baseline | duplicated ferry / baseline | lost writes ferry / baseline | failed polls ferry / baseline | p99 latency after the switch ferry / baseline | seed total |\n|---|---|---|---|---|---|---|---|---|---|");
            let sizes: std::collections::BTreeSet<u64> = r.rows.iter().map(|x| x.size_mb).collect();
            for size in sizes {
                let seed = SEED_MIGRATE
                    .iter()
                    .find(|x| x.0 == size)
                    .map(|x| format!("{:.0}", x.4))
                    .unwrap_or_else(|| "–".into());
                for mode in o.modes.iter() {
                    let f = |m: &str| r.get("ferry", mode, size, m).map(|x| x.median);
                    let b = |m: &str| r.get("baseline", "baseline", size, m).map(|x| x.median);
                    let ratio = |m: &str| match (f(m), b(m)) {
                        (Some(f), Some(b)) => format!("{f:.0} / {b:.0} (×{:.2})", f / b.max(0.001)),
                        (Some(f), None) => format!("{f:.0} / –"),
                        _ => "–".into(),
                    };
                    let count = |m: &str| {
                        let show = |v: Option<f64>| {
                            v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
                        };
                        format!("{} / {}", show(f(m)), show(b(m)))
                    };
                    let _ = writeln!(
                        s,
                        "| {size} | {mode} | {} | {} | {} | {} | {} | {} | {} | {seed} |",
                        ratio("total_ms"),
                        ratio("downtime_ms"),
                        ratio("lost_updates"),
                        count("duplicated"),
                        count("lost_writes"),
                        count("failures"),
                        count("p99_after_ms")
                    );
                }
            }
        }
        "roundtrip" => {
            let _ = writeln!(s, "Seed report: full round trip A → B → A at 128 MB took {SEED_ROUNDTRIP_MS:.0} ms (two hops); ferry's is A → B → C → A (three hops).\n");
        }
        _ => {}
    }
    s
}

fn svg(r: &Results, path: &std::path::Path) -> Result<()> {
    let wanted: &[&str] = match r.suite.as_str() {
        "local" => &[
            "checkpoint_ms",
            "restore_ms",
            "leave_running_ms",
            "memcpy_ms",
        ],
        "migrate" => &["total_ms", "downtime_ms"],
        "roundtrip" => &["total_ms"],
        "proxy" => &["p50_us", "p99_us"],
        _ => &["migration_total_ms", "downtime_ms"],
    };
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for row in r
        .rows
        .iter()
        .filter(|x| wanted.contains(&x.metric.as_str()))
    {
        series
            .entry(format!("{} {} {}", row.system, row.mode, row.metric))
            .or_default()
            .push((row.size_mb as f64, row.median));
    }
    for v in series.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xmax = series.values().flatten().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let ymax = series.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let unit = if r.suite == "proxy" { "µs" } else { "ms" };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ferry bench {} (median)", r.suite),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("memory held by the runtime (MB)")
        .y_desc(unit)
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
