//! The source side of a migration: freeze, dump, and stream the snapshot straight into the target
//! agent's verifying import — an authenticated HTTP PUT made from this host's network namespace,
//! the archive produced (tar → zstd) while it is sent, never staged as a file.
//!
//! Lazy (post-copy): the dump leaves the memory out and CRIU keeps serving it from a page server on
//! this host until the target has every page; only the small rest is streamed.

use super::Agent;
use crate::api::{LazyStatus, SendRequest, SendResult, SnapshotInfo, Timings};
use crate::container::{ms, Container};
use crate::sys::lazy;
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
        if r.lazy && !self.criu.lazy_pages {
            return Err(Error::Invalid("this host's kernel or CRIU cannot do lazy pages (userfaultfd): use --mode stop-copy".into()));
        }
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        std::fs::create_dir_all(self.host.scratch_dir())?;
        let dest = self.host.scratch_dir().join(&r.snapshot_id);
        let mut t = Timings::new();
        // Pre-copy: the tracker its rounds left (`Agent::precopy`), taken before the freeze.
        let tracker = if r.precopy {
            Some(self.precopy_take(&r.snapshot_id)?)
        } else {
            None
        };
        let t0 = Instant::now();
        if self.criu.network_lock_skip {
            c.freeze_for_move().await?;
        } else {
            c.freeze_for_checkpoint().await?;
        }
        t.insert("freeze_ms".into(), ms(t0));
        let mut page_server = None;
        // A full dump is stored unverified at the target, which verifies it while it restores
        // (the freeze is shorter by a pass over every byte); a lazy dump's small rest is verified
        // on arrival.
        let verify_on_restore = !r.lazy;
        let result = async {
            if let Some(tracker) = tracker {
                self.precopy_final(&c, r, tracker, &mut t).await?;
            }
            if r.lazy {
                page_server = Some(self.dump_lazy(&c, &dest, &r.snapshot_id, &mut t).await?);
            } else {
                let (_m, dump_t) = c
                    .dump_frozen(&dest, &r.snapshot_id, false, &self.versions, false)
                    .await?;
                t.extend(dump_t);
            }
            if r.thaw_after_dump {
                c.thaw().await?;
            }
            let t1 = Instant::now();
            let (snapshot, archive_bytes) = self.stream_to(&dest, r, verify_on_restore).await?;
            t.insert("transfer_ms".into(), ms(t1));
            Ok::<_, Error>((snapshot, archive_bytes))
        }
        .await;
        match result {
            Ok((snapshot, archive_bytes)) => {
                // The target holds the copy now; a lazy dump's dir goes when its pages are served.
                // Freeing hundreds of MB of tmpfs takes ~0.1 s: not while the runtime is frozen
                // (a crash before it is done leaves the dir to the scratch cleanup at start).
                if !r.lazy {
                    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dest));
                }
                t.insert("total_ms".into(), ms(t0));
                Ok(SendResult {
                    snapshot,
                    archive_bytes,
                    timings: t,
                    page_server,
                    verify_on_restore,
                })
            }
            Err(e) => {
                if r.lazy {
                    self.stop_lazy(&c, &r.snapshot_id).await;
                }
                let _ = std::fs::remove_dir_all(&dest);
                let thawed = if r.thaw_after_dump && c.is_alive().await {
                    Ok(())
                } else {
                    c.thaw().await
                };
                Err(match thawed {
                    Ok(()) => Error::Unavailable(format!(
                        "sending {} failed; it was thawed and runs here again: {e}",
                        c.spec.name
                    )),
                    Err(te) => Error::Internal(format!(
                        "sending {} failed ({e}) and thawing it failed: {te}",
                        c.spec.name
                    )),
                })
            }
        }
    }

    /// Lazy dump: CRIU writes everything but memory into `dest/criu` and then serves the pages.
    /// Returns the page server's address. The dump process is tracked in `lazy_jobs`.
    async fn dump_lazy(
        &self,
        c: &Container<'_>,
        dest: &std::path::Path,
        snapshot_id: &str,
        t: &mut Timings,
    ) -> Result<String> {
        std::fs::create_dir_all(dest.join("criu"))?;
        let work = c.dir().join("criu-dump");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let port = lazy::free_port(self.host.outer_netns.clone(), self.host.addr)?;
        let page_server = format!("{}:{port}", self.host.addr);
        let t1 = Instant::now();
        let child = lazy::start_dump(
            self.host.outer_netns.as_deref(),
            &self.host.runc.root,
            c.id(),
            &dest.join("criu"),
            &work,
            &page_server,
            &c.runc_log(),
        )
        .await?;
        t.insert("dump_ms".into(), ms(t1));
        let pid = child.id();
        self.lazy_jobs.lock().unwrap().insert(
            snapshot_id.to_string(),
            LazyStatus {
                status: "serving".into(),
                error: None,
                pid,
            },
        );
        let jobs = self.lazy_jobs.clone();
        let snap = snapshot_id.to_string();
        let log = work.join("dump.log");
        let dump_dir = dest.to_path_buf();
        tokio::spawn(async move {
            let mut child = child;
            let st = child.wait().await;
            let _ = std::fs::remove_dir_all(&dump_dir);
            let (status, error) = match st {
                Ok(s) if s.success() => ("done", None),
                other => (
                    "failed",
                    Some(format!(
                        "lazy dump ended with {other:?}: {}",
                        crate::sys::cmd::tail(&log, 4)
                    )),
                ),
            };
            if let Some(j) = jobs.lock().unwrap().get_mut(&snap) {
                if j.status == "serving" {
                    j.status = status.into();
                    j.error = error;
                }
            }
        });
        // The hot list of the runtime's previous lazy restore here travels with the images.
        let hot = c.dir().join(crate::container::lazy::HOT_PAGES);
        if hot.exists() {
            let _ = std::fs::copy(
                &hot,
                dest.join("criu").join(crate::container::lazy::HOT_PAGES),
            );
        }
        let (_m, pt) = c
            .package(dest, snapshot_id, false, &self.versions, false)
            .await?;
        t.extend(pt);
        Ok(page_server)
    }

    /// Kills a lazy dump still serving pages and removes CRIU's network lock.
    async fn stop_lazy(&self, c: &Container<'_>, snapshot_id: &str) {
        let job = self.lazy_jobs.lock().unwrap().get(snapshot_id).cloned();
        if let Some(LazyStatus {
            status,
            pid: Some(pid),
            ..
        }) = job
        {
            if status == "serving" {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                for _ in 0..100 {
                    if self
                        .lazy_jobs
                        .lock()
                        .unwrap()
                        .get(snapshot_id)
                        .is_some_and(|j| j.status != "serving")
                    {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        if let Some(j) = self.lazy_jobs.lock().unwrap().get_mut(snapshot_id) {
            j.status = "aborted".into();
        }
        lazy::unlock_network(&c.net().netns).await;
    }

    pub fn lazy_status(&self, snapshot_id: &str) -> Result<LazyStatus> {
        self.lazy_jobs
            .lock()
            .unwrap()
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no lazy migration {snapshot_id} on host {}",
                    self.host.name
                ))
            })
    }

    /// The target could not restore: stop serving pages and let the runtime run here again.
    pub async fn lazy_abort(&self, id: &str, snapshot_id: &str) -> Result<()> {
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        self.stop_lazy(&c, snapshot_id).await;
        let _ = std::fs::remove_dir_all(self.host.scratch_dir().join(snapshot_id));
        if !c.is_alive().await {
            return Err(Error::Internal(format!(
                "runtime {} did not survive the aborted lazy dump",
                c.spec.name
            )));
        }
        let _ = c.thaw().await;
        // CRIU may have left the tasks stopped rather than frozen.
        if let Some(st) = self.host.runc.state(id).await? {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(st.pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        Ok(())
    }

    async fn stream_to(
        &self,
        dir: &std::path::Path,
        r: &SendRequest,
        verify_later: bool,
    ) -> Result<(SnapshotInfo, u64)> {
        let (body, stats) = super::api::archive_body(dir.to_path_buf(), true);
        let query = if verify_later { "?verify=later" } else { "" };
        let bytes = self
            .put_to_peer(
                &r.target_url,
                &r.target_token,
                &format!("/agent/v1/snapshots/{}/archive{query}", r.snapshot_id),
                body,
            )
            .await?;
        let info: SnapshotInfo = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("target answer: {e}")))?;
        let archive_bytes = stats.await.map(|s| s.archive_bytes).unwrap_or(0);
        Ok((info, archive_bytes))
    }

    /// An authenticated HTTP PUT of a streamed body to a peer agent, made from this host's network
    /// namespace. Returns the answer's body; an error answer becomes an [`Error`] of its kind.
    pub(crate) async fn put_to_peer(
        &self,
        target_url: &str,
        token: &str,
        path: &str,
        body: axum::body::Body,
    ) -> Result<bytes::Bytes> {
        let url: reqwest::Url = target_url
            .parse()
            .map_err(|e| Error::Invalid(format!("bad target URL {target_url}: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| Error::Invalid(format!("target URL {target_url} has no host")))?;
        let addr: std::net::SocketAddr =
            format!("{host}:{}", url.port_or_known_default().unwrap_or(80))
                .parse()
                .map_err(|e| {
                    Error::Invalid(format!(
                        "target URL {target_url} must name an IP address: {e}"
                    ))
                })?;
        let stream = crate::sys::inns::connect(self.host.outer_netns.clone(), addr).await?;
        let mut sender = match url.scheme() {
            "https" => {
                let cfg = self.peer_tls.clone().ok_or_else(|| Error::Invalid(format!("target {target_url} speaks TLS but this agent trusts no CA: start it with --peer-ca FILE")))?;
                handshake(crate::tls::connect(cfg, host, stream).await?, addr).await?
            }
            _ => handshake(stream, addr).await?,
        };
        let req = hyper::Request::put(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Unavailable(format!("stream to target {addr} broke off: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Unavailable(format!("target {addr} answer broke off: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::from_api(
                status.as_u16(),
                v["error"]["kind"].as_str().unwrap_or(""),
                format!("target refused the snapshot: {msg}"),
            ));
        }
        Ok(bytes)
    }
}

/// An HTTP/1.1 connection over `io`, driven in the background.
async fn handshake<T>(
    io: T,
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<axum::body::Body>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::Unavailable(format!("target {addr}: {e}")))?;
    tokio::spawn(conn);
    Ok(sender)
}
