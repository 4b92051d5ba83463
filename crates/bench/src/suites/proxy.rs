//! `proxy`: latency (p50/p99) and requests/s of `GET /capabilities` and of a short SSE execution,
//! through the proxy (with the runtime's own access token, as a user) and directly to the
//! runtime; `proxy_overhead_us` is the difference of p50s. `credential_check_us` is what the
//! proxy's credential check alone costs per request (in process, a cache of 10 000 runtimes).

use crate::env::Env;
use crate::stats::{median, Results};
use crate::BenchOptions;
use anyhow::Result;
use std::time::Instant;

const REQUESTS: usize = 300;

pub async fn run(env: &Env, o: &BenchOptions) -> Result<Results> {
    let mut r = Results::new("proxy", &env.criu_version);
    let name = "proxy-bench";
    let rt = env.api.create(name, "h1", 512).await?;
    let token = rt["access_token"].as_str().unwrap_or_default().to_string();
    let result = async {
        let direct = rt["mrp_url"].as_str().unwrap_or_default().to_string();
        let proxied = format!("http://{}/r/{name}/mrp/v1", env.proxy);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        for _ in 0..o.runs {
            for (system, base) in [("direct", &direct), ("ferry", &proxied)] {
                let mut lat = Vec::with_capacity(REQUESTS);
                let t0 = Instant::now();
                for _ in 0..REQUESTS {
                    let t = Instant::now();
                    let resp = http
                        .get(format!("{base}/capabilities"))
                        .bearer_auth(&token)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status().is_success(), "{system}: {}", resp.status());
                    resp.bytes().await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                let rps = REQUESTS as f64 / t0.elapsed().as_secs_f64();
                r.add(system, "http", "idle", 0, "p50_us", median(&lat));
                r.add(system, "http", "idle", 0, "p99_us", percentile(&lat, 0.99));
                r.add(system, "http", "idle", 0, "rps", rps);
                let t = Instant::now();
                let body = http
                    .post(format!("{base}/execute/stream"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"code": "for i in range(5): print(i)"}))
                    .send()
                    .await?
                    .text()
                    .await?;
                anyhow::ensure!(
                    body.contains("event: done"),
                    "{system}: SSE stream incomplete"
                );
                r.add(
                    system,
                    "sse",
                    "idle",
                    0,
                    "stream_us",
                    t.elapsed().as_secs_f64() * 1e6,
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    env.api.remove(name).await;
    result?;
    r.finish();
    let overhead: Vec<f64> = {
        let d = r
            .get("direct", "http", 0, "p50_us")
            .map(|x| x.runs.clone())
            .unwrap_or_default();
        let f = r
            .get("ferry", "http", 0, "p50_us")
            .map(|x| x.runs.clone())
            .unwrap_or_default();
        d.iter().zip(&f).map(|(d, f)| f - d).collect()
    };
    for v in overhead {
        r.add("ferry", "http", "idle", 0, "proxy_overhead_us", v);
    }
    for _ in 0..o.runs {
        r.add(
            "ferry",
            "http",
            "idle",
            0,
            "credential_check_us",
            credential_check_us().await,
        );
    }
    r.finish();
    Ok(r)
}

/// The median time the proxy's credential check takes for an accepted request (a runtime token,
/// looked up among 10 000 cached ones, compared in constant time; no database read).
async fn credential_check_us() -> f64 {
    use ferry_core::access::{Access, Kind, Mode};
    let a = Access::new(Mode::Token, "control", &"ab".repeat(32));
    a.replace_all(
        (0..10_000)
            .map(|i| (format!("rt{i}"), format!("{i:032x}")))
            .collect(),
    );
    let token = format!("{:032x}", 4242);
    let mut lat = Vec::with_capacity(REQUESTS * 10);
    for _ in 0..REQUESTS * 10 {
        let t = Instant::now();
        let k = a.check_token("rt4242", &token).await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(k, Some(Kind::Runtime), "the check refused a valid token");
    }
    median(&lat)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}
