//! Running external programs with their output captured into errors.

use crate::{Error, Result};
use std::process::Stdio;
use tokio::process::Command;

/// Runs `prog args`, returning stdout; on failure the error holds the command and its stderr.
pub async fn run(prog: &str, args: &[&str]) -> Result<String> {
    run_with_input(prog, args, None).await
}

/// As [`run`], with `input` written to the program's stdin (none: stdin is `/dev/null`).
pub async fn run_with_input(prog: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot run {prog}: {e}; is it installed? (scripts/setup.sh installs it)"
            ))
        })?;
    if let (Some(text), Some(mut w)) = (input, child.stdin.take()) {
        w.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], ignoring failure (for best-effort cleanup).
pub async fn run_quiet(prog: &str, args: &[&str]) -> bool {
    run(prog, args).await.is_ok()
}

/// Whether `prog` (a bare name) is an executable file in a directory of PATH.
pub fn on_path(prog: &std::path::Path) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("RLIMIT_NOFILE") && !l.contains("Would overwrite RPC"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
