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
        Criu {
            version,
            ok: true,
            problem: None,
            lazy_pages,
            mem_dirty_track,
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
