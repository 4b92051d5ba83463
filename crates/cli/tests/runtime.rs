//! Runtimes in runc containers with CRIU checkpoint/restore, through the real CLI, real runc,
//! real CRIU and the real mrmd-python runtime.

mod common;
use common::Ferry;

#[test]
fn checkpoint_and_restore_keep_the_session_and_files() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "nb", "--plan", "free"]);
    f.py("nb", "x = 41\nimport pandas as pd\ndf = pd.DataFrame({'a': range(10000), 'b': [i * 2 for i in range(10000)]})");
    f.py(
        "nb",
        "open('/root/work/notes.txt', 'w').write('written before the checkpoint')",
    );
    let snap = f.json(&["checkpoint", "nb"]);
    assert!(
        snap["size_bytes"].as_u64().unwrap() > 1_000_000,
        "snapshot too small: {snap}"
    );
    assert!(snap["timings"]["dump_ms"].as_f64().unwrap() > 0.0);
    // CRIU's own figures, from its stats image.
    assert!(
        snap["timings"]["criu_frozen_ms"].as_f64().unwrap() > 0.0,
        "{snap}"
    );
    assert!(
        snap["timings"]["criu_pages_written"].as_f64().unwrap() > 1000.0,
        "{snap}"
    );
    assert_eq!(f.state_of("nb"), "checkpointed");
    // A stopped runtime cannot be used or checkpointed again, and says what to do.
    assert!(f.fails(&["exec", "nb", "1"]).contains("restore"));
    assert!(f.fails(&["checkpoint", "nb"]).contains("not running"));

    let id = snap["id"].as_str().unwrap();
    let rt = f.json(&["restore", id]);
    assert_eq!(rt["state"], "running");
    assert_eq!(f.py("nb", "print(x + 1)").trim(), "42");
    assert_eq!(
        f.py("nb", "print(int(df.b.sum()), len(df))").trim(),
        format!("{} 10000", (0..10000u64).map(|i| i * 2).sum::<u64>())
    );
    assert_eq!(
        f.py("nb", "print(open('/root/work/notes.txt').read())")
            .trim(),
        "written before the checkpoint"
    );
    // The restored runtime keeps working and keeps its history of executions.
    assert_eq!(f.py("nb", "y = x * 2\nprint(y)").trim(), "82");
    let ops = f.json(&["operations", "--runtime", "nb"]);
    let kinds: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"checkpoint") && kinds.contains(&"restore"),
        "{kinds:?}"
    );
}

#[test]
fn leave_running_snapshot_forks_into_independent_runtimes() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "orig"]);
    f.py("orig", "x = 41");
    // A client connection open at the checkpoint: the copy, at other addresses, cannot keep it.
    let ip = f.json(&["inspect", "orig"])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let _client = std::net::TcpStream::connect(format!("{ip}:8888")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let snap = f.json(&["checkpoint", "orig", "--leave-running"]);
    assert_eq!(f.state_of("orig"), "running");
    assert_eq!(
        f.py("orig", "print(x)").trim(),
        "41",
        "the original keeps answering"
    );
    let id = snap["id"].as_str().unwrap();
    // Restoring under the original's name is refused: it is running.
    assert!(f.fails(&["restore", id]).contains("already exists"));
    f.ok(&["restore", id, "--name", "copy"]);
    assert_eq!(f.py("copy", "print(x)").trim(), "41");
    f.py("orig", "x = 100");
    f.py("copy", "x = -1");
    assert_eq!(f.py("orig", "print(x)").trim(), "100");
    assert_eq!(f.py("copy", "print(x)").trim(), "-1");
    let ls = f.json(&["ls"]);
    let ips: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1], "each runtime has its own network");
}

#[test]
fn memory_limit_oom_kill_is_reported() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "hog", "--plan", "free"]);
    let limit = f.json(&["inspect", "hog"])["stats"]["memory_limit_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        limit,
        256 * 1024 * 1024,
        "the cgroup carries the plan's limit"
    );
    f.py("hog", "x = 41");
    let snap = f.json(&["checkpoint", "hog", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = f.fails(&[
        "exec",
        "hog",
        "b = bytearray(400 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])",
    ]);
    assert!(
        err.contains("oom-killed"),
        "exec should report the OOM kill: {err}"
    );
    assert_eq!(f.state_of("hog"), "oom-killed");
    let events = f.json(&["events", "--runtime", "hog"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "oom_killed"),
        "{events}"
    );
    // Its last snapshot comes back on a larger plan, where the same allocation fits.
    f.ok(&["restore", &snap, "--plan", "pro"]);
    let rt = f.json(&["inspect", "hog"]);
    assert_eq!(rt["plan"]["name"], "pro");
    assert_eq!(
        rt["stats"]["memory_limit_bytes"].as_u64().unwrap(),
        512 * 1024 * 1024
    );
    assert_eq!(f.py("hog", "b = bytearray(300 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\ndel b\nprint(x + 1)").trim(), "42");
}

#[test]
fn damaged_archives_are_refused_and_nothing_is_created() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "src"]);
    f.py("src", "x = 41");
    let archive = f.state.join("src.ferry");
    let a = archive.to_str().unwrap();
    f.json(&["checkpoint", "src", "--leave-running", "--export", a]);
    let bytes = std::fs::read(&archive).unwrap();
    let snapshots = f.snapshot_count();

    let flipped = f.state.join("flipped.ferry");
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&flipped, &b).unwrap();
    let err = f.fails(&[
        "restore",
        "--import",
        flipped.to_str().unwrap(),
        "--name",
        "bad1",
    ]);
    assert!(
        err.contains("flipped.ferry") && (err.contains("corrupt") || err.contains("checksum")),
        "{err}"
    );

    let truncated = f.state.join("truncated.ferry");
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let err = f.fails(&[
        "restore",
        "--import",
        truncated.to_str().unwrap(),
        "--name",
        "bad2",
    ]);
    assert!(
        err.contains("truncated.ferry") && (err.contains("truncated") || err.contains("corrupt")),
        "{err}"
    );

    assert_eq!(f.snapshot_count(), snapshots, "no snapshot was recorded");
    assert_eq!(
        f.json(&["ls"]).as_array().unwrap().len(),
        1,
        "no runtime was created"
    );
    let staging: Vec<_> = std::fs::read_dir(f.state.join("agent/snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "staging dirs left behind");

    // The intact archive imports and restores.
    f.ok(&["restore", "--import", a, "--name", "imported"]);
    assert_eq!(f.py("imported", "print(x + 1)").trim(), "42");
}

#[test]
fn a_failed_checkpoint_leaves_the_runtime_running() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "stubborn"]);
    f.py("stubborn", "x = 7");
    // Memory mapped from a memfd_secret is a resource CRIU cannot dump: a real checkpoint
    // failure. (io_uring, used here before, is refused by the runtime's seccomp profile.)
    let out = f.py("stubborn", "import ctypes, os, mmap\nlibc = ctypes.CDLL(None)\nfd = libc.syscall(447, 0)\nprint(fd)\nos.ftruncate(fd, 4096)\nsecret = mmap.mmap(fd, 4096)\nsecret[0] = 1");
    assert!(
        out.trim().parse::<i64>().unwrap() >= 0,
        "memfd_secret unavailable here: {out}"
    );
    let snaps = f.snapshot_count();
    let err = f.fails(&["checkpoint", "stubborn"]);
    assert!(
        err.contains("left running") && err.contains("Error ("),
        "{err}"
    );
    assert_eq!(f.state_of("stubborn"), "running");
    assert_eq!(f.py("stubborn", "print(x)").trim(), "7");
    assert_eq!(f.snapshot_count(), snaps);
    let left: Vec<_> = std::fs::read_dir(f.state.join("agent/snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "partial snapshot left: {left:?}");
}

#[test]
fn serve_restart_adopts_running_runtimes() {
    let Some(mut f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "survivor"]);
    f.py("survivor", "x = 41");
    f.restart();
    let ls = f.json(&["ls"]);
    assert_eq!(ls[0]["name"], "survivor");
    assert_eq!(ls[0]["state"], "running");
    assert_eq!(f.py("survivor", "print(x + 1)").trim(), "42");
    f.ok(&["checkpoint", "survivor", "--leave-running"]);
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let Some(f) = Ferry::start() else { return };
    assert!(f.fails(&["inspect", "ghost"]).contains("no runtime named"));
    assert!(f
        .fails(&["exec", "ghost", "1"])
        .contains("no runtime named"));
    assert!(f
        .fails(&["create", "--plan", "gold"])
        .contains("unknown plan"));
    assert!(f.fails(&["create", "--memory", "lots"]).contains("512M"));
    assert!(f
        .fails(&["create", "--name", "../etc"])
        .contains("invalid name"));
    assert!(f
        .fails(&["create", "--memory", "100000G"])
        .contains("MB free"));
    assert!(f.fails(&["restore", "snap-nope"]).contains("no snapshot"));
    assert!(f
        .fails(&["restore", "--import", "/nonexistent.ferry"])
        .contains("/nonexistent.ferry"));
    assert_eq!(f.json(&["ls"]).as_array().unwrap().len(), 0);
    f.ok(&["create", "--name", "taken"]);
    assert!(f
        .fails(&["create", "--name", "taken"])
        .contains("already exists"));
    assert!(f.fails(&["rm", "taken"]).contains("--force"));
    assert_eq!(f.json(&["ls"]).as_array().unwrap().len(), 1);
    // Without the token the API refuses.
    let o = std::process::Command::new(common::BIN)
        .args([
            "--state-dir",
            f.state.to_str().unwrap(),
            "--token",
            "wrong",
            "ls",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("token"));
}

#[test]
fn doctor_checks_the_host_and_says_what_to_fix() {
    if !common::environment_ready() {
        return;
    }
    let o = std::process::Command::new(common::BIN)
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let checks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let by = |n: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by("criu")["ok"], true);
    assert_eq!(by("runc")["ok"], true);
    for name in [
        "lazy pages (userfaultfd)",
        "write tracker (pre-copy)",
        "cgroups",
        "iptables",
        "free memory",
        "disk (images)",
        "CAP_SYS_RESOURCE",
    ] {
        assert!(by(name)["found"].is_string(), "{name}");
    }
    assert_eq!(by("free memory")["required"], true);
    let o = std::process::Command::new(common::BIN)
        .args(["doctor", "--images", "/nonexistent-images"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a missing image is a failure");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL runtime image") && out.contains("scripts/setup.sh"),
        "{out}"
    );
}

/// A snapshot damaged in the store after it was taken: the restore is refused naming the file,
/// and nothing of it runs. (The verification runs alongside CRIU's restore, whose processes stay
/// stopped until every sha256 matched; here they must be killed, never continued.)
#[test]
fn a_snapshot_damaged_in_the_store_is_refused_at_restore_and_nothing_of_it_runs() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "dmg", "--plan", "free"]);
    f.py("dmg", "import numpy as np\nblob = np.random.randint(0, 256, size=64 << 20, dtype=np.uint8)\nx = 41");
    let rt_id = f.json(&["inspect", "dmg"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = f.json(&["checkpoint", "dmg"]);
    let id = snap["id"].as_str().unwrap();
    let pages = find_dir(&f.state, id)
        .expect("the snapshot's directory")
        .join("criu/pages-1.img");
    let mut bytes = std::fs::read(&pages).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pages, &bytes).unwrap();

    let err = f.fails(&["restore", id]);
    assert!(
        err.contains("criu/pages-1.img") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(f.state_of("dmg"), "checkpointed");
    assert!(
        common::find_process(&["--id", &rt_id]).is_none(),
        "a process of the damaged snapshot is still there"
    );
    let left = common::leftovers(&f.state, &f.prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
    // Undamaged again, the same snapshot restores with its state.
    bytes[mid] ^= 0x01;
    std::fs::write(&pages, &bytes).unwrap();
    f.ok(&["restore", id]);
    assert_eq!(
        f.py("dmg", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 64 << 20)
    );
}

fn find_dir(root: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if e.file_type().ok()?.is_dir() && !e.file_type().ok()?.is_symlink() {
            if e.file_name() == name {
                return Some(p);
            }
            if let Some(found) = find_dir(&p, name) {
                return Some(found);
            }
        }
    }
    None
}
