//! ferry-bench: `ferry bench SUITE`. Reproduces the seed report's tables on this machine, with the
//! seed's own method (leave-running checkpoint, zstd archive, copy, restore) re-run in the same run
//! as the baseline, and writes `SUITE.json` (the bench contract), `SUITE.md` and `SUITE.svg`.
//!
//! Everything is measured as a user would see it: through the control API, with a client probing
//! the runtime through the proxy every 10 ms. The bench brings up its own simulated hosts
//! (`ferry dev up`) and removes them afterwards.

mod env;
pub mod probe;
mod report;
mod stats;
mod suites;
pub mod workload;

pub use stats::{Results, Row};
pub use workload::Workload;

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub suite: String,
    pub sizes: Vec<u64>,
    pub runs: usize,
    pub workload: Workload,
    pub modes: Vec<String>,
    pub baseline: bool,
    /// migrate: MB/s the runtime rewrites of its memory during the move (0: none).
    pub write_rate_mb_s: f64,
    pub out: PathBuf,
    /// Migrations per run of the soak suite.
    pub migrations: usize,
    /// The ferry binary (to start the simulated hosts).
    pub bin: PathBuf,
    pub images_dir: PathBuf,
    pub quiet: bool,
    /// How long the migrate suite's probe keeps writing after the move returned (the window of
    /// `p99_after_ms`).
    pub observe_after: std::time::Duration,
}

pub const SUITES: [&str; 5] = ["local", "migrate", "roundtrip", "proxy", "soak"];

/// Runs one suite end to end and writes its three files; returns the results.
pub async fn run(o: &BenchOptions) -> anyhow::Result<Results> {
    if !SUITES.contains(&o.suite.as_str()) {
        anyhow::bail!(
            "unknown suite {:?}: choose one of {}",
            o.suite,
            SUITES.join(", ")
        );
    }
    std::fs::create_dir_all(&o.out)?;
    let env = env::Env::up(o).await?;
    let r = match o.suite.as_str() {
        "local" => suites::local::run(&env, o).await,
        "migrate" => suites::migrate::run(&env, o).await,
        "roundtrip" => suites::roundtrip::run(&env, o).await,
        "proxy" => suites::proxy::run(&env, o).await,
        _ => suites::soak::run(&env, o).await,
    };
    env.down().await;
    let mut results = r?;
    results.finish();
    report::write(&results, o)?;
    Ok(results)
}
