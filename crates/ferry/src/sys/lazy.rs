//! The processes of a lazy (post-copy) migration, each run in the simulated host's network
//! namespace with `nsenter --net` (never `ip netns exec`, which remounts /sys under runc):
//! - source: `runc checkpoint --lazy-pages --page-server ADDR:PORT --status-fd 3` dumps everything
//!   but memory, writes a byte on fd 3, then serves the pages until the target has them all;
//! - target: a lazy-pages daemon fetches pages on fault (userfaultfd) and in the background, for
//!   a process restored with `runc restore --lazy-pages`: ferry's `ferry-pages serve` (prefetches
//!   from the start, fault-around, faults ahead of bulk data), or `criu lazy-pages --page-server`
//!   with `FERRY_LAZY_PAGES=criu`.
//!
//! Both are started in their own process group so that an abort stops runc and CRIU together.

use super::cmd::run_quiet;
use crate::{Error, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

fn in_netns(netns: Option<&str>, prog: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", super::netns::path(ns).display()))
                .arg("--")
                .arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

/// Starts the lazy dump of container `id`; returns once CRIU signalled that the page server is
/// serving (everything but memory is then in `image`), with the process still running.
pub async fn start_dump(
    netns: Option<&str>,
    runc_root: &Path,
    id: &str,
    image: &Path,
    work: &Path,
    page_server: &str,
    log: &Path,
) -> Result<Child> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
    let mut cmd = in_netns(netns, "runc");
    cmd.arg("--root")
        .arg(runc_root)
        .arg("--log")
        .arg(log)
        .arg("checkpoint");
    cmd.arg("--image-path")
        .arg(image)
        .arg("--work-path")
        .arg(work);
    cmd.args([
        "--tcp-established",
        "--lazy-pages",
        "--page-server",
        page_server,
        "--status-fd",
        "3",
        id,
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let wr_fd = wr.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(wr_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Unavailable(format!("cannot start runc: {e}")))?;
    drop(wr);
    let ready = tokio::task::spawn_blocking(move || read_status(rd))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    if !ready {
        kill_group(&child);
        let _ = child.wait().await;
        return Err(Error::Internal(format!(
            "lazy checkpoint failed before serving pages:\n{}",
            super::cmd::tail(&work.join("dump.log"), 8)
        )));
    }
    Ok(child)
}

fn read_status(rd: OwnedFd) -> bool {
    let mut f = std::fs::File::from(rd);
    let mut b = [1u8; 1];
    matches!(std::io::Read::read(&mut f, &mut b), Ok(1))
}

/// Which lazy-pages daemon serves a lazy restore: ferry's own (`ferry-pages`, the default) or
/// CRIU's (`criu lazy-pages`, chosen with `FERRY_LAZY_PAGES=criu` in the agent's environment, to
/// compare the two).
pub fn use_criu_daemon() -> bool {
    std::env::var("FERRY_LAZY_PAGES").is_ok_and(|v| v == "criu")
}

/// The `ferry-pages` binary: `FERRY_PAGES_BIN` if set, else next to the running executable (where
/// cargo and the installer put it), else from `PATH`.
pub fn pages_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("FERRY_PAGES_BIN") {
        return p.into();
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("ferry-pages");
            if p.exists() {
                return p;
            }
            // Test binaries run from target/*/deps, the binaries are one level up.
            if let Some(up) = dir.parent().map(|d| d.join("ferry-pages")) {
                if up.exists() {
                    return up;
                }
            }
        }
    }
    "ferry-pages".into()
}

/// Pages hints for the lazy-pages daemon: a hot list to fetch first, where to record this
/// restore's first faults, a page store pushed ahead by pre-copy rounds with the dirty list sent
/// at the freeze (pages held there and not dirty are served locally), and where to write the
/// counts at the end. CRIU's daemon ignores them all (it fetches every page from the source,
/// which is as correct, only slower).
#[derive(Default)]
pub struct Hints<'a> {
    pub hot: Option<&'a Path>,
    pub record_faults: Option<&'a Path>,
    /// The store and its dirty list: used only together.
    pub store: Option<(&'a Path, &'a Path)>,
    pub stats: Option<&'a Path>,
}

/// Starts the lazy-pages daemon (see [`use_criu_daemon`]) for images in `image`, fetching from
/// `page_server` (ADDR:PORT), and waits until its socket (in `work`) is there for
/// `runc restore --lazy-pages`. Either daemon logs to `work/lazy-pages.log` and exits non-zero if
/// the pages stop arriving before all were delivered.
pub async fn start_daemon(
    netns: Option<&str>,
    image: &Path,
    work: &Path,
    page_server: &str,
    hints: Hints<'_>,
) -> Result<Child> {
    let criu = use_criu_daemon();
    let mut cmd = if criu {
        let (addr, port) = page_server
            .rsplit_once(':')
            .ok_or_else(|| Error::Invalid(format!("bad page server address {page_server}")))?;
        let mut cmd = in_netns(netns, "criu");
        cmd.args([
            "lazy-pages",
            "--page-server",
            "--address",
            addr,
            "--port",
            port,
        ]);
        cmd.arg("-D")
            .arg(image)
            .arg("-W")
            .arg(work)
            .args(["-o", "lazy-pages.log", "-v4"]);
        cmd
    } else {
        let bin = pages_binary();
        let found = if bin.is_absolute() {
            bin.is_file()
        } else {
            super::cmd::on_path(&bin)
        };
        if !found {
            return Err(Error::Unavailable(format!(
                "ferry's lazy-pages server ({}) is not installed on this host: install the ferry-pages binary beside ferry (scripts/setup.sh does), set FERRY_PAGES_BIN, or run the agent with FERRY_LAZY_PAGES=criu",
                bin.display()
            )));
        }
        let mut cmd = in_netns(netns, &bin.to_string_lossy());
        cmd.arg("serve")
            .arg("--images")
            .arg(image)
            .arg("--work")
            .arg(work)
            .arg("--source")
            .arg(page_server);
        if let Some(h) = hints.hot.filter(|h| h.exists()) {
            cmd.arg("--hot").arg(h);
        }
        if let Some(r) = hints.record_faults {
            cmd.arg("--record-faults").arg(r);
        }
        if let Some((store, dirty)) = hints.store {
            cmd.arg("--store").arg(store).arg("--dirty").arg(dirty);
        }
        if let Some(p) = hints.stats {
            cmd.arg("--stats").arg(p);
        }
        cmd
    };
    let name = if criu {
        "criu lazy-pages"
    } else {
        "ferry-pages"
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Unavailable(format!("cannot start {name}: {e}")))?;
    let socket = work.join("lazy-pages.socket");
    let start = std::time::Instant::now();
    while !socket.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::Internal(format!(
                "{name} exited ({st}):\n{}",
                super::cmd::tail(&work.join("lazy-pages.log"), 8)
            )));
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            kill_group(&child);
            return Err(Error::Unavailable(format!(
                "{name} did not come up within 10 s"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(child)
}

pub fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the network lock CRIU puts into a container's netns while it dumps. CRIU removes it
/// itself when it finishes; a dump that was killed leaves it, and the runtime unreachable.
pub async fn unlock_network(netns: &str) {
    for t in ["iptables", "ip6tables"] {
        for args in [
            &["-D", "INPUT", "-j", "CRIU"][..],
            &["-D", "OUTPUT", "-j", "CRIU"],
            &["-F", "CRIU"],
            &["-X", "CRIU"],
        ] {
            let mut full = vec!["netns", "exec", netns, t];
            full.extend_from_slice(args);
            run_quiet("ip", &full).await;
        }
    }
}

/// A free TCP port on `ip` inside `netns` (bound and released: the caller uses it at once).
pub fn free_port(netns: Option<String>, ip: std::net::IpAddr) -> Result<u16> {
    let l = super::inns::listen_std(netns, std::net::SocketAddr::new(ip, 0))?;
    Ok(l.local_addr()?.port())
}
