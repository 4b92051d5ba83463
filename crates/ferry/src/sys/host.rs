//! Facts about this host: kernel, memory.

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Total memory in MB, from /proc/meminfo.
pub fn mem_total_mb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Raises this process's open-file limit to the hard limit: a daemon holds a socket per proxied
/// client and per runtime, and several files per operation, and 1024 runs out under load.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
    }
}

/// Writes a file whole or not at all (a hidden temporary file beside it, then a rename), so that
/// whoever polls for it or reads it never sees it half-written.
pub fn write_atomically(path: &std::path::Path, content: impl AsRef<[u8]>) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// The pipe size CRIU's lazy pages ask for (it fails without CAP_SYS_RESOURCE above the limit).
pub const PIPE_MAX_SIZE: u64 = 4 << 20;

/// Raises `fs.pipe-max-size` to [`PIPE_MAX_SIZE`] if it is lower. A host-wide setting, made once
/// when an agent starts rather than before each operation. Returns the value in force after.
pub fn ensure_pipe_max_size() -> std::io::Result<u64> {
    let path = "/proc/sys/fs/pipe-max-size";
    let now: u64 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
    if now >= PIPE_MAX_SIZE {
        return Ok(now);
    }
    std::fs::write(path, PIPE_MAX_SIZE.to_string())?;
    Ok(PIPE_MAX_SIZE)
}
