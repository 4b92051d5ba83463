//! The archive format's promises: a round trip is exact, and every damaged or hostile archive is
//! refused with nothing created at the destination.

use ferry_snapshot::*;
use proptest::prelude::*;
use std::fs;
use std::path::Path;

fn manifest(entries: Vec<Entry>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        snapshot_id: "snap-1".into(),
        runtime_id: "rt-1".into(),
        runtime_name: "demo".into(),
        plan: "free".into(),
        memory_mb: 256,
        cpus: 0.5,
        image_id: "img".into(),
        criu_version: "4.2".into(),
        runc_version: "1.1.5".into(),
        kernel: "6.18".into(),
        created_at: chrono::Utc::now(),
        leave_running: false,
        meta: serde_json::json!({"ip": "10.0.0.2"}),
        entries,
    }
}

fn make_snapshot(dir: &Path) -> Manifest {
    fs::create_dir_all(dir.join("criu")).unwrap();
    fs::write(dir.join("criu/pages-1.img"), vec![7u8; 300_000]).unwrap();
    fs::write(dir.join("criu/inventory.img"), b"inventory").unwrap();
    fs::write(dir.join("config.json"), b"{}").unwrap();
    fs::create_dir_all(dir.join("upper/root/.ipython")).unwrap();
    fs::write(
        dir.join("upper/root/notes.txt"),
        b"written inside the runtime",
    )
    .unwrap();
    std::os::unix::fs::symlink("/opt/venv/bin/python", dir.join("upper/root/py")).unwrap();
    let m = manifest(scan_dir(dir, &["criu", "config.json", "upper"]).unwrap());
    m.write_to_dir(dir).unwrap();
    m
}

fn archive_of(dir: &Path) -> Vec<u8> {
    archive_with(dir, Codec::Zstd(1))
}

fn archive_with(dir: &Path, codec: Codec) -> Vec<u8> {
    let mut out = Vec::new();
    let stats = write_archive(dir, &mut out, codec).unwrap();
    assert_eq!(stats.archive_bytes, out.len() as u64);
    out
}

#[test]
fn round_trip_is_exact_and_verifies() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let m = make_snapshot(&src);
    let bytes = archive_of(&src);
    let dest = t.path().join("dest");
    let got = import_archive(bytes.as_slice(), &dest).unwrap();
    assert_eq!(got, m);
    assert_eq!(
        fs::read(dest.join("upper/root/notes.txt")).unwrap(),
        b"written inside the runtime"
    );
    assert_eq!(
        fs::read_link(dest.join("upper/root/py")).unwrap(),
        Path::new("/opt/venv/bin/python")
    );
    assert_eq!(verify_dir(&dest).unwrap(), m);
}

#[test]
fn verify_dir_names_the_corrupt_file() {
    let t = tempfile::tempdir().unwrap();
    make_snapshot(t.path());
    let p = t.path().join("criu/pages-1.img");
    let mut b = fs::read(&p).unwrap();
    b[1000] ^= 1;
    fs::write(&p, b).unwrap();
    let err = verify_dir(t.path()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == "criu/pages-1.img"),
        "{err}"
    );
}

#[test]
fn flipped_byte_is_refused_and_nothing_created() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_snapshot(&src);
    let mut bytes = archive_of(&src);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let dest = t.path().join("dest");
    assert!(import_archive(bytes.as_slice(), &dest).is_err());
    assert!(!dest.exists());
    assert_eq!(
        fs::read_dir(t.path()).unwrap().count(),
        1,
        "staging left behind"
    );
}

#[test]
fn truncated_archive_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_snapshot(&src);
    let bytes = archive_of(&src);
    let dest = t.path().join("dest");
    assert!(import_archive(&bytes[..bytes.len() * 2 / 3], &dest).is_err());
    assert!(!dest.exists());
}

fn raw_archive(
    manifest_json: &[u8],
    extra: &[(&str, tar::EntryType, &[u8], Option<&str>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let enc = zstd::stream::write::Encoder::new(&mut out, 1)
            .unwrap()
            .auto_finish();
        raw_tar(enc, manifest_json, extra);
    }
    out
}

fn raw_plain_archive(
    manifest_json: &[u8],
    extra: &[(&str, tar::EntryType, &[u8], Option<&str>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    raw_tar(&mut out, manifest_json, extra);
    out
}

fn raw_tar<W: std::io::Write>(
    out: W,
    manifest_json: &[u8],
    extra: &[(&str, tar::EntryType, &[u8], Option<&str>)],
) {
    {
        let mut b = tar::Builder::new(out);
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest_json.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "manifest.json", manifest_json)
            .unwrap();
        for (path, kind, data, link) in extra {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // Bypass the builder's own path checks to write hostile names.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
}

fn file_entry(path: &str, data: &[u8]) -> Entry {
    use sha2::Digest;
    Entry {
        path: path.into(),
        kind: EntryKind::File,
        size: data.len() as u64,
        sha256: Some(hex::encode(sha2::Sha256::digest(data))),
        mode: 0o644,
        uid: 0,
        gid: 0,
        target: None,
    }
}

#[test]
fn unknown_version_is_refused() {
    let mut m = manifest(vec![]);
    m.format_version = 99;
    let bytes = raw_archive(&serde_json::to_vec(&m).unwrap(), &[]);
    let t = tempfile::tempdir().unwrap();
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnsupportedVersion { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn traversal_paths_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // Listed in the manifest: refused by manifest validation.
    let m = manifest(vec![file_entry("../evil", b"x")]);
    let bytes = raw_archive(
        &serde_json::to_vec(&m).unwrap(),
        &[("../evil", tar::EntryType::Regular, b"x", None)],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsafePath { .. }), "{err}");
    // Not listed: refused as unsafe before anything else.
    let m = manifest(vec![]);
    let bytes = raw_archive(
        &serde_json::to_vec(&m).unwrap(),
        &[("/etc/evil", tar::EntryType::Regular, b"x", None)],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsafePath { .. }), "{err}");
    assert!(!t.path().join("d").exists());
    assert!(!t.path().parent().unwrap().join("evil").exists());
}

#[test]
fn writing_through_an_escaping_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let link = Entry {
        path: "upper/link".into(),
        kind: EntryKind::Symlink,
        size: 0,
        sha256: None,
        mode: 0o777,
        uid: 0,
        gid: 0,
        target: Some(outside.to_string_lossy().into()),
    };
    let dir = Entry {
        path: "upper".into(),
        kind: EntryKind::Dir,
        size: 0,
        sha256: None,
        mode: 0o755,
        uid: 0,
        gid: 0,
        target: None,
    };
    let m = manifest(vec![dir, link, file_entry("upper/link/pwned", b"x")]);
    let bytes = raw_archive(
        &serde_json::to_vec(&m).unwrap(),
        &[
            ("upper", tar::EntryType::Directory, b"", None),
            (
                "upper/link",
                tar::EntryType::Symlink,
                b"",
                Some(outside.to_str().unwrap()),
            ),
            ("upper/link/pwned", tar::EntryType::Regular, b"x", None),
        ],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsafePath { .. }), "{err}");
    assert!(!outside.join("pwned").exists());
}

#[test]
fn symlinks_and_devices_outside_the_writable_layer_are_refused() {
    let link = Entry {
        path: "criu/x".into(),
        kind: EntryKind::Symlink,
        size: 0,
        sha256: None,
        mode: 0o777,
        uid: 0,
        gid: 0,
        target: Some("/etc".into()),
    };
    assert!(manifest(vec![link]).validate().is_err());
    let dev = Entry {
        path: "config.json".into(),
        kind: EntryKind::Whiteout,
        size: 0,
        sha256: None,
        mode: 0,
        uid: 0,
        gid: 0,
        target: None,
    };
    assert!(manifest(vec![dev]).validate().is_err());
}

#[test]
fn unlisted_entry_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let m = manifest(vec![]);
    let bytes = raw_archive(
        &serde_json::to_vec(&m).unwrap(),
        &[("config.json", tar::EntryType::Regular, b"{}", None)],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(matches!(err, SnapshotError::Unexpected { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever single byte is damaged, the reader either refuses the archive or yields exactly the
    /// original content: corruption never turns into a different, "valid" snapshot.
    /// The same with the content check left to the user: the import or the verification refuses,
    /// or the content is exactly the original.
    #[test]
    fn damaged_archives_imported_unverified_never_verify_as_other_content(pos in any::<prop::sample::Index>(), bit in 0u8..8, plain in any::<bool>()) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let m = make_snapshot(&src);
        let mut bytes = archive_with(&src, if plain { Codec::Plain } else { Codec::Zstd(1) });
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let dest = t.path().join("dest");
        match import_archive_with(bytes.as_slice(), &dest, Verify::Later) {
            Ok(_) => {
                if let Ok(got) = verify_dir(&dest) {
                    prop_assert_eq!(got, m);
                }
            }
            Err(_) => prop_assert!(!dest.exists()),
        }
    }

    #[test]
    fn damaged_archives_never_yield_other_content(pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<bool>(), plain in any::<bool>()) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let m = make_snapshot(&src);
        let mut bytes = archive_with(&src, if plain { Codec::Plain } else { Codec::Zstd(1) });
        let i = pos.index(bytes.len());
        if cut { bytes.truncate(i); } else { bytes[i] ^= 1 << bit; }
        let dest = t.path().join("dest");
        match import_archive(bytes.as_slice(), &dest) {
            Ok(got) => {
                prop_assert_eq!(got, m);
                prop_assert!(verify_dir(&dest).is_ok());
            }
            Err(_) => prop_assert!(!dest.exists()),
        }
    }
}

#[test]
fn an_unhashed_dump_streams_and_arrives_fully_verified() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_snapshot(&src);
    // What a migration's source has: a manifest with sizes only.
    let m = manifest(scan_dir_unhashed(&src, &["criu", "config.json", "upper"]).unwrap());
    assert!(m.entries.iter().all(|e| e.sha256.is_none()));
    assert!(
        m.validate().is_err(),
        "a directory manifest needs its sha256s"
    );
    m.write_to_dir(&src).unwrap();
    let bytes = archive_of(&src);
    let dest = t.path().join("dest");
    let got = import_archive(bytes.as_slice(), &dest).unwrap();
    assert!(got
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .all(|e| e.sha256.is_some()));
    verify_dir(&dest).unwrap();
}

#[test]
fn exporting_a_corrupted_stored_snapshot_fails() {
    let t = tempfile::tempdir().unwrap();
    make_snapshot(t.path());
    let p = t.path().join("config.json");
    fs::write(&p, b"[]").unwrap(); // same size, other content
    let err = write_archive(t.path(), Vec::new(), Codec::Zstd(1)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == "config.json"),
        "{err}"
    );
}

#[test]
fn a_wrong_or_missing_checksum_trailer_is_refused() {
    use sha2::Digest;
    let t = tempfile::tempdir().unwrap();
    let mut m = manifest(vec![file_entry("config.json", b"{}")]);
    m.entries[0].sha256 = None;
    let json = serde_json::to_vec(&m).unwrap();
    let wrong = serde_json::to_vec(&serde_json::json!({"sha256": {"config.json": hex::encode(sha2::Sha256::digest(b"other"))}})).unwrap();
    let bytes = raw_archive(
        &json,
        &[
            ("config.json", tar::EntryType::Regular, b"{}", None),
            ("checksums.json", tar::EntryType::Regular, &wrong, None),
        ],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == "config.json"),
        "{err}"
    );
    let bytes = raw_archive(
        &json,
        &[("config.json", tar::EntryType::Regular, b"{}", None)],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Missing { ref path } if path == "checksums.json"),
        "{err}"
    );
    let right = serde_json::to_vec(
        &serde_json::json!({"sha256": {"config.json": hex::encode(sha2::Sha256::digest(b"{}"))}}),
    )
    .unwrap();
    let bytes = raw_archive(
        &json,
        &[
            ("config.json", tar::EntryType::Regular, b"{}", None),
            ("checksums.json", tar::EntryType::Regular, &right, None),
        ],
    );
    import_archive(bytes.as_slice(), &t.path().join("d")).unwrap();
    verify_dir(&t.path().join("d")).unwrap();
}

/// A hostile entry: a path built from risky pieces, any tar type, a link target that may escape.
fn hostile_entry() -> impl Strategy<Value = (String, u8, Vec<u8>, Option<String>, bool, u64)> {
    let piece = prop::sample::select(vec![
        "upper",
        "criu",
        "config.json",
        "..",
        "",
        ".",
        "a",
        "b",
        "/",
        "/etc",
        "upper/..",
        "x.img",
    ]);
    let path = prop::collection::vec(piece, 1..4).prop_map(|v| v.join("/"));
    let kind = prop::sample::select(vec![b'0', b'5', b'2', b'1', b'3', b'4', b'6']); // file, dir, symlink, hardlink, char, block, fifo
    let data = prop::collection::vec(any::<u8>(), 0..64);
    let link = prop::option::of(
        prop::sample::select(vec!["/etc", "../..", "../../outside", "a", "upper", "/tmp"])
            .prop_map(String::from),
    );
    (path, kind, data, link, any::<bool>(), 0u64..128)
}

fn entry_kind(k: u8) -> Option<EntryKind> {
    match k {
        b'0' => Some(EntryKind::File),
        b'5' => Some(EntryKind::Dir),
        b'2' => Some(EntryKind::Symlink),
        b'3' => Some(EntryKind::Whiteout),
        _ => None,
    }
}

/// Every path under `dir`, relative to it.
fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(
            e.path()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), base, out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Generated hostile archives (escaping paths, links and hard links, devices, FIFOs, entries the
    /// manifest lists with another size or type, or not at all): the reader refuses them with
    /// nothing created, or what it creates is exactly what the manifest lists, inside the target,
    /// with no device other than an overlay whiteout and nothing outside the target touched.
    #[test]
    fn generated_hostile_archives_never_escape_or_smuggle(entries in prop::collection::vec(hostile_entry(), 0..6)) {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = t.path().join("d").join("snap");
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut listed = Vec::new();
        for (path, kind, data, link, list, size) in &entries {
            if let (true, Some(k)) = (*list, entry_kind(*kind)) {
                use sha2::Digest;
                let size = if *size < 64 { data.len() as u64 } else { *size }; // sometimes a lie
                listed.push(Entry { path: path.clone(), kind: k, size, sha256: Some(hex::encode(sha2::Sha256::digest(data))), mode: 0o644, uid: 0, gid: 0, target: link.clone() });
            }
        }
        let m = manifest(listed);
        // A truthful checksum trailer, so that archives that are otherwise sound get accepted.
        let sums: std::collections::HashMap<&str, String> = entries.iter().map(|(p, _, d, ..)| { use sha2::Digest; (p.as_str(), hex::encode(sha2::Sha256::digest(d))) }).collect();
        let trailer = serde_json::to_vec(&serde_json::json!({"sha256": sums})).unwrap();
        let mut raw: Vec<(&str, tar::EntryType, &[u8], Option<&str>)> = entries.iter().map(|(p, k, d, l, _, _)| (p.as_str(), tar::EntryType::new(*k), d.as_slice(), l.as_deref())).collect();
        raw.push(("checksums.json", tar::EntryType::Regular, &trailer, None));
        let bytes = raw_archive(&serde_json::to_vec(&m).unwrap(), &raw);
        match import_archive(bytes.as_slice(), &dest) {
            Err(_) => prop_assert!(!dest.exists(), "a refused archive left {}", dest.display()),
            Ok(got) => {
                let mut found = Vec::new();
                walk(&dest, &dest, &mut found);
                for f in &found {
                    prop_assert!(f == "manifest.json" || got.entries.iter().any(|e| &e.path == f), "unlisted {f} was created");
                }
                prop_assert!(verify_dir(&dest).is_ok());
            }
        }
        prop_assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "something was written outside the target");
        let mut around = Vec::new();
        walk(t.path(), t.path(), &mut around);
        prop_assert!(around.iter().all(|p| p.starts_with("outside") || p.starts_with("d")), "{:?}", around);
    }
}

#[test]
fn a_plain_archive_round_trips_and_a_damaged_one_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let m = make_snapshot(&src);
    let bytes = archive_with(&src, Codec::Plain);
    assert!(bytes.len() > 300_000, "plain means uncompressed");
    let got = import_archive(bytes.as_slice(), &t.path().join("ok")).unwrap();
    assert_eq!(got, m);
    verify_dir(&t.path().join("ok")).unwrap();
    // A flipped byte in the memory pages, and one in the manifest (which no zstd checksum covers).
    // ("demo" -> "Demo" still parses: only the manifest's own sha256 tells.)
    for (needle, damaged) in [
        (&[7u8; 64][..], "criu/pages-1.img"),
        (&b"\"demo\""[..], "manifest.json"),
    ] {
        let mut bad = bytes.clone();
        let at = bad.windows(needle.len()).position(|w| w == needle).unwrap();
        bad[at + 1] ^= 0x20;
        let dest = t.path().join("bad");
        let err = import_archive(bad.as_slice(), &dest).unwrap_err();
        assert!(
            matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == damaged),
            "{err}"
        );
        assert!(!dest.exists());
    }
}

#[test]
fn a_plain_archive_without_the_manifest_checksum_is_refused() {
    use sha2::Digest;
    let t = tempfile::tempdir().unwrap();
    let mut m = manifest(vec![file_entry("config.json", b"{}")]);
    m.entries[0].sha256 = None;
    let json = serde_json::to_vec(&m).unwrap();
    let sums = serde_json::json!({"config.json": hex::encode(sha2::Sha256::digest(b"{}"))});
    let without = serde_json::to_vec(&serde_json::json!({"sha256": sums})).unwrap();
    let bytes = raw_plain_archive(
        &json,
        &[
            ("config.json", tar::EntryType::Regular, b"{}", None),
            ("checksums.json", tar::EntryType::Regular, &without, None),
        ],
    );
    let err = import_archive(bytes.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Missing { ref path } if path.contains("manifest_sha256")),
        "{err}"
    );
    let with = serde_json::to_vec(&serde_json::json!({"sha256": sums, "manifest_sha256": hex::encode(sha2::Sha256::digest(&json))})).unwrap();
    let bytes = raw_plain_archive(
        &json,
        &[
            ("config.json", tar::EntryType::Regular, b"{}", None),
            ("checksums.json", tar::EntryType::Regular, &with, None),
        ],
    );
    import_archive(bytes.as_slice(), &t.path().join("d")).unwrap();
}

#[test]
fn memory_that_does_not_compress_is_sent_plain() {
    let t = tempfile::tempdir().unwrap();
    let mut pages = vec![0u8; 32 << 20];
    for (name, fill_random) in [("random", true), ("pattern", false)] {
        let dir = t.path().join(name);
        fs::create_dir_all(dir.join("criu")).unwrap();
        if fill_random {
            // xorshift64: bytes no compressor can shrink
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for chunk in pages.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
        } else {
            for (i, b) in pages.iter_mut().enumerate() {
                *b = (i / 4096 % 7) as u8;
            }
        }
        fs::write(dir.join("criu/pages-1.img"), &pages).unwrap();
        fs::write(dir.join("config.json"), b"{}").unwrap();
        manifest(scan_dir(&dir, &["criu", "config.json"]).unwrap())
            .write_to_dir(&dir)
            .unwrap();
        let want = if fill_random {
            Codec::Plain
        } else {
            Codec::Zstd(1)
        };
        assert_eq!(Codec::for_dir(&dir, 1), want, "{name}");
    }
    // Small snapshots are always compressed.
    let small = t.path().join("small");
    make_snapshot(&small);
    assert_eq!(Codec::for_dir(&small, 1), Codec::Zstd(1));
}

#[test]
fn an_unverified_import_records_the_claimed_sums_and_verification_names_a_damaged_file() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let m = make_snapshot(&src);
    let bytes = archive_with(&src, Codec::Plain);
    let got = import_archive_with(bytes.as_slice(), &t.path().join("ok"), Verify::Later).unwrap();
    assert_eq!(
        got, m,
        "the same manifest, sums included, as a verified import"
    );
    verify_dir(&t.path().join("ok")).unwrap();
    // Damaged in flight: the import (which does not hash) takes it, the verification does not.
    let mut bad = bytes.clone();
    let at = bad.windows(64).position(|w| w == [7u8; 64]).unwrap();
    bad[at + 10] ^= 0x04;
    import_archive_with(bad.as_slice(), &t.path().join("bad"), Verify::Later).unwrap();
    let err = verify_dir(&t.path().join("bad")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == "criu/pages-1.img"),
        "{err}"
    );
    // A trailer without a file's sum is refused even unverified.
    let mut m2 = manifest(vec![file_entry("config.json", b"{}")]);
    m2.entries[0].sha256 = None;
    let json = serde_json::to_vec(&m2).unwrap();
    let bytes = raw_archive(
        &json,
        &[
            ("config.json", tar::EntryType::Regular, b"{}", None),
            (
                "checksums.json",
                tar::EntryType::Regular,
                br#"{"sha256": {}}"#,
                None,
            ),
        ],
    );
    let err =
        import_archive_with(bytes.as_slice(), &t.path().join("nosum"), Verify::Later).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Missing { ref path } if path.contains("config.json")),
        "{err}"
    );
    assert!(!t.path().join("nosum").exists());
}

#[test]
fn a_trusted_sum_is_sent_as_is_and_the_receiver_still_catches_a_stale_one() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_snapshot(&src);
    // The manifest holds a sum for the pages (as a follower leaves it); then the file changes.
    let p = src.join("criu/pages-1.img");
    let mut b = fs::read(&p).unwrap();
    b[5] ^= 1;
    fs::write(&p, &b).unwrap();
    let err = write_archive_with(&src, Vec::new(), Codec::Plain, false).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { .. }),
        "{err}"
    );
    let mut out = Vec::new();
    write_archive_with(&src, &mut out, Codec::Plain, true).unwrap();
    let err = import_archive(out.as_slice(), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { ref path, .. } if path == "criu/pages-1.img"),
        "{err}"
    );
}

/// Two imports of one snapshot at once in one process (two control-plane instances replicating the
/// same snapshot to the same host): each stages apart, at most one lands, and what landed is whole.
#[test]
fn concurrent_imports_of_one_snapshot_never_mix_their_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let m = make_snapshot(&src);
    // Many entries, so that the two extractions overlap in time.
    for i in 0..400 {
        let d = src.join(format!("upper/opt/pkg{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("mod.py"), format!("x = {i}\n").repeat(50)).unwrap();
    }
    let m = Manifest {
        entries: scan_dir(&src, &["criu", "config.json", "upper"]).unwrap(),
        ..m
    };
    m.write_to_dir(&src).unwrap();
    let bytes = std::sync::Arc::new(archive_of(&src));
    for round in 0..5 {
        let dest = t.path().join(format!("dest{round}"));
        let results: Vec<_> = (0..2)
            .map(|_| {
                let (bytes, dest) = (bytes.clone(), dest.clone());
                std::thread::spawn(move || import_archive(bytes.as_slice(), &dest))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(
            results.iter().any(|r| r.is_ok()),
            "one import lands: {results:?}"
        );
        assert_eq!(verify_dir(&dest).unwrap(), m, "round {round}");
        let leftovers: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    }
}
