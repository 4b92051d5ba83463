//! Write tracking for a running process tree without soft-dirty.
//!
//! For each process the tracker gets a userfaultfd created inside it (a ptrace-injected
//! `userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)`, taken with `pidfd_getfd`, the process's own
//! copy closed again), turns transparent huge pages off for it (`PR_SET_THP_DISABLE`: a zapped huge
//! page can read as unwritten), registers its private writable areas for asynchronous
//! write-protect and then, each round, asks `PAGEMAP_SCAN` which pages were written since the last
//! round, re-protecting them in the same walk. Areas that appear later (or could not be
//! registered) are reported whole. Dropping the tracker (or its process dying) closes the only
//! descriptor, which unregisters everything: the process keeps nothing of it.
//!
//! Needs Linux >= 6.7 (`UFFD_FEATURE_WP_ASYNC`, `PAGEMAP_SCAN`), root (ptrace, `pidfd_getfd`),
//! x86_64.

pub mod kernel;
pub mod maps;

#[cfg(target_arch = "x86_64")]
mod inject;
#[cfg(target_arch = "x86_64")]
mod tracker;

#[cfg(target_arch = "x86_64")]
pub use tracker::{ProcessRound, Tracker};

mod probe;
pub use probe::probe;

/// Why tracking a process failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("write tracking of pid {pid}: {what}: {source}")]
    Os {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait Ctx<T> {
    fn ctx(self, pid: i32, what: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for std::io::Result<T> {
    fn ctx(self, pid: i32, what: &'static str) -> Result<T> {
        self.map_err(|source| Error::Os { pid, what, source })
    }
}
