//! Operating ferry: `ferry serve` configured from a file (`--config`), logging JSON lines; a config
//! file with an unknown key is refused, naming the key.

mod common;

use common::{Ferry, BIN};
use serde_json::Value;
use std::io::Write;

#[test]
fn serve_reads_its_config_file_and_logs_json() {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    write!(cfg, "log_format = \"json\"\n\n[serve]\nimage = \"cfg-image:1\"\nidle-after = \"20m\"\nsubnet = \"10.1.2.0\"\n").unwrap();
    let path = cfg.path().to_str().unwrap().to_string();
    let Some(f) = Ferry::start_with(&["--config", &path]) else {
        return;
    };
    // The file's default image is used (and, as no host has it, refused with what to do).
    let err = f.fails(&["create", "--name", "c1"]);
    assert!(
        err.contains("cfg-image:1") && err.contains("ferry image import"),
        "{err}"
    );
    let log = f.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "ferry serve listening" && l["level"] == "INFO"),
        "{log}"
    );
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["target"].is_string()));
    drop(f);
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    write!(cfg, "[serve]\nmonitor-intervall = \"5s\"\n").unwrap();
    let o = std::process::Command::new(BIN)
        .args(["--config", cfg.path().to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown key `serve.monitor-intervall`"),
        "{err}"
    );
    let o = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("FERRY_MONITOR_INTERVAL") && help.contains("FERRY_IDLE_AFTER"),
        "every option has an environment variable:\n{help}"
    );
    let o = std::process::Command::new(BIN)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("FERRY_AGENT_LISTEN")
            && help.contains("FERRY_AGENT_TOKEN_FILE")
            && help.contains("FERRY_AGENT_STATE_DIR"),
        "{help}"
    );
}

#[test]
fn systemd_units_verify() {
    let have = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "systemd-analyze is missing (CI=true: skipping is a failure)"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd");
    let mut paths = Vec::new();
    for name in ["ferry-agent.service", "ferry-serve.service"] {
        let text = std::fs::read_to_string(units.join(name))
            .unwrap()
            .replace("/usr/local/bin/ferry", BIN);
        assert!(
            text.contains("NoNewPrivileges=yes") && text.contains("KillMode=process"),
            "{name}"
        );
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn image_build_refreshes_the_built_image() {
    if !common::environment_ready() {
        return;
    }
    // The image is complete (setup built it): the build only refreshes ferry's hooks in it, with
    // the script embedded in the binary, and the image stays complete and runnable.
    let images = common::images_dir();
    let o = std::process::Command::new(BIN)
        .args(["image", "build", "--images", images.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("runtime image:"));
    assert!(images.join("mrmd-python/.complete").exists());
    let site = std::fs::read_dir(images.join("mrmd-python/rootfs/opt/venv/lib"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("site-packages");
    let hooks = std::fs::read_to_string(site.join("ferry_runtime_hooks.py")).unwrap();
    let ours = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image/ferry_runtime_hooks.py"),
    )
    .unwrap();
    assert_eq!(hooks, ours);
    let o = std::process::Command::new(BIN)
        .args(["image", "build", "--name", "bad/name"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("invalid image name")
    );
}

#[test]
fn every_daemon_option_is_documented_in_config_md() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIG.md"),
    )
    .unwrap();
    for verb in ["serve", "agent"] {
        let o = std::process::Command::new(BIN)
            .args([verb, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let vars: Vec<&str> = help
            .split("[env: ")
            .skip(1)
            .filter_map(|s| s.split([']', '=']).next())
            .collect();
        assert!(vars.len() > 5, "{help}");
        for v in vars {
            assert!(
                doc.contains(&format!("`{v}`")),
                "{v} (ferry {verb}) is not in docs/CONFIG.md"
            );
        }
    }
}
