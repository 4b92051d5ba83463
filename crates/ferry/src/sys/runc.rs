//! runc, driven through its CLI. Each call names a `--root` so that every (simulated) host keeps
//! its own container state. Detached calls get /dev/null as stdio (the container inherits it, and a
//! pipe or host file there would hang us or break CRIU) and write runc's own log to a file instead.

use super::cmd::{run, tail};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Runc {
    pub root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i64,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
}

/// Options shared by checkpoint and restore.
#[derive(Debug, Clone, Default)]
pub struct CriuOpts {
    pub image: PathBuf,
    pub work: PathBuf,
    pub leave_running: bool,
    /// Lazy (post-copy) mode: on dump, `Some(address:port)` of the page server to serve from.
    pub lazy_page_server: Option<String>,
    /// Restore with `--lazy-pages` (pages come from a running `criu lazy-pages`).
    pub lazy_restore: bool,
}

impl Runc {
    pub fn new(root: impl Into<PathBuf>) -> Runc {
        Runc { root: root.into() }
    }

    fn base(&self) -> Vec<String> {
        vec!["--root".into(), self.root.display().to_string()]
    }

    async fn detached(&self, args: Vec<String>, log: &Path, what: &str) -> Result<()> {
        let mut full = self.base();
        full.extend(["--log".into(), log.display().to_string()]);
        full.extend(args);
        let status = Command::new("runc")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot run runc: {e}; install it (scripts/setup.sh does)"
                ))
            })?;
        if !status.success() {
            return Err(Error::Internal(format!(
                "runc {what} failed ({status}):\n{}",
                tail(log, 12)
            )));
        }
        Ok(())
    }

    /// Creates and starts container `id` from `bundle`, detached.
    pub async fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<()> {
        self.detached(
            vec![
                "run".into(),
                "-d".into(),
                "--bundle".into(),
                bundle.display().to_string(),
                id.into(),
            ],
            log,
            "run",
        )
        .await
    }

    pub async fn state(&self, id: &str) -> Result<Option<State>> {
        if !self.root.join(id).exists() {
            return Ok(None);
        }
        let root = self.root.display().to_string();
        match run("runc", &["--root", &root, "state", id]).await {
            Ok(out) => {
                Ok(Some(serde_json::from_str(&out).map_err(|e| {
                    Error::Internal(format!("runc state: {e}"))
                })?))
            }
            Err(_) if !self.root.join(id).exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// IDs of the containers under this root.
    pub fn ids(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Waits (up to `limit`) until no `runc` process of this root still works on container `id`:
    /// one an agent started before it was killed goes on without it (a restore finishes, and
    /// only then is there a container to remove). Returns whether none is left.
    pub async fn wait_for_strays(&self, id: &str, limit: std::time::Duration) -> bool {
        let root = self.root.to_string_lossy().into_owned();
        let start = std::time::Instant::now();
        loop {
            if !strays(&root, id) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let root = self.root.display().to_string();
        run("runc", &["--root", &root, "kill", id, signal])
            .await
            .map(|_| ())
    }

    pub async fn delete_force(&self, id: &str) -> Result<()> {
        let root = self.root.display().to_string();
        run("runc", &["--root", &root, "delete", "--force", id])
            .await
            .map(|_| ())
    }

    /// Freezes every process of the container (cgroup freezer).
    pub async fn pause(&self, id: &str) -> Result<()> {
        let root = self.root.display().to_string();
        run("runc", &["--root", &root, "pause", id])
            .await
            .map(|_| ())
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let root = self.root.display().to_string();
        run("runc", &["--root", &root, "resume", id])
            .await
            .map(|_| ())
    }

    /// CRIU dump through runc. TCP connections are always allowed (`--tcp-established`).
    pub async fn checkpoint(&self, id: &str, o: &CriuOpts, log: &Path) -> Result<()> {
        let mut a: Vec<String> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            o.image.display().to_string(),
            "--work-path".into(),
            o.work.display().to_string(),
            "--tcp-established".into(),
        ];
        if o.leave_running {
            a.push("--leave-running".into());
        }
        if let Some(ps) = &o.lazy_page_server {
            a.extend(["--lazy-pages".into(), "--page-server".into(), ps.clone()]);
        }
        a.push(id.into());
        self.detached(a, log, "checkpoint")
            .await
            .map_err(|e| with_criu_log(e, &o.work.join("dump.log")))
    }

    /// CRIU restore through runc, detached.
    pub async fn restore(&self, id: &str, bundle: &Path, o: &CriuOpts, log: &Path) -> Result<()> {
        self.detached(Self::restore_args(id, bundle, o), log, "restore")
            .await
            .map_err(|e| with_criu_log(e, &o.work.join("restore.log")))
    }

    /// The restore as a process of its own group, for callers that must be able to stop it
    /// (runc and its CRIU together) while it runs.
    pub fn restore_command(&self, id: &str, bundle: &Path, o: &CriuOpts, log: &Path) -> Command {
        let mut c = Command::new("runc");
        c.args(self.base())
            .arg("--log")
            .arg(log)
            .args(Self::restore_args(id, bundle, o));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        c
    }

    fn restore_args(id: &str, bundle: &Path, o: &CriuOpts) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "restore".into(),
            "-d".into(),
            "--image-path".into(),
            o.image.display().to_string(),
            "--work-path".into(),
            o.work.display().to_string(),
            "--tcp-established".into(),
            "--bundle".into(),
            bundle.display().to_string(),
        ];
        if o.lazy_restore {
            a.push("--lazy-pages".into());
        }
        a.push(id.into());
        a
    }
}

fn with_criu_log(e: Error, log: &Path) -> Error {
    // CRIU's own "Error (file:line): ..." lines say why; the tail says where it stopped.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error ("))
        .take(6)
        .collect();
    let criu = if errors.is_empty() {
        tail(log, 8)
    } else {
        errors.join("\n")
    };
    if criu.is_empty() {
        return e;
    }
    Error::Internal(format!("{e}\nCRIU log ({}):\n{criu}", log.display()))
}

pub async fn version() -> String {
    run("runc", &["--version"])
        .await
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("runc version ").to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a `runc --root ROOT ... ID` process is alive.
fn strays(root: &str, id: &str) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let is_runc = args.first().is_some_and(|a| a.ends_with(b"runc"));
            is_runc
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--root" && w[1] == root.as_bytes())
                && args.contains(&id.as_bytes())
        })
}
