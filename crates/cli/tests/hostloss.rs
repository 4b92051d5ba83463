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
    f.py("a", "x = 'before the loss'");
    let snap = f.json(&["checkpoint", "a", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = replicated(&f, "a");
    assert!(reason.contains(&snap) && reason.contains("h2"), "{reason}");
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
    assert_eq!((v["state"].as_str(), v["host"].as_str()), (Some("running"), Some("h2")));
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
