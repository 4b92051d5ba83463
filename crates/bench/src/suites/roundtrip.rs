//! `roundtrip`: A → B → C → A at the first size (the seed measured A → B → A at 128 MB: 2314 ms),
//! per hop and in total, for each mode (and the baseline's method with `--baseline`).

use super::progress;
use crate::env::{ms, Env};
use crate::stats::Results;
use crate::BenchOptions;
use anyhow::Result;

pub async fn run(env: &Env, o: &BenchOptions) -> Result<Results> {
    let mut r = Results::new("roundtrip", &env.criu_version);
    let size = o.sizes.first().copied().unwrap_or(128);
    let w = o.workload;
    let mut modes = o.modes.clone();
    if o.baseline {
        modes.push("baseline".into());
    }
    let pb = progress(o.quiet, o.runs * modes.len(), "roundtrip");
    for run in 0..o.runs {
        for mode in &modes {
            let name = format!("rt-{mode}-{run}");
            env.api.create(&name, "h1", w.memory_mb(size)).await?;
            let result = async {
                env.api.exec(&name, &w.code(size)).await?;
                env.api.exec(&name, "x = 41").await?;
                let mut total = 0.0;
                let system = if mode == "baseline" {
                    "baseline"
                } else {
                    "ferry"
                };
                for (i, to) in ["h2", "h3", "h1"].iter().enumerate() {
                    let m = if mode == "baseline" {
                        env.api
                            .post(
                                &format!("/runtimes/{name}/baseline-migrate"),
                                serde_json::json!({"to": to}),
                            )
                            .await?
                    } else {
                        env.api
                            .post(
                                &format!("/runtimes/{name}/migrate"),
                                serde_json::json!({"to": to, "mode": mode}),
                            )
                            .await?
                    };
                    let t = ms(&m["timings"], "total_ms");
                    total += t;
                    r.add(system, mode, w.name(), size, &format!("hop{}_ms", i + 1), t);
                    let v = env.api.exec(&name, "print(x + 1)").await?;
                    anyhow::ensure!(
                        v["stdout"].as_str().unwrap_or("").trim() == "42",
                        "state lost at hop {} ({mode})",
                        i + 1
                    );
                }
                r.add(system, mode, w.name(), size, "total_ms", total);
                anyhow::Ok(())
            }
            .await;
            env.api.remove(&name).await;
            result?;
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(r)
}
