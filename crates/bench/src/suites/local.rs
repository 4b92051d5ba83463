//! `local`: checkpoint (stop), checkpoint --leave-running and restore on one host, raw image and
//! archive sizes — the seed's first table. Also measures this machine's memory copy time for the
//! same sizes, the floor any checkpoint of that much memory stands on.

use super::progress;
use crate::env::{ms, Env};
use crate::stats::Results;
use crate::BenchOptions;
use anyhow::Result;

pub async fn run(env: &Env, o: &BenchOptions) -> Result<Results> {
    let mut r = Results::new("local", &env.criu_version);
    let w = o.workload;
    let pb = progress(o.quiet, o.sizes.len() * o.runs, "local");
    for &size in &o.sizes {
        for run in 0..o.runs {
            let name = format!("local-{size}-{run}");
            env.api.create(&name, "h1", w.memory_mb(size)).await?;
            let result = async {
                env.api.exec(&name, &w.code(size)).await?;
                let lr = env
                    .api
                    .post(
                        &format!("/runtimes/{name}/checkpoint"),
                        serde_json::json!({"leave_running": true}),
                    )
                    .await?;
                r.add(
                    "ferry",
                    "local",
                    w.name(),
                    size,
                    "leave_running_ms",
                    ms(&lr["timings"], "total_ms"),
                );
                r.add(
                    "ferry",
                    "local",
                    w.name(),
                    size,
                    "image_bytes",
                    lr["image_bytes"].as_f64().unwrap_or(0.0),
                );
                let snap = lr["id"].as_str().unwrap_or_default().to_string();
                r.add(
                    "ferry",
                    "local",
                    w.name(),
                    size,
                    "archive_bytes",
                    env.api.archive_len(&snap).await? as f64,
                );
                let _ = env.api.delete(&format!("/snapshots/{snap}")).await;
                let cp = env
                    .api
                    .post(
                        &format!("/runtimes/{name}/checkpoint"),
                        serde_json::json!({"leave_running": false}),
                    )
                    .await?;
                r.add(
                    "ferry",
                    "local",
                    w.name(),
                    size,
                    "checkpoint_ms",
                    ms(&cp["timings"], "total_ms"),
                );
                let snap = cp["id"].as_str().unwrap_or_default().to_string();
                env.api
                    .post("/restore", serde_json::json!({"snapshot": snap}))
                    .await?;
                let t = env.api.last_timings(&name, "restore").await?;
                r.add(
                    "ferry",
                    "local",
                    w.name(),
                    size,
                    "restore_ms",
                    ms(&t, "total_ms"),
                );
                let _ = env.api.delete(&format!("/snapshots/{snap}")).await;
                anyhow::Ok(())
            }
            .await;
            env.api.remove(&name).await;
            result?;
            r.add(
                "machine",
                "memcpy",
                w.name(),
                size,
                "memcpy_ms",
                memcpy_ms(size),
            );
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(r)
}

/// Time to copy `mb` MB in memory once (touched source, fresh destination), in ms.
fn memcpy_ms(mb: u64) -> f64 {
    let n = (mb * 1024 * 1024) as usize;
    let src: Vec<u8> = (0..n).map(|i| (i * 31) as u8).collect();
    let t = std::time::Instant::now();
    let dst = src.clone();
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    std::hint::black_box(&dst);
    elapsed
}
