//! Does this host offer the tracker? Tries the whole mechanism on one page of this process.

use crate::kernel::{register_wp, scan_written, uffd_api, userfaultfd_here, UFFD_USER_MODE_ONLY};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `Ok` when userfaultfd async write-protect and `PAGEMAP_SCAN` work here; otherwise what is
/// missing.
pub fn probe() -> Result<(), String> {
    let fd = userfaultfd_here(libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY).map_err(|e| {
        format!("userfaultfd() fails ({e}): the kernel lacks userfaultfd or it is disabled")
    })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    uffd_api(fd.as_raw_fd()).map_err(|e| {
        format!("userfaultfd has no UFFD_FEATURE_WP_ASYNC ({e}): Linux >= 6.7 is needed")
    })?;
    let len = 4 * 4096;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let result = (|| {
        let (start, end) = (p as u64, p as u64 + len as u64);
        register_wp(fd.as_raw_fd(), start, end)
            .map_err(|e| format!("UFFDIO_REGISTER_MODE_WP refused ({e})"))?;
        unsafe { *(p as *mut u8).add(4096) = 1 };
        let pm =
            File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
        let mut out = Vec::new();
        scan_written(pm.as_raw_fd(), start, end, &mut out)
            .map_err(|e| format!("the PAGEMAP_SCAN ioctl fails ({e}): Linux >= 6.7 is needed"))?;
        if out != [(start + 4096, start + 8192)] {
            return Err(format!(
                "PAGEMAP_SCAN reported {out:x?} after writing one page"
            ));
        }
        Ok(())
    })();
    unsafe { libc::munmap(p, len) };
    result
}
