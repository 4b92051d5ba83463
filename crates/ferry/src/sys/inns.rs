//! Sockets inside another network namespace. The agent process stays in the root namespace (runc
//! must not run under `ip netns exec`), and only its sockets live in its host's namespace: a
//! thread enters the namespace, makes the socket, and the socket keeps that namespace for life.

use crate::{Error, Result};
use std::net::SocketAddr;

fn in_netns<T: Send + 'static>(
    netns: Option<String>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let join = std::thread::spawn(move || -> Result<T> {
        if let Some(ns) = &netns {
            let p = super::netns::path(ns);
            let file = std::fs::File::open(&p).map_err(|e| {
                Error::Unavailable(format!(
                    "network namespace {ns} is missing ({e}): is `ferry dev up` running?"
                ))
            })?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Internal(format!("entering netns {ns}: {e}")))?;
        }
        f().map_err(Error::from)
    });
    join.join()
        .map_err(|_| Error::Internal("netns thread panicked".into()))?
}

/// A listening socket bound inside `netns` (or here, for `None`).
pub fn listen(netns: Option<String>, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let l = listen_std(netns, addr)?;
    l.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(l)?)
}

pub fn listen_std(netns: Option<String>, addr: SocketAddr) -> Result<std::net::TcpListener> {
    in_netns(netns, move || std::net::TcpListener::bind(addr))
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))
}

/// How long a transfer may make no progress before it is abandoned.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// A TCP connection made from inside `netns` (or from here, for `None`).
pub async fn connect(netns: Option<String>, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
    let s = tokio::task::spawn_blocking(move || {
        in_netns(netns, move || {
            let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            // Data left unacknowledged this long (the peer or the link is gone) breaks the
            // connection, so a sender never waits forever on a dead link.
            nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::TcpUserTimeout,
                &(STALL.as_millis() as u32),
            )
            .map_err(std::io::Error::from)?;
            Ok(s)
        })
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Unavailable(format!("cannot connect to {addr}: {e}")))?;
    Ok(tokio::net::TcpStream::from_std(s)?)
}
