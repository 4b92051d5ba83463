//! The tracker proper: attach to processes, register their memory, report written pages per round.

use crate::inject::Stopped;
use crate::kernel::{register_wp, scan_written, uffd_api, UFFD_USER_MODE_ONLY};
use crate::{maps, Ctx, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What one round found for one process. Ranges are page-aligned `(start, end)` addresses.
#[derive(Debug, Clone, Default)]
pub struct ProcessRound {
    pub pid: i32,
    /// First round for this process (it was just attached): `dirty` is all its tracked memory.
    pub new: bool,
    /// Written since the previous round, plus areas seen for the first time (whole).
    pub dirty: Vec<(u64, u64)>,
    /// Writable areas that are not tracked (shared memory, areas the kernel refused to register):
    /// they must be copied in full after the freeze.
    pub untracked: Vec<(u64, u64)>,
}

impl ProcessRound {
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.iter().map(|(a, b)| b - a).sum()
    }
}

struct Proc {
    uffd: OwnedFd,
    pagemap: File,
    start_time: u64,
}

/// Tracks a set of processes. Dropping it ends all tracking.
#[derive(Default)]
pub struct Tracker {
    procs: BTreeMap<i32, Proc>,
}

/// Field 22 of /proc/PID/stat (start time): tells a process from a later one with the same pid.
fn start_time(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat"))
}

fn check(r: i64, pid: i32, what: &'static str) -> Result<i64> {
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r as i32)).ctx(pid, what)
    } else {
        Ok(r)
    }
}

fn gone(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Os { source, .. }
        if source.raw_os_error() == Some(libc::ESRCH) || source.kind() == io::ErrorKind::NotFound)
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The processes currently tracked.
    pub fn pids(&self) -> Vec<i32> {
        self.procs.keys().copied().collect()
    }

    /// One round over `pids` (the tree as it is now): processes seen for the first time are
    /// attached and reported whole (`new`); tracked ones report what they wrote since the last
    /// round. Processes not in `pids` (or that exited) are dropped.
    pub fn round(&mut self, pids: &[i32]) -> Result<Vec<ProcessRound>> {
        self.procs
            .retain(|pid, p| pids.contains(pid) && start_time(*pid).ok() == Some(p.start_time));
        let mut out = Vec::new();
        for &pid in pids {
            let r = if self.procs.contains_key(&pid) {
                self.scan(pid)
            } else {
                self.attach(pid)
            };
            match r {
                Ok(r) => out.push(r),
                Err(e) if gone(&e) || !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                    self.procs.remove(&pid);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The last round, over processes that may be frozen (a cgroup freezer holds them, so none
    /// can be ptrace-attached): tracked processes report what they wrote since the last round,
    /// untracked ones are reported whole (`new`: every private writable area in `dirty`, the
    /// other writable ones in `untracked`) without attaching to them.
    pub fn last_round(&mut self, pids: &[i32]) -> Result<Vec<ProcessRound>> {
        self.procs
            .retain(|pid, p| pids.contains(pid) && start_time(*pid).ok() == Some(p.start_time));
        let mut out = Vec::new();
        for &pid in pids {
            let r = if self.procs.contains_key(&pid) {
                self.scan(pid)
            } else {
                whole(pid)
            };
            match r {
                Ok(r) => out.push(r),
                Err(e) if gone(&e) || !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                    self.procs.remove(&pid);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Stop tracking: close every descriptor, which unregisters all areas in the processes.
    pub fn stop(self) {}

    fn attach(&mut self, pid: i32) -> Result<ProcessRound> {
        let start_time = start_time(pid).ctx(pid, "read /proc/PID/stat")?;
        let uffd = {
            let mut s = Stopped::seize(pid).ctx(pid, "ptrace-attach")?;
            let remote = s
                .syscall(
                    libc::SYS_userfaultfd,
                    [libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY, 0, 0, 0, 0, 0],
                )
                .ctx(pid, "inject userfaultfd")?;
            let remote = check(remote, pid, "userfaultfd() in the process")?;
            let taken = take_fd(pid, remote as i32);
            let closed = s.syscall(libc::SYS_close, [remote as u64, 0, 0, 0, 0, 0]);
            let thp = s.syscall(
                libc::SYS_prctl,
                [libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0, 0],
            );
            drop(s);
            let uffd = taken?;
            check(
                closed.ctx(pid, "inject close")?,
                pid,
                "close() in the process",
            )?;
            check(
                thp.ctx(pid, "inject prctl")?,
                pid,
                "prctl(PR_SET_THP_DISABLE) in the process",
            )?;
            uffd
        };
        uffd_api(uffd.as_raw_fd()).ctx(pid, "UFFDIO_API (async write-protect)")?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap")).ctx(pid, "open pagemap")?;
        self.procs.insert(
            pid,
            Proc {
                uffd,
                pagemap,
                start_time,
            },
        );
        let mut r = self.scan(pid)?;
        r.new = true;
        Ok(r)
    }

    fn scan(&mut self, pid: i32) -> Result<ProcessRound> {
        let p = &self.procs[&pid];
        let vmas = maps::read(pid).ctx(pid, "read smaps")?;
        let mut r = ProcessRound {
            pid,
            ..Default::default()
        };
        for v in vmas {
            if v.trackable() && v.uffd_wp {
                match scan_written(p.pagemap.as_raw_fd(), v.start, v.end, &mut r.dirty) {
                    Ok(()) => {}
                    // The area changed under us (unmapped, replaced): count it whole.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        r.dirty.push((v.start, v.end))
                    }
                    Err(e) => return Err(e).ctx(pid, "PAGEMAP_SCAN"),
                }
            } else if v.trackable() {
                match register_wp(p.uffd.as_raw_fd(), v.start, v.end) {
                    Ok(()) => r.dirty.push((v.start, v.end)),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(e).ctx(pid, "UFFDIO_REGISTER")
                    }
                    Err(_) => r.untracked.push((v.start, v.end)),
                }
            } else if v.writable {
                r.untracked.push((v.start, v.end));
            }
        }
        Ok(r)
    }
}

/// A process reported whole, without attaching to it.
fn whole(pid: i32) -> Result<ProcessRound> {
    let mut r = ProcessRound {
        pid,
        new: true,
        ..Default::default()
    };
    for v in maps::read(pid).ctx(pid, "read smaps")? {
        if v.trackable() {
            r.dirty.push((v.start, v.end));
        } else if v.writable {
            r.untracked.push((v.start, v.end));
        }
    }
    Ok(r)
}

fn take_fd(pid: i32, fd: i32) -> Result<OwnedFd> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error()).ctx(pid, "pidfd_open");
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error()).ctx(pid, "pidfd_getfd");
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
