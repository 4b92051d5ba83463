//! ferry-snapshot: the versioned, verified format of a runtime snapshot.
//!
//! A snapshot exists in two equivalent forms:
//! - a **directory** (what an agent keeps in its store): `manifest.json` plus the files it lists
//!   (`criu/` the CRIU image dir, `config.json` the container config, `upper/` the writable layer);
//! - an **archive** (what is exported, imported and streamed between agents): a tar stream whose
//!   first entry is `manifest.json`, followed by every entry in manifest order, and last
//!   `checksums.json`, the sha256 of every file and of the manifest, computed while the archive was
//!   written (a sender reads each file once, and can stream a dump it never hashed). The tar stream
//!   is zstd-compressed, or plain where the content does not compress ([`Codec::for_dir`]); a reader
//!   tells them apart by zstd's frame magic.
//!
//! The manifest names the format version and lists every entry with its kind and size (and, in a
//! directory, its sha256).
//! Readers refuse unknown versions, absolute paths, `..`, links that escape, device nodes (other than
//! overlayfs whiteouts inside the writable layer), entries missing from the manifest and manifest
//! entries missing from the stream, and verify every checksum before the snapshot is made visible:
//! an import lands in a staging directory that is renamed into place only once all of it verified.
//! An import may leave the content check to the snapshot's user instead ([`Verify::Later`]: a
//! migration's target verifies while CRIU restores, holding the processes until it passed); all
//! other checks stay, and the stored manifest then records the sha256s the archive claimed.

mod archive;
mod error;
mod follow;
mod manifest;
mod paths;

pub use archive::{
    import_archive, import_archive_with, read_archive_into, read_archive_into_with, write_archive,
    write_archive_with, ArchiveStats, Codec, Verify,
};
pub use error::SnapshotError;
pub use follow::Follower;
pub use manifest::{
    scan_dir, scan_dir_unhashed, scan_dir_with, verify_dir, Entry, EntryKind, Manifest,
    CHECKSUMS_NAME, FORMAT_VERSION, MANIFEST_NAME,
};
pub use paths::check_relative_path;

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
