//! Several `ferry serve` instances on one PostgreSQL database acting as one: a move run by one
//! instance holds and releases requests in the other's proxy, a runtime's addresses and the
//! runtime network come from the database (an instance with another `--subnet` is refused), and
//! exactly one instance decides for the monitor, another taking over when it dies. Real
//! PostgreSQL, runc, CRIU and agents in network namespaces.

mod common;
use common::{kill9, Ferry, WriteProbe, BIN};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVE: &[&str] = &["--no-auto", "--lease-ttl=3s"];

/// ~200 MB of random bytes (memory that does not compress) and `x = 41`.
const BIG200: &str = "import numpy as np\nblob = np.random.randint(0, 256, size=200 * 1024 * 1024, dtype=np.uint8)\nx = 41";

#[test]
fn a_move_by_one_instance_holds_and_releases_requests_in_the_other_instances_proxy() {
    let Some(a) = Ferry::start_dev_on(2, SERVE, true) else {
        return;
    };
    let b = a.second_instance(SERVE);
    a.ok(&["create", "--name", "moved", "--host", "h1", "--plan", "pro"]);
    a.py("moved", BIG200);
    for (to, mode) in [("h2", "stop-copy"), ("h1", "lazy")] {
        // The client polls through B's proxy; A runs the move.
        let probe = WriteProbe::start(&b, "moved");
        std::thread::sleep(Duration::from_millis(500));
        let m = a.json(&["migrate", "moved", "--to", to, "--mode", mode]);
        std::thread::sleep(Duration::from_millis(500));
        let seen = probe.finish();
        let freeze = m["timings"]["downtime_ms"].as_f64().unwrap();
        eprintln!("{mode} by A, polled through B: {seen:?}, freeze {freeze:.0} ms");
        assert!(seen.polls > 20, "too few polls: {seen:?}");
        assert_eq!(
            seen.failures, 0.0,
            "{mode}: failed polls through B: {seen:?}"
        );
        assert_eq!(seen.duplicated, 0.0, "{mode}: a write ran twice: {seen:?}");
        assert_eq!(
            seen.lost_writes, 0.0,
            "{mode}: an answered write is gone: {seen:?}"
        );
        // Stop-copy: the freeze plus 300 ms. Lazy: the first polls after the switch also wait
        // for memory pages from the source while the rest streams (0.4-2.3 s more on this
        // loaded machine, as through A's own proxy: `migration.rs` allows the same), which is the
        // move's cost, not the proxy's.
        let allowed = if mode == "lazy" { 3000.0 } else { 300.0 };
        assert!(
            seen.downtime_ms < freeze + allowed,
            "{mode}: the client waited {:.0} ms through B for a {freeze:.0} ms freeze on A",
            seen.downtime_ms
        );
        assert_eq!(a.json(&["inspect", "moved"])["host"], to);
    }
    assert_eq!(
        b.py("moved", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 200 * 1024 * 1024)
    );
}

#[test]
fn an_instance_whose_route_listener_is_cut_holds_and_rereads_instead_of_forwarding_stale() {
    let Some(a) = Ferry::start_dev_on(2, SERVE, true) else {
        return;
    };
    let b = a.second_instance(SERVE);
    a.ok(&["create", "--name", "cut", "--host", "h1", "--plan", "pro"]);
    a.py("cut", common::BIG);
    let url = a.database.as_ref().unwrap().url();
    let (server, db) = url.rsplit_once('/').unwrap();
    let (server, db) = (server.to_string(), db.to_string());
    // Ends every instance's LISTEN connection (the server closes them, as a failover would).
    let cut = move || {
        common::psql(
            &server,
            &db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .unwrap()
    };
    let probe = WriteProbe::start(&b, "cut");
    std::thread::sleep(Duration::from_millis(300));
    let cuts = std::thread::spawn(move || {
        let mut n = 0;
        for _ in 0..12 {
            n += cut().parse::<u32>().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(250));
        }
        n
    });
    let m = a.json(&["migrate", "cut", "--to", "h2"]);
    let terminated = cuts.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let seen = probe.finish();
    let freeze = m["timings"]["downtime_ms"].as_f64().unwrap();
    eprintln!(
        "stop-copy with {terminated} listener connections cut: {seen:?}, freeze {freeze:.0} ms"
    );
    assert!(terminated >= 2, "the listeners were cut while A moved it");
    assert_eq!(seen.failures, 0.0, "failed polls through B: {seen:?}");
    assert_eq!(seen.duplicated, 0.0, "a write ran twice: {seen:?}");
    assert_eq!(seen.lost_writes, 0.0, "an answered write is gone: {seen:?}");
    // Each cut holds B's routes until it listens again and re-read them: short pauses, bounded.
    assert!(
        seen.downtime_ms < freeze + 3000.0,
        "the client waited {:.0} ms for a {freeze:.0} ms freeze",
        seen.downtime_ms
    );
    assert_eq!(b.json(&["inspect", "cut"])["host"], "h2");
    assert_eq!(b.py("cut", "print(x + 1)").trim(), "42");
}

#[test]
fn an_instance_started_with_another_subnet_is_refused_and_says_what_to_do() {
    let Some(a) = Ferry::start_dev_on(1, SERVE, true) else {
        return;
    };
    a.ok(&["create", "--name", "addressed", "--host", "h1"]);
    let ip = a.json(&["inspect", "addressed"])["ip"].clone();
    assert!(ip.as_str().is_some(), "inspect shows the address: {ip}");
    // The default --subnet, while A recorded another one for the cluster.
    let wrong = "10.201.0.0";
    assert_ne!(a.subnet, wrong);
    let state = std::env::temp_dir().join(format!("ferry-test-wrongnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    for f in ["token", "agent-token"] {
        std::fs::copy(a.state.join(f), state.join(f)).unwrap();
    }
    let url = a.database.as_ref().unwrap().url();
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "serve",
            "--no-local-agent",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
            "--prefix",
            "fwrongnet-",
            "--subnet",
            wrong,
            &format!("--database={url}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&state);
            panic!("an instance with a conflicting --subnet kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&state);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("refused: {}", err.trim());
    assert!(!status.success(), "it must not start: {err}");
    assert!(
        err.contains(&format!("runtime network is {}", a.subnet))
            && err.contains(&format!("--subnet {wrong}"))
            && err.contains(&format!("Start it with --subnet {}", a.subnet)),
        "says why and what to do: {err}"
    );
    // With the cluster's network it starts, and sees the address A's runtime has.
    let b = a.second_instance(SERVE);
    assert_eq!(b.json(&["inspect", "addressed"])["ip"], ip);
    let (status, body) = b
        .proxy(
            "GET",
            "/r/addressed/mrp/v1/capabilities",
            "",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// The instances as `ferry instances --json` shows them to `f`.
fn instances(f: &Ferry) -> Vec<Value> {
    f.json(&["instances"]).as_array().unwrap().clone()
}

/// The id of the one alive decider, once there is exactly one (and it is not `not`).
fn decider(f: &Ferry, limit: Duration) -> String {
    decider_but(f, limit, "")
}

fn decider_but(f: &Ferry, limit: Duration, not: &str) -> String {
    let start = Instant::now();
    loop {
        let all = instances(f);
        let deciders: Vec<&Value> = all
            .iter()
            .filter(|i| i["decider"] == true && i["alive"] == true)
            .collect();
        assert!(deciders.len() <= 1, "two deciders at once: {all:?}");
        if let [d] = deciders[..] {
            if d["id"] != not {
                return d["id"].as_str().unwrap().to_string();
            }
        }
        assert!(
            start.elapsed() < limit,
            "no decider within {limit:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kinds(f: &Ferry, rt: &str) -> Vec<String> {
    f.json(&["events", "--runtime", rt])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Grows `rt` (plan free, 256 MB, on h1) past 75 % and waits for the automatic move to h2.
fn grow_until_moved(f: &Ferry, rt: &str) {
    f.ok(&["create", "--name", rt, "--host", "h1", "--plan", "free"]);
    f.py(
        rt,
        "import numpy as np\nblob = np.ones(165 * 1024 * 1024, dtype=np.uint8)",
    );
    let start = Instant::now();
    loop {
        let v = f.json(&["inspect", rt]);
        if v["host"] == "h2" && v["state"] == "running" && v["phase"].is_null() {
            assert_eq!(v["plan"]["name"], "pro");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no automatic move of {rt} within 60 s: {v}\n{:?}",
            kinds(f, rt)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Exactly one instance decided: one threshold crossing, one move, no refused second attempt.
fn decided_once(f: &Ferry, rt: &str) {
    std::thread::sleep(Duration::from_secs(2)); // a second decider would have acted by now
    let k = kinds(f, rt);
    let count = |kind: &str| k.iter().filter(|x| *x == kind).count();
    let crossings = count("memory.migrate") + count("memory.urgent") + count("memory.critical");
    assert_eq!(crossings, 1, "one threshold crossing reported: {k:?}");
    assert_eq!(count("policy.migrating"), 1, "{k:?}");
    assert_eq!(count("runtime.migrated"), 1, "{k:?}");
    assert_eq!(count("policy.failed"), 0, "{k:?}");
    let moves = f
        .json(&["operations", "--runtime", rt])
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "migrate")
        .count();
    assert_eq!(moves, 1, "one move journaled");
}

#[test]
fn one_instance_decides_for_the_monitor_and_another_takes_over_when_it_dies() {
    let flags = ["--monitor-interval=200ms", "--lease-ttl=3s"];
    let Some(a) = Ferry::start_dev_on(2, &flags, true) else {
        return;
    };
    let b = a.second_instance(&flags);
    let first = decider(&a, Duration::from_secs(10));
    assert_eq!(
        decider(&b, Duration::from_secs(1)),
        first,
        "both see one decider"
    );
    // Both instances sample the same runtimes' thresholds: only the decider acts.
    grow_until_moved(&b, "first");
    decided_once(&a, "first");
    // The decider dies; once its lease expires (3 s) the other takes over, with an event.
    let a_id = instances(&a)[0]["id"].as_str().unwrap().to_string();
    let (dead, survivor) = if first == a_id {
        (a.serve_pid(), &b)
    } else {
        (b.serve_pid(), &a)
    };
    kill9(dead);
    let killed = Instant::now();
    let next = decider_but(survivor, Duration::from_secs(20), &first);
    let took = killed.elapsed();
    eprintln!("{next} took over from {first} {took:?} after it was killed");
    assert!(
        took >= Duration::from_secs(1),
        "taken over after {took:?}, before the dead decider's lease could expire"
    );
    let events = survivor.json(&["events"]);
    let handover = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "monitor.decider" && e["data"]["instance"] == next.as_str())
        .unwrap_or_else(|| panic!("no monitor.decider event for {next}: {events}"));
    assert_eq!(handover["data"]["previous"], first.as_str(), "{handover}");
    // The survivor acts on the next threshold alone.
    grow_until_moved(survivor, "second");
    decided_once(survivor, "second");
}
