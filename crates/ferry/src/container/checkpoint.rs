//! `checkpoint`: a consistent snapshot of a running runtime.
//!
//! Sequence: freeze (cgroup freezer) → CRIU dump with the processes left in place (its memory
//! pages hashed as they are written) → copy the writable layer and the config while still frozen
//! → hash the rest into the manifest → then
//! either thaw (`--leave-running`) or destroy the container (stop). Because CRIU never kills the
//! processes and the container is destroyed only after the snapshot is complete on disk, any failure
//! on the way thaws the runtime instead: a failed checkpoint leaves it running.
//!
//! Does not (yet): incremental (pre-dump) snapshots, which need soft-dirty tracking.

use super::{ms, Container};
use crate::api::Timings;
use crate::sys::runc::CriuOpts;
use crate::{Error, Result};
use ferry_snapshot::{scan_dir_with, Manifest, FORMAT_VERSION};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The facts about this host that go into every manifest.
#[derive(Debug, Clone)]
pub struct Versions {
    pub criu: String,
    pub runc: String,
    pub kernel: String,
}

/// The top-level areas of a snapshot directory, in archive order.
pub const AREAS: [&str; 3] = ["criu", "config.json", "upper"];

impl Container<'_> {
    /// Snapshots the runtime into `dest` (which must not exist). With `leave_running` the runtime
    /// keeps running; without, it is stopped once the snapshot is safely written.
    pub async fn checkpoint(
        &self,
        dest: &Path,
        snapshot_id: &str,
        leave_running: bool,
        v: &Versions,
    ) -> Result<(Manifest, Timings)> {
        let t0 = Instant::now();
        self.freeze_for_checkpoint().await?;
        let result = self
            .dump_frozen(dest, snapshot_id, leave_running, v, true)
            .await;
        let mut t = match result {
            Ok((m, t)) => {
                if leave_running {
                    self.thaw().await?;
                } else {
                    self.destroy().await;
                }
                return Ok((m, with_total(t, t0)));
            }
            Err(e) => (e, Timings::new()),
        };
        // Failure: the runtime must keep running.
        let _ = std::fs::remove_dir_all(dest);
        let thawed = self.thaw().await;
        t.1.insert("total_ms".into(), ms(t0));
        Err(match thawed {
            Ok(()) => Error::Internal(format!(
                "checkpoint of {} failed; the runtime was left running: {}",
                self.spec.name, t.0
            )),
            Err(te) => Error::Internal(format!(
                "checkpoint of {} failed ({}) and thawing it failed too: {te}",
                self.spec.name, t.0
            )),
        })
    }

    /// Freezes a running runtime; refuses one that is not running.
    pub async fn freeze_for_checkpoint(&self) -> Result<()> {
        match self.host.runc.state(self.id()).await? {
            Some(s) if s.status == "running" => self.freeze().await,
            Some(s) if s.status == "paused" => Ok(()),
            Some(s) => Err(Error::Conflict(format!("runtime {} is not running (it is {}): only a running runtime can be checkpointed; restore it from a snapshot first", self.spec.name, s.status))),
            None => Err(Error::Conflict(format!("runtime {} is not running: only a running runtime can be checkpointed; restore it from a snapshot first", self.spec.name))),
        }
    }

    /// With the runtime frozen: CRIU dump into `dest/criu`, copy config and writable layer, write
    /// the manifest (with every sha256 if `hash`; a dump that is only streamed is hashed by the
    /// archive writer as it goes). Leaves the runtime frozen, whatever happens.
    pub async fn dump_frozen(
        &self,
        dest: &Path,
        snapshot_id: &str,
        leave_running: bool,
        v: &Versions,
        hash: bool,
    ) -> Result<(Manifest, Timings)> {
        let mut t = Timings::new();
        if dest.exists() {
            return Err(Error::Conflict(format!(
                "snapshot directory {} already exists",
                dest.display()
            )));
        }
        std::fs::create_dir_all(dest.join("criu"))?;
        let work = self.dir().join("criu-dump");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let opts = CriuOpts {
            image: dest.join("criu"),
            work: work.clone(),
            leave_running: true,
            ..Default::default()
        };
        // The memory pages are hashed while CRIU writes them (a dump to be streamed too: its
        // archive then carries these sums instead of hashing the pages again while frozen).
        let follower = ferry_snapshot::Follower::start(dest.join("criu"), "criu/", |n| {
            n.starts_with("pages-") && n.ends_with(".img")
        });
        let t1 = Instant::now();
        self.host
            .runc
            .checkpoint(self.id(), &opts, &self.runc_log())
            .await?;
        let known = tokio::task::spawn_blocking(move || follower.finish())
            .await
            .unwrap_or_default();
        t.insert("dump_ms".into(), ms(t1));
        t.extend(crate::sys::criu_stats::read(&work));
        let (manifest, pt) = self
            .package_with(dest, snapshot_id, leave_running, v, hash, &known)
            .await?;
        t.extend(pt);
        let _ = std::fs::remove_dir_all(&work);
        Ok((manifest, t))
    }

    /// After the CRIU images are in `dest/criu`: add the config and the writable layer (the runtime
    /// must still be frozen) and write the manifest with every file's sha256.
    pub async fn package(
        &self,
        dest: &Path,
        snapshot_id: &str,
        leave_running: bool,
        v: &Versions,
        hash: bool,
    ) -> Result<(Manifest, Timings)> {
        self.package_with(
            dest,
            snapshot_id,
            leave_running,
            v,
            hash,
            &Default::default(),
        )
        .await
    }

    /// As [`Container::package`], taking the sha256s in `known` (path → size, sha256) as given.
    async fn package_with(
        &self,
        dest: &Path,
        snapshot_id: &str,
        leave_running: bool,
        v: &Versions,
        hash: bool,
        known: &HashMap<String, (u64, String)>,
    ) -> Result<(Manifest, Timings)> {
        let mut t = Timings::new();
        let t2 = Instant::now();
        std::fs::copy(self.bundle().join("config.json"), dest.join("config.json"))?;
        super::copy_tree(&self.upper(), &dest.join("upper")).await?;
        t.insert("copy_layer_ms".into(), ms(t2));
        let t3 = Instant::now();
        let manifest = self
            .write_manifest(dest, snapshot_id, leave_running, v, hash, known.clone())
            .await?;
        t.insert("hash_ms".into(), ms(t3));
        Ok((manifest, t))
    }

    async fn write_manifest(
        &self,
        dest: &Path,
        snapshot_id: &str,
        leave_running: bool,
        v: &Versions,
        hash: bool,
        known: HashMap<String, (u64, String)>,
    ) -> Result<Manifest> {
        let dir = dest.to_path_buf();
        let entries =
            tokio::task::spawn_blocking(move || scan_dir_with(&dir, &AREAS, &known, hash))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
        let m = Manifest {
            format_version: FORMAT_VERSION,
            snapshot_id: snapshot_id.into(),
            runtime_id: self.spec.id.clone(),
            runtime_name: self.spec.name.clone(),
            plan: self.spec.plan.name.clone(),
            memory_mb: self.spec.plan.memory_mb,
            cpus: self.spec.plan.cpus,
            image_id: format!(
                "{}@{}",
                self.spec.image,
                self.host.image_id(&self.spec.image)
            ),
            criu_version: v.criu.clone(),
            runc_version: v.runc.clone(),
            kernel: v.kernel.clone(),
            created_at: chrono::Utc::now(),
            leave_running,
            meta: serde_json::json!({ "spec": self.spec }),
            entries,
        };
        m.write_to_dir(dest)?;
        Ok(m)
    }
}

fn with_total(mut t: Timings, t0: Instant) -> Timings {
    t.insert("total_ms".into(), ms(t0));
    t
}
