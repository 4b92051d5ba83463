//! `soak`: many migrations back and forth (h1 ↔ h2, cycling through the modes) of one runtime under
//! the write probe; counts failed migrations, failed polls, lost updates, duplicated and lost
//! writes, and leftovers.

use super::progress;
use crate::env::{ms, Env};
use crate::probe::Probe;
use crate::stats::Results;
use crate::workload::COUNTER;
use crate::BenchOptions;
use anyhow::Result;

pub async fn run(env: &Env, o: &BenchOptions) -> Result<Results> {
    let mut r = Results::new("soak", &env.criu_version);
    let size = o.sizes.first().copied().unwrap_or(128);
    let w = o.workload;
    let name = "soak";
    env.api.create(name, "h1", w.memory_mb(size)).await?;
    let pb = progress(o.quiet, o.migrations, "soak");
    let result = async {
        env.api.exec(name, &w.code(size)).await?;
        env.api.exec(name, COUNTER).await?;
        let token = env.api.token(name).await?;
        let probe = Probe::start(&env.proxy, name, &token);
        let mut failed = 0.0;
        for i in 0..o.migrations {
            let to = if i % 2 == 0 { "h2" } else { "h1" };
            let mode = &o.modes[i % o.modes.len()];
            match env
                .api
                .post(
                    &format!("/runtimes/{name}/migrate"),
                    serde_json::json!({"to": to, "mode": mode}),
                )
                .await
            {
                Ok(m) => r.add(
                    "ferry",
                    "soak",
                    w.name(),
                    size,
                    "migration_total_ms",
                    ms(&m["timings"], "total_ms"),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "soak migration failed");
                    failed += 1.0;
                }
            }
            pb.inc(1);
        }
        let seen = probe.finish().await?;
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "failures",
            failed + seen.failures,
        );
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "lost_updates",
            seen.lost_updates,
        );
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "downtime_ms",
            seen.downtime_ms,
        );
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "migrations",
            o.migrations as f64,
        );
        r.add("ferry", "soak", w.name(), size, "polls", seen.polls as f64);
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "duplicated",
            seen.duplicated,
        );
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "lost_writes",
            seen.lost_writes,
        );
        // Leftovers: containers beyond the one runtime, runtime netns beyond its one.
        let containers: usize = ["h1", "h2", "h3"]
            .iter()
            .map(|h| {
                ferry_core::sys::runc::Runc::new(env.state.join("agents").join(h).join("runc"))
                    .ids()
                    .len()
            })
            .sum();
        let netns = ferry_core::sys::netns::list_with_prefix(&env.prefix)
            .into_iter()
            .filter(|n| n.contains("-rt"))
            .count();
        r.add(
            "ferry",
            "soak",
            w.name(),
            size,
            "leaked",
            (containers.saturating_sub(1) + netns.saturating_sub(1)) as f64,
        );
        anyhow::Ok(())
    }
    .await;
    pb.finish_and_clear();
    env.api.remove(name).await;
    result?;
    Ok(r)
}
