//! Resource isolation of a hostile runtime, on real runc + CRIU: a fork bomb stops at its plan's
//! task limit while the host and other runtimes answer, a disk fill stops at its plan's quota, and
//! the quota and the seccomp filter stay in force across checkpoint, restore and moves.

mod common;
use common::Ferry;
use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;

/// Runs `args` and asserts it finished within `limit`; returns stdout.
fn within(f: &Ferry, limit: Duration, args: &[&str]) -> String {
    let t = Instant::now();
    let out = f.ok(args);
    assert!(
        t.elapsed() < limit,
        "ferry {args:?} took {:?} (limit {limit:?})",
        t.elapsed()
    );
    out
}

/// What the seccomp filter, `no_new_privs` and the layer look like from inside: the Seccomp and
/// NoNewPrivs lines of PID 1, the errno of `unshare(CLONE_NEWUSER)` and of `keyctl`, and the size
/// of the root filesystem in MB.
const PROBE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
st = dict(l.split(':\t', 1) for l in open('/proc/1/status').read().splitlines() if ':\t' in l)
r1 = libc.unshare(0x10000000); e1 = ctypes.get_errno()
r2 = libc.syscall(250, 0, 0, 0); e2 = ctypes.get_errno()
fs = os.statvfs('/')
print(st['Seccomp'].strip(), st['NoNewPrivs'].strip(), r1, e1, r2, e2, fs.f_blocks * fs.f_frsize // 2**20)
"#;

/// Asserts the runtime is confined as its plan says: filter on (mode 2), no_new_privs, both probes
/// refused with EPERM, a root filesystem of about `disk_mb`, and numpy/pandas work.
fn assert_confined(f: &Ferry, rt: &str, disk_mb: u64, when: &str) {
    let out = f.py(rt, PROBE);
    let v: Vec<i64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(&v[..6], &[2, 1, -1, 1, -1, 1], "{when}: {out}");
    let size = v[6] as u64;
    assert!(
        size <= disk_mb && size * 100 >= disk_mb * 95,
        "{when}: root filesystem of {size} MB, want about {disk_mb} MB (the plan's quota, not the host's disk)"
    );
    assert_eq!(
        f.py(
            rt,
            "import numpy as np, pandas as pd\ndf = pd.DataFrame({'a': np.arange(100000)})\nprint(int(df.a.sum()))"
        )
        .trim(),
        "4999950000",
        "{when}"
    );
}

/// A figure of `df` (`avail`, `size`) for the filesystem holding `path`, in bytes.
fn df_bytes(path: &std::path::Path, field: &str) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", &format!("--output={field}")])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_fork_bomb_stops_at_its_plan_limit_while_the_host_answers() {
    let Some(f) = Ferry::start_with(&["--monitor-interval=1s"]) else {
        return;
    };
    f.ok(&["create", "--name", "bomb", "--plan", "free"]);
    f.ok(&["create", "--name", "calm", "--plan", "free"]);
    f.py("bomb", "import os, signal, subprocess");
    // The bomb runs in the background: the execute returns at once.
    f.py(
        "bomb",
        "subprocess.Popen(['/bin/sh', '-c', 'f() { f | f & }; f'], start_new_session=True)",
    );
    let t0 = Instant::now();
    let mut peak = 0;
    let mut refused = 0;
    let mut recover = String::new();
    while (recover.is_empty() || peak < 250) && t0.elapsed() < Duration::from_secs(20) {
        // The host's control plane and the other runtime keep answering, promptly.
        within(&f, Duration::from_secs(5), &["ls"]);
        let two = within(
            &f,
            Duration::from_secs(5),
            &["exec", "calm", "print(1 + 1)"],
        );
        assert!(two.contains('2'), "{two}");
        let v = f.json(&["inspect", "bomb"]);
        peak = peak.max(v["stats"]["pids_current"].as_u64().unwrap_or(0));
        refused = v["stats"]["pids_max_events"].as_u64().unwrap_or(0);
        if let Some(e) = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "pids.limit")
        {
            recover = e["data"]["recover"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        (250..=256).contains(&peak),
        "the bomb should fill the free plan's 256 tasks and no more: peak {peak}"
    );
    assert!(refused > 0, "the pids limit refused nothing");
    assert!(
        !recover.is_empty(),
        "no pids.limit event: {}",
        f.ok(&["events"])
    );
    let human = f.ok(&["inspect", "bomb"]);
    assert!(human.contains("of 256"), "{human}");
    assert!(human.contains("pids.limit"), "{human}");
    assert_eq!(f.state_of("bomb"), "running");
    // Still at its limit, and the rest answers.
    within(&f, Duration::from_secs(5), &["ls"]);
    within(&f, Duration::from_secs(5), &["exec", "calm", "print(3)"]);
    // The runtime's own process still answers and ends the bomb with the code the event offers.
    let t1 = Instant::now();
    loop {
        f.py("bomb", &recover);
        let v = f.json(&["inspect", "bomb"]);
        if v["stats"]["pids_current"].as_u64().unwrap_or(999) < 20 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the bomb could not be ended: {v}"
        );
    }
    assert_eq!(f.py("bomb", "print(6 * 7)").trim(), "42");
    assert_eq!(f.py("calm", "print(6 * 7)").trim(), "42");
}

#[test]
fn a_disk_fill_stops_at_the_plan_quota_and_not_the_hosts_disk() {
    let Some(f) = Ferry::start() else { return };
    let rt = f.json(&["create", "--name", "filler", "--plan", "free"]);
    let id = rt["id"].as_str().unwrap().to_string();
    let quota = 1024 * MB; // plan free
    let host_free = || df_bytes(&f.state, "avail");
    let before = host_free();
    // Write 1 MB at a time until the filesystem refuses; report how far it got and why. Synced
    // every 64 MB: on cgroup v1 dirty pages are not throttled per cgroup, and a runtime that
    // dirties more than its memory limit can be OOM-killed before its writes reach the disk.
    let o = f.cli(&[
        "--json",
        "exec",
        "filler",
        r#"
import errno, os
n = 0
err = None
block = b'x' * 2**20
try:
    with open('/root/work/fill', 'wb') as fh:
        for _ in range(3 * 1024):
            fh.write(block); fh.flush(); n += 1
            if n % 64 == 0:
                os.fsync(fh.fileno())
        os.fsync(fh.fileno())
except OSError as e:
    err = e.errno
fs = os.statvfs('/root/work')
print(n, errno.errorcode.get(err, err), fs.f_blocks * fs.f_frsize // 2**20, fs.f_bavail)
"#,
    ]);
    assert!(
        o.status.success(),
        "the fill failed: {}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        f.ok(&["inspect", "filler"]),
        common::tail(&f.log(), 20)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = out.split_whitespace().collect();
    let written: u64 = parts[0].parse().unwrap();
    assert_eq!(parts[1], "ENOSPC", "{out}");
    assert!(
        (900..1024).contains(&written),
        "wrote {written} MB before ENOSPC, want just under the 1024 MB quota: {out}"
    );
    let size: u64 = parts[2].parse().unwrap();
    assert!((970..=1024).contains(&size), "df inside shows {size} MB");
    let left: u64 = parts[3].parse().unwrap();
    assert!(left < 256, "{left} blocks still free after ENOSPC: {out}");
    // On the host: the layer holds at most its quota, and the host lost no more than that.
    let img = f.state.join(format!("agent/runtimes/{id}/layer.img"));
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap()) * 512;
    assert!(allocated <= quota, "layer image uses {allocated} bytes");
    // (Other work on a shared machine moves the host's free space too: the margin allows for it;
    // the image's allocation above is the exact figure.)
    let lost = before.saturating_sub(host_free());
    assert!(
        lost <= quota + 1024 * MB,
        "the host's free space shrank by {} MB",
        lost / MB
    );
    // `df` in the runtime shows the quota, not the host's disk.
    let df = f.py(
        "filler",
        "import subprocess\nprint(subprocess.run(['df', '-m', '/'], capture_output=True, text=True).stdout)",
    );
    let df_mb: u64 = df
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read df's output: {df}"));
    let host_mb = df_bytes(&f.state, "size") / MB;
    assert!(
        (970..=1024).contains(&df_mb) && df_mb < host_mb,
        "df inside shows {df_mb} MB (host: {host_mb} MB): {df}"
    );
    // Freed again, the runtime writes normally; a full layer did not hurt it.
    assert_eq!(
        f.py(
            "filler",
            "os.remove('/root/work/fill')\nopen('/root/work/small', 'w').write('ok')\nprint(open('/root/work/small').read())"
        )
        .trim(),
        "ok"
    );
}

#[test]
fn quota_and_seccomp_survive_checkpoint_restore_and_moves() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "jail", "--plan", "free", "--host", "h1"]);
    assert_confined(&f, "jail", 1024, "after create");
    f.py(
        "jail",
        "open('/root/work/kept', 'w').write('x' * 10**6)\nx = 41",
    );

    // Checkpoint + restore on the same host.
    let snap = f.json(&["checkpoint", "jail"]);
    f.ok(&["restore", snap["id"].as_str().unwrap()]);
    assert_confined(&f, "jail", 1024, "after restore");

    // Restored on a larger plan: the larger quota.
    let snap = f.json(&["checkpoint", "jail"]);
    f.ok(&["restore", snap["id"].as_str().unwrap(), "--plan", "pro"]);
    assert_confined(&f, "jail", 4096, "after restore on plan pro");

    for (to, mode) in [("h2", "stop-copy"), ("h1", "lazy")] {
        f.ok(&["migrate", "jail", "--to", to, "--mode", mode]);
        assert_eq!(f.json(&["inspect", "jail"])["host"], to);
        assert_confined(&f, "jail", 4096, &format!("after a {mode} move to {to}"));
        assert_eq!(
            f.py("jail", "print(x + 1, len(open('/root/work/kept').read()))")
                .trim(),
            "42 1000000",
            "{mode}"
        );
    }
}

#[test]
fn a_snapshot_too_large_for_a_smaller_plan_is_refused_with_what_to_do() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "big", "--plan", "pro"]);
    // 1.2 GB of incompressible data: more than the free plan's 1 GB disk.
    f.py(
        "big",
        "import os\nwith open('/root/work/blob', 'wb') as fh:\n    for _ in range(1200):\n        fh.write(os.urandom(2**20))",
    );
    let snap = f.json(&["checkpoint", "big"]);
    let id = snap["id"].as_str().unwrap();
    let err = f.fails(&["restore", id, "--plan", "free"]);
    assert!(
        err.contains("do not fit") && err.contains("larger plan"),
        "{err}"
    );
    // The snapshot is untouched: restored on its own plan it has every byte.
    f.ok(&["restore", id]);
    assert_eq!(
        f.py("big", "print(os.path.getsize('/root/work/blob') // 2**20)")
            .trim(),
        "1200"
    );
}
