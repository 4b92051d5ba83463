//! The host lifecycle with two `ferry serve` instances on one PostgreSQL database: a drain run by
//! one instance under clients polling through the other's proxy, `host rm` rules and cordons seen
//! alike by both, and a host lost, restored through the other instance and fenced on its return.
//! Real PostgreSQL, runc, CRIU and agents in network namespaces.

mod common;
use common::{containers, kill9, Ferry, WriteProbe};
use serde_json::Value;
use std::time::{Duration, Instant};

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn host_state(f: &Ferry, name: &str) -> String {
    let hosts = f.json(&["host", "ls"]);
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .map(|h| h["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no host {name}: {hosts}"))
}

fn host_of(f: &Ferry, rt: &str) -> String {
    f.json(&["inspect", rt])["host"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_drain_by_one_instance_polled_through_the_other_loses_nothing_and_host_rules_hold_in_both() {
    let serve = ["--no-auto", "--lease-ttl=3s"];
    let Some(a) = Ferry::start_dev_on(3, &serve, true) else {
        return;
    };
    let b = a.second_instance(&serve);
    let names = ["d1", "d2"];
    for n in names {
        a.ok(&["create", "--name", n, "--host", "h1"]);
        a.py(n, "x = 41");
    }
    // The clients poll through B; A drains.
    let probes: Vec<WriteProbe> = names.iter().map(|n| WriteProbe::start(&b, n)).collect();
    std::thread::sleep(Duration::from_millis(400));
    let rep = a.json(&["host", "drain", "h1", "--parallel", "2"]);
    std::thread::sleep(Duration::from_millis(400));
    for (n, p) in names.iter().zip(probes) {
        let seen = p.finish();
        eprintln!("{n} through B while A drains: {seen:?}");
        assert!(seen.polls > 10, "{n}: too few polls: {seen:?}");
        assert_eq!(seen.failures, 0.0, "{n}: failed polls: {seen:?}");
        assert_eq!(seen.duplicated, 0.0, "{n}: a write ran twice: {seen:?}");
        assert_eq!(seen.lost_writes, 0.0, "{n}: a write is gone: {seen:?}");
    }
    assert_eq!(rep["remaining"], Value::Array(vec![]), "{rep}");
    for n in names {
        let h = host_of(&b, n);
        assert!(h == "h2" || h == "h3", "{n} is on {h}");
        assert_eq!(b.py(n, "print(x + 1)").trim(), "42");
    }
    // The cordon A's drain left is B's too: B refuses to place there and says how to undo it.
    assert_eq!(host_state(&b, "h1"), "cordoned");
    let err = b.fails(&["create", "--name", "no", "--host", "h1"]);
    assert!(err.contains("cordoned"), "{err}");
    // host rm through B: refused while a runtime lives there, whoever created it.
    let on = host_of(&a, "d1");
    let err = b.fails(&["host", "rm", &on]);
    assert!(
        err.contains("d1") && err.contains(&format!("ferry host drain {on}")),
        "{err}"
    );
    // B uncordons; A places there again.
    b.ok(&["host", "uncordon", "h1"]);
    assert_eq!(host_state(&a, "h1"), "ready");
    a.ok(&["create", "--name", "back", "--host", "h1"]);
    assert_eq!(host_of(&b, "back"), "h1");
}

#[test]
fn a_host_lost_under_two_instances_is_restored_through_the_other_and_fenced_on_return() {
    let serve = ["--no-auto", "--lease-ttl=3s", "--host-dead-after=3s"];
    let Some(a) = Ferry::start_dev_on(2, &serve, true) else {
        return;
    };
    let b = a.second_instance(&serve);
    a.ok(&["create", "--name", "lost1", "--host", "h1"]);
    a.py("lost1", "x = 'before the loss'");
    let snap = a.json(&["checkpoint", "lost1", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the snapshot replicated", Duration::from_secs(60), || {
        b.json(&["events", "--runtime", "lost1"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["kind"] == "snapshot.replicated"
                    && e["reason"].as_str().unwrap_or("").contains(&snap)
            })
    });
    kill9(a.agent_pid("h1"));
    // Both instances see the runtime lost, with the replica on h2 offered.
    wait_until("lost1 marked lost", Duration::from_secs(30), || {
        b.state_of("lost1") == "lost"
    });
    assert_eq!(a.state_of("lost1"), "lost");
    let why = b.json(&["inspect", "lost1"])["state_reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(why.contains(&snap) && why.contains("h2"), "{why}");
    // Restored through B from the replica; A routes to it.
    b.ok(&["restore", &snap]);
    assert_eq!(host_of(&a, "lost1"), "h2");
    assert!(a.py("lost1", "print(x)").contains("before the loss"));
    assert!(b.py("lost1", "print(x)").contains("before the loss"));
    // h1 returns with its old copy still running: fenced, one copy answers through both.
    assert!(containers(&a, "h1").iter().any(|(_, s)| s == "running"));
    a.ok(&["dev", "restart-agent", "h1"]);
    wait_until("h1's copy removed", Duration::from_secs(30), || {
        containers(&a, "h1").is_empty()
    });
    assert_eq!(containers(&a, "h2").len(), 1);
    assert!(b.py("lost1", "print(x)").contains("before the loss"));
}
