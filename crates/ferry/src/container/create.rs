//! `create`: network namespace + veth, overlay root, config.json, `runc run`, wait until MRP answers.
//!
//! Does: everything needed for a fresh runtime, undone again if any step fails.
//! Does not: fetch images itself (the control plane sends a missing one first), user namespaces, GPUs.

use super::{config, ms, Container};
use crate::api::Timings;
use crate::sys::{cgroup, layer, mount, netns};
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// How long a new or restored runtime may take before its MRP server answers.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// In a runtime's dir: the spec it was prepared ahead for (removed when a restore takes it over).
const PREPARED: &str = "prepared.json";

impl Container<'_> {
    pub async fn create(&self) -> Result<Timings> {
        self.require_image()?;
        if self.host.runc.state(self.id()).await?.is_some() {
            return Err(Error::Conflict(format!(
                "a container {} already exists on host {}",
                self.id(),
                self.host.name
            )));
        }
        let t0 = Instant::now();
        let mut t = Timings::new();
        let result = async {
            self.prepare(None).await?;
            netns::claim_route(&self.net()).await?;
            t.insert("prepare_ms".into(), ms(t0));
            let t1 = Instant::now();
            self.host
                .runc
                .run(self.id(), &self.bundle(), &self.runc_log())
                .await?;
            t.insert("start_ms".into(), ms(t1));
            let t2 = Instant::now();
            self.wait_ready().await?;
            t.insert("ready_ms".into(), ms(t2));
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            self.destroy().await;
            let _ = std::fs::remove_dir_all(self.dir());
            return Err(e);
        }
        t.insert("total_ms".into(), ms(t0));
        Ok(t)
    }

    /// The runtime's image must be on this host, with an MRP server, before anything is made for it.
    pub(crate) fn require_image(&self) -> Result<()> {
        self.run_config().map(|_| ()).map_err(|e| match e {
            Error::NotFound(_) => Error::Invalid(format!(
                "image {:?} is not on host {} (looked in {}): import it there (`ferry image import FILE --host {}`) or build it (`ferry image build`), or use a host that has it",
                self.spec.image,
                self.host.name,
                self.host.images_dir.display(),
                self.host.name
            )),
            other => other,
        })
    }

    /// Lays out the runtime's dir, network and root filesystem. With `upper_from`, the writable
    /// layer starts as a copy of that directory (a snapshot's), otherwise empty.
    /// Made ahead (see [`Container::prepare_ahead`]) for exactly this spec: the layer's fresh
    /// filesystem and the netns are there already and are kept.
    fn prepared_ahead(&self) -> bool {
        let marker = self.dir().join(PREPARED);
        let ours = std::fs::read(&marker)
            .ok()
            .zip(serde_json::to_vec(&self.spec).ok())
            .is_some_and(|(a, b)| a == b);
        let _ = std::fs::remove_file(marker);
        ours && netns::exists(&self.net().netns) && mount::is_mounted(&self.layer())
    }

    /// What a restore needs that does not depend on the snapshot, made while the source still
    /// runs: the runtime's dir and spec, the writable layer's fresh filesystem (of the plan's disk
    /// size) and the netns with its addresses and rules. The restore then only copies the
    /// snapshot's files in, mounts the overlay and writes config.json. Undone by
    /// [`Container::destroy`] + [`Container::remove_files`] like any other state.
    pub async fn prepare_ahead(&self) -> Result<Timings> {
        let t0 = Instant::now();
        let mut t = Timings::new();
        std::fs::create_dir_all(self.dir())?;
        self.save_spec()?;
        mount::unmount(&self.rootfs())?;
        layer::create(&self.layer_image(), self.spec.plan.disk_mb(), &self.layer()).await?;
        t.insert("layer_ms".into(), ms(t0));
        let t1 = Instant::now();
        let net = self.net();
        if netns::exists(&net.netns) {
            netns::teardown(&net).await;
        }
        netns::setup(&net).await?;
        // A restore follows: no packet until CRIU restored every socket (CRIU lifts it).
        net.lock_traffic().await?;
        t.insert("netns_ms".into(), ms(t1));
        std::fs::write(
            self.dir().join(PREPARED),
            serde_json::to_vec(&self.spec).map_err(|e| Error::Internal(e.to_string()))?,
        )?;
        t.insert("total_ms".into(), ms(t0));
        Ok(t)
    }

    /// Whether this runtime's files are only a target prepared ahead of a restore that never came.
    pub fn only_prepared(&self) -> bool {
        self.dir().join(PREPARED).exists()
    }

    pub(crate) async fn prepare(&self, upper_from: Option<&std::path::Path>) -> Result<()> {
        let ahead = self.prepared_ahead();
        std::fs::create_dir_all(self.dir())?;
        self.save_spec()?;
        mount::unmount(&self.rootfs())?;
        let _ = std::fs::remove_dir_all(self.dir().join("upper"));
        let _ = std::fs::remove_dir_all(self.dir().join("overlay-work"));
        // A fresh filesystem of the plan's disk size for the writable layer, every time: a restore
        // or a move onto a larger plan gets the larger quota.
        let disk_mb = self.spec.plan.disk_mb();
        if !ahead {
            layer::create(&self.layer_image(), disk_mb, &self.layer()).await?;
        }
        match upper_from {
            Some(src) => super::copy_tree(src, &self.upper()).await.map_err(|e| {
                if layer::is_full(&e) {
                    Error::Invalid(format!(
                        "the snapshot's files do not fit plan {}'s {disk_mb} MB disk: restore it on a larger plan (--plan, or --memory for a custom plan with more disk)",
                        self.spec.plan.name
                    ))
                } else {
                    e
                }
            })?,
            None => std::fs::create_dir_all(self.upper())?,
        }
        let net = self.net();
        if !ahead {
            if netns::exists(&net.netns) {
                netns::teardown(&net).await;
            }
            netns::setup(&net).await?;
            // A restore: no packet reaches the namespace, not even over its loopback, until CRIU
            // restored every socket (a half-restored connection would answer with a reset). CRIU
            // lifts it through the runtime's action script before the processes run.
            if upper_from.is_some() {
                net.lock_traffic().await?;
            }
        }
        mount::mount_overlay(
            &self.host.image_rootfs(&self.spec.image),
            &self.upper(),
            &self.overlay_work(),
            &self.rootfs(),
        )?;
        // Restored under other addresses (a fork, a copy under a new name), the TCP connections
        // the snapshot holds cannot come back: CRIU restores them closed.
        let new_address = upper_from
            .and_then(|u| u.parent())
            .and_then(snapshot_ip)
            .is_some_and(|ip| ip != self.spec.ip.to_string());
        config::write(self, new_address)?;
        Ok(())
    }

    pub(crate) async fn wait_ready(&self) -> Result<()> {
        crate::mrp::wait_ready(&self.mrp_url(), READY_TIMEOUT, || self.is_alive())
            .await
            .map_err(|e| {
                let oom = cgroup::stats(&self.cgroup_path())
                    .map(|s| s.oom_kills > 0)
                    .unwrap_or(false);
                let log = crate::sys::cmd::tail(&self.runtime_log(), 10);
                let hint = if oom {
                    " (it was OOM-killed: give it a larger plan)"
                } else {
                    ""
                };
                Error::Internal(format!("{e}{hint}\nruntime log:\n{log}"))
            })
    }
}

/// The address the runtime in snapshot dir `snap` had.
fn snapshot_ip(snap: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(snap.join(ferry_snapshot::MANIFEST_NAME)).ok()?;
    let m = ferry_snapshot::Manifest::from_json(&bytes).ok()?;
    m.meta["spec"]["ip"].as_str().map(str::to_string)
}
