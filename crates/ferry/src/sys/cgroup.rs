//! Reading a runtime's cgroup: memory use, limit, peak, OOM kills, CPU time, tasks against the
//! pids limit and how often that limit refused a new task.
//! Works on the hybrid v1 layout (per-controller hierarchies) and on pure cgroup v2.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub memory_peak_bytes: u64,
    pub oom_kills: u64,
    pub cpu_usage_ns: u64,
    /// Tasks (processes and threads) in the cgroup now.
    #[serde(default)]
    pub pids_current: u64,
    /// Its `pids.max` (`u64::MAX` for none).
    #[serde(default)]
    pub pids_limit: u64,
    /// How many forks or thread starts the pids limit refused (`max` of `pids.events`).
    #[serde(default)]
    pub pids_max_events: u64,
    /// Bytes used and size of the runtime's writable layer (filled in by the agent, not the cgroup).
    #[serde(default)]
    pub disk_used_bytes: u64,
    #[serde(default)]
    pub disk_limit_bytes: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// A limit file's value: a number, or `max` (none).
fn read_limit(p: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    match s.trim() {
        "max" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// (current, limit, refused) from the pids controller's files in `d` (the same names on v1 and v2).
fn pids(d: &Path) -> (u64, u64, u64) {
    (
        read_u64(&d.join("pids.current")).unwrap_or(0),
        read_limit(&d.join("pids.max")).unwrap_or(u64::MAX),
        keyed(&d.join("pids.events"), "max").unwrap_or(0),
    )
}

pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Stats of the cgroup at absolute path `cg` (as given in `linux.cgroupsPath`); `None` if it is gone.
pub fn stats(cg: &str) -> Option<Stats> {
    let rel = cg.trim_start_matches('/');
    if is_v2() {
        let d = PathBuf::from(ROOT).join(rel);
        if !d.exists() {
            return None;
        }
        let max = std::fs::read_to_string(d.join("memory.max"))
            .ok()
            .map(|s| s.trim().parse().unwrap_or(u64::MAX))
            .unwrap_or(u64::MAX);
        let (pids_current, pids_limit, pids_max_events) = pids(&d);
        return Some(Stats {
            pids_current,
            pids_limit,
            pids_max_events,
            memory_bytes: read_u64(&d.join("memory.current")).unwrap_or(0),
            memory_limit_bytes: max,
            memory_peak_bytes: read_u64(&d.join("memory.peak")).unwrap_or(0),
            oom_kills: keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0),
            cpu_usage_ns: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            ..Default::default()
        });
    }
    let mem = PathBuf::from(ROOT).join("memory").join(rel);
    if !mem.exists() {
        return None;
    }
    let cpu = PathBuf::from(ROOT).join("cpuacct").join(rel);
    let (pids_current, pids_limit, pids_max_events) =
        pids(&PathBuf::from(ROOT).join("pids").join(rel));
    Some(Stats {
        pids_current,
        pids_limit,
        pids_max_events,
        memory_bytes: read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0),
        memory_limit_bytes: read_u64(&mem.join("memory.limit_in_bytes")).unwrap_or(u64::MAX),
        memory_peak_bytes: read_u64(&mem.join("memory.max_usage_in_bytes")).unwrap_or(0),
        oom_kills: keyed(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0),
        cpu_usage_ns: read_u64(&cpu.join("cpuacct.usage")).unwrap_or(0),
        ..Default::default()
    })
}

/// Whether swap accounting exists (v1 `memory.memsw.*`), so a limit can also cap swap.
pub fn has_swap_accounting() -> bool {
    Path::new(ROOT)
        .join("memory/memory.memsw.limit_in_bytes")
        .exists()
        || is_v2()
}

/// The directory of cgroup path `cg` in every hierarchy (one on v2, one per controller on v1).
fn in_every_hierarchy(cg: &str) -> Vec<PathBuf> {
    let rel = cg.trim_start_matches('/');
    if is_v2() {
        vec![PathBuf::from(ROOT).join(rel)]
    } else {
        std::fs::read_dir(ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(rel))
            .collect()
    }
}

/// The processes in cgroup `cg` (its `cgroup.procs`; on v1, the memory hierarchy's).
pub fn procs(cg: &str) -> Vec<i32> {
    let rel = cg.trim_start_matches('/');
    let d = if is_v2() {
        PathBuf::from(ROOT).join(rel)
    } else {
        PathBuf::from(ROOT).join("memory").join(rel)
    };
    std::fs::read_to_string(d.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the (empty) cgroup directories of `cg` in every hierarchy; best effort.
pub fn remove(cg: &str) {
    for d in in_every_hierarchy(cg) {
        let _ = std::fs::remove_dir(&d);
    }
}

/// Removes the (empty) cgroups under `parent` named `prefix` without its trailing '-', or
/// starting with `prefix`, in every hierarchy, deepest first; best effort.
pub fn remove_with_prefix(parent: &str, prefix: &str) {
    let exact = prefix.trim_end_matches('-');
    for p in in_every_hierarchy(parent) {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if (n == exact || n.starts_with(prefix)) && e.path().is_dir() {
                remove_dirs_deepest_first(&e.path());
            }
        }
    }
}

fn remove_dirs_deepest_first(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dirs_deepest_first(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

#[cfg(test)]
mod tests {
    #[test]
    fn pids_files_read_alike_on_v1_and_v2() {
        let d = std::env::temp_dir().join(format!("ferry-pids-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pids.current"), "17\n").unwrap();
        std::fs::write(d.join("pids.max"), "256\n").unwrap();
        // v1 writes only `max N`; v2 may add more keys.
        std::fs::write(d.join("pids.events"), "max 5\n").unwrap();
        assert_eq!(super::pids(&d), (17, 256, 5));
        std::fs::write(d.join("pids.max"), "max\n").unwrap();
        std::fs::write(d.join("pids.events"), "max 0\nmax.imposed 3\n").unwrap();
        assert_eq!(super::pids(&d), (17, u64::MAX, 0));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
