//! Overlay mounts for a runtime's root filesystem.

use crate::{internal, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// Mounts `lower` (read-only image) + `upper` (the runtime's writable layer) at `target`.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d)?;
    }
    if is_mounted(target) {
        return Ok(());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    // `volatile`: overlayfs skips its syncs of the upper filesystem, which otherwise make every
    // unmount write back everything dirty on that filesystem (a fresh snapshot's hundreds of MB)
    // before a stopped runtime is gone. A runtime's writable layer needs no durability beyond its
    // snapshots (which copy it); after a host crash the work dir is made anew. Kernels before 5.10
    // lack the option: then without.
    let volatile = format!("{opts},volatile");
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(volatile.as_str()),
    )
    .or_else(|_| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
    })
    .map_err(|e| {
        internal!(
            "mounting the runtime's overlay at {} failed: {e}",
            target.display()
        )
    })
}

/// Unmounts `target` if it is mounted (lazily, so a busy mount never blocks cleanup).
pub fn unmount(target: &Path) -> Result<()> {
    if !is_mounted(target) {
        return Ok(());
    }
    umount2(target, MntFlags::MNT_DETACH)
        .map_err(|e| internal!("unmounting {} failed: {e}", target.display()))
}

pub fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

pub fn is_mounted(target: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(target) else {
        return false;
    };
    let want = canon.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).map(unescape) == Some(want.to_string()))
}

/// Mount points under `dir` (for cleanup of everything a state dir holds).
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let prefix = format!("{}/", dir.display());
    let mut v: Vec<_> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape))
        .filter(|m| m.starts_with(&prefix))
        .map(std::path::PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
