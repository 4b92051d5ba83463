//! Kernel ABI for async write-protect tracking: userfaultfd ioctls and `PAGEMAP_SCAN`
//! (Linux >= 6.7). Declared here because distribution headers may predate them; these are stable
//! kernel ABI (`include/uapi/linux/userfaultfd.h`, `include/uapi/linux/fs.h`).

use std::io;
use std::os::fd::RawFd;

/// `userfaultfd()` flag: only faults from user mode are handled (async WP handles all writes).
pub const UFFD_USER_MODE_ONLY: u64 = 1;
pub const UFFD_API: u64 = 0xAA;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

const fn iowr(ty: u64, nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (ty << 8) | nr
}

pub const UFFDIO_API: u64 = iowr(0xAA, 0x3F, 24);
pub const UFFDIO_REGISTER: u64 = iowr(0xAA, 0x00, 32);
pub const UFFDIO_WRITEPROTECT: u64 = iowr(0xAA, 0x06, 24);
pub const PAGEMAP_SCAN: u64 = iowr(b'f' as u64, 16, 96);

pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

#[repr(C)]
#[derive(Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct UffdioWriteprotect {
    pub range: UffdioRange,
    pub mode: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// `ioctl(fd, req, arg)`; errors as `io::Error`.
///
/// # Safety
/// `arg` must point to the struct the request expects.
pub unsafe fn ioctl<T>(fd: RawFd, req: u64, arg: *mut T) -> io::Result<i64> {
    let r = libc::ioctl(fd, req as _, arg);
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Enable async write-protect on a fresh userfaultfd.
pub fn uffd_api(fd: RawFd) -> io::Result<()> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    unsafe { ioctl(fd, UFFDIO_API, &mut api) }.map(|_| ())
}

/// Register `[start, end)` for write-protect tracking and write-protect it.
pub fn register_wp(fd: RawFd, start: u64, end: u64) -> io::Result<()> {
    let range = || UffdioRange {
        start,
        len: end - start,
    };
    let mut reg = UffdioRegister {
        range: range(),
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    unsafe { ioctl(fd, UFFDIO_REGISTER, &mut reg) }?;
    let mut wp = UffdioWriteprotect {
        range: range(),
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    unsafe { ioctl(fd, UFFDIO_WRITEPROTECT, &mut wp) }.map(|_| ())
}

/// Pages written in `[start, end)` since they were last protected, re-protecting them in the same
/// walk. Appends page-aligned `(start, end)` ranges to `out`.
pub fn scan_written(
    pagemap: RawFd,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    let mut vec = vec![PageRegion::default(); 1024];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            start: at,
            end,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        let n = unsafe { ioctl(pagemap, PAGEMAP_SCAN, &mut arg) }? as usize;
        for r in &vec[..n] {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
}

/// `userfaultfd(flags)` in this process.
pub fn userfaultfd_here(flags: u64) -> io::Result<RawFd> {
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}
