//! userfaultfd, as the lazy-pages server uses it on a descriptor `criu restore` opened for a
//! restored process (already past `UFFDIO_API`, non-blocking): reading events (page fault, fork,
//! remap, remove, unmap, the ones CRIU's `criu/uffd.c` asks for) and filling pages with
//! `UFFDIO_COPY` / `UFFDIO_ZEROPAGE`. Constants and structs are the kernel's stable ABI, declared
//! here because older libc headers lack them.

use std::os::fd::RawFd;

pub const EVENT_PAGEFAULT: u8 = 0x12;
pub const EVENT_FORK: u8 = 0x13;
pub const EVENT_REMAP: u8 = 0x14;
pub const EVENT_REMOVE: u8 = 0x15;
pub const EVENT_UNMAP: u8 = 0x16;

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (0xAA << 8) | nr
}
const UFFDIO_UNREGISTER: u64 = ior(0x01, 16);
const UFFDIO_COPY: u64 = iowr(0x03, 40);
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, 32);

/// A userfaultfd event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    PageFault {
        addr: u64,
    },
    Fork {
        ufd: RawFd,
    },
    Remap {
        from: u64,
        to: u64,
        len: u64,
    },
    /// `MADV_DONTNEED`/`MADV_REMOVE`: the VMA stays, its pages are gone.
    Remove {
        start: u64,
        end: u64,
    },
    Unmap {
        start: u64,
        end: u64,
    },
    Other(u8),
}

/// Decodes a 32-byte `struct uffd_msg`.
pub fn decode(m: &[u8; 32]) -> Event {
    let u64_at = |i: usize| u64::from_le_bytes(m[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    // Header: event u8, 7 reserved bytes; the union starts at 8.
    match m[0] {
        // pagefault: flags u64, address u64, ptid u32
        EVENT_PAGEFAULT => Event::PageFault { addr: u64_at(16) },
        EVENT_FORK => Event::Fork {
            ufd: u32_at(8) as RawFd,
        },
        EVENT_REMAP => Event::Remap {
            from: u64_at(8),
            to: u64_at(16),
            len: u64_at(24),
        },
        EVENT_REMOVE => Event::Remove {
            start: u64_at(8),
            end: u64_at(16),
        },
        EVENT_UNMAP => Event::Unmap {
            start: u64_at(8),
            end: u64_at(16),
        },
        e => Event::Other(e),
    }
}

/// Reads one event; `None` when none is queued (the descriptor is non-blocking).
pub fn read_event(fd: RawFd) -> std::io::Result<Option<Event>> {
    let mut m = [0u8; 32];
    // SAFETY: reads at most 32 bytes into a 32-byte buffer.
    let n = unsafe { libc::read(fd, m.as_mut_ptr().cast(), 32) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(e),
        };
    }
    if n != 32 {
        return Err(std::io::Error::other(format!(
            "short uffd message ({n} bytes)"
        )));
    }
    Ok(Some(decode(&m)))
}

/// What a fill did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Bytes copied from the start of the range (all of it when equal to its length).
    Done(u64),
    /// The page at this byte offset was already there; bytes before it were copied.
    Exists(u64),
    /// Not possible now (the range is not registered yet, or the address space is changing).
    Later(u64),
    /// The process is gone.
    Gone,
}

fn fill_result(ret: i32, copied: i64, len: u64) -> std::io::Result<Fill> {
    if ret == 0 {
        return Ok(Fill::Done(len));
    }
    let e = std::io::Error::last_os_error();
    let done = if copied > 0 { copied as u64 } else { 0 };
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(Fill::Exists(done)),
        Some(libc::EAGAIN) | Some(libc::ENOENT) => Ok(Fill::Later(done)),
        Some(libc::ESRCH) | Some(libc::ENOSPC) => Ok(Fill::Gone),
        _ => Err(e),
    }
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    start: u64,
    len: u64,
    mode: u64,
    zeropage: i64,
}

const _: () = assert!(std::mem::size_of::<UffdioCopy>() == 40);
const _: () = assert!(std::mem::size_of::<UffdioZeropage>() == 32);

/// Copies `src` to `dst` in the process of `fd` and wakes threads waiting there.
pub fn copy(fd: RawFd, dst: u64, src: &[u8]) -> std::io::Result<Fill> {
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: the kernel reads `len` bytes from `src`, which lives for the call.
    let r = unsafe { libc::ioctl(fd, UFFDIO_COPY as _, &mut c) };
    fill_result(r, c.copy, src.len() as u64)
}

/// Maps zero pages at `[dst, dst + len)` (a page the dump had none for).
pub fn zero(fd: RawFd, dst: u64, len: u64) -> std::io::Result<Fill> {
    let mut z = UffdioZeropage {
        start: dst,
        len,
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: a plain ioctl on a struct we own.
    let r = unsafe { libc::ioctl(fd, UFFDIO_ZEROPAGE as _, &mut z) };
    fill_result(r, z.zeropage, len)
}

/// Stops handling faults in `[start, start + len)` (after a remove event, as CRIU does).
pub fn unregister(fd: RawFd, start: u64, len: u64) -> std::io::Result<()> {
    let mut r = [start, len];
    // SAFETY: a plain ioctl on a struct we own.
    if unsafe { libc::ioctl(fd, UFFDIO_UNREGISTER as _, r.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // Values of _IOWR(0xAA, 3, struct uffdio_copy) etc. on x86-64.
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xc020_aa04);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
    }

    #[test]
    fn decodes_events() {
        let mut m = [0u8; 32];
        m[0] = EVENT_PAGEFAULT;
        m[16..24].copy_from_slice(&0x7f12_3456_7000u64.to_le_bytes());
        assert_eq!(
            decode(&m),
            Event::PageFault {
                addr: 0x7f12_3456_7000
            }
        );
        m[0] = EVENT_REMAP;
        m[8..16].copy_from_slice(&1u64.to_le_bytes());
        m[24..32].copy_from_slice(&3u64.to_le_bytes());
        assert_eq!(
            decode(&m),
            Event::Remap {
                from: 1,
                to: 0x7f12_3456_7000,
                len: 3
            }
        );
        m[0] = EVENT_FORK;
        m[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(decode(&m), Event::Fork { ufd: 9 });
        m[0] = EVENT_UNMAP;
        m[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        m[16..24].copy_from_slice(&0x3000u64.to_le_bytes());
        assert_eq!(
            decode(&m),
            Event::Unmap {
                start: 0x1000,
                end: 0x3000
            }
        );
    }
}
