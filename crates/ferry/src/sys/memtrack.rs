//! Which write tracker this host offers for pre-copy migration: the PAGEMAP_SCAN tracker
//! (`ferry-tracker`: userfaultfd async write-protect, Linux >= 6.7), CRIU's soft-dirty pre-dumps
//! (older kernels), or none.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TrackerKind {
    /// userfaultfd `UFFD_FEATURE_WP_ASYNC` + the `PAGEMAP_SCAN` ioctl.
    PagemapScan,
    /// Only the kernel's soft-dirty bits (CRIU `pre-dump --track-mem`).
    SoftDirty,
    /// Neither (or an agent too old to say).
    #[default]
    None,
}

impl std::fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrackerKind::PagemapScan => "pagemap-scan",
            TrackerKind::SoftDirty => "soft-dirty",
            TrackerKind::None => "none",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct WriteTracker {
    pub kind: TrackerKind,
    /// What the PAGEMAP_SCAN tracker lacks here (absent when it works).
    #[serde(default)]
    pub missing: Option<String>,
}

impl WriteTracker {
    /// Try the PAGEMAP_SCAN mechanism on this process; fall back to soft-dirty as CRIU saw it.
    pub fn detect(soft_dirty: bool) -> WriteTracker {
        Self::from_probe(ferry_tracker::probe(), soft_dirty)
    }

    pub fn from_probe(probe: std::result::Result<(), String>, soft_dirty: bool) -> WriteTracker {
        match probe {
            Ok(()) => WriteTracker {
                kind: TrackerKind::PagemapScan,
                missing: None,
            },
            Err(why) => WriteTracker {
                kind: if soft_dirty {
                    TrackerKind::SoftDirty
                } else {
                    TrackerKind::None
                },
                missing: Some(why),
            },
        }
    }

    /// One sentence for `ferry doctor` and error messages.
    pub fn describe(&self) -> String {
        match (self.kind, &self.missing) {
            (TrackerKind::PagemapScan, _) => {
                "pagemap-scan (userfaultfd async write-protect + PAGEMAP_SCAN)".into()
            }
            (TrackerKind::SoftDirty, m) => format!(
                "soft-dirty only (no PAGEMAP_SCAN tracker: {})",
                m.as_deref().unwrap_or("unknown")
            ),
            (TrackerKind::None, m) => format!(
                "none: no soft-dirty tracking and no PAGEMAP_SCAN tracker ({})",
                m.as_deref().unwrap_or("the agent does not report one")
            ),
        }
    }
}

/// Why a pre-copy move between hosts offering `source` and `target` is refused. ferry's pre-copy
/// runs only on the PAGEMAP_SCAN tracker, on both hosts.
pub fn precopy_refusal(source: &WriteTracker, target: &WriteTracker) -> Option<String> {
    if source.kind != target.kind {
        return Some(format!(
            "the hosts offer different write trackers (source: {}; target: {}); both sides of a pre-copy move must offer the same one",
            source.describe(),
            target.describe()
        ));
    }
    match source.kind {
        TrackerKind::PagemapScan => None,
        TrackerKind::SoftDirty => Some(format!(
            "this kernel has soft-dirty but not the PAGEMAP_SCAN tracker ({}), and ferry does not implement CRIU's iterative pre-dumps; pre-copy needs Linux >= 6.7",
            source.missing.as_deref().unwrap_or("unknown")
        )),
        TrackerKind::None => Some(format!(
            "this host has no write tracking: neither soft-dirty (`criu check --feature mem_dirty_track` fails) nor the PAGEMAP_SCAN tracker ({})",
            source.missing.as_deref().unwrap_or("unknown")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: TrackerKind) -> WriteTracker {
        WriteTracker {
            kind,
            missing: (kind != TrackerKind::PagemapScan).then(|| "Linux >= 6.7 is needed".into()),
        }
    }

    #[test]
    fn both_sides_must_offer_the_pagemap_scan_tracker() {
        use TrackerKind::{PagemapScan, SoftDirty};
        assert!(precopy_refusal(&t(PagemapScan), &t(PagemapScan)).is_none());
        let m = precopy_refusal(&t(PagemapScan), &t(SoftDirty)).unwrap();
        assert!(m.contains("different write trackers"), "{m}");
        let m = precopy_refusal(&t(SoftDirty), &t(SoftDirty)).unwrap();
        assert!(m.contains("pre-dumps") && m.contains("6.7"), "{m}");
        let m = precopy_refusal(&t(TrackerKind::None), &t(TrackerKind::None)).unwrap();
        assert!(
            m.contains("soft-dirty") && m.contains("PAGEMAP_SCAN"),
            "{m}"
        );
    }

    #[test]
    fn an_old_agent_reports_none() {
        let w: WriteTracker = serde_json::from_str("{}").unwrap_or_default();
        assert_eq!(w.kind, TrackerKind::None);
        let j = serde_json::to_string(&WriteTracker::from_probe(Ok(()), false)).unwrap();
        assert_eq!(j, r#"{"kind":"pagemap-scan","missing":null}"#);
    }

    #[test]
    fn detects_this_host() {
        // On a kernel with PAGEMAP_SCAN (>= 6.7) as root, the probe must succeed.
        let w = WriteTracker::detect(false);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(['.', '-'])
            .filter_map(|p| p.parse::<u32>().ok());
        let (maj, min) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (maj, min) >= (6, 7) && nix::unistd::geteuid().is_root() {
            assert_eq!(w.kind, TrackerKind::PagemapScan, "{:?}", w.missing);
        }
    }
}
