//! The source side of a migration: freeze, dump, and stream the snapshot straight into the target
//! agent's verifying import — an authenticated HTTP PUT made from this host's network namespace,
//! the archive produced (tar → zstd) while it is sent, never staged as a file.

use super::Agent;
use crate::api::{SendRequest, SendResult, SnapshotInfo, Timings};
use crate::container::ms;
use crate::{Error, Result};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::time::Instant;

impl Agent {
    /// Leaves the runtime frozen on success (the caller destroys or thaws it), unless
    /// `thaw_after_dump`. On failure the runtime is thawed and the local dump removed.
    pub async fn send(&self, id: &str, r: &SendRequest) -> Result<SendResult> {
        self.criu.require()?;
        super::check_id(&r.snapshot_id)?;
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        let dest = self.host.snapshots_dir().join(&r.snapshot_id);
        let t0 = Instant::now();
        let mut t = Timings::new();
        c.freeze_for_checkpoint().await?;
        t.insert("freeze_ms".into(), ms(t0));
        let result = async {
            let (_m, dump_t) = c.dump_frozen(&dest, &r.snapshot_id, false, &self.versions).await?;
            t.extend(dump_t);
            if r.thaw_after_dump {
                c.thaw().await?;
            }
            let t1 = Instant::now();
            let (snapshot, archive_bytes) = self.stream_to(&dest, r).await?;
            t.insert("transfer_ms".into(), ms(t1));
            Ok::<_, Error>((snapshot, archive_bytes))
        }
        .await;
        match result {
            Ok((snapshot, archive_bytes)) => {
                t.insert("total_ms".into(), ms(t0));
                Ok(SendResult { snapshot, archive_bytes, timings: t })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                let thawed = if r.thaw_after_dump && c.is_alive().await { Ok(()) } else { c.thaw().await };
                Err(match thawed {
                    Ok(()) => Error::Unavailable(format!("sending {} failed; it was thawed and runs here again: {e}", c.spec.name)),
                    Err(te) => Error::Internal(format!("sending {} failed ({e}) and thawing it failed: {te}", c.spec.name)),
                })
            }
        }
    }

    async fn stream_to(&self, dir: &std::path::Path, r: &SendRequest) -> Result<(SnapshotInfo, u64)> {
        let url: reqwest::Url = r.target_url.parse().map_err(|e| Error::Invalid(format!("bad target URL {}: {e}", r.target_url)))?;
        let host = url.host_str().ok_or_else(|| Error::Invalid(format!("target URL {} has no host", r.target_url)))?;
        let addr: std::net::SocketAddr = format!("{host}:{}", url.port_or_known_default().unwrap_or(80))
            .parse()
            .map_err(|e| Error::Invalid(format!("target URL {} must name an IP address: {e}", r.target_url)))?;
        let stream = crate::sys::inns::connect(self.host.outer_netns.clone(), addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| Error::Unavailable(format!("target {addr}: {e}")))?;
        tokio::spawn(conn);
        let (body, stats) = super::api::archive_body(dir.to_path_buf());
        let req = hyper::Request::put(format!("/agent/v1/snapshots/{}/archive", r.snapshot_id))
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", r.target_token))
            .header(hyper::header::CONTENT_TYPE, "application/x-ferry-snapshot")
            .body(body)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| Error::Unavailable(format!("stream to target {addr} broke off: {e}")))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| Error::Unavailable(format!("target {addr} answer broke off: {e}")))?.to_bytes();
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let msg = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::from_api(status.as_u16(), v["error"]["kind"].as_str().unwrap_or(""), format!("target refused the snapshot: {msg}")));
        }
        let info: SnapshotInfo = serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("target answer: {e}")))?;
        let archive_bytes = stats.await.map(|s| s.archive_bytes).unwrap_or(0);
        Ok((info, archive_bytes))
    }
}
