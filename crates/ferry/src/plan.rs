//! Plans: the memory and CPU a runtime may use.

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
}
