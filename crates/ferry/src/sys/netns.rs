//! Network namespaces and veth pairs, podman-style: each runtime gets its own netns with `eth0`
//! (a veth) whose peer sits on the host side (the root namespace, or a simulated host's namespace).

use super::cmd::{run, run_quiet};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const NETNS_DIR: &str = "/var/run/netns";

/// The network of one runtime. The addresses travel with the runtime across migrations, so that
/// established TCP connections restore (CRIU does not save an external netns' interfaces).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    pub netns: String,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Namespace that holds the host end (a simulated host); `None` = the root namespace.
    #[serde(default)]
    pub outer: Option<String>,
    /// With `outer`: the outer namespace's address that the root namespace routes this runtime's
    /// `/30` through (so the control plane and proxy reach it wherever it lives).
    #[serde(default)]
    pub root_route_via: Option<Ipv4Addr>,
    /// Also routes this runtime's `/30` through `root_route_via` in this namespace (the dev
    /// topology's fabric, the router between simulated hosts).
    #[serde(default)]
    pub fabric: Option<String>,
    /// Where the runtime's code may connect to, enforced on the host side (`sys::firewall`).
    #[serde(default)]
    pub policy: crate::egress::NetPolicy,
}

impl NetConfig {
    /// The `/30` network of this runtime, e.g. `10.201.0.0/30`.
    /// The name of this runtime's nftables table (in the namespace `outer`).
    pub fn table(&self) -> String {
        super::firewall::table_name(&self.netns)
    }

    /// Blocks all of this runtime's traffic until [`NetConfig::unlock_traffic`] or teardown
    /// (a move's network lock, see `firewall::lock`).
    pub async fn lock_traffic(&self) -> Result<()> {
        super::firewall::lock(&self.netns).await
    }

    pub async fn unlock_traffic(&self) {
        super::firewall::unlock(&self.netns).await
    }

    /// Installs, or atomically replaces, this runtime's network rules.
    pub async fn apply_rules(&self) -> Result<()> {
        super::firewall::apply(
            self.outer.as_deref(),
            &super::firewall::Rules {
                table: self.table(),
                host_if: &self.host_if,
                ip: self.ip,
                policy: &self.policy,
            },
        )
        .await
    }

    pub fn network(&self) -> String {
        let mask = u32::MAX << (32 - self.prefix as u32);
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.ip) & mask),
            self.prefix
        )
    }
}

/// Points the root namespace's route for this runtime at its current host (no-op without one).
pub async fn claim_route(c: &NetConfig) -> Result<()> {
    if let Some(via) = c.root_route_via {
        run(
            "ip",
            &["route", "replace", &c.network(), "via", &via.to_string()],
        )
        .await?;
        if let Some(f) = &c.fabric {
            run(
                "ip",
                &[
                    "-n",
                    f,
                    "route",
                    "replace",
                    &c.network(),
                    "via",
                    &via.to_string(),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

pub fn path(netns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(netns)
}

pub fn exists(netns: &str) -> bool {
    path(netns).exists()
}

fn ip_in(outer: &Option<String>, args: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(o) = outer {
        v.extend(["-n".to_string(), o.clone()]);
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

async fn ip(args: Vec<String>) -> Result<String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("ip", &refs).await
}

/// Creates the netns, the veth pair and the addresses. Undoes its own work on failure.
pub async fn setup(c: &NetConfig) -> Result<()> {
    let r = setup_inner(c).await;
    if r.is_err() {
        teardown(c).await;
    }
    r
}

async fn setup_inner(c: &NetConfig) -> Result<()> {
    let ns = c.netns.as_str();
    let ctr_if = format!("{}c", &c.host_if[..c.host_if.len().min(14)]);
    let host_cidr = format!("{}/{}", c.host_ip, c.prefix);
    let cidr = format!("{}/{}", c.ip, c.prefix);
    let host_ip = c.host_ip.to_string();
    run("ip", &["netns", "add", ns]).await?;
    // The rules come first: they name the veth before it exists, so no packet of the runtime
    // ever passes unfiltered.
    let t = std::time::Instant::now();
    c.apply_rules().await?;
    tracing::info!(
        netns = %ns,
        rules_ms = t.elapsed().as_secs_f64() * 1e3,
        "network rules installed"
    );
    ip(ip_in(
        &c.outer,
        &[
            "link", "add", &c.host_if, "type", "veth", "peer", "name", &ctr_if,
        ],
    ))
    .await?;
    ip(ip_in(&c.outer, &["link", "set", &ctr_if, "netns", ns])).await?;
    ip(ip_in(
        &c.outer,
        &["addr", "add", &host_cidr, "dev", &c.host_if],
    ))
    .await?;
    ip(ip_in(&c.outer, &["link", "set", &c.host_if, "up"])).await?;
    run("ip", &["-n", ns, "link", "set", &ctr_if, "name", "eth0"]).await?;
    // Runtimes have no IPv6: none of their traffic could be filtered by address.
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.eth0.disable_ipv6=1",
        ],
    )
    .await?;
    run("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
    run(
        "ip",
        &["-n", ns, "route", "add", "default", "via", &host_ip],
    )
    .await?;
    // The root namespace's route is claimed separately (`claim_route`), once the runtime's
    // sockets exist here: until then, traffic for its address must keep going to where it was
    // (a restored TCP connection would otherwise be reset by this empty namespace).
    Ok(())
}

/// Cuts the runtime off the network (removes its veth pair) while its processes still exist, so
/// that killing them cannot send resets for connections that now live elsewhere.
pub async fn cut(c: &NetConfig) {
    let args = ip_in(&c.outer, &["link", "del", &c.host_if]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_quiet("ip", &refs).await;
}

/// Removes the netns (which destroys its veth end and so the pair); best effort, idempotent.
pub async fn teardown(c: &NetConfig) {
    if exists(&c.netns) {
        run_quiet("ip", &["netns", "del", &c.netns]).await;
    }
    cut(c).await;
    super::firewall::remove(c.outer.as_deref(), &c.table()).await;
    if let Some(via) = c.root_route_via {
        // Only our own route: after a migration the route points at the new host.
        let (net, via) = (c.network(), via.to_string());
        run_quiet("ip", &["route", "del", &net, "via", &via]).await;
        if let Some(f) = &c.fabric {
            run_quiet("ip", &["-n", f, "route", "del", &net, "via", &via]).await;
        }
    }
}

/// Names of the netns that start with `prefix` (for cleanup).
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The `/30` slot `index` of the IPv4 range starting at `base`: (host side, runtime side).
pub fn slot_addresses(base: Ipv4Addr, index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let b = u32::from(base) + index * 4;
    (Ipv4Addr::from(b + 1), Ipv4Addr::from(b + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        let base: Ipv4Addr = "10.201.0.0".parse().unwrap();
        assert_eq!(
            slot_addresses(base, 0),
            ("10.201.0.1".parse().unwrap(), "10.201.0.2".parse().unwrap())
        );
        assert_eq!(
            slot_addresses(base, 64),
            ("10.201.1.1".parse().unwrap(), "10.201.1.2".parse().unwrap())
        );
    }
}
