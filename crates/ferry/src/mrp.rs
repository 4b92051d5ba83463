//! Client for the runtime's own API (MRP, served by `mrmd-python` on port 8888).
//! Connections are never pooled: an idle keep-alive connection would become part of a checkpoint.

use crate::{Error, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

pub const PORT: u16 = 8888;

pub fn base_url(ip: &str) -> String {
    format!("http://{ip}:{PORT}/mrp/v1")
}

pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .expect("http client")
}

/// `GET /capabilities`, the runtime's liveness check.
pub async fn capabilities(base: &str, timeout: Duration) -> Result<Value> {
    let r = client(timeout)
        .get(format!("{base}/capabilities"))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("runtime at {base} does not answer: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "runtime at {base} answered {}",
            r.status()
        )));
    }
    r.json()
        .await
        .map_err(|e| Error::Unavailable(format!("runtime at {base}: bad capabilities answer: {e}")))
}

/// Polls `/capabilities` until it answers, `alive()` says the container died, or `limit` passes.
///
/// The first polls come quickly (a restored runtime answers at once, and its downtime counts every
/// millisecond); then the pause between polls doubles up to [`MAX_POLL_GAP`], and `alive()` (a
/// `runc state`) is asked at most every [`ALIVE_CHECK_GAP`]. A host starting many runtimes at once
/// thus spends its CPU on starting them, not on asking whether they have started.
pub async fn wait_ready<F, Fut>(base: &str, limit: Duration, mut alive: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let http = client(Duration::from_millis(500));
    let url = format!("{base}/capabilities");
    let mut gap = Duration::from_millis(5);
    let mut last_alive_check = Instant::now();
    loop {
        if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if last_alive_check.elapsed() >= ALIVE_CHECK_GAP {
            if !alive().await {
                return Err(Error::Internal(format!(
                    "the runtime exited before its MRP server answered at {base}"
                )));
            }
            last_alive_check = Instant::now();
        }
        if start.elapsed() > limit {
            return Err(Error::Unavailable(format!(
                "the runtime's MRP server did not answer at {base} within {limit:?}"
            )));
        }
        tokio::time::sleep(gap).await;
        gap = (gap * 2).min(MAX_POLL_GAP);
    }
}

/// The longest pause between two readiness polls.
pub const MAX_POLL_GAP: Duration = Duration::from_millis(200);
/// How often a readiness wait checks that the container still runs.
pub const ALIVE_CHECK_GAP: Duration = Duration::from_secs(1);

/// `POST /execute {code}`; returns the MRP answer as is.
pub async fn execute(base: &str, code: &str, timeout: Duration) -> Result<Value> {
    let r = client(timeout)
        .post(format!("{base}/execute"))
        .json(&serde_json::json!({"code": code, "storeHistory": true}))
        .send()
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "runtime at {base} did not answer the execution: {e}"
            ))
        })?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| {
        Error::Internal(format!(
            "runtime answered {status} with a body that is not JSON: {e}"
        ))
    })?;
    if !status.is_success() {
        return Err(Error::Internal(format!(
            "runtime answered {status}: {body}"
        )));
    }
    Ok(body)
}
