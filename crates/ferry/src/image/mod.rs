//! Runtime images on a host's disk. Two kinds, both named, both listed by `ferry image ls`:
//!
//! - **built**: a directory made by `ferry image build` / `scripts/setup.sh` (debootstrap + pip),
//!   `IMAGES/NAME/rootfs` with a `.complete` marker, as ferry always had (`mrmd-python`);
//! - **imported**: an OCI image layout or a `docker save` / `podman save` tarball ([`oci`]).
//!
//! ```text
//! IMAGES/
//!   mrmd-python/{rootfs/,.complete,image-id}            built
//!   python_3.12-slim/{image.json,rootfs ->,.complete}    imported: record + link to its rootfs
//!   .store/blobs/sha256/HEX                              verified blobs (manifest, config, layers)
//!   .store/rootfs/HEX/                                   one flattened rootfs per image config
//!   .store/tmp/                                          staging (removed at start)
//! ```
//!
//! Blobs are content-addressed and shared between images; a rootfs is keyed by the image's config
//! digest, so the same image under two names is unpacked once. A runtime mounts the rootfs
//! read-only as its overlay's lower layer.

pub mod oci;
pub mod unpack;
mod user;

pub use user::RunUser;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What an image asks of the process that runs in it (from the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
}

/// An image as a host has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageRecord {
    /// `NAME` or `NAME:TAG`.
    pub name: String,
    /// `sha256:...` of the image config (the image id); `local:ID` for a built image.
    pub digest: String,
    /// `built` or `imported`.
    pub source: String,
    #[serde(default)]
    pub manifest_digest: Option<String>,
    #[serde(default)]
    pub config: ImageConfig,
    /// Blobs (manifest, config, layers) it needs in the store, by digest.
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Uncompressed layer digests (diff ids), bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Bytes of its layers as stored (0 for a built image: not measured).
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub created_at: Option<String>,
    /// Where `mrmd-python` is in it (found when listed); without it no runtime can run the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrp_server: Option<String>,
}

impl ImageRecord {
    pub fn sendable(&self) -> bool {
        self.source == "imported"
    }

    /// The image's PATH (ferry's default when it sets none).
    pub fn path_env(&self) -> &str {
        self.config
            .env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
    }
}

/// PATH of a runtime whose image sets none.
pub const DEFAULT_PATH: &str =
    "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `mrmd-python` (the MRP server every runtime runs) is on the image's PATH, if anywhere.
pub fn find_server(rootfs: &Path, path: &str) -> Option<String> {
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/mrmd-python", d.trim_end_matches('/')))
        .find(|p| {
            unpack::resolve_in_root(rootfs, Path::new(p.trim_start_matches('/')))
                .is_ok_and(|f| f.is_file())
        })
}

/// Image names: `NAME[:TAG]`, letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<()> {
    let (n, tag) = name.split_once(':').unwrap_or((name, "latest"));
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !s.starts_with(['.', '-'])
    };
    if part(n) && part(tag) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid image name {name:?}: use NAME or NAME:TAG with letters, digits, '.', '_' or '-' (e.g. python:3.12-slim)")))
    }
}

/// One host's images.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub dir: PathBuf,
}

static STORE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> ImageStore {
        ImageStore { dir: dir.into() }
    }

    /// The directory of image `name` (`:` becomes `_`).
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name.replace(':', "_"))
    }
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join(".store")
    }
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(digest)?;
        Ok(self.store_dir().join("blobs/sha256").join(hex))
    }
    pub fn rootfs_of_digest(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.store_dir().join("rootfs").join(digest_hex(digest)?))
    }
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.store_dir().join("tmp")
    }

    /// The root filesystem a runtime of image `name` mounts (resolved to its real directory).
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let p = self.image_dir(name).join("rootfs");
        std::fs::canonicalize(&p).unwrap_or(p)
    }

    /// Removes staging left by an import that was cut off (it was never visible).
    pub fn clean_staging(&self) {
        let _ = std::fs::remove_dir_all(self.tmp_dir());
    }

    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let d = self.image_dir(name);
        if !d.join(".complete").exists() {
            return Err(Error::NotFound(format!("no image {name:?} in {} (see `ferry image ls`; import one with `ferry image import FILE` or build it with `ferry image build`)", self.dir.display())));
        }
        let rec = match std::fs::read(d.join("image.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("{}: {e}", d.join("image.json").display())))?,
            Err(_) => built_record(name, &d),
        };
        Ok(self.with_server(rec))
    }

    pub(crate) fn with_server(&self, mut rec: ImageRecord) -> ImageRecord {
        rec.mrp_server = find_server(&self.rootfs(&rec.name), rec.path_env());
        rec
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<ImageRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                !e.file_name().to_string_lossy().starts_with('.')
                    && e.path().join(".complete").exists()
            })
            .filter_map(|e| match std::fs::read(e.path().join("image.json")) {
                Ok(b) => serde_json::from_slice(&b).ok(),
                Err(_) => Some(built_record(&e.file_name().to_string_lossy(), &e.path())),
            })
            .map(|r| self.with_server(r))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Removes image `name` and whatever of the store no image needs any more.
    pub fn remove(&self, name: &str) -> Result<ImageRecord> {
        let _g = STORE_LOCK.lock().unwrap();
        let rec = self.get(name)?;
        std::fs::remove_dir_all(self.image_dir(name))?;
        self.gc();
        Ok(rec)
    }

    /// Drops unpacked rootfs dirs and blobs that no image record refers to.
    fn gc(&self) {
        let images = self.list();
        let keep_rootfs: std::collections::HashSet<String> = images
            .iter()
            .filter_map(|r| digest_hex(&r.digest).ok().map(str::to_string))
            .collect();
        let keep_blobs: std::collections::HashSet<String> = images
            .iter()
            .flat_map(|r| r.blobs.iter())
            .filter_map(|d| digest_hex(d).ok().map(str::to_string))
            .collect();
        for (sub, keep) in [("rootfs", &keep_rootfs), ("blobs/sha256", &keep_blobs)] {
            for e in std::fs::read_dir(self.store_dir().join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !keep.contains(&*e.file_name().to_string_lossy()) {
                    tracing::info!(path = %e.path().display(), "removing an image file no image needs");
                    let _ = if e.path().is_dir() {
                        std::fs::remove_dir_all(e.path())
                    } else {
                        std::fs::remove_file(e.path())
                    };
                }
            }
        }
    }

    /// The user, environment and directories a runtime of image `name` runs with.
    pub fn run_user(&self, name: &str) -> Result<RunUser> {
        let rec = self.get(name)?;
        user::resolve(&self.rootfs(name), rec.config.user.as_deref())
    }
}

fn built_record(name: &str, dir: &Path) -> ImageRecord {
    let id = std::fs::read_to_string(dir.join("image-id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let created = std::fs::metadata(dir.join(".complete"))
        .and_then(|m| m.modified())
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
    ImageRecord {
        name: name.into(),
        digest: format!("local:{id}"),
        source: "built".into(),
        manifest_digest: None,
        config: ImageConfig::default(),
        blobs: vec![],
        layers: vec![],
        size_bytes: 0,
        created_at: created,
        mrp_server: None,
    }
}

/// The hex part of `sha256:HEX`, checked (it becomes a file name).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(hex)
        }
        _ => Err(Error::Invalid(format!(
            "unsupported digest {digest:?}: ferry takes sha256 digests"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["mrmd-python", "python:3.12-slim", "a_b.c:v1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", "a:b:c", ":x", "x:", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex("md5:abc").is_err());
    }
}
