//! A client probing a runtime through the proxy every 10 ms (`print(counter)`): the longest gap
//! between answered requests is the downtime the user sees; counter values the client saw and the
//! runtime no longer has are lost updates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(f64, Option<i64>)>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Observed {
    pub downtime_ms: f64,
    pub lost_updates: f64,
    pub failures: f64,
    pub polls: usize,
}

impl Probe {
    /// Probes `runtime` through `proxy`, with the runtime's access `token` (as a user would).
    pub fn start(proxy: &str, runtime: &str, token: &str) -> Probe {
        let url = format!("http://{proxy}/r/{runtime}/mrp/v1/execute");
        let token = token.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let t0 = Instant::now();
            let mut out = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"code": "print(counter)"}))
                    .send()
                    .await;
                let v = match r {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["stdout"].as_str().and_then(|s| s.trim().parse().ok())),
                    _ => None,
                };
                out.push((t0.elapsed().as_secs_f64() * 1000.0, v));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        });
        Probe { stop, task }
    }

    pub async fn finish(self) -> Observed {
        self.stop.store(true, Ordering::SeqCst);
        let polls = self.task.await.unwrap_or_default();
        observe(&polls)
    }
}

pub fn observe(polls: &[(f64, Option<i64>)]) -> Observed {
    let answered: Vec<(f64, i64)> = polls
        .iter()
        .filter_map(|(t, v)| v.map(|v| (*t, v)))
        .collect();
    let downtime_ms = answered
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0, f64::max);
    let mut max_seen = i64::MIN;
    let mut lost = 0i64;
    for (_, v) in &answered {
        if *v < max_seen {
            lost = lost.max(max_seen - v);
        }
        max_seen = max_seen.max(*v);
    }
    Observed {
        downtime_ms,
        lost_updates: lost as f64,
        failures: (polls.len() - answered.len()) as f64,
        polls: polls.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_lost_updates() {
        let polls = vec![
            (0.0, Some(1)),
            (10.0, Some(2)),
            (20.0, None),
            (300.0, Some(3)),
            (310.0, Some(4)),
        ];
        let o = observe(&polls);
        assert_eq!(
            (o.downtime_ms, o.lost_updates, o.failures),
            (290.0, 0.0, 1.0)
        );
        // A copy restored from an older checkpoint: values go back from 50 to 20.
        let polls = vec![
            (0.0, Some(40)),
            (10.0, Some(50)),
            (20.0, Some(20)),
            (30.0, Some(21)),
        ];
        assert_eq!(observe(&polls).lost_updates, 30.0);
    }
}
