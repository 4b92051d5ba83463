use crate::error::io_err;
use crate::manifest::{Entry, EntryKind, Manifest, CHECKSUMS_NAME, MANIFEST_NAME};
use crate::paths::check_relative_path;
use crate::{Result, SnapshotError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest manifest a reader accepts (a manifest lists paths, it is never large).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ArchiveStats {
    pub entries: usize,
    /// Bytes of file content carried.
    pub content_bytes: u64,
    /// Bytes of the compressed archive stream.
    pub archive_bytes: u64,
}

struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// How an archive's tar stream is carried on the wire and on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    /// zstd at this level (negative levels are zstd's fast modes), multi-threaded, with a frame
    /// checksum.
    Zstd(i32),
    /// The tar stream as it is: for content that does not compress (memory pages full of random
    /// or already-compressed bytes), where zstd would only spend a pass over every byte on each
    /// side. The trailer's sha256s (and the manifest's own) still cover everything.
    Plain,
}

impl Codec {
    /// zstd at `level`, unless the largest file of `dir` (a snapshot's memory pages) does not
    /// compress: a few 1 MiB samples of it are compressed, and if they shrink by less than 10%,
    /// [`Codec::Plain`]. Small snapshots are always compressed.
    pub fn for_dir(dir: &Path, level: i32) -> Codec {
        const SAMPLE: usize = 1 << 20;
        let Ok(m) = Manifest::read_from_dir_with(dir, false) else {
            return Codec::Zstd(level);
        };
        let Some(big) = m
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .max_by_key(|e| e.size)
        else {
            return Codec::Zstd(level);
        };
        if big.size < 16 * SAMPLE as u64 {
            return Codec::Zstd(level);
        }
        let Ok(f) = fs::File::open(dir.join(&big.path)) else {
            return Codec::Zstd(level);
        };
        let (mut raw, mut packed) = (0usize, 0usize);
        let mut buf = vec![0u8; SAMPLE];
        for k in 1..4u64 {
            use std::os::unix::fs::FileExt;
            let Ok(n) = f.read_at(&mut buf, big.size / 4 * k) else {
                return Codec::Zstd(level);
            };
            let Ok(z) = zstd::bulk::compress(&buf[..n], level) else {
                return Codec::Zstd(level);
            };
            raw += n;
            packed += z.len();
        }
        if packed * 10 >= raw * 9 {
            Codec::Plain
        } else {
            Codec::Zstd(level)
        }
    }
}

/// The stream under the tar writer: a zstd encoder or the output itself.
enum Sink<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, Counting<W>>),
    Plain(Counting<W>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Zstd(z) => z.write(buf),
            Sink::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Zstd(z) => z.flush(),
            Sink::Plain(w) => w.flush(),
        }
    }
}

impl<W: Write> Sink<W> {
    fn finish(self) -> io::Result<Counting<W>> {
        match self {
            Sink::Zstd(z) => z.finish(),
            Sink::Plain(w) => Ok(w),
        }
    }
}

/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Streams the snapshot directory `dir` (which must hold a manifest) as an archive into `out`,
/// carried as `codec` says. Nothing is staged on disk: files are read once, straight into the
/// stream, and hashed on the way into the closing `checksums.json` (which also holds the sha256 of
/// the manifest as sent). Where the directory's manifest has sha256s (a stored snapshot), they are
/// checked against what was read.
pub fn write_archive<W: Write>(dir: &Path, out: W, codec: Codec) -> Result<ArchiveStats> {
    write_archive_with(dir, out, codec, false)
}

/// As [`write_archive`]; with `trust_stored`, files whose sha256 the directory's manifest already
/// holds are sent without hashing them again and their stored sums go into the trailer — for a
/// dump hashed moments ago while it was written ([`crate::Follower`]), not for a stored snapshot
/// (whose export re-checks every file).
pub fn write_archive_with<W: Write>(
    dir: &Path,
    out: W,
    codec: Codec,
    trust_stored: bool,
) -> Result<ArchiveStats> {
    let mut manifest = Manifest::read_from_dir_with(dir, false)?;
    let stored: HashMap<String, String> = manifest
        .entries
        .iter()
        .filter_map(|e| Some((e.path.clone(), e.sha256.clone()?)))
        .collect();
    for e in &mut manifest.entries {
        e.sha256 = None;
    }
    let stream_err = |e: io::Error| SnapshotError::Stream(e.to_string());
    let counting = Counting { inner: out, n: 0 };
    let enc = match codec {
        Codec::Zstd(level) => {
            let mut enc = zstd::stream::write::Encoder::new(counting, level).map_err(stream_err)?;
            enc.include_checksum(true).map_err(stream_err)?;
            let workers = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            if workers > 1 {
                enc.multithread(workers).map_err(stream_err)?;
            }
            Sink::Zstd(enc)
        }
        Codec::Plain => Sink::Plain(counting),
    };
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, json.len() as u64);
    tar.append_data(&mut h, MANIFEST_NAME, json.as_slice())
        .map_err(stream_err)?;
    let mut stats = ArchiveStats::default();
    let mut sums = std::collections::BTreeMap::new();
    for e in &manifest.entries {
        let p = dir.join(&e.path);
        match e.kind {
            EntryKind::File => {
                let f = fs::File::open(&p).map_err(io_err(&p))?;
                let mut h = header(tar::EntryType::Regular, e.mode, e.uid, e.gid, e.size);
                // A file that changed size since it was listed would corrupt the stream: refuse.
                let actual = f.metadata().map_err(io_err(&p))?.len();
                if actual != e.size {
                    return Err(SnapshotError::SizeMismatch {
                        path: e.path.clone(),
                        expected: e.size,
                        actual,
                    });
                }
                let sum = match stored.get(&e.path) {
                    Some(known) if trust_stored => {
                        tar.append_data(&mut h, &e.path, f).map_err(io_err(&p))?;
                        known.clone()
                    }
                    expected => {
                        let mut reader = Hashing {
                            inner: f,
                            sha: Sha256::new(),
                        };
                        tar.append_data(&mut h, &e.path, &mut reader)
                            .map_err(io_err(&p))?;
                        let sum = hex::encode(reader.sha.finalize());
                        if let Some(expected) = expected {
                            if *expected != sum {
                                return Err(SnapshotError::ChecksumMismatch {
                                    path: e.path.clone(),
                                    expected: expected.clone(),
                                    actual: sum,
                                });
                            }
                        }
                        sum
                    }
                };
                sums.insert(e.path.clone(), sum);
                stats.content_bytes += e.size;
            }
            EntryKind::Dir => {
                let mut h = header(tar::EntryType::Directory, e.mode, e.uid, e.gid, 0);
                tar.append_data(&mut h, &e.path, io::empty())
                    .map_err(stream_err)?;
            }
            EntryKind::Symlink => {
                let mut h = header(tar::EntryType::Symlink, e.mode, e.uid, e.gid, 0);
                tar.append_link(&mut h, &e.path, e.target.as_deref().unwrap_or_default())
                    .map_err(stream_err)?;
            }
            EntryKind::Whiteout => {
                let mut h = header(tar::EntryType::Char, e.mode, e.uid, e.gid, 0);
                h.set_device_major(0).map_err(stream_err)?;
                h.set_device_minor(0).map_err(stream_err)?;
                tar.append_data(&mut h, &e.path, io::empty())
                    .map_err(stream_err)?;
            }
        }
        stats.entries += 1;
    }
    let manifest_sum = hex::encode(Sha256::digest(&json));
    let trailer = serde_json::to_vec_pretty(
        &serde_json::json!({ "sha256": sums, "manifest_sha256": manifest_sum }),
    )
    .expect("checksums serialize");
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, trailer.len() as u64);
    tar.append_data(&mut h, CHECKSUMS_NAME, trailer.as_slice())
        .map_err(stream_err)?;
    let enc = tar.into_inner().map_err(stream_err)?;
    let mut counting = enc.finish().map_err(stream_err)?;
    counting.flush().map_err(stream_err)?;
    stats.archive_bytes = counting.n;
    Ok(stats)
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_size(size);
    h.set_mtime(0);
    h
}

/// Reads an archive into `dest`, which must not exist yet, verifying everything on the way.
/// The content goes to a staging directory beside `dest` that is renamed to `dest` only after every
/// entry verified; on any error the staging directory is removed and `dest` is never created.
pub fn import_archive<R: Read>(input: R, dest: &Path) -> Result<Manifest> {
    import_archive_with(input, dest, Verify::Now)
}

/// When an import checks file contents against the archive's sha256s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// While extracting: the snapshot appears only if every file matched.
    Now,
    /// Not during the import: the stored manifest records the sha256s the archive claims, and the
    /// one who uses the snapshot must verify it first ([`crate::verify_dir`]) — a migration's
    /// target does, alongside CRIU's restore, with the restored processes held until it passed.
    /// Everything else (paths, kinds, sizes, the manifest's own sha256) is checked as with `Now`.
    Later,
}

/// As [`import_archive`], verifying file contents `when` says.
pub fn import_archive_with<R: Read>(input: R, dest: &Path, when: Verify) -> Result<Manifest> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(SnapshotError::Io {
            path: dest.into(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists"),
        });
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One staging directory per import, even for two imports of the same snapshot at once in one
    // process: the second never writes into (or removes) the first's files; whichever renames
    // second fails, the first's snapshot stays whole.
    static IMPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = IMPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = dest.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    match read_archive_into_with(input, &staging, when) {
        Ok(m) => match fs::rename(&staging, dest) {
            Ok(()) => Ok(m),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(SnapshotError::Io {
                    path: dest.into(),
                    source: e,
                })
            }
        },
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Reads and verifies an archive into the existing, empty directory `dir` (see [`import_archive`]).
pub fn read_archive_into<R: Read>(input: R, dir: &Path) -> Result<Manifest> {
    read_archive_into_with(input, dir, Verify::Now)
}

/// As [`read_archive_into`], verifying file contents `when` says.
pub fn read_archive_into_with<R: Read>(input: R, dir: &Path, when: Verify) -> Result<Manifest> {
    let mut input = io::BufReader::with_capacity(1 << 20, input);
    let head =
        io::BufRead::fill_buf(&mut input).map_err(|e| SnapshotError::Stream(e.to_string()))?;
    let zstd = head.starts_with(&ZSTD_MAGIC);
    let dec: Box<dyn Read> = if zstd {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| SnapshotError::Stream(e.to_string()))?,
        )
    } else {
        Box::new(input)
    };
    let mut ar = tar::Archive::new(dec);
    let mut entries = ar
        .entries()
        .map_err(|e| SnapshotError::Stream(e.to_string()))?;

    let mut first = match entries.next() {
        Some(e) => e.map_err(|e| SnapshotError::Stream(e.to_string()))?,
        None => return Err(SnapshotError::Stream("empty archive".into())),
    };
    if first.path_bytes().as_ref() != MANIFEST_NAME.as_bytes() {
        return Err(SnapshotError::BadManifest(
            "the first entry of the archive is not manifest.json".into(),
        ));
    }
    if first.size() > MAX_MANIFEST_BYTES {
        return Err(SnapshotError::BadManifest(
            "manifest.json is too large".into(),
        ));
    }
    let mut json = Vec::new();
    first
        .read_to_end(&mut json)
        .map_err(|e| SnapshotError::Stream(e.to_string()))?;
    let manifest_sum = hex::encode(Sha256::digest(&json));
    let mut manifest = Manifest::from_json(&json)?;
    manifest.validate_with(false)?;

    let index: HashMap<&str, &Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut computed: HashMap<String, String> = HashMap::new();
    let mut trailer: Option<HashMap<String, String>> = None;
    let mut trailer_manifest_sum: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| SnapshotError::Stream(e.to_string()))?;
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            SnapshotError::UnsafePath {
                path: "<non-utf8>".into(),
                reason: "path is not UTF-8",
            }
        })?;
        if trailer.is_some() {
            return Err(SnapshotError::Unexpected { path });
        }
        if path == CHECKSUMS_NAME {
            if entry.size() > MAX_MANIFEST_BYTES {
                return Err(SnapshotError::BadManifest(
                    "checksums.json is too large".into(),
                ));
            }
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| SnapshotError::Stream(e.to_string()))?;
            #[derive(serde::Deserialize)]
            struct Checksums {
                sha256: HashMap<String, String>,
                manifest_sha256: Option<String>,
            }
            let c: Checksums = serde_json::from_slice(&buf)
                .map_err(|e| SnapshotError::BadManifest(format!("checksums.json: {e}")))?;
            trailer = Some(c.sha256);
            trailer_manifest_sum = c.manifest_sha256;
            continue;
        }
        check_relative_path(&path)?;
        let Some(m) = index.get(path.as_str()) else {
            return Err(SnapshotError::Unexpected { path });
        };
        if !seen.insert(path.clone()) {
            return Err(SnapshotError::Unexpected { path });
        }
        let target = dir.join(&path);
        check_parent(dir, &path)?;
        let kind = entry.header().entry_type();
        match (m.kind, kind) {
            (EntryKind::File, tar::EntryType::Regular) => {
                if entry.size() != m.size {
                    return Err(SnapshotError::SizeMismatch {
                        path,
                        expected: m.size,
                        actual: entry.size(),
                    });
                }
                if let Some(sum) = extract_file(&mut entry, &target, m, when == Verify::Now)? {
                    computed.insert(path.clone(), sum);
                }
            }
            (EntryKind::Dir, tar::EntryType::Directory) => {
                fs::create_dir(&target).map_err(io_err(&target))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(m.mode))
                    .map_err(io_err(&target))?;
            }
            (EntryKind::Symlink, tar::EntryType::Symlink) => {
                let link = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                if Some(link.as_slice()) != m.target.as_deref().map(str::as_bytes) {
                    return Err(SnapshotError::BadManifest(format!(
                        "symlink {path} points elsewhere than its manifest says"
                    )));
                }
                std::os::unix::fs::symlink(m.target.as_deref().unwrap_or_default(), &target)
                    .map_err(io_err(&target))?;
            }
            (EntryKind::Whiteout, tar::EntryType::Char) => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(1);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(1);
                if major != 0 || minor != 0 {
                    return Err(SnapshotError::UnsupportedEntry {
                        path,
                        kind: format!("char device {major}:{minor}"),
                    });
                }
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(m.mode),
                    0,
                )
                .map_err(|e| SnapshotError::Io {
                    path: target.clone(),
                    source: e.into(),
                })?;
            }
            (_, other) => {
                return Err(SnapshotError::UnsupportedEntry {
                    path,
                    kind: format!("{other:?} where the manifest says {:?}", m.kind),
                })
            }
        }
        // Ownership is restored for everything but never follows a link.
        if nix::unistd::geteuid().is_root() {
            lchown(&target, Some(m.uid), Some(m.gid)).map_err(io_err(&target))?;
        }
    }
    // Read to the end of the stream (a zstd frame's checksum is checked there).
    let mut dec = ar.into_inner();
    io::copy(&mut dec, &mut io::sink()).map_err(|e| SnapshotError::Stream(e.to_string()))?;
    // The manifest's own sha256: required where no zstd frame checksum covers it (older zstd
    // archives carry none).
    match trailer_manifest_sum {
        Some(expected) if expected != manifest_sum => {
            return Err(SnapshotError::ChecksumMismatch {
                path: MANIFEST_NAME.into(),
                expected,
                actual: manifest_sum,
            })
        }
        None if !zstd && trailer.is_some() => {
            return Err(SnapshotError::Missing {
                path: format!("{CHECKSUMS_NAME}: manifest_sha256"),
            })
        }
        _ => {}
    }
    if let Some(missing) = manifest.entries.iter().find(|e| !seen.contains(&e.path)) {
        return Err(SnapshotError::Missing {
            path: missing.path.clone(),
        });
    }
    let trailer = trailer.ok_or_else(|| SnapshotError::Missing {
        path: CHECKSUMS_NAME.into(),
    })?;
    for e in manifest
        .entries
        .iter_mut()
        .filter(|e| e.kind == EntryKind::File)
    {
        let claimed = trailer.get(&e.path).cloned();
        if when == Verify::Later {
            let sum = claimed
                .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| SnapshotError::Missing {
                    path: format!("{CHECKSUMS_NAME}: {}", e.path),
                })?;
            e.sha256 = Some(sum);
            continue;
        }
        let actual = computed.remove(&e.path).unwrap_or_default();
        let expected = claimed.unwrap_or_else(|| "(none listed)".into());
        if actual != expected {
            return Err(SnapshotError::ChecksumMismatch {
                path: e.path.clone(),
                expected,
                actual,
            });
        }
        e.sha256 = Some(actual);
    }
    // The stored snapshot's manifest carries every sha256, so that it verifies on its own.
    manifest.write_to_dir(dir)?;
    Ok(manifest)
}

/// Every ancestor of `path` inside `dir` must already exist as a real directory (not a symlink):
/// the manifest lists parents first, so nothing is ever written through a link.
fn check_parent(dir: &Path, path: &str) -> Result<()> {
    let mut cur = PathBuf::from(dir);
    let comps: Vec<&str> = path.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(SnapshotError::UnsafePath {
                    path: path.into(),
                    reason: "a parent is a link or a file",
                })
            }
            Err(_) => {
                return Err(SnapshotError::BadManifest(format!(
                    "{path} comes before its parent directory"
                )))
            }
        }
    }
    Ok(())
}

/// Writes one file, returning the sha256 of what was written if `hash`.
fn extract_file<R: Read>(
    src: &mut R,
    target: &Path,
    m: &Entry,
    hash: bool,
) -> Result<Option<String>> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(m.mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(target)
        .map_err(io_err(target))?;
    let mut h = hash.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = src
            .read(&mut buf)
            .map_err(|e| SnapshotError::Stream(format!("while reading {}: {e}", m.path)))?;
        if r == 0 {
            break;
        }
        if let Some(h) = h.as_mut() {
            h.update(&buf[..r]);
        }
        f.write_all(&buf[..r]).map_err(io_err(target))?;
        n += r as u64;
    }
    if n != m.size {
        return Err(SnapshotError::SizeMismatch {
            path: m.path.clone(),
            expected: m.size,
            actual: n,
        });
    }
    fs::set_permissions(target, fs::Permissions::from_mode(m.mode)).map_err(io_err(target))?;
    let Some(h) = h else { return Ok(None) };
    let actual = hex::encode(h.finalize());
    if let Some(expected) = &m.sha256 {
        if actual != *expected {
            return Err(SnapshotError::ChecksumMismatch {
                path: m.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(Some(actual))
}
