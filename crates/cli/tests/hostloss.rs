//! Host loss on real runc/CRIU: a runtime's newest full snapshot is copied to a second host and
//! verified there; a host whose agent is killed is declared dead after `--host-dead-after`; its
//! runtimes come back elsewhere from the replica with their state; the host's return is fenced
//! (its copy removed, one copy answering).

mod common;
use common::{containers, kill9, Ferry};
use serde_json::Value;
use std::time::{Duration, Instant};

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn has_event(f: &Ferry, kind: &str) -> bool {
    f.json(&["events"])
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == kind)
}

fn replicated(f: &Ferry, rt: &str) -> String {
    wait_until("the snapshot replicated", Duration::from_secs(60), || {
        f.json(&["events", "--runtime", rt])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "snapshot.replicated")
    });
    let ev: Value = f.json(&["events", "--runtime", rt]);
    ev.as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "snapshot.replicated")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

fn start() -> Option<Ferry> {
    Ferry::start_dev_with(2, &["--host-dead-after", "3s"])
}

#[test]
fn a_dead_hosts_running_runtime_is_lost_restored_elsewhere_from_its_replica_and_fenced_on_return() {
    let Some(f) = start() else { return };
    f.ok(&["create", "--name", "a", "--host", "h1"]);
    let old = f.json(&["checkpoint", "a", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = replicated(&f, "a");
    assert!(reason.contains(&old) && reason.contains("h2"), "{reason}");
    let old_copy = f.state.join(format!("agents/h2/snapshots/{old}"));
    assert!(old_copy.exists());
    f.py("a", "x = 'before the loss'");
    let snap = f.json(&["checkpoint", "a", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The newer snapshot replaces the older one's copy once it verified at h2.
    wait_until(
        "the newer snapshot replicated",
        Duration::from_secs(60),
        || {
            f.json(&["events", "--runtime", "a"])
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["kind"] == "snapshot.replicated"
                        && e["reason"].as_str().unwrap_or("").contains(&snap)
                })
        },
    );
    wait_until("the older copy removed", Duration::from_secs(30), || {
        !old_copy.exists()
    });
    kill9(f.agent_pid("h1"));
    wait_until("a marked lost", Duration::from_secs(30), || {
        f.state_of("a") == "lost"
    });
    assert!(has_event(&f, "host.dead"));
    let why = f.json(&["inspect", "a"])["state_reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(why.contains(&snap) && why.contains("h2"), "{why}");
    // Restored from the replica: h1 does not answer.
    f.ok(&["restore", &snap]);
    let v = f.json(&["inspect", "a"]);
    assert_eq!(
        (v["state"].as_str(), v["host"].as_str()),
        (Some("running"), Some("h2"))
    );
    assert!(f.py("a", "print(x)").contains("before the loss"));
    // h1 comes back with its old copy still running: fenced.
    assert!(containers(&f, "h1").iter().any(|(_, s)| s == "running"));
    f.ok(&["dev", "restart-agent", "h1"]);
    wait_until("h1's copy removed", Duration::from_secs(30), || {
        containers(&f, "h1").is_empty()
    });
    wait_until("h1's return recorded", Duration::from_secs(30), || {
        has_event(&f, "host.returned")
    });
    assert_eq!(containers(&f, "h2").len(), 1);
    assert!(f.py("a", "print(x)").contains("before the loss"));
}

#[test]
fn a_hibernated_runtime_on_a_dead_host_wakes_elsewhere_from_its_replica() {
    let Some(f) = start() else { return };
    f.ok(&["create", "--name", "sleepy", "--host", "h1"]);
    f.py("sleepy", "y = 41 + 1");
    f.ok(&["hibernate", "sleepy"]);
    replicated(&f, "sleepy");
    kill9(f.agent_pid("h1"));
    wait_until("h1 declared dead", Duration::from_secs(30), || {
        has_event(&f, "host.dead")
    });
    // The next request wakes it on h2.
    let (status, body) = f
        .proxy(
            "POST",
            "/r/sleepy/mrp/v1/execute",
            r#"{"code":"print(y)"}"#,
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(status == 200 && body.contains("42"), "{status} {body}");
    assert_eq!(f.json(&["inspect", "sleepy"])["host"], "h2");
    f.ok(&["dev", "restart-agent", "h1"]);
    wait_until("h1's return recorded", Duration::from_secs(30), || {
        has_event(&f, "host.returned")
    });
    assert!(containers(&f, "h1").is_empty());
}

/// A wake skips a cordoned host too: a runtime hibernated there wakes from its verified replica on
/// another host, with its state.
#[test]
fn a_hibernated_runtime_on_a_cordoned_host_wakes_from_its_replica_elsewhere() {
    let Some(f) = start() else { return };
    f.ok(&["create", "--name", "nap", "--host", "h1"]);
    f.py("nap", "y = 41 + 1");
    f.ok(&["hibernate", "nap"]);
    replicated(&f, "nap");
    f.ok(&["host", "cordon", "h1"]);
    f.ok(&["wake", "nap"]);
    assert_eq!(f.json(&["inspect", "nap"])["host"], "h2");
    assert_eq!(f.py("nap", "print(y)").trim(), "42");
    assert!(
        containers(&f, "h1").is_empty(),
        "nothing runs on the cordoned host"
    );
}

/// Flips one byte in the largest file of a snapshot on `host`'s disk.
fn corrupt_snapshot(f: &Ferry, host: &str, snap: &str) {
    let dir = f.state.join(format!("agents/{host}/snapshots/{snap}"));
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().unwrap().len();
                if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                    largest = Some((len, p));
                }
            }
        }
    }
    let (len, path) = largest.unwrap_or_else(|| panic!("no files in {}", dir.display()));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(len / 2) as usize] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_replica_corrupted_on_arrival_is_rejected_and_not_recorded() {
    let Some(f) = start() else { return };
    f.ok(&["create", "--name", "c", "--host", "h1"]);
    // No second host answers while the snapshot is taken and its bytes are damaged on h1.
    kill9(f.agent_pid("h2"));
    let snap = f.json(&["checkpoint", "c", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    corrupt_snapshot(&f, "h1", &snap);
    f.ok(&["dev", "restart-agent", "h2"]);
    wait_until("the copy refused", Duration::from_secs(60), || {
        f.json(&["events", "--runtime", "c"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["kind"] == "snapshot.replication_failed"
                    && e["reason"].as_str().unwrap_or("").contains("h2")
            })
    });
    let events = f.json(&["events", "--runtime", "c"]);
    assert!(
        !events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "snapshot.replicated"),
        "{events}"
    );
    // Nothing stays at h2: neither the snapshot nor a partial import.
    let at_h2 = f.state.join(format!("agents/h2/snapshots/{snap}"));
    assert!(!at_h2.exists(), "{} kept", at_h2.display());
    // h2 refused it for its content, not for being out of reach: an intact snapshot taken now is
    // taken there.
    let good = f.json(&["checkpoint", "c", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = replicated(&f, "c");
    assert!(reason.contains(&good) && reason.contains("h2"), "{reason}");
    assert!(!at_h2.exists(), "the corrupt copy appeared at h2");
}
