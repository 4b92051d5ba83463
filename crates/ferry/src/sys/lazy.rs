//! The processes of a lazy (post-copy) migration, each run in the simulated host's network
//! namespace with `nsenter --net` (never `ip netns exec`, which remounts /sys under runc):
//! - source: `runc checkpoint --lazy-pages --page-server ADDR:PORT --status-fd 3` dumps everything
//!   but memory, writes a byte on fd 3, then serves the pages until the target has them all;
//! - target: `criu lazy-pages --page-server` fetches pages on fault (userfaultfd) and in the
//!   background, for a process restored with `runc restore --lazy-pages`.
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

/// Starts `criu lazy-pages` for images in `image`, fetching from `page_server` (ADDR:PORT), and
/// waits until its socket (in `work`) is there for `runc restore --lazy-pages`.
pub async fn start_daemon(
    netns: Option<&str>,
    image: &Path,
    work: &Path,
    page_server: &str,
) -> Result<Child> {
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
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Unavailable(format!("cannot start criu lazy-pages: {e}")))?;
    let socket = work.join("lazy-pages.socket");
    let start = std::time::Instant::now();
    while !socket.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::Internal(format!(
                "criu lazy-pages exited ({st}):\n{}",
                super::cmd::tail(&work.join("lazy-pages.log"), 8)
            )));
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            kill_group(&child);
            return Err(Error::Unavailable(
                "criu lazy-pages did not come up within 10 s".into(),
            ));
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
