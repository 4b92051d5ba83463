//! `migrate`: ferry's modes (stop-copy, lazy; pre-copy where both hosts have the PAGEMAP_SCAN
//! tracker) against the seed's method (`--baseline`), host h1 → h2, with a client writing through
//! the proxy every 10 ms (the write probe), a counter incremented in the runtime every 10 ms and,
//! with `--write-rate`, a thread rewriting the runtime's array at that rate. Pre-copy rows add its
//! rounds, what they sent, the final dirty set and the stale pages found at the target. A
//! requested mode that is refused fails the run.

use super::progress;
use crate::env::{ms, Env};
use crate::probe::Probe;
use crate::stats::Results;
use crate::workload::COUNTER;
use crate::BenchOptions;
use anyhow::{Context, Result};
use std::time::Duration;

pub async fn run(env: &Env, o: &BenchOptions) -> Result<Results> {
    let mut r = Results::new("migrate", &env.criu_version);
    let mut modes: Vec<String> = o.modes.clone();
    if o.baseline {
        modes.push("baseline".into());
    }
    let pb = progress(o.quiet, o.sizes.len() * o.runs * modes.len(), "migrate");
    for &size in &o.sizes {
        for run in 0..o.runs {
            for mode in &modes {
                one(env, o, &mut r, size, run, mode).await?;
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    Ok(r)
}

async fn one(
    env: &Env,
    o: &BenchOptions,
    r: &mut Results,
    size: u64,
    run: usize,
    mode: &str,
) -> Result<()> {
    let w = o.workload;
    let name = format!("mig-{mode}-{size}-{run}");
    env.api.create(&name, "h1", w.memory_mb(size)).await?;
    let result = async {
        env.api.exec(&name, &w.code(size)).await?;
        env.api.exec(&name, COUNTER).await?;
        if o.write_rate_mb_s > 0.0 {
            env.api
                .exec(&name, &crate::workload::writer(o.write_rate_mb_s))
                .await?;
        }
        let token = env.api.token(&name).await?;
        let probe = Probe::start(&env.proxy, &name, &token);
        tokio::time::sleep(Duration::from_millis(300)).await;
        probe.mark();
        let m = if mode == "baseline" {
            env.api
                .post(
                    &format!("/runtimes/{name}/baseline-migrate"),
                    serde_json::json!({"to": "h2"}),
                )
                .await
        } else {
            env.api
                .post(
                    &format!("/runtimes/{name}/migrate"),
                    serde_json::json!({"to": "h2", "mode": mode}),
                )
                .await
        };
        // The probe keeps writing for the window after the switch that `p99_after_ms` covers.
        tokio::time::sleep(o.observe_after).await;
        let seen = probe.finish().await?;
        // A mode that was asked for and refused (pre-copy without soft-dirty) fails the run: a
        // table without its rows would read as if it had been measured.
        let m = m.with_context(|| format!("migrate --mode {mode} of {name}"))?;
        let system = if mode == "baseline" {
            "baseline"
        } else {
            "ferry"
        };
        let t = &m["timings"];
        let (checkpoint, transfer, restore) = if system == "baseline" {
            (
                ms(t, "checkpoint_ms"),
                ms(t, "archive_ms") + ms(t, "transfer_ms"),
                ms(t, "unpack_ms") + ms(t, "restore_ms"),
            )
        } else {
            (
                ms(t, "freeze_ms") + ms(t, "dump_ms"),
                ms(t, "copy_layer_ms") + ms(t, "hash_ms") + ms(t, "transfer_ms"),
                ms(t, "restore_ms"),
            )
        };
        let wl = w.name();
        r.add(system, mode, wl, size, "checkpoint_ms", checkpoint);
        r.add(system, mode, wl, size, "transfer_ms", transfer);
        r.add(system, mode, wl, size, "restore_ms", restore);
        r.add(system, mode, wl, size, "total_ms", ms(t, "total_ms"));
        r.add(system, mode, wl, size, "downtime_ms", seen.downtime_ms);
        r.add(system, mode, wl, size, "lost_updates", seen.lost_updates);
        r.add(system, mode, wl, size, "failures", seen.failures);
        r.add(system, mode, wl, size, "duplicated", seen.duplicated);
        r.add(system, mode, wl, size, "lost_writes", seen.lost_writes);
        r.add(system, mode, wl, size, "polls", seen.polls as f64);
        r.add(system, mode, wl, size, "p99_after_ms", seen.p99_after_ms);
        if mode == "pre-copy" {
            let rounds = ms(t, "precopy_rounds");
            let later: f64 = (2..=rounds as usize)
                .map(|i| ms(t, &format!("precopy_round{i}_bytes")))
                .sum();
            r.add(system, mode, wl, size, "precopy_rounds", rounds);
            r.add(
                system,
                mode,
                wl,
                size,
                "precopy_round1_mb",
                ms(t, "precopy_round1_bytes") / 1e6,
            );
            r.add(
                system,
                mode,
                wl,
                size,
                "precopy_later_rounds_mb",
                later / 1e6,
            );
            r.add(
                system,
                mode,
                wl,
                size,
                "precopy_final_dirty_mb",
                ms(t, "precopy_final_dirty_bytes") / 1e6,
            );
            r.add(system, mode, wl, size, "precopy_ms", ms(t, "precopy_ms"));
            // After the switch: memory served from the target's store, and fetched from the
            // frozen source (the dirty list and what no round sent).
            for (key, timing) in [
                ("pages_from_store_mb", "target_pages_from_store"),
                ("pages_fetched_mb", "target_pages_fetched"),
            ] {
                r.add(system, mode, wl, size, key, ms(t, timing) * 4096.0 / 1e6);
            }
        }
        r.add(
            system,
            mode,
            wl,
            size,
            "archive_bytes",
            m["archive_bytes"].as_f64().unwrap_or(0.0),
        );
        anyhow::Ok(())
    }
    .await;
    env.api.remove(&name).await;
    result
}
