//! Two `ferry serve` instances on one PostgreSQL database and the same agents: every operation on
//! a runtime is owned by one of them at a time, and when one dies mid-migration the other settles
//! what it left once its lease expires. Real PostgreSQL, runc, CRIU and agents in network
//! namespaces.

mod common;
use common::{containers, in_background, kill9, wait_for_stream_at, Ferry, BIG};
use std::time::{Duration, Instant};
const SERVE: &[&str] = &["--no-auto", "--lease-ttl=3s"];

#[test]
fn killing_one_instance_mid_migration_lets_the_other_settle_it_within_the_lease_time() {
    let Some(a) = Ferry::start_dev_on(2, SERVE, true) else {
        return;
    };
    let b = a.second_instance(SERVE);
    a.ok(&[
        "create", "--name", "shared", "--host", "h1", "--plan", "pro",
    ]);
    a.py("shared", BIG);
    assert_eq!(
        b.json(&["inspect", "shared"])["state"],
        "running",
        "both instances see one state"
    );
    common::slow_link(&a, "h2", "400mbit");
    let migration = in_background(&a, &["migrate", "shared", "--to", "h2"]);
    wait_for_stream_at(&a, "h2");
    kill9(a.serve_pid());
    let killed = Instant::now();
    assert!(
        !migration.join().unwrap().status.success(),
        "instance A was killed under its migration"
    );
    // B notices A's lease expired (3 s) and settles the runtime: completes the move or thaws it.
    let rt = loop {
        let rt = b.json(&["inspect", "shared"]);
        if rt["state"] == "running" {
            break rt;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "instance B did not settle the runtime within 20 s (lease 3 s): {rt}\n{}",
            common::tail(&b.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let settled = killed.elapsed();
    eprintln!(
        "instance B settled the runtime {settled:?} after A was killed: {}",
        rt["host"]
    );
    assert!(
        settled >= Duration::from_secs(2),
        "B took over after {settled:?}, before A's lease could expire"
    );
    // Exactly one copy runs, where the database says; its state is intact; B's proxy answers.
    let host = rt["host"].as_str().unwrap().to_string();
    let running: Vec<(String, String)> = ["h1", "h2"]
        .iter()
        .flat_map(|h| {
            containers(&a, h)
                .into_iter()
                .map(move |(_, status)| (h.to_string(), status))
        })
        .collect();
    assert_eq!(running, vec![(host, "running".to_string())]);
    assert_eq!(
        b.py("shared", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );
    let (status, body) = b
        .proxy(
            "GET",
            "/r/shared/mrp/v1/capabilities",
            "",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // The journal shows the interruption, and B's recovery as an event.
    let ops = b.json(&["operations", "--runtime", "shared"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "migrate"
                && o["error"].as_str().unwrap_or("").contains("interrupted")),
        "{ops}"
    );
    let instances = b.json(&["instances"]);
    let alive: Vec<bool> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["alive"].as_bool().unwrap())
        .collect();
    assert_eq!(
        alive,
        vec![false, true],
        "A (started first) is dead, B alive: {instances}"
    );
    let events = b.json(&["events", "--runtime", "shared"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "runtime.recovered"),
        "{events}"
    );
    // B carries on alone: the runtime moves again through it.
    let to = if rt["host"] == "h1" { "h2" } else { "h1" };
    b.ok(&["migrate", "shared", "--to", to]);
    assert_eq!(b.py("shared", "print(x)").trim(), "41");
}

#[test]
fn two_instances_migrating_one_runtime_at_once_one_wins_and_the_other_is_refused() {
    let Some(a) = Ferry::start_dev_on(2, SERVE, true) else {
        return;
    };
    let b = a.second_instance(SERVE);
    a.ok(&[
        "create",
        "--name",
        "contested",
        "--host",
        "h1",
        "--plan",
        "pro",
    ]);
    a.py("contested", BIG);
    let both = [
        in_background(&a, &["migrate", "contested", "--to", "h2"]),
        in_background(&b, &["migrate", "contested", "--to", "h2"]),
    ];
    let outs: Vec<std::process::Output> = both.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "exactly one migration succeeds: {:?}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    let err = String::from_utf8_lossy(&loser.stderr);
    eprintln!("refused: {}", err.trim());
    // Refused because the other one was under way: the two overlapped (a refusal saying it
    // already runs on h2 would mean they ran one after the other, and prove nothing).
    assert!(
        err.contains("busy with an operation of control-plane instance")
            || err.contains("is migrating"),
        "a refusal while the other migration ran: {err}"
    );
    for f in [&a, &b] {
        let rt = f.json(&["inspect", "contested"]);
        assert_eq!(
            (rt["state"].as_str(), rt["host"].as_str()),
            (Some("running"), Some("h2")),
            "{rt}"
        );
    }
    assert_eq!(containers(&a, "h1"), vec![]);
    assert_eq!(containers(&a, "h2").len(), 1);
    assert_eq!(b.py("contested", "print(x)").trim(), "41");
    let migrations = a
        .json(&["operations", "--runtime", "contested"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "migrate" && o["result"] == "ok")
        .count();
    assert_eq!(migrations, 1, "one migration is journaled as done");
}
