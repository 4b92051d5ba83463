//! The agent: one per host. Owns the host's runtime containers and its snapshot store, and serves
//! the agent API (see [`api`]) to the control plane. Restarting an agent adopts the containers that
//! are still running: their specs are on disk next to them.

pub mod api;
mod baseline;
pub mod client;
mod images;
mod precopy;
mod store;
mod transfer;

use crate::api::{AgentInfo, AgentRuntime, RuntimeSpec, SnapshotInfo, Timings};
use crate::container::checkpoint::Versions;
use crate::container::Host;
use crate::sys::criu::Criu;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Agent {
    pub host: Host,
    pub criu: Criu,
    /// Which write tracker this host offers (pre-copy), detected at start.
    pub write_tracker: crate::sys::memtrack::WriteTracker,
    pub versions: Versions,
    pub token: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pre-copy moves whose rounds ran and whose freeze (`send`) has not come yet, by snapshot
    /// id: the tracker that still follows the runtime's writes.
    pub(crate) precopy_jobs: Arc<Mutex<HashMap<String, ferry_tracker::Tracker>>>,
    /// Lazy migrations this host is the source of, by snapshot id.
    pub(crate) lazy_jobs: Arc<Mutex<HashMap<String, crate::api::LazyStatus>>>,
    /// How to check `https://` peers' certificates when sending them snapshots.
    pub(crate) peer_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Agent {
    pub async fn new(
        host: Host,
        token: String,
        peer_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Agent> {
        for d in [
            host.runtimes_dir(),
            host.snapshots_dir(),
            host.state_dir.join("runc"),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", d.display())))?;
        }
        host.image_store().clean_staging();
        // Imports cut off by a crash leave staging dirs: they were never visible, remove them.
        for e in std::fs::read_dir(host.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // So do sends cut off by a crash: their dumps in the scratch dir belong to no one now.
        for e in std::fs::read_dir(host.scratch_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            tracing::info!(dump = %e.path().display(), "removing the dump of an interrupted send");
            let _ = std::fs::remove_dir_all(e.path());
        }
        // Host-wide settings, once here rather than before each operation.
        match crate::sys::host::ensure_pipe_max_size() {
            Ok(v) => tracing::debug!(pipe_max_size = v, "fs.pipe-max-size"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise fs.pipe-max-size: lazy migrations may fail")
            }
        }
        // Detecting CRIU also warms its kerndat cache (see `sys/criu.rs`).
        let criu = Criu::detect().await;
        if let Some(p) = &criu.problem {
            tracing::warn!(problem = %p, "CRIU is unusable: checkpoints and restores will be refused");
        }
        let versions = Versions {
            criu: criu.version.clone(),
            runc: crate::sys::runc::version().await,
            kernel: crate::sys::host::kernel_release(),
        };
        let write_tracker = crate::sys::memtrack::WriteTracker::detect(criu.mem_dirty_track);
        tracing::info!(write_tracker = %write_tracker.kind, "write tracker for pre-copy");
        let agent = Agent {
            host,
            criu,
            write_tracker,
            versions,
            token,
            locks: Mutex::new(HashMap::new()),
            lazy_jobs: Default::default(),
            precopy_jobs: Default::default(),
            peer_tls,
        };
        // A restore whose sha256 check had not passed when this agent died left its processes
        // stopped (CRIU's leave-stopped) and never verified: they must never run. Removing the
        // container makes it an interrupted restore, which the control plane settles.
        for spec in agent.specs() {
            let c = agent.host.container(spec);
            if crate::container::config::restore_held(&c) {
                tracing::warn!(runtime = %c.spec.name, "removing a restored copy whose verification never finished");
                // The restore the dead agent started may still be running: its container exists
                // only once it is done.
                if !agent
                    .host
                    .runc
                    .wait_for_strays(c.id(), std::time::Duration::from_secs(60))
                    .await
                {
                    tracing::warn!(runtime = %c.spec.name, "a runc of the previous agent still works on it after 60 s");
                }
                c.destroy().await;
                let _ = crate::container::config::restore_stopped(&c, false);
            }
        }
        // A target prepared for a migration whose restore never came (the control plane died
        // in between) belongs to no one: remove it.
        for spec in agent.specs() {
            let c = agent.host.container(spec);
            if c.only_prepared() && agent.host.runc.state(c.id()).await.ok().flatten().is_none() {
                tracing::info!(runtime = %c.spec.name, "removing a target prepared for a migration that never restored here");
                c.destroy().await;
                c.remove_files();
            }
        }
        agent.recheck_rules().await;
        let adopted = agent.specs().len();
        tracing::info!(host = %agent.host.name, adopted, "agent ready");
        Ok(agent)
    }

    /// Re-applies (atomically) the network rules of every runtime whose network exists here, and
    /// removes the tables of this host's prefix that belong to no such runtime.
    async fn recheck_rules(&self) {
        let mut keep = Vec::new();
        for spec in self.specs() {
            let net = self.host.container(spec).net();
            if !crate::sys::netns::exists(&net.netns) {
                continue;
            }
            match net.apply_rules().await {
                Ok(()) => keep.push(net.table()),
                Err(e) => {
                    // Without its rules the runtime must not keep a network: cut it off.
                    tracing::error!(netns = %net.netns, error = %e, "cannot re-apply network rules: cutting the runtime off");
                    crate::sys::netns::cut(&net).await;
                }
            }
        }
        let outer = self.host.outer_netns.as_deref();
        for t in crate::sys::firewall::remove_orphans(outer, &self.host.prefix, &keep).await {
            tracing::info!(table = %t, "removed the network rules of a runtime that is gone");
        }
        tracing::info!(host = %self.host.name, tables = keep.len(), "network rules checked");
    }

    /// One operation at a time per runtime.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            name: self.host.name.clone(),
            version: crate::VERSION.into(),
            criu: self.criu.clone(),
            write_tracker: self.write_tracker.clone(),
            runc_version: self.versions.runc.clone(),
            kernel: self.versions.kernel.clone(),
            mem_total_mb: crate::sys::host::mem_total_mb(),
            images: self.host.images(),
            image_records: self.image_list(),
        }
    }

    /// Specs of every runtime this host has files for.
    fn specs(&self) -> Vec<RuntimeSpec> {
        let mut v: Vec<RuntimeSpec> = std::fs::read_dir(self.host.runtimes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("runtime.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn spec(&self, id: &str) -> Result<RuntimeSpec> {
        let p = self.host.runtimes_dir().join(id).join("runtime.json");
        let b = std::fs::read(&p)
            .map_err(|_| Error::NotFound(format!("no runtime {id} on host {}", self.host.name)))?;
        serde_json::from_slice(&b).map_err(|e| Error::Internal(format!("{}: {e}", p.display())))
    }

    pub async fn list(&self) -> Vec<AgentRuntime> {
        let mut out = Vec::new();
        for s in self.specs() {
            out.push(self.host.container(s).status().await);
        }
        out
    }

    pub async fn get(&self, id: &str) -> Result<AgentRuntime> {
        Ok(self.host.container(self.spec(id)?).status().await)
    }

    pub async fn create(&self, spec: RuntimeSpec) -> Result<AgentRuntime> {
        check_id(&spec.id)?;
        let _g = self.lock(&spec.id).await;
        if self.host.runtimes_dir().join(&spec.id).exists() {
            return Err(Error::Conflict(format!(
                "runtime {} already exists on host {}",
                spec.id, self.host.name
            )));
        }
        let c = self.host.container(spec);
        let timings = c.create().await?;
        let mut st = c.status().await;
        st.timings = timings;
        Ok(st)
    }

    /// Prepares this host ahead of a migration's restore of `spec` (netns, writable layer), while
    /// the source still runs. Refused where the runtime already has a container or files here,
    /// unless those are an earlier preparation for it (replaced). On failure nothing stays.
    pub async fn prepare(&self, spec: RuntimeSpec) -> Result<Timings> {
        check_id(&spec.id)?;
        let _g = self.lock(&spec.id).await;
        let c = self.host.container(spec);
        if self.host.runc.state(c.id()).await?.is_some()
            || (c.dir().join("runtime.json").exists() && !c.only_prepared())
        {
            return Err(Error::Conflict(format!(
                "runtime {} already exists on host {}",
                c.spec.id, self.host.name
            )));
        }
        match c.prepare_ahead().await {
            Ok(t) => Ok(t),
            Err(e) => {
                c.destroy().await;
                c.remove_files();
                Err(e)
            }
        }
    }

    /// Stops the container and frees its host resources; its files stay (see [`Agent::remove`]).
    pub async fn stop(&self, id: &str) -> Result<AgentRuntime> {
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        c.destroy().await;
        Ok(c.status().await)
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        c.destroy().await;
        c.remove_files();
        Ok(())
    }

    pub async fn freeze(&self, id: &str, frozen: bool) -> Result<AgentRuntime> {
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        if frozen {
            c.freeze().await?
        } else {
            c.thaw().await?
        }
        Ok(c.status().await)
    }

    pub async fn checkpoint(
        &self,
        id: &str,
        snapshot_id: &str,
        leave_running: bool,
    ) -> Result<SnapshotInfo> {
        self.criu.require()?;
        check_id(snapshot_id)?;
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        let dest = self.host.snapshots_dir().join(snapshot_id);
        let (m, timings) = c
            .checkpoint(&dest, snapshot_id, leave_running, &self.versions)
            .await?;
        Ok(store::info(&self.host.name, snapshot_id, &m, timings))
    }

    pub async fn restore(
        &self,
        snapshot_id: &str,
        spec: RuntimeSpec,
        verify: bool,
        lazy_from: Option<&str>,
    ) -> Result<AgentRuntime> {
        self.criu.require()?;
        check_id(&spec.id)?;
        let dir = self.snapshot_dir(snapshot_id)?;
        let _g = self.lock(&spec.id).await;
        let c = self.host.container(spec);
        let restored = match lazy_from {
            Some(ps) => c.restore_lazy(&dir, ps).await,
            None => c.restore(&dir, verify).await,
        };
        let timings: Timings = match restored {
            Ok(t) => t,
            // Refused before the restore took the prepared target over (no image, say): what
            // was prepared for it goes, as the restore's own failures remove what they made.
            Err(e) => {
                if c.only_prepared() {
                    c.destroy().await;
                    c.remove_files();
                }
                return Err(e);
            }
        };
        let mut st = c.status().await;
        st.timings = timings;
        Ok(st)
    }

    pub fn snapshot_dir(&self, id: &str) -> Result<std::path::PathBuf> {
        check_id(id)?;
        let d = self.host.snapshots_dir().join(id);
        if !d.join(ferry_snapshot::MANIFEST_NAME).exists() {
            return Err(Error::NotFound(format!(
                "no snapshot {id} on host {}",
                self.host.name
            )));
        }
        Ok(d)
    }

    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        store::list(&self.host)
    }

    pub fn snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        let d = self.snapshot_dir(id)?;
        let m = ferry_snapshot::Manifest::read_from_dir(&d)?;
        Ok(store::info(&self.host.name, id, &m, Timings::new()))
    }

    /// Verifies every file of a stored snapshot (size and sha256) against its manifest.
    pub async fn verify_snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        let d = self.snapshot_dir(id)?;
        let m = tokio::task::spawn_blocking(move || ferry_snapshot::verify_dir(&d))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(store::info(&self.host.name, id, &m, Timings::new()))
    }

    /// Imports an archive read from `input` as snapshot `id`, verifying its content `when` says
    /// (`Later`: every restore of it verifies first). Blocking.
    pub fn import_blocking(
        &self,
        id: &str,
        input: impl std::io::Read,
        when: ferry_snapshot::Verify,
    ) -> Result<SnapshotInfo> {
        check_id(id)?;
        let dest = self.host.snapshots_dir().join(id);
        let m = ferry_snapshot::import_archive_with(input, &dest, when).map_err(|e| match &e {
            ferry_snapshot::SnapshotError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC) => Error::Unavailable(format!(
                "host {} has no space left for snapshot {id} ({e}): free space in its state dir ({}) or choose another host",
                self.host.name,
                self.host.snapshots_dir().display()
            )),
            _ => e.into(),
        })?;
        Ok(store::info(&self.host.name, id, &m, Timings::new()))
    }

    pub fn remove_snapshot(&self, id: &str) -> Result<()> {
        let d = self.snapshot_dir(id)?;
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }
}

/// Ids become path and netns names: keep them to a safe alphabet.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid id {id:?}: use 1-40 letters, digits, '-' or '_'"
        )))
    }
}
