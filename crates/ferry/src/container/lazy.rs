//! `restore_lazy`: the target side of a lazy (post-copy) migration. The runtime resumes as soon as
//! everything but its memory is restored; pages arrive on fault and in the background from the
//! source's page server.
//!
//! The risk, and what ferry does about it: until the last page has arrived, part of the runtime's
//! memory exists only at the source. If the source dies (or the link breaks) before that, the
//! restored process cannot continue correctly. The lazy-pages daemon then exits with an error; ferry
//! kills the half-restored runtime and marks it `lost` (a `lost` file with the reason), so that the
//! control plane reports it lost and offers its last full snapshot — never a silently half-alive
//! runtime. While pages are pending a `lazy-pending` file says so.

use super::{ms, Container};
use crate::api::Timings;
use crate::sys::lazy;
use crate::sys::runc::CriuOpts;
use crate::{Error, Result};
use std::path::Path;
use std::time::Instant;

/// The hot list's file name, in a runtime's directory (written by the lazy-pages daemon) and in a
/// lazy dump's image directory (copied there by the source, read by the next target).
pub const HOT_PAGES: &str = "hot-pages";

/// The lazy-pages server's counts of the last lazy restore, in the runtime's directory.
pub const PAGE_STATS: &str = "lazy-stats.json";

/// Where a pre-copy move's page store and dirty list for migration `snapshot` are kept, in the
/// runtime's directory (written by `agent/precopy.rs`, read by the restore).
pub fn precopy_dir(runtime_dir: &Path, snapshot: &str) -> std::path::PathBuf {
    runtime_dir.join("precopy").join(snapshot)
}

impl Container<'_> {
    pub async fn restore_lazy(&self, snapshot: &Path, page_server: &str) -> Result<Timings> {
        let t0 = Instant::now();
        let mut t = Timings::new();
        if self.host.runc.state(self.id()).await?.is_some() {
            return Err(Error::Conflict(format!(
                "runtime {} already has a container on host {}",
                self.spec.name, self.host.name
            )));
        }
        self.require_image()?;
        if let Err(e) = self.prepare(Some(&snapshot.join("upper"))).await {
            // Whatever was made (netns, the layer's mount and loop device) goes again.
            self.destroy().await;
            self.remove_files();
            return Err(e);
        }
        let _ = std::fs::remove_file(self.dir().join("lost"));
        t.insert("prepare_ms".into(), ms(t0));
        let work = self.dir().join("criu-restore");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let image = snapshot.join("criu");
        // The pages this runtime touched first after its previous lazy move came with the
        // images; this move's first faults are recorded for the next one.
        let hot = image.join(HOT_PAGES);
        let record = self.dir().join(HOT_PAGES);
        // A pre-copy move: the pages its rounds pushed here are served from this host, except
        // those on the dirty list sent at the freeze (the store is used only with that list).
        let pre = snapshot
            .file_name()
            .map(|s| precopy_dir(&self.dir(), &s.to_string_lossy()));
        let (store, dirty) = match &pre {
            Some(d) => (d.join("pages"), d.join("dirty")),
            None => Default::default(),
        };
        let stats = self.dir().join(PAGE_STATS);
        let _ = std::fs::remove_file(&stats);
        let hints = lazy::Hints {
            hot: Some(&hot),
            record_faults: Some(&record),
            store: (store.is_file() && dirty.is_file()).then_some((&store, &dirty)),
            stats: Some(&stats),
        };
        if hints.store.is_some() {
            t.insert("precopy_store_bytes".into(), store.metadata()?.len() as f64);
        }
        let daemon = match lazy::start_daemon(
            self.host.outer_netns.as_deref(),
            &image,
            &work,
            page_server,
            hints,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                self.destroy().await;
                self.remove_files();
                return Err(e);
            }
        };
        std::fs::write(self.dir().join("lazy-pending"), page_server)?;
        let t1 = Instant::now();
        let opts = CriuOpts {
            image,
            work: work.clone(),
            lazy_restore: true,
            ..Default::default()
        };
        let mut daemon = daemon;
        // Set once `runc restore` returned: from then on the runtime's processes run, and a
        // failure must be reported as `Error::Diverged` (its source must never be resumed).
        let mut continued = false;
        let restored = async {
            let t = &mut t;
            // The restore itself faults pages in: if the page source dies meanwhile, the daemon
            // exits and the restore would wait forever. Stop it then.
            let mut rc = self.host.runc.restore_command(self.id(), &self.bundle(), &opts, &self.runc_log()).spawn()?;
            let mut daemon_ok = false;
            let st = loop {
                tokio::select! {
                    st = rc.wait() => break st?,
                    st = daemon.wait(), if !daemon_ok => match st {
                        Ok(s) if s.success() => daemon_ok = true, // every page arrived already
                        other => {
                            lazy::kill_group(&rc);
                            let _ = rc.wait().await;
                            return Err(Error::Unavailable(format!("memory pages stopped arriving during the restore (the lazy-pages daemon exited: {other:?}):\n{}", crate::sys::cmd::tail(&work.join("lazy-pages.log"), 4))));
                        }
                    },
                }
            };
            if !st.success() {
                return Err(Error::Internal(format!("runc restore --lazy-pages failed ({st}):\n{}", crate::sys::cmd::tail(&work.join("restore.log"), 8))));
            }
            continued = true;
            crate::sys::netns::claim_route(&self.net()).await?;
            t.insert("runc_restore_ms".into(), ms(t1));
            let ready = self.wait_ready();
            tokio::pin!(ready);
            loop {
                tokio::select! {
                    r = &mut ready => break r,
                    st = daemon.wait(), if !daemon_ok => match st {
                        Ok(s) if s.success() => daemon_ok = true,
                        other => return Err(Error::Unavailable(format!("memory pages stopped arriving before the runtime answered (the lazy-pages daemon exited: {other:?})"))),
                    },
                }
            }
        }
        .await;
        if let Err(e) = restored {
            lazy::kill_group(&daemon);
            self.destroy().await;
            self.remove_files();
            if continued {
                return Err(Error::Diverged(format!(
                    "runtime {}: the lazily restored copy on host {} was continued, then failed ({e}); it was destroyed",
                    self.spec.name, self.host.name
                )));
            }
            return Err(e);
        }
        t.insert("restore_ms".into(), ms(t1));
        t.insert("total_ms".into(), ms(t0));
        self.watch_pages(daemon, snapshot.to_path_buf(), work);
        Ok(t)
    }

    /// Waits in the background for the lazy-pages daemon: success → the runtime is complete and the
    /// page-less images are dropped; failure → the runtime is killed and marked lost.
    fn watch_pages(
        &self,
        mut daemon: tokio::process::Child,
        snapshot: std::path::PathBuf,
        work: std::path::PathBuf,
    ) {
        let host = self.host.clone();
        let spec = self.spec.clone();
        tokio::spawn(async move {
            let c = host.container(spec);
            let status = daemon.wait().await;
            let _ = std::fs::remove_file(c.dir().join("lazy-pending"));
            match status {
                Ok(s) if s.success() => {
                    tracing::info!(runtime = %c.spec.name, "all memory pages arrived");
                    let _ = std::fs::remove_dir_all(&snapshot);
                    let _ = std::fs::remove_dir_all(c.dir().join("precopy"));
                }
                other => {
                    let log = crate::sys::cmd::tail(&work.join("lazy-pages.log"), 4);
                    let reason = format!("its memory pages stopped arriving from the source before all were copied ({other:?}); the half-restored process was killed\n{log}");
                    tracing::error!(runtime = %c.spec.name, %reason, "lazy restore failed: runtime lost");
                    let _ = std::fs::write(c.dir().join("lost"), &reason);
                    c.destroy().await;
                }
            }
        });
    }
}
