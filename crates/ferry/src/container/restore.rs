//! `restore`: a running runtime from a verified snapshot directory, under the snapshot's identity
//! or a new one (new id, name and addresses: a fork).
//!
//! Sequence: verify every checksum → writable layer from the snapshot → netns with the spec's
//! addresses → overlay root → config.json for this host → `runc restore` → wait until MRP answers.
//! On failure everything made is removed again and the snapshot is untouched.
//!
//! Does not (yet): lazy restore (post-copy); see the migration module.

use super::{ms, Container};
use crate::api::Timings;
use crate::sys::runc::CriuOpts;
use crate::{Error, Result};
use std::path::Path;
use std::time::Instant;

impl Container<'_> {
    pub async fn restore(&self, snapshot: &Path, verify: bool) -> Result<Timings> {
        let t0 = Instant::now();
        let mut t = Timings::new();
        if verify {
            let dir = snapshot.to_path_buf();
            tokio::task::spawn_blocking(move || ferry_snapshot::verify_dir(&dir)).await.map_err(|e| Error::Internal(e.to_string()))??;
            t.insert("verify_ms".into(), ms(t0));
        }
        if let Some(s) = self.host.runc.state(self.id()).await? {
            return Err(Error::Conflict(format!("runtime {} already has a container on host {} (it is {})", self.spec.name, self.host.name, s.status)));
        }
        self.require_image()?;
        let result = async {
            let t1 = Instant::now();
            self.prepare(Some(&snapshot.join("upper"))).await?;
            t.insert("prepare_ms".into(), ms(t1));
            let t2 = Instant::now();
            let work = self.dir().join("criu-restore");
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work)?;
            let opts = CriuOpts { image: snapshot.join("criu"), work, ..Default::default() };
            self.host.runc.restore(self.id(), &self.bundle(), &opts, &self.runc_log()).await?;
            crate::sys::netns::claim_route(&self.net()).await?;
            t.insert("restore_ms".into(), ms(t2));
            let t3 = Instant::now();
            self.wait_ready().await?;
            t.insert("ready_ms".into(), ms(t3));
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            self.destroy().await;
            self.remove_files();
            return Err(e);
        }
        t.insert("total_ms".into(), ms(t0));
        Ok(t)
    }
}
