//! `restore`: a running runtime from a verified snapshot directory, under the snapshot's identity
//! or a new one (new id, name and addresses: a fork).
//!
//! Sequence: start verifying every checksum → writable layer from the snapshot → netns with the
//! spec's addresses → overlay root → config.json for this host → `runc restore` with the processes
//! left stopped → once every sha256 matched, continue them → wait until MRP answers. Verification
//! and CRIU's restore read the same files at the same time; nothing of the snapshot runs before it
//! verified (a mismatch kills the stopped processes). On failure everything made is removed again
//! and the snapshot is untouched. A failure after the processes were continued (they may have
//! run something: a request carried in a restored connection, a background thread) is reported
//! as [`Error::Diverged`], so that the caller never resumes another copy of the same state as if
//! nothing had run.
//!
//! Does not (yet): lazy restore (post-copy); see the migration module.

use super::{config, ms, Container};
use crate::api::Timings;
use crate::sys::runc::CriuOpts;
use crate::{Error, Result};
use std::path::Path;
use std::time::Instant;

impl Container<'_> {
    pub async fn restore(&self, snapshot: &Path, verify: bool) -> Result<Timings> {
        let t0 = Instant::now();
        let mut t = Timings::new();
        if let Some(s) = self.host.runc.state(self.id()).await? {
            return Err(Error::Conflict(format!(
                "runtime {} already has a container on host {} (it is {})",
                self.spec.name, self.host.name, s.status
            )));
        }
        self.require_image()?;
        let verifying = verify.then(|| {
            let dir = snapshot.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let r = ferry_snapshot::verify_dir(&dir);
                (r, ms(t0))
            })
        });
        let continued = std::sync::atomic::AtomicBool::new(false);
        let result = async {
            let t1 = Instant::now();
            self.prepare(Some(&snapshot.join("upper"))).await?;
            t.insert("prepare_ms".into(), ms(t1));
            let t2 = Instant::now();
            let work = self.dir().join("criu-restore");
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work)?;
            let opts = CriuOpts {
                image: snapshot.join("criu"),
                work: work.clone(),
                ..Default::default()
            };
            // The option stays in the config until the processes are continued: an agent that dies
            // in between finds it at its start and removes the never-verified copy.
            if verify {
                config::restore_stopped(self, true)?;
            }
            let restored = self
                .host
                .runc
                .restore(self.id(), &self.bundle(), &opts, &self.runc_log())
                .await;
            // A damaged snapshot is reported as such, even where CRIU stumbled over it first.
            if let Some(v) = verifying {
                let (verified, verify_ms) = v.await.map_err(|e| Error::Internal(e.to_string()))?;
                verified?;
                t.insert("verify_ms".into(), verify_ms);
            }
            restored?;
            // Without leave-stopped, the processes run as soon as runc restore returns.
            continued.store(!verify, std::sync::atomic::Ordering::SeqCst);
            t.insert("restore_ms".into(), ms(t2));
            t.extend(crate::sys::criu_stats::read(&work));
            if verify {
                continued.store(true, std::sync::atomic::Ordering::SeqCst);
                self.resume_stopped()?;
                config::restore_stopped(self, false)?;
            }
            crate::sys::netns::claim_route(&self.net()).await?;
            let t3 = Instant::now();
            self.wait_ready().await?;
            t.insert("ready_ms".into(), ms(t3));
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            self.destroy().await;
            self.remove_files();
            if continued.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Diverged(format!(
                    "runtime {}: the restored copy on host {} was continued, then failed ({e}); it was destroyed",
                    self.spec.name, self.host.name
                )));
            }
            return Err(e);
        }
        t.insert("total_ms".into(), ms(t0));
        Ok(t)
    }

    /// Continues the processes a restore left stopped.
    fn resume_stopped(&self) -> Result<()> {
        let procs = crate::sys::cgroup::procs(&self.cgroup_path());
        if procs.is_empty() {
            return Err(Error::Internal(format!(
                "runtime {}: no processes in its cgroup after the restore",
                self.spec.name
            )));
        }
        for pid in procs {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            )
            .map_err(|e| {
                Error::Internal(format!(
                    "continuing process {pid} of {}: {e}",
                    self.spec.name
                ))
            })?;
        }
        Ok(())
    }
}
