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
    Check {
        name,
        ok,
        required: true,
        found: found.into(),
        fix: (!ok).then(|| fix.to_string()),
    }
}

fn optional(c: Check) -> Check {
    Check {
        required: false,
        ..c
    }
}

const SETUP: &str = "run scripts/setup.sh as root";

pub async fn checks(images_dir: &std::path::Path) -> Vec<Check> {
    let mut v = Vec::new();
    v.push(check(
        "root",
        crate::sys::host::is_root(),
        if crate::sys::host::is_root() {
            "running as root"
        } else {
            "not root"
        },
        "run the agent as root (it manages containers, namespaces and CRIU)",
    ));
    let runc = run("runc", &["--version"]).await;
    v.push(check(
        "runc",
        runc.is_ok(),
        runc.as_ref()
            .map(|s| s.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|e| e.to_string()),
        &format!("install runc: {SETUP}"),
    ));
    let criu = crate::sys::criu::Criu::detect().await;
    v.push(check(
        "criu",
        criu.ok,
        if criu.ok {
            format!("CRIU {} passes `criu check`", criu.version)
        } else {
            criu.problem.clone().unwrap_or_default()
        },
        SETUP,
    ));
    v.push(optional(check(
        "lazy pages (userfaultfd)",
        criu.lazy_pages,
        if criu.lazy_pages {
            "available: lazy migration works"
        } else {
            "not available"
        },
        "lazy (post-copy) migration is refused on this host; stop-copy and fork work",
    )));
    let ours = criu.ferry_build.is_some();
    let (cached, why) = crate::sys::criu::kerndat_state(ours);
    v.push(optional(check(
        "CRIU kerndat cache",
        cached,
        if cached {
            format!(
                "{} is in place: CRIU skips its kernel probes",
                crate::sys::criu::kerndat_cache_path(ours).display()
            )
        } else {
            "missing".into()
        },
        &why.unwrap_or_default(),
    )));
    v.push(optional(check(
        "network lock in a move",
        criu.network_lock_skip,
        if criu.network_lock_skip {
            format!(
                "ferry blocks a moving runtime's traffic itself (CRIU build {}): no iptables lock in the freeze",
                criu.ferry_build.as_deref().unwrap_or("?")
            )
        } else {
            "CRIU's iptables lock and unlock run inside every move's freeze (~75 ms)".into()
        },
        "install ferry's CRIU build (scripts/setup.sh), which takes `network-lock skip` from runc's configuration",
    )));
    let tracker = crate::sys::memtrack::WriteTracker::detect(criu.mem_dirty_track);
    v.push(optional(check(
        "write tracker (pre-copy)",
        tracker.kind == crate::sys::memtrack::TrackerKind::PagemapScan,
        tracker.describe(),
        "pre-copy migration is refused on this host (it needs Linux >= 6.7 for the PAGEMAP_SCAN tracker); stop-copy, lazy and fork work",
    )));
    let pipe_max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    v.push(check("fs.pipe-max-size", pipe_max >= 4 << 20, format!("{pipe_max}"), "sysctl -w fs.pipe-max-size=4194304 (lazy migration needs large pipes; scripts/setup.sh sets it)"));
    let ipt = run("iptables-restore", &["--version"]).await;
    v.push(check(
        "iptables",
        ipt.is_ok(),
        ipt.map(|s| s.trim().to_string())
            .unwrap_or_else(|e| e.to_string()),
        &format!("install iptables (CRIU locks a container's network with it): {SETUP}"),
    ));
    let ip = run("ip", &["-V"]).await;
    v.push(check(
        "iproute2",
        ip.is_ok(),
        ip.map(|s| s.trim().to_string())
            .unwrap_or_else(|e| e.to_string()),
        "install iproute2",
    ));
    // Every runtime's writable layer is an ext4 image on a loop device (its disk quota).
    let mkfs = run("mkfs.ext4", &["-V"]).await.is_ok() || which("mkfs.ext4");
    let loop_ctl = std::path::Path::new("/dev/loop-control").exists();
    v.push(check(
        "disk quotas (mkfs.ext4, loop devices)",
        mkfs && loop_ctl,
        match (mkfs, loop_ctl) {
            (true, true) => "mkfs.ext4 and /dev/loop-control present".to_string(),
            (false, _) => "mkfs.ext4 not found".to_string(),
            (true, false) => "no /dev/loop-control".to_string(),
        },
        "install e2fsprogs and load the loop module (modprobe loop): each runtime's writable layer is a size-limited ext4 image",
    ));
    let cg = if crate::sys::cgroup::is_v2() {
        "cgroup v2".to_string()
    } else {
        "cgroup v1 (hybrid)".to_string()
    };
    let mem_ctl =
        std::path::Path::new("/sys/fs/cgroup/memory").exists() || crate::sys::cgroup::is_v2();
    v.push(check(
        "cgroups",
        mem_ctl,
        cg,
        "mount the memory controller (cgroup v1 `memory` or cgroup v2)",
    ));
    let pids_ctl = std::path::Path::new("/sys/fs/cgroup/pids").exists()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"));
    v.push(check(
        "pids controller",
        pids_ctl,
        if pids_ctl { "available" } else { "not mounted" },
        "enable the pids cgroup controller (cgroup v1 `pids`, or `+pids` in cgroup v2's subtree_control): without it a fork bomb in one runtime can exhaust the host",
    ));
    let images: Vec<String> = crate::image::ImageStore::new(images_dir)
        .list()
        .into_iter()
        .map(|r| r.name)
        .collect();
    v.push(check(
        "runtime image",
        !images.is_empty(),
        if images.is_empty() {
            format!("none in {}", images_dir.display())
        } else {
            images.join(", ")
        },
        &format!(
            "build it (`ferry image build`, or {SETUP}) or import one (`ferry image import FILE`)"
        ),
    ));
    let debootstrap = run("debootstrap", &["--version"]).await;
    v.push(optional(check(
        "debootstrap",
        debootstrap.is_ok(),
        debootstrap
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "not installed".into()),
        "`ferry image build` needs it: apt-get install debootstrap (imports work without it)",
    )));
    let sys_resource = capability(24);
    v.push(optional(check("CAP_SYS_RESOURCE", sys_resource, if sys_resource { "in the bounding set" } else { "missing from this process's bounding set" }, "CRIU cannot read the limits of a process of another user: runtimes whose image runs as a non-root User cannot be checkpointed or moved (root images work); run ferry with all capabilities")));
    let mem = crate::sys::host::mem_total_mb();
    v.push(check(
        "memory",
        mem >= 1024,
        format!("{mem} MB"),
        "at least 1 GB is needed to run a runtime",
    ));
    let avail = mem_available_mb();
    v.push(check(
        "free memory",
        avail >= 512,
        format!("{avail} MB available"),
        "at least 512 MB must be free to start a runtime: stop some runtimes or processes",
    ));
    for (what, path, need) in [
        ("disk (state)", std::path::Path::new("/var/lib"), 2048u64),
        ("disk (images)", images_dir, 1024),
    ] {
        let probe = path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(std::path::Path::new("/"));
        let free_mb = nix::sys::statvfs::statvfs(probe)
            .map(|s| s.blocks_available() * s.fragment_size() / (1 << 20))
            .unwrap_or(0);
        v.push(check(
            what,
            free_mb >= need,
            format!("{free_mb} MB free under {}", probe.display()),
            &format!("free at least {need} MB there (snapshots, imported images)"),
        ));
    }
    v
}

/// How the `ferry serve` of `state_dir` runs its proxy (it writes `proxy.auth` at start; a
/// `FERRY_PROXY_AUTH` in this environment counts too): `none` is flagged.
pub fn proxy_auth(state_dir: &std::path::Path) -> Check {
    let written = std::fs::read_to_string(state_dir.join("proxy.auth"))
        .ok()
        .map(|s| s.trim().to_string());
    let env = std::env::var("FERRY_PROXY_AUTH").ok();
    let (mode, whence) = match (written, env) {
        (Some(m), _) => (m, format!("ferry serve of {}", state_dir.display())),
        (None, Some(m)) => (m, "FERRY_PROXY_AUTH".to_string()),
        (None, None) => ("token".into(), "the default".to_string()),
    };
    optional(check(
        "proxy credentials",
        mode != "none",
        format!("--proxy-auth {mode} ({whence})"),
        "the proxy lets anyone who reaches it run code in every runtime: restart `ferry serve` without `--proxy-auth none` (and without FERRY_PROXY_AUTH=none or proxy_auth = \"none\" in ferry.toml)",
    ))
}

/// Whether capability `bit` is in this process's bounding set.
fn capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|v| v >> bit & 1 == 1)
}

fn mem_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemAvailable:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Whether `prog` is an executable file on PATH (mkfs.ext4 -V prints to stderr and exits 0 on some
/// versions, 1 on others).
fn which(prog: &str) -> bool {
    crate::sys::cmd::on_path(std::path::Path::new(prog))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(prog).is_file())
}
