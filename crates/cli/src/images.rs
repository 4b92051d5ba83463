//! `ferry image ...`: build (locally, with the embedded build script), import (a file or an OCI
//! layout directory streamed to the control API, with a byte progress bar), list, remove.

use crate::args::ImageCmd;
use crate::client::Client;
use crate::output::{mb, print_json, table};
use anyhow::{bail, Context, Result};
use ferry_core::api::HostImage;
use futures::StreamExt;
use std::io::IsTerminal;
use std::path::Path;

const BUILD_SCRIPT: &str = include_str!("../../../scripts/build-image.sh");
const HOOKS: &str = include_str!("../../../image/ferry_runtime_hooks.py");
const LOCK: &str = include_str!("../../../image/requirements.lock");

pub async fn run(cmd: ImageCmd, json: bool, client: impl Fn() -> Result<Client>) -> Result<()> {
    match cmd {
        ImageCmd::Build {
            name,
            images,
            force,
        } => build(&name, &images, force).await?,
        ImageCmd::Import { file, name, host } => {
            let c = client()?;
            let img = import(&c, &file, name.as_deref(), host.as_deref(), json).await?;
            if json {
                print_json(&img);
            } else {
                println!(
                    "{} imported on {} ({}, {})",
                    img.image.name,
                    img.host,
                    img.image.digest,
                    mb(img.image.size_bytes)
                );
                if img.image.mrp_server.is_none() {
                    eprintln!("warning: {} has no mrmd-python on its PATH: runtimes cannot run it until it does (python3 -m pip install mrmd-python in the image)", img.image.name);
                }
            }
        }
        ImageCmd::Ls { host } => {
            let q = host.map(|h| format!("?host={h}")).unwrap_or_default();
            let v: Vec<HostImage> = client()?.get(&format!("/images{q}")).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "NAME".into(),
                "HOST".into(),
                "SOURCE".into(),
                "DIGEST".into(),
                "SIZE".into(),
                "CREATED".into(),
            ]];
            for i in v {
                let short: String = i.image.digest.chars().take(19).collect();
                let size = if i.image.size_bytes > 0 {
                    mb(i.image.size_bytes)
                } else {
                    "-".into()
                };
                rows.push(vec![
                    i.image.name,
                    i.host,
                    i.image.source,
                    short,
                    size,
                    i.image.created_at.unwrap_or_default(),
                ]);
            }
            table(rows);
        }
        ImageCmd::Rm { name, host } => {
            let q = host.map(|h| format!("?host={h}")).unwrap_or_default();
            let v: Vec<HostImage> = client()?.delete(&format!("/images/{name}{q}")).await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{name} removed from {}",
                    v.iter()
                        .map(|h| h.host.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn build(name: &str, images: &Path, force: bool) -> Result<()> {
    ferry_core::image::check_name(name)?;
    let dir = ferry_core::image::ImageStore::new(images).image_dir(name);
    if force {
        let _ = std::fs::remove_file(dir.join(".complete"));
        let _ = std::fs::remove_file(dir.join(".debootstrap-done"));
    }
    let hooks = tempfile::NamedTempFile::new().context("temp file for the runtime hooks")?;
    std::fs::write(hooks.path(), HOOKS)?;
    let lock = tempfile::NamedTempFile::new().context("temp file for the package lock")?;
    std::fs::write(lock.path(), LOCK)?;
    let st = tokio::process::Command::new("bash")
        .args([
            "-c",
            BUILD_SCRIPT,
            "build-image.sh",
            &images.display().to_string(),
            name,
            &hooks.path().display().to_string(),
            &lock.path().display().to_string(),
        ])
        .status()
        .await
        .context("running bash")?;
    if !st.success() {
        bail!("building image {name} failed (see the output above)");
    }
    Ok(())
}

/// Bytes under a path (a file, or every file of a directory).
fn size_of(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| size_of(&e.path()))
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Streams `file` (a tarball, or an OCI layout directory tarred on the fly) to the control API.
pub async fn import(
    c: &Client,
    file: &Path,
    name: Option<&str>,
    host: Option<&str>,
    quiet: bool,
) -> Result<HostImage> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot open {}", file.display()))?;
    let stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> = if meta
        .is_dir()
    {
        if !file.join("index.json").is_file() {
            bail!("{} is a directory without index.json: give an OCI image layout directory or a tarball", file.display());
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let dir = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let w = ferry_core::agent::api::ChannelWriter::new(tx.clone());
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            let r = b.append_dir_all(".", &dir).and_then(|_| {
                b.into_inner()
                    .and_then(|mut w| std::io::Write::flush(&mut w))
            });
            if let Err(e) = r {
                let _ = tx.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
            .boxed()
    } else {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).boxed()
    };
    let pb = if !quiet && std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(size_of(file));
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
            )
            .unwrap(),
        );
        pb.set_message(format!("importing {}", file.display()));
        Some(pb)
    } else {
        None
    };
    let pb2 = pb.clone();
    let stream = stream.inspect(move |c| {
        if let (Some(pb), Ok(b)) = (&pb2, c) {
            pb.inc(b.len() as u64);
            if pb.position() >= pb.length().unwrap_or(u64::MAX) {
                pb.set_message("verifying and unpacking layers");
            }
        }
    });
    let mut q: Vec<(&str, &str)> = Vec::new();
    if let Some(h) = host {
        q.push(("host", h));
    }
    if let Some(n) = name {
        q.push(("name", n));
    }
    let r = c
        .send(
            c.request(reqwest::Method::POST, "/images/import")
                .query(&q)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
        .with_context(|| format!("import of {} refused", file.display()));
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    r
}
