//! The network policy of one runtime: where its code may open connections.
//!
//! The control plane decides it (the runtime's plan, overridden per runtime, plus the destinations
//! that are always refused on every host) and sends it in the `RuntimeSpec`; each agent enforces
//! it with `sys::firewall`. This module is the policy as data and its validation, nothing more.

use crate::{Error, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Outbound connections to public addresses: `allow` (default) or `deny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    #[default]
    Allow,
    Deny,
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Egress::Allow => "allow",
            Egress::Deny => "deny",
        })
    }
}

impl std::str::FromStr for Egress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Egress> {
        match s {
            "allow" => Ok(Egress::Allow),
            "deny" => Ok(Egress::Deny),
            _ => Err(Error::Invalid(format!(
                "egress {s:?} is not a policy: give allow (public internet reachable) or deny (no outbound connections)"
            ))),
        }
    }
}

/// What a runtime asked for, as stored with it: the egress mode and the extra CIDRs opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressChoice {
    pub egress: Egress,
    #[serde(default)]
    pub allow: Vec<String>,
}

/// What the agent enforces for one runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    #[serde(default)]
    pub egress: Egress,
    /// Extra destinations opened (a platform's package mirror at a private address). With
    /// `deny`, the only destinations reachable.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Always refused, whatever `allow` says: the managed runtime networks, the hosts' and the
    /// control plane's addresses.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The managed runtime networks: a runtime never accepts a new connection from these.
    #[serde(default)]
    pub runtime_nets: Vec<String>,
}

/// Refused on every host for every runtime, whatever a policy says: this host, link-local (cloud
/// metadata), loopback, "this network", multicast and the reserved range.
pub const ALWAYS_DENIED: [&str; 5] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Refused unless opened with an extra CIDR: RFC 1918 and carrier-grade NAT.
pub const PRIVATE: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];

/// Parses one CIDR (a bare address is a /32), with an error that says what to give.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<Ipv4Net>().ok()
    } else {
        s.parse::<Ipv4Addr>()
            .ok()
            .map(|a| Ipv4Net::new(a, 32).expect("32 is a valid prefix"))
    };
    let net = net.ok_or_else(|| {
        Error::Invalid(format!(
            "{s:?} is not an IPv4 CIDR: give a network such as 10.50.0.0/24 or an address such as 10.50.0.7 (runtimes have no IPv6)"
        ))
    })?;
    Ok(net.trunc())
}

/// Checks the extra CIDRs a runtime asks to open; `denied` is what the control plane always
/// refuses. Returns them normalised (network address, sorted, without duplicates).
pub fn check_allow(allow: &[String], denied: &[String]) -> Result<Vec<String>> {
    let denied: Vec<Ipv4Net> = ALWAYS_DENIED
        .iter()
        .map(|s| s.to_string())
        .chain(denied.iter().cloned())
        .filter_map(|s| parse_cidr(&s).ok())
        .collect();
    let mut out = Vec::new();
    for a in allow {
        let net = parse_cidr(a)?;
        if let Some(d) = denied.iter().find(|d| d.contains(&net)) {
            return Err(Error::Invalid(format!(
                "--allow-cidr {net} lies inside {d}, which runtimes can never reach (this host, cloud metadata, the runtime networks, the hosts and the control plane): open a different network"
            )));
        }
        out.push(net);
    }
    Ok(normalise(out))
}

/// Sorted, deduplicated, and without networks that another one in the list contains (so that
/// nftables interval sets never see overlapping elements).
pub fn normalise(mut nets: Vec<Ipv4Net>) -> Vec<String> {
    nets.sort_by_key(|n| (n.prefix_len(), n.network()));
    let mut kept: Vec<Ipv4Net> = Vec::new();
    for n in nets {
        if !kept.iter().any(|k| k.contains(&n)) {
            kept.push(n);
        }
    }
    kept.sort_by_key(|n| n.network());
    kept.iter().map(|n| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_validated_and_normalised() {
        assert_eq!(
            parse_cidr("10.9.1.7/24").unwrap().to_string(),
            "10.9.1.0/24"
        );
        assert_eq!(parse_cidr("10.9.1.7").unwrap().to_string(), "10.9.1.7/32");
        for bad in ["10.9.1.0/33", "fc00::/7", "mirror", "", "10.9.1/24"] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.contains("is not an IPv4 CIDR"), "{bad}: {e}");
        }
        let n = normalise(
            ["10.0.0.0/8", "10.5.0.0/16", "192.0.2.1/32", "10.0.0.0/8"]
                .iter()
                .map(|s| parse_cidr(s).unwrap())
                .collect(),
        );
        assert_eq!(n, ["10.0.0.0/8", "192.0.2.1/32"]);
    }

    #[test]
    fn extra_cidrs_never_open_what_is_always_denied() {
        let denied = vec!["10.201.0.0/16".to_string()];
        assert_eq!(
            check_allow(&["10.77.0.9/24".into()], &denied).unwrap(),
            ["10.77.0.0/24"]
        );
        for bad in ["169.254.169.254", "10.201.3.0/30", "127.0.0.1"] {
            let e = check_allow(&[bad.into()], &denied).unwrap_err().to_string();
            assert!(e.contains("can never reach"), "{bad}: {e}");
        }
        assert!("sometimes".parse::<Egress>().is_err());
        assert_eq!("deny".parse::<Egress>().unwrap(), Egress::Deny);
    }
}
