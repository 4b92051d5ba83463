//! The MRMD notebook editor's browser bundle (`editor/mrmd.iife.js` of the npm package
//! `mrmd-electron`): fetched from the npm registry, checked against the registry's sha512
//! integrity, and kept in a directory where `ferry serve` finds it for `/notebook/NAME`.
//!
//! The directory holds `mrmd.iife.js` and `bundle.json` (package, version, integrity, tarball).

use crate::{Error, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const PACKAGE: &str = "mrmd-electron";
/// The version checked against ferry (the browser tests run it).
pub const DEFAULT_VERSION: &str = "0.5.4";
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";
pub const BUNDLE: &str = "mrmd.iife.js";
const ENTRY: &str = "package/editor/mrmd.iife.js";
const META: &str = "bundle.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Installed {
    pub package: String,
    pub version: String,
    /// The registry's `dist.integrity` of the tarball (`sha512-...`), verified before extracting.
    pub integrity: String,
    pub tarball: String,
    pub bytes: u64,
    #[serde(skip_deserializing)]
    pub path: PathBuf,
}

pub fn bundle_path(dir: &Path) -> PathBuf {
    dir.join(BUNDLE)
}

/// The bundle installed in `dir`, if any.
pub fn installed(dir: &Path) -> Option<Installed> {
    let meta: Installed = serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()?;
    let len = std::fs::metadata(bundle_path(dir)).ok()?.len();
    (len == meta.bytes).then(|| Installed {
        path: bundle_path(dir),
        ..meta
    })
}

#[derive(Deserialize)]
struct Dist {
    tarball: String,
    integrity: Option<String>,
}

#[derive(Deserialize)]
struct VersionMeta {
    dist: Dist,
}

/// Fetches `mrmd-electron@version` from `registry` and installs its editor bundle into `dir`
/// (nothing to do when that version is already there, unless `force`).
pub async fn install(dir: &Path, version: &str, registry: &str, force: bool) -> Result<Installed> {
    if let Some(i) = installed(dir) {
        if i.version == version && !force {
            return Ok(i);
        }
    }
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
    {
        return Err(Error::Invalid(format!("{version:?} is not a package version: give one like {DEFAULT_VERSION} (`npm view {PACKAGE} versions`)")));
    }
    let http = registry_client()?;
    let meta_url = format!("{}/{PACKAGE}/{version}", registry.trim_end_matches('/'));
    tracing::info!(url = %meta_url, "asking the npm registry");
    let r = http
        .get(&meta_url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| unreachable_registry(&meta_url, e))?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::NotFound(format!(
            "{PACKAGE}@{version} is not in {registry}: see `npm view {PACKAGE} versions`"
        )));
    }
    let meta: VersionMeta = r
        .error_for_status()
        .map_err(|e| unreachable_registry(&meta_url, e))?
        .json()
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "{meta_url} did not answer with package metadata: {e}"
            ))
        })?;
    let integrity = meta.dist.integrity.ok_or_else(|| Error::Unavailable(format!("{meta_url} gives no sha512 integrity for the tarball; refusing to install an unverifiable bundle")))?;
    let expected = parse_sha512(&integrity)?;
    tracing::info!(url = %meta.dist.tarball, "downloading the editor package");
    let tgz = http
        .get(&meta.dist.tarball)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| unreachable_registry(&meta.dist.tarball, e))?
        .bytes()
        .await
        .map_err(|e| unreachable_registry(&meta.dist.tarball, e))?;
    let got = sha2::Sha512::digest(&tgz);
    if got.as_slice() != expected.as_slice() {
        return Err(Error::Invalid(format!("{} does not match its registry integrity {integrity}: the download is damaged or tampered with; nothing was installed", meta.dist.tarball)));
    }
    let js = extract(&tgz)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
    crate::sys::host::write_atomically(&bundle_path(dir), &js)?;
    let inst = Installed {
        package: PACKAGE.into(),
        version: version.into(),
        integrity,
        tarball: meta.dist.tarball,
        bytes: js.len() as u64,
        path: bundle_path(dir),
    };
    std::fs::write(
        dir.join(META),
        serde_json::to_vec_pretty(&inst).expect("serializes"),
    )?;
    tracing::info!(path = %inst.path.display(), bytes = inst.bytes, "editor bundle installed");
    Ok(inst)
}

/// An HTTP client for the registry that trusts this system's CA certificates (ferry's own
/// clients trust only the fleet CA; see `tls.rs`).
fn registry_client() -> Result<reqwest::Client> {
    crate::tls::system_roots_client(
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)),
    )
    .map_err(|e| Error::Unavailable(format!("{e}: cannot check the npm registry's certificate")))
}

fn unreachable_registry(url: &str, e: reqwest::Error) -> Error {
    Error::Unavailable(format!("cannot fetch {url}: {e} (is the npm registry reachable? --registry or FERRY_NPM_REGISTRY chooses another)"))
}

/// `sha512-<base64>` → the 64 digest bytes.
fn parse_sha512(integrity: &str) -> Result<Vec<u8>> {
    // An SRI string may list several hashes; take the sha512 one.
    let b64 = integrity.split_whitespace().find_map(|h| h.strip_prefix("sha512-")).ok_or_else(|| Error::Unavailable(format!("integrity {integrity:?} has no sha512 hash; refusing to install an unverifiable bundle")))?;
    let d = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::Invalid(format!("integrity {integrity:?} is not valid base64: {e}")))?;
    if d.len() != 64 {
        return Err(Error::Invalid(format!(
            "integrity {integrity:?} is not a sha512 digest"
        )));
    }
    Ok(d)
}

/// The bundle's bytes from the package tarball (gzip'd tar).
fn extract(tgz: &[u8]) -> Result<Vec<u8>> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for entry in ar
        .entries()
        .map_err(|e| Error::Invalid(format!("the package is not a gzip'd tar: {e}")))?
    {
        let mut entry = entry.map_err(|e| Error::Invalid(format!("reading the package: {e}")))?;
        if entry.path().ok().as_deref() == Some(Path::new(ENTRY)) {
            let mut v = Vec::new();
            entry
                .read_to_end(&mut v)
                .map_err(|e| Error::Invalid(format!("reading {ENTRY}: {e}")))?;
            return Ok(v);
        }
    }
    Err(Error::Invalid(format!("the package has no {ENTRY}: this version of {PACKAGE} does not ship the browser bundle; try {DEFAULT_VERSION}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn extracts_only_the_bundle() {
        let t = tgz(&[("package/package.json", b"{}"), (ENTRY, b"var mrmd = {};")]);
        assert_eq!(extract(&t).unwrap(), b"var mrmd = {};");
        let err = extract(&tgz(&[("package/index.html", b"x")])).unwrap_err();
        assert!(
            err.to_string().contains("no package/editor/mrmd.iife.js"),
            "{err}"
        );
    }

    #[test]
    fn integrity_must_be_sha512() {
        let d = sha2::Sha512::digest(b"abc");
        let sri = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(d)
        );
        assert_eq!(parse_sha512(&sri).unwrap(), d.to_vec());
        assert!(parse_sha512("sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=").is_err());
        assert!(parse_sha512("sha512-AAAA").is_err());
    }

    #[test]
    fn installed_needs_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(installed(dir.path()).is_none());
        std::fs::write(bundle_path(dir.path()), b"var mrmd;").unwrap();
        let meta = Installed {
            package: PACKAGE.into(),
            version: "1".into(),
            integrity: "sha512-x".into(),
            tarball: "t".into(),
            bytes: 9,
            path: PathBuf::new(),
        };
        std::fs::write(dir.path().join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(installed(dir.path()).unwrap().version, "1");
        std::fs::write(bundle_path(dir.path()), b"var").unwrap();
        assert!(
            installed(dir.path()).is_none(),
            "a truncated bundle is not installed"
        );
    }
}
