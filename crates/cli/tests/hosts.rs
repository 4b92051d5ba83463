//! Host lifecycle on simulated hosts with real runc and CRIU: cordon respected by placement and
//! explicit destinations, a drain under polling clients that loses nothing, and `host rm` rules.

mod common;
use common::{Ferry, WriteProbe};
use serde_json::Value;
use std::time::Duration;

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
fn drain_moves_every_runtime_under_polling_clients_and_cordon_holds() {
    let Some(f) = Ferry::start_dev(3) else { return };
    let names = ["d1", "d2", "d3"];
    for n in names {
        f.ok(&["create", "--name", n, "--host", "h1"]);
        f.py(n, "x = 41");
    }
    let probes: Vec<WriteProbe> = names.iter().map(|n| WriteProbe::start(&f, n)).collect();
    std::thread::sleep(Duration::from_millis(400));
    let rep = f.json(&["host", "drain", "h1", "--parallel", "2"]);
    std::thread::sleep(Duration::from_millis(400));
    for (n, p) in names.iter().zip(probes) {
        let seen = p.finish();
        eprintln!("{n}: {seen:?}");
        assert!(seen.polls > 10, "{n}: too few polls: {seen:?}");
        assert_eq!(seen.failures, 0.0, "{n}: failed polls: {seen:?}");
        assert_eq!(seen.duplicated, 0.0, "{n}: a write ran twice: {seen:?}");
        assert_eq!(seen.lost_writes, 0.0, "{n}: a write is gone: {seen:?}");
    }
    let outcomes = rep["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3, "{rep}");
    assert!(
        outcomes.iter().all(|o| o["action"] == "moved"),
        "every runtime moved: {rep}"
    );
    assert_eq!(rep["remaining"], Value::Array(vec![]), "{rep}");
    for n in names {
        let h = host_of(&f, n);
        assert!(h == "h2" || h == "h3", "{n} is on {h}");
        assert_eq!(f.py(n, "print(x + 1)").trim(), "42");
    }
    assert_eq!(host_state(&f, "h1"), "cordoned");
    // The drain is a journaled operation, and each runtime got an event.
    let ops = f.json(&["operations"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "drain" && o["result"] == "ok"),
        "{ops}"
    );
    let events = f.json(&["events"]);
    let moved = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "drain.moved")
        .count();
    assert_eq!(moved, 3, "{events}");

    // Cordon: an explicit --host / --to is refused and says how to uncordon; placement skips it.
    let err = f.fails(&["create", "--name", "no", "--host", "h1"]);
    assert!(
        err.contains("cordoned") && err.contains("ferry host uncordon h1"),
        "{err}"
    );
    let err = f.fails(&["migrate", "d1", "--to", "h1"]);
    assert!(err.contains("cordoned"), "{err}");
    assert_eq!(f.state_of("d1"), "running");
    for i in 0..3 {
        let n = format!("auto{i}");
        f.ok(&["create", "--name", &n]);
        assert_ne!(host_of(&f, &n), "h1", "placement used the cordoned host");
    }
    f.ok(&["host", "uncordon", "h1"]);
    assert_eq!(host_state(&f, "h1"), "ready");
    f.ok(&["create", "--name", "back", "--host", "h1"]);
    assert_eq!(host_of(&f, "back"), "h1");
}

#[test]
fn host_rm_is_refused_while_runtimes_or_snapshots_live_there() {
    let Some(f) = Ferry::start_dev(3) else { return };
    f.ok(&["create", "--name", "kept", "--host", "h2"]);
    let err = f.fails(&["host", "rm", "h2"]);
    assert!(
        err.contains("kept") && err.contains("ferry host drain h2"),
        "{err}"
    );
    let snap = f.json(&["checkpoint", "kept", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(&["host", "drain", "h2"]);
    assert_ne!(host_of(&f, "kept"), "h2");
    // Drained, but its snapshot still lives there.
    let err = f.fails(&["host", "rm", "h2"]);
    assert!(err.contains(&snap) && err.contains("--force"), "{err}");
    let forgot = f.json(&["host", "rm", "h2", "--force"]);
    assert_eq!(forgot["forgot_snapshots"][0], snap.as_str(), "{forgot}");
    let hosts = f.json(&["host", "ls"]);
    assert!(
        !hosts.as_array().unwrap().iter().any(|h| h["name"] == "h2"),
        "{hosts}"
    );
    // A ready host with a runtime cannot be forced away; an empty one goes.
    f.ok(&["create", "--name", "on3", "--host", "h3"]);
    let err = f.fails(&["host", "rm", "h3", "--force"]);
    assert!(err.contains("not cordoned"), "{err}");
    f.ok(&["rm", "-f", "on3"]);
    f.ok(&["host", "rm", "h3"]);
    assert_eq!(f.state_of("kept"), "running");
}
