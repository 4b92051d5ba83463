//! Plans: the memory, CPU, tasks and disk a runtime may use.
//!
//! A plan is stored (database, snapshots, specs) as its name, memory and CPUs only; its task limit
//! and its disk quota follow from those ([`Plan::pids_max`], [`Plan::disk_mb`]), so a runtime
//! restored or moved onto a larger plan gets the larger limits with no change to what is stored.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// `free`, `pro`, `team`, or `custom` for explicit limits.
    pub name: String,
    pub memory_mb: u64,
    pub cpus: f64,
}

pub const PLANS: [(&str, u64, f64); 3] =
    [("free", 256, 0.5), ("pro", 512, 1.0), ("team", 1024, 2.0)];

/// Per named plan: the most tasks (processes + threads) its runtime may hold, and its disk quota
/// on the writable layer in MB. An idle mrmd-python holds 1 task, 3 after its first execute, 4
/// with numpy/pandas computing on a 2-core host; OpenBLAS adds one thread per core (64 on a
/// 64-core host) and a `multiprocessing.Pool()` one process per core, so the limits leave room for
/// that while stopping a fork bomb far below the host's `pid_max`.
pub const LIMITS: [(&str, u64, u64); 3] = [
    ("free", 256, 1024),
    ("pro", 512, 4096),
    ("team", 1024, 10240),
];

impl Plan {
    /// A named plan, or explicit limits (which win over the plan's where given).
    pub fn resolve(name: Option<&str>, memory: Option<&str>, cpus: Option<f64>) -> Result<Plan> {
        let mut plan = match name {
            Some(n) => Self::named(n)?,
            None if memory.is_some() || cpus.is_some() => Plan {
                name: "custom".into(),
                memory_mb: 256,
                cpus: 0.5,
            },
            None => Self::named("free")?,
        };
        if let Some(m) = memory {
            plan.memory_mb = parse_memory_mb(m)?;
            plan.name = "custom".into();
        }
        if let Some(c) = cpus {
            if !(0.01..=256.0).contains(&c) {
                return Err(Error::Invalid(format!("--cpus {c} is out of range: give a number of CPUs between 0.01 and 256, e.g. --cpus 0.5")));
            }
            plan.cpus = c;
            plan.name = "custom".into();
        }
        if plan.memory_mb < 64 {
            return Err(Error::Invalid(format!(
                "memory {} MB is too small for a Python runtime: give at least 64M",
                plan.memory_mb
            )));
        }
        Ok(plan)
    }

    pub fn named(name: &str) -> Result<Plan> {
        PLANS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(n, m, c)| Plan { name: n.to_string(), memory_mb: *m, cpus: *c })
            .ok_or_else(|| Error::Invalid(format!("unknown plan {name:?}: choose free (256 MB, 0.5 CPU), pro (512 MB, 1 CPU) or team (1 GB, 2 CPUs), or give --memory and --cpus")))
    }

    /// The most tasks (processes and threads) the runtime may hold (`pids.max`). A named plan's
    /// from [`LIMITS`]; `custom`: one per MB of memory, between 256 and 4096.
    pub fn pids_max(&self) -> u64 {
        self.limits()
            .map(|(p, _)| p)
            .unwrap_or_else(|| self.memory_mb.clamp(256, 4096))
    }

    /// The size of the runtime's writable layer in MB: writing past it fails with ENOSPC. A named
    /// plan's from [`LIMITS`]; `custom`: 8 MB per MB of memory, between 1 GB and 64 GB.
    pub fn disk_mb(&self) -> u64 {
        self.limits()
            .map(|(_, d)| d)
            .unwrap_or_else(|| (self.memory_mb * 8).clamp(1024, 64 * 1024))
    }

    /// The limits of a named plan whose memory and CPUs are the plan's own.
    fn limits(&self) -> Option<(u64, u64)> {
        Self::named(&self.name)
            .ok()
            .filter(|p| p.memory_mb == self.memory_mb && p.cpus == self.cpus)?;
        LIMITS
            .iter()
            .find(|(n, _, _)| *n == self.name)
            .map(|(_, p, d)| (*p, *d))
    }

    /// The smallest named plan with more memory than this one.
    pub fn next_up(&self) -> Option<Plan> {
        PLANS
            .iter()
            .find(|(_, m, _)| *m > self.memory_mb)
            .map(|(n, m, c)| Plan {
                name: n.to_string(),
                memory_mb: *m,
                cpus: *c,
            })
    }
}

/// Parses `512M`, `1G`, `1.5g`, `256` (MB) or `300MB` into megabytes.
pub fn parse_memory_mb(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b').trim_end_matches('i');
    let (num, mul) = match t.chars().last() {
        Some('g') => (&t[..t.len() - 1], 1024.0),
        Some('m') => (&t[..t.len() - 1], 1.0),
        Some('k') => (&t[..t.len() - 1], 1.0 / 1024.0),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        Error::Invalid(format!(
            "cannot read memory size {s:?}: write it like 512M or 1G"
        ))
    })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::Invalid(format!(
            "memory size {s:?} must be positive"
        )));
    }
    Ok((v * mul).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_memory_mb("512M").unwrap(), 512);
        assert_eq!(parse_memory_mb("1G").unwrap(), 1024);
        assert_eq!(parse_memory_mb("1.5g").unwrap(), 1536);
        assert_eq!(parse_memory_mb("300MB").unwrap(), 300);
        assert_eq!(parse_memory_mb("2GiB").unwrap(), 2048);
        assert!(parse_memory_mb("lots").is_err());
        assert!(parse_memory_mb("-1G").is_err());
    }

    #[test]
    fn plans_and_overrides() {
        assert_eq!(Plan::resolve(None, None, None).unwrap().memory_mb, 256);
        assert_eq!(
            Plan::resolve(Some("pro"), None, None).unwrap(),
            Plan {
                name: "pro".into(),
                memory_mb: 512,
                cpus: 1.0
            }
        );
        let p = Plan::resolve(None, Some("768M"), Some(1.5)).unwrap();
        assert_eq!((p.name.as_str(), p.memory_mb, p.cpus), ("custom", 768, 1.5));
        assert!(Plan::resolve(Some("gold"), None, None)
            .unwrap_err()
            .to_string()
            .contains("free"));
        assert_eq!(Plan::named("free").unwrap().next_up().unwrap().name, "pro");
        assert!(Plan::named("team").unwrap().next_up().is_none());
    }

    #[test]
    fn tasks_and_disk_follow_the_plan() {
        let free = Plan::named("free").unwrap();
        assert_eq!((free.pids_max(), free.disk_mb()), (256, 1024));
        let team = Plan::named("team").unwrap();
        assert_eq!((team.pids_max(), team.disk_mb()), (1024, 10240));
        assert!(free.next_up().unwrap().disk_mb() > free.disk_mb());
        let custom = Plan::resolve(None, Some("2G"), None).unwrap();
        assert_eq!((custom.pids_max(), custom.disk_mb()), (2048, 16384));
        let tiny = Plan::resolve(None, Some("64M"), None).unwrap();
        assert_eq!((tiny.pids_max(), tiny.disk_mb()), (256, 1024));
        let huge = Plan::resolve(None, Some("64G"), None).unwrap();
        assert_eq!((huge.pids_max(), huge.disk_mb()), (4096, 65536));
        // A plan whose numbers are not its name's (edited by hand) follows the custom rule.
        let odd = Plan {
            name: "free".into(),
            memory_mb: 600,
            cpus: 0.5,
        };
        assert_eq!(odd.pids_max(), 600);
    }
}
