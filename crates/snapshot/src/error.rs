use std::path::PathBuf;

/// Every way a snapshot can be refused. Messages name the file at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("archive is truncated or corrupt ({0}); re-export it from its source")]
    Stream(String),
    #[error("snapshot format version {found} is not supported (this ferry reads version {supported}); upgrade ferry to read it")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("manifest is invalid: {0}")]
    BadManifest(String),
    #[error("unsafe path {path:?} in snapshot: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("checksum mismatch for {path}: manifest says sha256 {expected}, content is {actual}; the snapshot is corrupt")]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {path}: manifest says {expected} bytes, found {actual}; the snapshot is corrupt or truncated")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("entry {path} is not listed in the manifest; the snapshot was tampered with")]
    Unexpected { path: String },
    #[error("entry {path} listed in the manifest is missing; the snapshot is truncated")]
    Missing { path: String },
    #[error("entry {path} has an unsupported type ({kind}); snapshots hold only files, directories, symlinks and whiteouts")]
    UnsupportedEntry { path: String, kind: String },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.into();
    move |source| SnapshotError::Io { path, source }
}
