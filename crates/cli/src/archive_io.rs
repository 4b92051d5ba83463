//! Snapshot archives between a file and the control API, streamed both ways.

use crate::client::Client;
use anyhow::{bail, Context, Result};
use ferry_core::api::Snapshot;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// Streams a snapshot's archive into `file` (written beside it first, renamed when complete).
pub async fn export(c: &Client, id: &str, file: &std::path::Path) -> Result<u64> {
    let r = c
        .send_raw(c.request(reqwest::Method::GET, &format!("/snapshots/{id}/export")))
        .await?;
    let tmp = file.with_extension("partial");
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut n = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                bail!("export of {id} broke off: {e}");
            }
        };
        n += chunk.len() as u64;
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    tokio::fs::rename(&tmp, file).await?;
    Ok(n)
}

pub async fn import(c: &Client, file: &std::path::Path, host: Option<String>) -> Result<Snapshot> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    let q = host.map(|h| format!("?host={h}")).unwrap_or_default();
    c.send(
        c.request(reqwest::Method::POST, &format!("/snapshots/import{q}"))
            .body(body),
    )
    .await
    .with_context(|| format!("import of {} refused", file.display()))
}
