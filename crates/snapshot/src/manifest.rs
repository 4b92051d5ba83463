use crate::error::io_err;
use crate::paths::{check_relative_path, in_writable_layer};
use crate::{Result, SnapshotError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The one format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest, first entry of every archive and top file of every snapshot dir.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the archive's last entry: the sha256 of every file, computed while the archive was
/// written (so a sender never reads its files twice).
pub const CHECKSUMS_NAME: &str = "checksums.json";

/// What a snapshot is and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub snapshot_id: String,
    pub runtime_id: String,
    pub runtime_name: String,
    pub plan: String,
    pub memory_mb: u64,
    pub cpus: f64,
    pub image_id: String,
    pub criu_version: String,
    pub runc_version: String,
    pub kernel: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Whether the source kept running after this snapshot was taken.
    pub leave_running: bool,
    /// Free-form facts the agent needs at restore (network addresses, ...).
    #[serde(default)]
    pub meta: serde_json::Value,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// An overlayfs whiteout (character device 0:0); only inside the writable layer.
    Whiteout,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Structural checks every reader runs before trusting any entry; a snapshot directory's
    /// manifest must carry every file's sha256.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(true)
    }

    /// As [`Manifest::validate`]; an archive's manifest may leave the sha256s to its trailer.
    pub fn validate_with(&self, require_hashes: bool) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.entries {
            check_relative_path(&e.path)?;
            if e.path == MANIFEST_NAME || e.path == CHECKSUMS_NAME {
                return Err(SnapshotError::BadManifest(format!(
                    "the manifest lists {}",
                    e.path
                )));
            }
            if !seen.insert(e.path.as_str()) {
                return Err(SnapshotError::BadManifest(format!(
                    "{} is listed twice",
                    e.path
                )));
            }
            match e.kind {
                EntryKind::File => {
                    let ok = match e.sha256.as_deref() {
                        Some(h) => h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
                        None => !require_hashes,
                    };
                    if !ok {
                        return Err(SnapshotError::BadManifest(format!(
                            "{} has no valid sha256",
                            e.path
                        )));
                    }
                }
                EntryKind::Symlink => {
                    let target = e.target.as_deref().unwrap_or("");
                    if !in_writable_layer(&e.path) {
                        return Err(SnapshotError::UnsafePath {
                            path: e.path.clone(),
                            reason: "symlink outside the writable layer",
                        });
                    }
                    if target.is_empty() || target.contains('\0') {
                        return Err(SnapshotError::UnsafePath {
                            path: e.path.clone(),
                            reason: "symlink with an empty target",
                        });
                    }
                }
                EntryKind::Whiteout if !in_writable_layer(&e.path) => {
                    return Err(SnapshotError::UnsafePath {
                        path: e.path.clone(),
                        reason: "device node outside the writable layer",
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn read_from_dir(dir: &Path) -> Result<Manifest> {
        Self::read_from_dir_with(dir, true)
    }

    pub(crate) fn read_from_dir_with(dir: &Path, require_hashes: bool) -> Result<Manifest> {
        let p = dir.join(MANIFEST_NAME);
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        let m = Self::from_json(&bytes)?;
        m.validate_with(require_hashes)?;
        Ok(m)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        // Read the version first so that a future format is refused by version, not by a parse error.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::BadManifest(e.to_string()))?;
        if v.format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::BadManifest(e.to_string()))
    }

    pub fn write_to_dir(&self, dir: &Path) -> Result<()> {
        let p = dir.join(MANIFEST_NAME);
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        fs::write(&p, bytes).map_err(io_err(&p))
    }
}

pub(crate) fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(io_err(path))?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Lists (and hashes) everything under `dir` except the manifest, parents before children,
/// in a stable order. `areas` restricts the walk to these top-level names.
pub fn scan_dir(dir: &Path, areas: &[&str]) -> Result<Vec<Entry>> {
    scan(
        dir,
        areas,
        Known {
            sums: &HashMap::new(),
            hash_rest: true,
        },
    )
}

/// As [`scan_dir`], taking the sha256 of the files in `known` (path relative to `dir` → size and
/// sha256, e.g. from a [`crate::Follower`] that hashed them while they were written) where the
/// size still matches; the other files are hashed if `hash_rest`, else left without a sha256 (a
/// dump about to be streamed: the archive writer hashes what has none as it sends it).
pub fn scan_dir_with(
    dir: &Path,
    areas: &[&str],
    known: &HashMap<String, (u64, String)>,
    hash_rest: bool,
) -> Result<Vec<Entry>> {
    scan(
        dir,
        areas,
        Known {
            sums: known,
            hash_rest,
        },
    )
}

/// As [`scan_dir`] without hashing: for a snapshot that is about to be streamed, whose archive
/// writer hashes every file as it sends it. Such a directory is not a verifiable snapshot.
pub fn scan_dir_unhashed(dir: &Path, areas: &[&str]) -> Result<Vec<Entry>> {
    scan(
        dir,
        areas,
        Known {
            sums: &HashMap::new(),
            hash_rest: false,
        },
    )
}

#[derive(Clone, Copy)]
struct Known<'a> {
    sums: &'a HashMap<String, (u64, String)>,
    hash_rest: bool,
}

fn scan(dir: &Path, areas: &[&str], hash: Known) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for area in areas {
        let p = dir.join(area);
        if fs::symlink_metadata(&p).is_ok() {
            walk(dir, &p, hash, &mut out)?;
        }
    }
    Ok(out)
}

fn walk(root: &Path, p: &Path, hash: Known, out: &mut Vec<Entry>) -> Result<()> {
    let md = fs::symlink_metadata(p).map_err(io_err(p))?;
    let rel = p
        .strip_prefix(root)
        .expect("walk stays under root")
        .to_string_lossy()
        .into_owned();
    let ft = md.file_type();
    let mut e = Entry {
        path: rel.clone(),
        kind: EntryKind::File,
        size: 0,
        sha256: None,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        target: None,
    };
    if ft.is_dir() {
        e.kind = EntryKind::Dir;
        out.push(e);
        let mut names: Vec<_> = fs::read_dir(p)
            .map_err(io_err(p))?
            .map(|d| d.map(|d| d.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(p))?;
        names.sort();
        for n in names {
            walk(root, &p.join(n), hash, out)?;
        }
    } else if ft.is_file() {
        match hash.sums.get(&rel) {
            Some((size, sum)) if *size == md.len() => {
                e.size = *size;
                e.sha256 = Some(sum.clone());
            }
            _ if hash.hash_rest => {
                let (size, sum) = sha256_file(p)?;
                e.size = size;
                e.sha256 = Some(sum);
            }
            _ => e.size = md.len(),
        }
        out.push(e);
    } else if ft.is_symlink() {
        e.kind = EntryKind::Symlink;
        e.target = Some(
            fs::read_link(p)
                .map_err(io_err(p))?
                .to_string_lossy()
                .into_owned(),
        );
        out.push(e);
    } else if ft.is_char_device() && md.rdev() == 0 {
        e.kind = EntryKind::Whiteout;
        out.push(e);
    } else {
        return Err(SnapshotError::UnsupportedEntry {
            path: rel,
            kind: format!("{ft:?}"),
        });
    }
    Ok(())
}

/// Verifies a snapshot directory against its manifest: version, paths, and every file's size and sha256.
pub fn verify_dir(dir: &Path) -> Result<Manifest> {
    let m = Manifest::read_from_dir(dir)?;
    for e in &m.entries {
        let p = dir.join(&e.path);
        let md = fs::symlink_metadata(&p).map_err(|_| SnapshotError::Missing {
            path: e.path.clone(),
        })?;
        match e.kind {
            EntryKind::File => {
                if !md.is_file() {
                    return Err(SnapshotError::Unexpected {
                        path: e.path.clone(),
                    });
                }
                let (size, sum) = sha256_file(&p)?;
                if size != e.size {
                    return Err(SnapshotError::SizeMismatch {
                        path: e.path.clone(),
                        expected: e.size,
                        actual: size,
                    });
                }
                let expected = e.sha256.clone().unwrap_or_default();
                if sum != expected {
                    return Err(SnapshotError::ChecksumMismatch {
                        path: e.path.clone(),
                        expected,
                        actual: sum,
                    });
                }
            }
            EntryKind::Dir if !md.is_dir() => {
                return Err(SnapshotError::Unexpected {
                    path: e.path.clone(),
                })
            }
            EntryKind::Symlink if !md.file_type().is_symlink() => {
                return Err(SnapshotError::Unexpected {
                    path: e.path.clone(),
                })
            }
            _ => {}
        }
    }
    Ok(m)
}
