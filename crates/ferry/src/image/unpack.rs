//! Applies one image layer (a tar stream) onto a flattened root filesystem: entries in order,
//! whiteouts honoured (`.wh.NAME` removes NAME from lower layers, `.wh..wh..opq` empties a
//! directory of what lower layers put there), and every path kept inside the root — absolute paths
//! and `..` are refused, and a symlink met on the way is resolved inside the root, never outside.

use crate::{Error, Result};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The layer entry's path as a clean relative path, or an error for a path that could escape.
pub fn clean(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::Invalid(format!(
                    "layer entry {path:?} has an absolute path: refusing the image"
                )))
            }
            Component::ParentDir => {
                return Err(Error::Invalid(format!(
                    "layer entry {path:?} contains '..': refusing the image"
                )))
            }
        }
    }
    Ok(out)
}

/// Resolves `rel` inside `root` the way a process chrooted there would see it: symlinks are
/// followed, an absolute target starts again at `root`, `..` stops at `root`. The result always
/// lies under `root`.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let candidate: PathBuf = root.join(cur.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(Error::Invalid(format!(
                        "too many symlinks resolving {rel:?} in the image"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => todo.push(p.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur.push(part),
        }
    }
    Ok(root.join(cur.iter().collect::<PathBuf>()))
}

/// Removes whatever is at `p` (file, symlink or whole directory), if anything.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What applying a layer did (for logs and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Applied {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

/// Applies the (uncompressed) layer tar read from `input` onto `root`.
pub fn apply_layer(input: impl Read, root: &Path) -> Result<Applied> {
    let mut ar = tar::Archive::new(input);
    let root_user = nix::unistd::geteuid().is_root();
    ar.set_preserve_ownerships(root_user);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    let mut done = Applied::default();
    // Paths this layer made: whiteouts only hide what lower layers had.
    let mut made: HashSet<PathBuf> = HashSet::new();
    let bad =
        |e: std::io::Error| Error::Invalid(format!("reading the layer: {e} (is it a tar file?)"));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let rel = clean(&entry.path().map_err(bad)?)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = resolve_in_root(root, &parent_rel)?;
        done.entries += 1;
        if name == OPAQUE {
            done.whiteouts += 1;
            for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if !made.contains(&parent_rel.join(e.file_name())) {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            done.whiteouts += 1;
            let hidden_rel = parent_rel.join(hidden);
            if !made.contains(&hidden_rel) && !hidden.is_empty() && hidden != "." && hidden != ".."
            {
                remove_any(&parent.join(hidden))?;
            }
            continue;
        }
        std::fs::create_dir_all(&parent)?;
        let dest = parent.join(&name);
        let kind = entry.header().entry_type();
        let existing_dir = std::fs::symlink_metadata(&dest)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !(kind.is_dir() && existing_dir) {
            remove_any(&dest)?;
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| Error::Invalid(format!("hard link {rel:?} has no target")))?;
            let target = resolve_in_root(root, &clean(&target)?)?;
            std::fs::hard_link(&target, &dest).map_err(|e| {
                Error::Invalid(format!("hard link {rel:?} → {}: {e}", target.display()))
            })?;
        } else if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
            tracing::debug!(path = %rel.display(), "skipping a device or fifo entry of a layer");
            continue;
        } else {
            done.bytes += entry.header().size().unwrap_or(0);
            entry
                .unpack(&dest)
                .map_err(|e| Error::Internal(format!("unpacking {rel:?}: {e}")))?;
        }
        made.insert(rel);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    /// A root-owned header of this type, mode and size.
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            data,
        )
        .unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            path,
            &[][..],
        )
        .unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), path, target)
            .unwrap();
    }

    /// A raw header whose name is written as given (the builder refuses bad paths itself).
    fn raw(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, link: Option<&str>) {
        let mut h = tar::Header::new_old();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let root = tempfile::tempdir().unwrap();
        let l1 = layer(|b| {
            dir(b, "etc");
            file(b, "etc/keep", b"1");
            file(b, "etc/gone", b"1");
            dir(b, "data");
            file(b, "data/a", b"a");
            file(b, "data/b", b"b");
            file(b, "over", b"old");
        });
        let l2 = layer(|b| {
            file(b, "etc/.wh.gone", b"");
            file(b, "data/new", b"n"); // before the opaque marker, same layer: kept
            file(b, "data/.wh..wh..opq", b"");
            file(b, "./over", b"new");
        });
        let a = apply_layer(&l1[..], root.path()).unwrap();
        assert_eq!(a.entries, 7);
        let a = apply_layer(&l2[..], root.path()).unwrap();
        assert_eq!(a.whiteouts, 2);
        let r = root.path();
        assert!(r.join("etc/keep").exists());
        assert!(!r.join("etc/gone").exists());
        assert!(!r.join("etc/.wh.gone").exists());
        assert!(!r.join("data/a").exists() && !r.join("data/b").exists());
        assert!(r.join("data/new").exists());
        assert!(!r.join("data/.wh..wh..opq").exists());
        assert_eq!(std::fs::read_to_string(r.join("over")).unwrap(), "new");
    }

    #[test]
    fn a_file_replaces_a_directory_and_back() {
        let root = tempfile::tempdir().unwrap();
        apply_layer(
            &layer(|b| {
                dir(b, "x");
                file(b, "x/y", b"1");
            })[..],
            root.path(),
        )
        .unwrap();
        apply_layer(&layer(|b| file(b, "x", b"file"))[..], root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("x")).unwrap(),
            "file"
        );
        apply_layer(
            &layer(|b| {
                dir(b, "x");
                file(b, "x/z", b"2");
            })[..],
            root.path(),
        )
        .unwrap();
        assert!(root.path().join("x/z").exists());
    }

    #[test]
    fn unsafe_entries_are_refused() {
        for (path, kind, link) in [
            ("/etc/passwd", tar::EntryType::Regular, None),
            ("a/../../etc/x", tar::EntryType::Regular, None),
            ("../x", tar::EntryType::Regular, None),
        ] {
            let root = tempfile::tempdir().unwrap();
            let l = layer(|b| raw(b, path, kind, link));
            let e = apply_layer(&l[..], root.path()).unwrap_err().to_string();
            assert!(e.contains("refusing the image"), "{path}: {e}");
        }
        let root = tempfile::tempdir().unwrap();
        let l = layer(|b| raw(b, "h", tar::EntryType::Link, Some("../../etc/passwd")));
        assert!(apply_layer(&l[..], root.path())
            .unwrap_err()
            .to_string()
            .contains("'..'"));
    }

    #[test]
    fn symlinks_never_lead_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // A symlink to an absolute path outside, then a file written "through" it.
        let target = outside.path().display().to_string();
        apply_layer(&layer(|b| symlink(b, "evil", &target))[..], root.path()).unwrap();
        apply_layer(&layer(|b| file(b, "evil/pwned", b"x"))[..], root.path()).unwrap();
        assert!(
            !outside.path().join("pwned").exists(),
            "a layer wrote outside the root"
        );
        assert!(root
            .path()
            .join(target.trim_start_matches('/'))
            .join("pwned")
            .exists());
        // Relative escapes are clamped at the root too.
        apply_layer(&layer(|b| symlink(b, "up", "../../../.."))[..], root.path()).unwrap();
        apply_layer(&layer(|b| file(b, "up/f", b"x"))[..], root.path()).unwrap();
        assert!(root.path().join("f").exists());
        // A whiteout through a symlink removes nothing outside.
        std::fs::write(outside.path().join("keep"), "1").unwrap();
        apply_layer(&layer(|b| file(b, "evil/.wh.keep", b""))[..], root.path()).unwrap();
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn hard_links_point_inside() {
        let root = tempfile::tempdir().unwrap();
        let l = layer(|b| {
            file(b, "a", b"data");
            raw(b, "b", tar::EntryType::Link, Some("a"));
        });
        apply_layer(&l[..], root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("b")).unwrap(),
            "data"
        );
    }

    #[test]
    fn resolve_clamps() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new("a/../../b")).unwrap(),
            root.path().join("b")
        );
    }
}
