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
    /// CRIU's cache of kernel features is in place (see [`kerndat_cache_path`]): without it every
    /// CRIU run probes the kernel again, twice inside a migration's freeze.
    #[serde(default)]
    pub kerndat_cache: bool,
    /// The build of ferry's own (`scripts/setup.sh`), by the GitID it reports: `ferry.N`.
    #[serde(default)]
    pub ferry_build: Option<String>,
    /// CRIU takes `network-lock skip` from the configuration runc hands it (CRIU 4.2 as released
    /// crashes on it; ferry's build carries the fix). A migration then blocks the runtime's
    /// traffic itself, instead of CRIU's iptables lock and unlock (~75 ms of the freeze).
    #[serde(default)]
    pub network_lock_skip: bool,
}

/// The GitID ferry's CRIU build reports: `v4.2-ferry.N`.
const FERRY_BUILD_MARK: &str = "-ferry.";

/// Where ferry's CRIU build keeps its kernel-feature cache (its RUNDIR): a directory of root's on
/// a tmpfs that exists on every host.
pub const FERRY_KERNDAT_DIR: &str = "/dev/shm/ferry-criu";

/// Which build `criu --version`'s output names: `ferry.N` for ferry's own.
pub fn ferry_build(version_output: &str) -> Option<String> {
    version_output
        .lines()
        .find_map(|l| l.strip_prefix("GitID: "))
        .and_then(|g| g.trim().split_once(FERRY_BUILD_MARK))
        .map(|(_, n)| format!("ferry.{n}"))
}

/// Where CRIU 4.x run as root caches what it found out about the kernel ("kerndat"): `/run` for
/// a CRIU built with its default RUNDIR, [`FERRY_KERNDAT_DIR`] for ferry's build. CRIU writes it
/// only onto a tmpfs, so that a reboot drops it; a run that finds it valid skips the probes
/// (about 0.1 s here, `iptables -L` among them).
pub fn kerndat_cache_path(ferry_build: bool) -> std::path::PathBuf {
    let dir = if ferry_build {
        FERRY_KERNDAT_DIR
    } else {
        "/run"
    };
    std::path::Path::new(dir).join("criu.kdat")
}

/// Whether CRIU's kerndat cache exists; and if not, why, with the fix.
pub fn kerndat_state(ferry_build: bool) -> (bool, Option<String>) {
    let cache = kerndat_cache_path(ferry_build);
    if cache.metadata().is_ok_and(|m| m.len() > 0) {
        return (true, None);
    }
    let run = cache.parent().unwrap_or(std::path::Path::new("/"));
    let why = if !super::mount::is_tmpfs(run) {
        format!("{} is not a tmpfs, and CRIU keeps its kernel-feature cache only on one: every CRIU run probes the kernel again (~0.1 s, twice in a migration's freeze); mount a tmpfs on {} (systemd hosts have one), or install ferry's CRIU build (scripts/setup.sh), which keeps it in {FERRY_KERNDAT_DIR}", run.display(), run.display())
    } else {
        format!(
            "CRIU did not write {}: every CRIU run probes the kernel again (~0.1 s)",
            cache.display()
        )
    };
    (false, Some(why))
}

/// Makes [`FERRY_KERNDAT_DIR`] root's own directory (mode 0700), replacing whatever else is
/// there: in a world-writable /dev/shm anyone could otherwise create it first and hand CRIU a
/// forged cache. Run before the first CRIU of an agent.
pub fn claim_kerndat_dir() -> Result<()> {
    claim_root_dir(std::path::Path::new(FERRY_KERNDAT_DIR))
}

/// Makes `dir` a directory of root's with mode 0700, removing what else is there.
fn claim_root_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let ours = |m: &std::fs::Metadata| m.is_dir() && m.uid() == 0 && m.mode() & 0o7777 == 0o700;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if ours(&m) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir)?,
        Ok(_) => std::fs::remove_file(dir)?,
        Err(_) => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if ours(&m) => Ok(()),
        _ => Err(Error::Internal(format!(
            "{} is not root's own directory after creating it",
            dir.display()
        ))),
    }
}

/// Removes a `criu.kdat.tmp` left behind. CRIU creates it exclusively before it writes the cache,
/// and when it already exists CRIU assumes another CRIU is writing and never saves the cache: one
/// left over (a CRIU killed while saving, or one that found no tmpfs and removed the cache instead
/// of the temporary file) keeps every later run probing. Only a file older than a few seconds is
/// taken for a leftover; a younger one may belong to a CRIU writing now. Returns whether one was
/// removed.
pub fn clear_stale_kerndat_tmp(ferry_build: bool) -> bool {
    let mut tmp = kerndat_cache_path(ferry_build).into_os_string();
    tmp.push(".tmp");
    remove_if_older(
        std::path::Path::new(&tmp),
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
        let (version, build) = match run("criu", &["--version"]).await {
            Ok(v) => (
                v.lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("Version: ")
                    .trim()
                    .to_string(),
                ferry_build(&v),
            ),
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
        let ours = build.is_some();
        if ours {
            if let Err(e) = claim_kerndat_dir() {
                tracing::warn!(error = %e, "CRIU's kerndat cache directory cannot be used");
            }
        }
        if clear_stale_kerndat_tmp(ours) {
            tracing::info!("removed a stale criu.kdat.tmp that kept CRIU from caching what it knows about the kernel");
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
        let (kerndat_cache, why) = kerndat_state(ours);
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
            network_lock_skip: ours,
            ferry_build: build,
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
    fn the_cache_directory_is_made_roots_own_whatever_was_there() {
        if !nix::unistd::Uid::effective().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI runs as root"
            );
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let base =
            std::path::Path::new("/dev/shm").join(format!("ferry-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("kdat");
        let check = || {
            let m = std::fs::symlink_metadata(&dir).unwrap();
            assert!(
                m.is_dir() && m.uid() == 0 && m.mode() & 0o7777 == 0o700,
                "{m:?}"
            );
        };
        // Someone else's directory with a planted cache: replaced, the cache gone.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("criu.kdat"), b"forged").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        claim_root_dir(&dir).unwrap();
        check();
        assert!(!dir.join("criu.kdat").exists());
        // A symlink to elsewhere: replaced by a directory, its target untouched.
        std::fs::remove_dir(&dir).unwrap();
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        claim_root_dir(&dir).unwrap();
        check();
        assert!(elsewhere.is_dir());
        // Already right: kept with what it holds.
        std::fs::write(dir.join("criu.kdat"), b"cache").unwrap();
        claim_root_dir(&dir).unwrap();
        assert!(dir.join("criu.kdat").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_build_is_read_from_the_git_id() {
        assert_eq!(
            ferry_build("Version: 4.2\nGitID: v4.2-ferry.1\n").as_deref(),
            Some("ferry.1")
        );
        assert_eq!(ferry_build("Version: 4.2\n"), None);
        assert_eq!(ferry_build("Version: 4.2\nGitID: v4.2-12-gabcdef\n"), None);
        assert!(kerndat_cache_path(true).starts_with(FERRY_KERNDAT_DIR));
        assert_eq!(
            kerndat_cache_path(false),
            std::path::Path::new("/run/criu.kdat")
        );
    }

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
