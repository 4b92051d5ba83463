//! The seed's migration method, kept as `ferry bench`'s baseline and re-run on the same machine:
//! `runc checkpoint --leave-running` to a directory, a zstd-compressed tar archive written to a
//! file (podman's `--export`), the file copied over TCP, unpacked, `runc restore`. The runtime is
//! never frozen and keeps running at the source after its checkpoint, so what it does during the
//! copy is missing at the target. Not used by ferry's own operations.

use super::Agent;
use crate::api::{RuntimeSpec, Timings};
use crate::container::ms;
use crate::sys::cmd::run;
use crate::sys::runc::CriuOpts;
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

impl Agent {
    fn baseline_file(&self, snapshot_id: &str) -> Result<PathBuf> {
        super::check_id(snapshot_id)?;
        Ok(self
            .host
            .snapshots_dir()
            .join(format!("{snapshot_id}.baseline.tar.zst")))
    }

    /// Checkpoint (leave-running) + archive file. Returns the archive's size.
    pub async fn baseline_export(&self, id: &str, snapshot_id: &str) -> Result<(u64, Timings)> {
        self.criu.require()?;
        let file = self.baseline_file(snapshot_id)?;
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        let dir = self
            .host
            .snapshots_dir()
            .join(format!(".{snapshot_id}.baseline"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("criu"))?;
        let work = c.dir().join("criu-dump");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let mut t = Timings::new();
        let t0 = Instant::now();
        let opts = CriuOpts {
            image: dir.join("criu"),
            work,
            leave_running: true,
            ..Default::default()
        };
        c.host.runc.checkpoint(c.id(), &opts, &c.runc_log()).await?;
        std::fs::copy(c.bundle().join("config.json"), dir.join("config.json"))?;
        crate::container::copy_tree(&c.upper(), &dir.join("upper")).await?;
        t.insert("checkpoint_ms".into(), ms(t0));
        let t1 = Instant::now();
        let script = format!(
            "tar -C '{}' -cf - criu config.json upper | zstd -q -3 -T0 -o '{}'",
            dir.display(),
            file.display()
        );
        let r = run("sh", &["-c", &script]).await;
        let _ = std::fs::remove_dir_all(&dir);
        r?;
        t.insert("archive_ms".into(), ms(t1));
        Ok((std::fs::metadata(&file)?.len(), t))
    }

    /// Copies the archive file to the target agent over TCP.
    pub async fn baseline_send(
        &self,
        snapshot_id: &str,
        target_url: &str,
        token: &str,
    ) -> Result<Timings> {
        let file = self.baseline_file(snapshot_id)?;
        let t0 = Instant::now();
        let f = tokio::fs::File::open(&file)
            .await
            .map_err(|e| Error::NotFound(format!("{}: {e}", file.display())))?;
        let body =
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
        self.put_to_peer(
            target_url,
            token,
            &format!("/agent/v1/baseline/{snapshot_id}"),
            body,
        )
        .await?;
        let _ = std::fs::remove_file(&file);
        Ok([("transfer_ms".to_string(), ms(t0))].into_iter().collect())
    }

    pub async fn baseline_receive(&self, snapshot_id: &str, body: axum::body::Body) -> Result<u64> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let file = self.baseline_file(snapshot_id)?;
        let mut f = tokio::fs::File::create(&file).await?;
        let mut stream = body.into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Error::Unavailable(format!("baseline copy broke off: {e}")))?;
            n += chunk.len() as u64;
            f.write_all(&chunk).await?;
        }
        f.flush().await?;
        Ok(n)
    }

    /// Unpacks the received archive and restores it as `spec`.
    pub async fn baseline_restore(&self, snapshot_id: &str, spec: RuntimeSpec) -> Result<Timings> {
        self.criu.require()?;
        let file = self.baseline_file(snapshot_id)?;
        let dir = self
            .host
            .snapshots_dir()
            .join(format!(".{snapshot_id}.baseline"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut t = Timings::new();
        let t0 = Instant::now();
        let script = format!(
            "zstd -q -d -c '{}' | tar -C '{}' -xf -",
            file.display(),
            dir.display()
        );
        run("sh", &["-c", &script]).await?;
        t.insert("unpack_ms".into(), ms(t0));
        let _g = self.lock(&spec.id).await;
        let c = self.host.container(spec);
        let r = c.restore(&dir, false).await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&file);
        let rt = r?;
        t.insert(
            "restore_ms".into(),
            rt.get("total_ms").copied().unwrap_or_default(),
        );
        Ok(t)
    }
}
