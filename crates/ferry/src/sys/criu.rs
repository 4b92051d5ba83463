//! CRIU: is it there, does it work on this kernel, and what can it do here.

use super::cmd::run;
use crate::{Error, Result};

/// What `criu check` found. Checked once when an agent starts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct Criu {
    pub version: String,
    pub ok: bool,
    /// Why CRIU cannot be used, with the fix.
    pub problem: Option<String>,
    /// Lazy pages (post-copy over userfaultfd).
    pub lazy_pages: bool,
    /// Soft-dirty memory tracking (iterative pre-dump / pre-copy).
    pub mem_dirty_track: bool,
    /// CRIU's cache of kernel features is in place (see [`KERNDAT_CACHE`]): without it every
    /// CRIU run probes the kernel again, twice inside a migration's freeze.
    #[serde(default)]
    pub kerndat_cache: bool,
}

/// Where CRIU 4.x (run as root, built with its default RUNDIR) caches what it found out about the
/// kernel ("kerndat"). CRIU writes it only onto a tmpfs, so that a reboot drops it; a run that
/// finds it valid skips the probes (about 0.1 s here, `iptables -L` among them).
pub const KERNDAT_CACHE: &str = "/run/criu.kdat";

/// Whether CRIU's kerndat cache exists; and if not, why, with the fix.
pub fn kerndat_state() -> (bool, Option<String>) {
    let cache = std::path::Path::new(KERNDAT_CACHE);
    if cache.metadata().is_ok_and(|m| m.len() > 0) {
        return (true, None);
    }
    let run = cache.parent().unwrap_or(std::path::Path::new("/"));
    let why = if !super::mount::is_tmpfs(run) {
        format!("{} is not a tmpfs, and CRIU keeps its kernel-feature cache only on one: every CRIU run probes the kernel again (~0.1 s, twice in a migration's freeze); mount a tmpfs on {} (systemd hosts have one)", run.display(), run.display())
    } else {
        format!(
            "CRIU did not write {KERNDAT_CACHE}: every CRIU run probes the kernel again (~0.1 s)"
        )
    };
    (false, Some(why))
}

/// Removes a `criu.kdat.tmp` left behind. CRIU creates it exclusively before it writes the cache,
/// and when it already exists CRIU assumes another CRIU is writing and never saves the cache: one
/// left over (a CRIU killed while saving, or one that found no tmpfs and removed the cache instead
/// of the temporary file) keeps every later run probing. Only a file older than a few seconds is
/// taken for a leftover; a younger one may belong to a CRIU writing now. Returns whether one was
/// removed.
pub fn clear_stale_kerndat_tmp() -> bool {
    remove_if_older(
        std::path::Path::new(&format!("{KERNDAT_CACHE}.tmp")),
        std::time::Duration::from_secs(5),
    )
}

/// Removes `path` if it was last modified more than `age` ago; whether it did.
fn remove_if_older(path: &std::path::Path, age: std::time::Duration) -> bool {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age);
    old && std::fs::remove_file(path).is_ok()
}

const FIX: &str = "run scripts/setup.sh, which builds and installs CRIU 4.2 (or set CRIU_SRC to a CRIU source tree)";

impl Criu {
    pub async fn detect() -> Criu {
        let version = match run("criu", &["--version"]).await {
            Ok(v) => v
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("Version: ")
                .trim()
                .to_string(),
            Err(_) => {
                return Criu {
                    problem: Some(format!("CRIU is not installed: {FIX}")),
                    ..Default::default()
                };
            }
        };
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 4 {
            return Criu {
                problem: Some(format!(
                    "CRIU {version} is too old (ferry needs 4.x): {FIX}"
                )),
                version,
                ..Default::default()
            };
        }
        if clear_stale_kerndat_tmp() {
            tracing::info!("removed a stale {KERNDAT_CACHE}.tmp that kept CRIU from caching what it knows about the kernel");
        }
        // Also (re)writes CRIU's kerndat cache where it can, so that the first dump does not probe.
        if let Err(e) = run("criu", &["check"]).await {
            return Criu {
                problem: Some(format!("`criu check` fails on this kernel ({e}): {FIX}")),
                version,
                ..Default::default()
            };
        }
        let lazy_pages = run("criu", &["check", "--feature", "uffd-noncoop"])
            .await
            .is_ok();
        let mem_dirty_track = run("criu", &["check", "--feature", "mem_dirty_track"])
            .await
            .is_ok();
        let (kerndat_cache, why) = kerndat_state();
        if let Some(why) = why {
            tracing::warn!(problem = %why, "CRIU's kerndat cache is cold");
        }
        Criu {
            version,
            ok: true,
            problem: None,
            lazy_pages,
            mem_dirty_track,
            kerndat_cache,
        }
    }

    /// Errors with the reason and the fix when CRIU cannot checkpoint here.
    pub fn require(&self) -> Result<()> {
        match &self.problem {
            Some(p) => Err(Error::Unavailable(p.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_a_leftover_temporary_file_is_removed() {
        let dir = std::env::temp_dir().join(format!("ferry-kdat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fresh = dir.join("fresh.tmp");
        let stale = dir.join("stale.tmp");
        std::fs::write(&fresh, b"").unwrap();
        let f = std::fs::File::create(&stale).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let age = Duration::from_secs(5);
        assert!(
            !remove_if_older(&fresh, age),
            "a CRIU may be writing it now"
        );
        assert!(fresh.exists());
        assert!(remove_if_older(&stale, age));
        assert!(!stale.exists());
        assert!(!remove_if_older(&dir.join("missing.tmp"), age));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
