//! The per-runtime nftables table: one `inet` table per runtime, in the namespace that holds the
//! host end of its veth (a simulated host's namespace, or the root namespace on a real host).
//!
//! What the table does, matching the runtime's veth by name:
//! - prerouting: drops IPv6 and any packet whose source is not the runtime's own address (spoofing);
//! - input: the host itself (its addresses, agent, control API, proxy) takes only replies (and
//!   the segments of MRP connections a restore brought here, never a SYN);
//! - forward, from the runtime: replies pass; then the always-denied destinations are dropped, then
//!   the extra allowed CIDRs pass, then (egress `allow`) the private ranges are dropped and the rest
//!   passes, or (egress `deny`) everything else is dropped;
//! - forward, to the runtime: replies pass; new connections from a runtime network are dropped;
//!   new connections pass only to the MRP port.
//!
//! A table is replaced atomically (one `nft -f` transaction). Connections the host itself opens to
//! the runtime (its output hook) are not filtered: those are the agent's and control plane's.

use crate::egress::{normalise, parse_cidr, Egress, NetPolicy, ALWAYS_DENIED, PRIVATE};
use crate::{Error, Result};
use std::net::Ipv4Addr;

/// The MRP server's port, the only one a runtime accepts new connections on.
pub const MRP_PORT: u16 = 8888;

/// Table names start with this; the rest is the runtime's netns name (host prefix + id).
pub const TABLE_PREFIX: &str = "ferry_";

/// The table of the runtime whose netns is `netns`.
pub fn table_name(netns: &str) -> String {
    format!(
        "{TABLE_PREFIX}{}",
        netns.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Everything the rules of one runtime need.
pub struct Rules<'a> {
    pub table: String,
    /// The host end of the runtime's veth.
    pub host_if: &'a str,
    pub ip: Ipv4Addr,
    pub policy: &'a NetPolicy,
}

fn set_of(nets: impl IntoIterator<Item = String>) -> Vec<String> {
    normalise(
        nets.into_iter()
            .filter_map(|s| parse_cidr(&s).ok())
            .collect(),
    )
}

fn set_decl(name: &str, elems: &[String]) -> String {
    let elements = if elems.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elems.join(", "))
    };
    format!("  set {name} {{ type ipv4_addr; flags interval;{elements} }}\n")
}

impl Rules<'_> {
    /// The nft script that replaces this runtime's table atomically.
    pub fn script(&self) -> String {
        let p = self.policy;
        let deny = set_of(
            ALWAYS_DENIED
                .iter()
                .map(|s| s.to_string())
                .chain(p.deny.iter().cloned())
                .chain(p.runtime_nets.iter().cloned()),
        );
        let allow = set_of(p.allow.iter().cloned());
        let private = set_of(PRIVATE.iter().map(|s| s.to_string()));
        let runtimes = set_of(p.runtime_nets.iter().cloned());
        let (t, i, ip) = (&self.table, self.host_if, self.ip);
        let rest = match p.egress {
            Egress::Allow => {
                format!("    iifname \"{i}\" ip daddr @private drop\n    iifname \"{i}\" accept\n")
            }
            Egress::Deny => format!("    iifname \"{i}\" drop\n"),
        };
        // A connection restored by CRIU (a proxy's stream that moved here) has no conntrack entry
        // on this host: its first segment from the runtime is "new" but never a SYN, and only
        // the MRP server's port has such connections. This rule never lets a SYN through.
        let midstream = format!(
            "    iifname \"{i}\" tcp sport {MRP_PORT} tcp flags & syn == 0 ct state new accept\n"
        );
        let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
        s += &set_decl("deny", &deny);
        s += &set_decl("allow", &allow);
        s += &set_decl("private", &private);
        s += &set_decl("runtimes", &runtimes);
        s += &format!(
            "  chain guard_pre {{\n    type filter hook prerouting priority -150; policy accept;\n    iifname \"{i}\" meta nfproto ipv6 drop\n    iifname \"{i}\" ip saddr != {ip} drop\n  }}\n"
        );
        s += &format!(
            "  chain guard_in {{\n    type filter hook input priority 0; policy accept;\n    iifname \"{i}\" ct state established,related accept\n{midstream}    iifname \"{i}\" drop\n  }}\n"
        );
        s += &format!(
            "  chain guard_fwd {{\n    type filter hook forward priority 0; policy accept;\n    iifname \"{i}\" ct state established,related accept\n    iifname \"{i}\" ip daddr @runtimes drop\n{midstream}    iifname \"{i}\" ip daddr @deny drop\n    iifname \"{i}\" ip daddr @allow accept\n{rest}    oifname \"{i}\" meta nfproto ipv6 drop\n    oifname \"{i}\" ct state established,related accept\n    oifname \"{i}\" ip saddr @runtimes drop\n    oifname \"{i}\" tcp dport {MRP_PORT} ct state new accept\n    oifname \"{i}\" drop\n  }}\n}}\n"
        );
        s
    }
}

/// `nft ARGS` in `netns` (`None`: the root namespace), with `stdin` as its input.
async fn nft(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> Result<String> {
    match netns {
        Some(ns) => {
            let full: Vec<&str> = ["netns", "exec", ns, "nft"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            super::cmd::run_with_input("ip", &full, stdin).await
        }
        None => super::cmd::run_with_input("nft", args, stdin).await,
    }
}

/// Installs (or atomically replaces) a runtime's table in `netns`.
pub async fn apply(netns: Option<&str>, rules: &Rules<'_>) -> Result<()> {
    nft(netns, &["-f", "-"], Some(&rules.script()))
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::Internal(format!(
                "installing the network rules of {}: {e}",
                rules.table
            ))
        })
}

/// The table in a runtime's own namespace that blocks all its traffic while CRIU dumps or
/// restores its sockets (ferry's version of CRIU's network lock).
pub const LOCK_TABLE: &str = "ferry_lock";

/// The mark CRIU puts on the packets it sends itself while it repairs TCP connections (libsoccr's
/// `SOCCR_MARK`); CRIU's own lock lets them through, and so does ferry's.
pub const CRIU_PACKET_MARK: u32 = 0xc114;

/// The nft script of the lock: every packet into or out of the namespace dropped, on every
/// interface (loopback too: a runtime's connections to itself are dumped and restored as well),
/// ahead of any other rule, as CRIU's iptables lock does.
pub fn lock_script() -> String {
    let t = LOCK_TABLE;
    let m = CRIU_PACKET_MARK;
    format!(
        "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n  chain lock_in {{\n    type filter hook input priority -300; policy accept;\n    meta mark {m:#x} accept\n    drop\n  }}\n  chain lock_out {{\n    type filter hook output priority -300; policy accept;\n    meta mark {m:#x} accept\n    drop\n  }}\n}}\n"
    )
}

/// Blocks every packet of the runtime whose namespace is `netns` (CRIU's network lock, done by
/// ferry where CRIU runs with `network-lock skip`): at the source while its sockets are dumped,
/// so that nothing arrives that the dump misses and no reset goes out; at the target until CRIU
/// restored every socket, so that no half-restored connection, not even one over loopback, sees a
/// packet. A peer's retransmission reaches the copy once the lock is lifted.
pub async fn lock(netns: &str) -> Result<()> {
    nft(Some(netns), &["-f", "-"], Some(&lock_script()))
        .await
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("blocking the traffic of {netns}: {e}")))
}

/// Lifts [`lock`]; best effort, idempotent.
pub async fn unlock(netns: &str) {
    remove(Some(netns), LOCK_TABLE).await;
}

/// Removes a table; best effort, idempotent.
pub async fn remove(netns: Option<&str>, table: &str) {
    let _ = nft(netns, &["delete", "table", "inet", table], None).await;
}

/// The ferry tables in `netns` (names starting with [`TABLE_PREFIX`]).
pub async fn tables(netns: Option<&str>) -> Vec<String> {
    let out = nft(netns, &["list", "tables", "inet"], None)
        .await
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|n| n.starts_with(TABLE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes the tables in `netns` of runtimes whose netns names start with `prefix` and that
/// `keep` does not name; returns what it removed.
pub async fn remove_orphans(netns: Option<&str>, prefix: &str, keep: &[String]) -> Vec<String> {
    let mine = table_name(prefix);
    let mut removed = Vec::new();
    for t in tables(netns).await {
        if t.starts_with(&mine) && !keep.contains(&t) {
            remove(netns, &t).await;
            removed.push(t);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(egress: Egress) -> NetPolicy {
        NetPolicy {
            egress,
            allow: vec!["10.77.0.0/24".into()],
            deny: vec!["10.200.0.11/32".into(), "10.201.0.0/16".into()],
            runtime_nets: vec!["10.201.0.0/16".into()],
        }
    }

    #[test]
    fn the_script_replaces_the_table_and_orders_deny_before_allow() {
        let p = policy(Egress::Allow);
        let r = Rules {
            table: table_name("ft1h1-rt-abc"),
            host_if: "fv0123456789",
            ip: "10.201.0.2".parse().unwrap(),
            policy: &p,
        };
        let s = r.script();
        assert!(
            s.starts_with("table inet ferry_ft1h1_rt_abc\ndelete table inet ferry_ft1h1_rt_abc\n")
        );
        assert!(s.contains("169.254.0.0/16"));
        assert!(s.contains("ip saddr != 10.201.0.2 drop"));
        let (deny, allow, private) = (
            s.find("ip daddr @deny drop").unwrap(),
            s.find("ip daddr @allow accept").unwrap(),
            s.find("ip daddr @private drop").unwrap(),
        );
        assert!(deny < allow && allow < private);
        assert!(s.contains("tcp dport 8888 ct state new accept"));
        // The runtime network appears once in the deny set even though it is listed twice.
        let deny_set = s.lines().find(|l| l.contains("set deny")).unwrap();
        assert_eq!(deny_set.matches("10.201.0.0/16").count(), 1);
    }

    #[test]
    fn the_lock_drops_both_directions_before_any_other_rule() {
        let s = lock_script();
        assert!(s.starts_with("table inet ferry_lock\ndelete table inet ferry_lock\n"));
        assert_eq!(s.matches("priority -300").count(), 2);
        assert!(s.contains("hook input") && s.contains("hook output"));
        // CRIU's own repair packets pass, as through CRIU's lock; everything else is dropped.
        assert_eq!(s.matches("meta mark 0xc114 accept\n    drop\n").count(), 2);
    }

    #[test]
    fn deny_drops_everything_not_opened() {
        let p = policy(Egress::Deny);
        let r = Rules {
            table: table_name("x"),
            host_if: "fvx",
            ip: "10.201.0.2".parse().unwrap(),
            policy: &p,
        };
        let s = r.script();
        assert!(!s.contains("@private drop"));
        assert!(s.contains("iifname \"fvx\" ip daddr @allow accept\n    iifname \"fvx\" drop\n"));
    }
}
