//! `ferry doctor`: checks that this host can run ferry's agent, and says what to fix.

use crate::sys::cmd::run;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Without it the agent cannot work; the others only limit what it can do.
    pub required: bool,
    /// What was found.
    pub found: String,
    /// What to do when it is not ok (or what it limits).
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, found: impl Into<String>, fix: &str) -> Check {
    Check { name, ok, required: true, found: found.into(), fix: (!ok).then(|| fix.to_string()) }
}

fn optional(c: Check) -> Check {
    Check { required: false, ..c }
}

const SETUP: &str = "run scripts/setup.sh as root";

pub async fn checks(images_dir: &std::path::Path) -> Vec<Check> {
    let mut v = Vec::new();
    v.push(check("root", crate::sys::host::is_root(), if crate::sys::host::is_root() { "running as root" } else { "not root" }, "run the agent as root (it manages containers, namespaces and CRIU)"));
    let runc = run("runc", &["--version"]).await;
    v.push(check("runc", runc.is_ok(), runc.as_ref().map(|s| s.lines().next().unwrap_or("").to_string()).unwrap_or_else(|e| e.to_string()), &format!("install runc: {SETUP}")));
    let criu = crate::sys::criu::Criu::detect().await;
    v.push(check("criu", criu.ok, if criu.ok { format!("CRIU {} passes `criu check`", criu.version) } else { criu.problem.clone().unwrap_or_default() }, SETUP));
    v.push(optional(check("lazy pages (userfaultfd)", criu.lazy_pages, if criu.lazy_pages { "available: lazy migration works" } else { "not available" }, "lazy (post-copy) migration is refused on this host; stop-copy and fork work")));
    v.push(optional(check("soft-dirty tracking", criu.mem_dirty_track, if criu.mem_dirty_track { "available" } else { "not available" }, "pre-copy migration is refused on this host; stop-copy, lazy and fork work")));
    let pipe_max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    v.push(check("fs.pipe-max-size", pipe_max >= 4 << 20, format!("{pipe_max}"), "sysctl -w fs.pipe-max-size=4194304 (lazy migration needs large pipes; scripts/setup.sh sets it)"));
    let ipt = run("iptables-restore", &["--version"]).await;
    v.push(check("iptables", ipt.is_ok(), ipt.map(|s| s.trim().to_string()).unwrap_or_else(|e| e.to_string()), &format!("install iptables (CRIU locks a container's network with it): {SETUP}")));
    let ip = run("ip", &["-V"]).await;
    v.push(check("iproute2", ip.is_ok(), ip.map(|s| s.trim().to_string()).unwrap_or_else(|e| e.to_string()), "install iproute2"));
    let cg = if crate::sys::cgroup::is_v2() { "cgroup v2".to_string() } else { "cgroup v1 (hybrid)".to_string() };
    let mem_ctl = std::path::Path::new("/sys/fs/cgroup/memory").exists() || crate::sys::cgroup::is_v2();
    v.push(check("cgroups", mem_ctl, cg, "mount the memory controller (cgroup v1 `memory` or cgroup v2)"));
    let images: Vec<String> = std::fs::read_dir(images_dir).into_iter().flatten().flatten().filter(|e| e.path().join(".complete").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.push(check("runtime image", !images.is_empty(), if images.is_empty() { format!("none in {}", images_dir.display()) } else { images.join(", ") }, &format!("build it: {SETUP}")));
    let mem = crate::sys::host::mem_total_mb();
    v.push(check("memory", mem >= 1024, format!("{mem} MB"), "at least 1 GB is needed to run a runtime"));
    let free_mb = nix::sys::statvfs::statvfs("/var/lib").map(|s| s.blocks_available() as u64 * s.fragment_size() as u64 / (1 << 20)).unwrap_or(0);
    v.push(check("disk", free_mb >= 2048, format!("{free_mb} MB free under /var/lib"), "free at least 2 GB for snapshots"));
    v
}
