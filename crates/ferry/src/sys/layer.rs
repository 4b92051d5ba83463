//! A runtime's writable layer as a size-limited filesystem of its own: a sparse ext4 image in the
//! runtime's dir, loop-mounted, holding the overlay's upper and work dirs. Writing past its size
//! fails with ENOSPC inside the runtime, `df` there shows its size (overlayfs reports the upper
//! filesystem's), and the host's disk is used only for what the runtime actually wrote.
//!
//! Measured here (kernel 6.18, e2fsprogs 1.47, 2 cores): making the image (truncate +
//! `mkfs.ext4` without journal) takes 13–15 ms whether 1, 4 or 10 GB, mounting 11–18 ms,
//! unmounting 8–12 ms on an idle machine (40–145, 67–138 and 60–320 ms with a compiler running
//! on both cores); the image starts at 0.7–4.3 MB on disk. That is the whole extra cost of a
//! create or restore (the snapshot's upper is copied with `cp -a` as before, into the image
//! instead of a host directory); a checkpoint copies out of it at the same cost as before. tmpfs
//! would mount in about 1 ms but is charged to the runtime's memory cgroup, so a plan's disk could
//! not exceed its memory (the free plan has 256 MB of memory and 1 GB of disk). No journal: the
//! layer needs no durability beyond the snapshots that copy it (the overlay on top is `volatile`
//! already).
//!
//! Does not: grow or shrink a mounted layer (a larger plan gets a larger layer at its next restore
//! or move, which copies the snapshot's upper into a fresh image).

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Makes a fresh sparse ext4 image of `size_mb` at `image` (replacing any old one) and mounts it
/// at `mountpoint` through a loop device that is released when it is unmounted.
pub async fn create(image: &Path, size_mb: u64, mountpoint: &Path) -> Result<()> {
    release(mountpoint);
    let _ = std::fs::remove_file(image);
    std::fs::create_dir_all(mountpoint)?;
    {
        let f = std::fs::File::create(image)?;
        f.set_len(size_mb * 1024 * 1024)?;
    }
    let img = image.display().to_string();
    let made = async {
        crate::sys::cmd::run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,nodiscard",
                &img,
            ],
        )
        .await?;
        // `loop` through mount(8) sets the device to clear itself on the last unmount.
        crate::sys::cmd::run(
            "mount",
            &[
                "-t",
                "ext4",
                "-o",
                "loop,noatime",
                &img,
                &mountpoint.display().to_string(),
            ],
        )
        .await
    }
    .await;
    if let Err(e) = made {
        release(mountpoint);
        let _ = std::fs::remove_file(image);
        return Err(Error::Internal(format!(
            "making the runtime's {size_mb} MB writable layer failed (is e2fsprogs installed and a loop device free?): {e}"
        )));
    }
    Ok(())
}

/// Unmounts the layer at `mountpoint` if mounted (lazily: the loop device goes once the last user
/// of the filesystem, an overlay or a dying process, lets go). Best effort.
pub fn release(mountpoint: &Path) {
    let _ = crate::sys::mount::unmount(mountpoint);
}

/// Loop devices whose backing file lies under `dir`: (device, backing file).
pub fn loops_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim().trim_end_matches(" (deleted)").to_string();
            backing
                .starts_with(&prefix)
                .then(|| (format!("/dev/{name}"), PathBuf::from(backing)))
        })
        .collect()
}

/// Detaches every loop device backed by a file under `dir` that is still attached after its mounts
/// went (waiting briefly for the kernel's own autoclear first). For cleanup.
pub async fn detach_loops_under(dir: &Path) {
    for _ in 0..20 {
        if loops_under(dir).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (dev, _) in loops_under(dir) {
        crate::sys::cmd::run_quiet("losetup", &["-d", &dev]).await;
    }
}

/// Whether an error from copying into a layer means it is full.
pub fn is_full(e: &Error) -> bool {
    e.to_string().contains("No space left on device")
}
