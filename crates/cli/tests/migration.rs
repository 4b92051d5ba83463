//! Live migration between simulated hosts (network namespaces, one real agent each), through the
//! real proxy, with real runc and CRIU.

mod common;
use common::{
    containers, find_process, http, http_as, kill9, migrate_in_background, slow_link,
    wait_for_stream_at, Ferry, WriteProbe, BIG,
};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const COUNTER: &str = "import threading, time\ncounter = 0\ndef _tick():\n    global counter\n    while True:\n        counter += 1\n        time.sleep(0.01)\nthreading.Thread(target=_tick, daemon=True).start()";

#[test]
fn stop_copy_under_a_polling_client_loses_nothing() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "live", "--host", "h1"]);
    f.py("live", COUNTER);
    f.py(
        "live",
        "x = 41\nimport pandas as pd\ndf = pd.DataFrame({'a': range(50000)})",
    );
    f.py("live", "import numpy as np, hashlib\nblob = np.random.randint(0, 256, size=64 * 1024 * 1024, dtype=np.uint8)\nh0 = hashlib.sha256(blob.tobytes()).hexdigest()");
    for (to, mode) in [("h2", "stop-copy"), ("h1", "lazy")] {
        let probe = WriteProbe::start(&f, "live");
        std::thread::sleep(Duration::from_millis(400));
        let m = f.json(&["migrate", "live", "--to", to, "--mode", mode]);
        std::thread::sleep(Duration::from_millis(400));
        let seen = probe.finish();
        let downtime = m["timings"]["downtime_ms"].as_f64().unwrap();
        // The target was prepared (netns, writable layer) before the freeze, timed on its own.
        assert!(
            m["timings"]["target_ahead_ms"].as_f64().unwrap_or(0.0) > 0.0
                && m["timings"]["target_ahead_netns_ms"].as_f64().is_some(),
            "{mode}: no preparation ahead of the freeze in {}",
            m["timings"]
        );
        eprintln!("{mode}: {seen:?}, server-side downtime {downtime} ms");
        assert!(seen.polls > 20, "too few polls: {seen:?}");
        assert_eq!(seen.failures, 0.0, "{mode}: failed polls: {seen:?}");
        assert_eq!(seen.duplicated, 0.0, "{mode}: a write ran twice: {seen:?}");
        assert_eq!(
            seen.lost_writes, 0.0,
            "{mode}: an answered write is gone: {seen:?}"
        );
        assert_eq!(
            seen.lost_updates, 0.0,
            "{mode}: the counter went back: {seen:?}"
        );
        // What the client saw is the freeze plus a bounded overhead, not an open-ended wait.
        assert!(
            seen.downtime_ms < downtime + 3000.0,
            "{mode}: the client waited {:.0} ms for a {downtime:.0} ms freeze",
            seen.downtime_ms
        );
        assert_eq!(m["mode"], mode);
        assert_eq!(m["to"], to);
        let rt = f.json(&["inspect", "live"]);
        assert_eq!(rt["host"], to);
        assert_eq!(rt["state"], "running");
        assert_eq!(
            f.py("live", "print(x + 1, int(df.a.sum()))").trim(),
            format!("42 {}", (0..50000u64).sum::<u64>())
        );
        assert_eq!(
            f.py(
                "live",
                "print(hashlib.sha256(blob.tobytes()).hexdigest() == h0)"
            )
            .trim(),
            "True",
            "memory intact after {mode}"
        );
    }
    // The counter keeps counting at the target.
    let a: i64 = f.py("live", "print(counter)").trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let b: i64 = f.py("live", "print(counter)").trim().parse().unwrap();
    assert!(b > a, "counter thread stopped after the move");
    let migs = f.json(&["migrations"]);
    assert_eq!(migs.as_array().unwrap().len(), 2);
    assert_eq!(migs[0]["result"], "ok");
    assert_eq!(migs[0]["detail"]["mode"], "lazy");
    assert!(
        migs[1]["detail"]["archive_bytes"].as_u64().unwrap() > 64 * 1024 * 1024,
        "a stop-copy records the bytes it moved"
    );
    assert!(migs[0]["timings"]["downtime_ms"].as_f64().unwrap() > 0.0);
}

/// Reads a write probe back after a failed or interrupted move: it polled, and no write it saw
/// answered ran twice or is gone.
fn assert_writes_once(probe: WriteProbe) {
    let seen = probe.finish();
    eprintln!("{seen:?}");
    assert!(seen.polls > 0, "the write probe polled");
    assert_eq!(seen.duplicated, 0.0, "a write ran twice: {seen:?}");
    assert_eq!(seen.lost_writes, 0.0, "an answered write is gone: {seen:?}");
}

#[test]
fn round_trip_across_three_hosts_keeps_state_at_every_hop() {
    let Some(f) = Ferry::start_dev(3) else { return };
    f.ok(&["create", "--name", "rover", "--host", "h1"]);
    f.py(
        "rover",
        "hops = ['h1']\nopen('/root/work/log.txt', 'w').write('h1\\n')",
    );
    for to in ["h2", "h3", "h1"] {
        let probe = WriteProbe::start(&f, "rover");
        std::thread::sleep(Duration::from_millis(200));
        let m = f.json(&["migrate", "rover", "--to", to]);
        let seen = probe.finish();
        let downtime = m["timings"]["downtime_ms"].as_f64().unwrap();
        assert_eq!(seen.failures, 0.0, "to {to}: failed polls: {seen:?}");
        assert_eq!(seen.duplicated, 0.0, "to {to}: a write ran twice: {seen:?}");
        assert_eq!(seen.lost_writes, 0.0, "to {to}: a write is gone: {seen:?}");
        assert!(
            seen.downtime_ms < downtime + 3000.0,
            "to {to}: the client waited {:.0} ms for a {downtime:.0} ms freeze",
            seen.downtime_ms
        );
        let code = format!("hops.append('{to}')\nopen('/root/work/log.txt', 'a').write('{to}\\n')\nprint(','.join(hops), open('/root/work/log.txt').read().split())");
        let out = f.py("rover", &code);
        assert!(
            out.contains(&to.to_string()) && out.starts_with("h1,"),
            "{out}"
        );
        assert_eq!(f.json(&["inspect", "rover"])["host"], to);
    }
    assert_eq!(f.py("rover", "print(','.join(hops))").trim(), "h1,h2,h3,h1");
    // Only one copy exists: the other hosts hold no container for it.
    for h in ["h2", "h3"] {
        let left = containers(&f, h);
        assert!(left.is_empty(), "host {h} still has containers: {left:?}");
    }
}

#[test]
fn fork_gives_two_independent_runtimes_and_a_move_to_its_own_host_is_refused() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "base", "--host", "h1"]);
    f.py("base", "x = 41");
    let m = f.json(&[
        "migrate", "base", "--to", "h2", "--mode", "fork", "--name", "sandbox",
    ]);
    assert_eq!(m["mode"], "fork");
    assert_eq!(f.json(&["inspect", "base"])["host"], "h1");
    assert_eq!(f.json(&["inspect", "sandbox"])["host"], "h2");
    f.py("sandbox", "x = 0");
    assert_eq!(f.py("base", "print(x)").trim(), "41");
    assert_eq!(f.py("sandbox", "print(x)").trim(), "0");
    // Both answer through the proxy under their own names.
    let (status, body) = f
        .proxy(
            "POST",
            "/r/sandbox/mrp/v1/execute",
            r#"{"code":"print(x)"}"#,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"0\\n\""), "{body}");

    let err = f.fails(&["migrate", "base", "--to", "h1", "--mode", "pre-copy"]);
    assert!(
        err.contains("already runs on host h1"),
        "a move to the runtime's own host is refused: {err}"
    );
    // Agents refuse requests without the agent token.
    let agent = f.json(&["host", "ls"])[0]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let (status, body) = http(
        &agent,
        "GET",
        "/agent/v1/runtimes",
        "",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(
        &agent,
        "PUT",
        "/agent/v1/snapshots/x/archive",
        "junk",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 401, "an unauthenticated stream is refused");
    let err = f.fails(&["migrate", "base", "--to", "h9"]);
    assert!(err.contains("unknown host"), "{err}");
    assert_eq!(f.json(&["inspect", "base"])["state"], "running");
    // Crafted paths stay inside the named runtime: the proxy listens apart from the control and
    // agent APIs and only forwards to routes of registered runtimes.
    for path in [
        "/r/sandbox/../../api/v1/runtimes",
        "/r/sandbox/%2e%2e/%2e%2e/api/v1/runtimes",
        "/r/..%2Fapi/v1/runtimes",
        "/r/10.0.0.1:8888/x",
    ] {
        // With a credential that passes everywhere (the control token), so the path itself is
        // what is tested.
        let (status, body) = http_as(
            &f.proxy_addr(),
            &f.control_token(),
            "GET",
            path,
            "",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            !body.contains("\"plan\"") && !body.contains("mrp_url"),
            "{path} reached the control API: {status} {body}"
        );
        assert_ne!(status, 200, "{path}: {body}");
    }
    // A request for a runtime that does not exist gets a clear JSON error from the proxy.
    let (status, body) = http_as(
        &f.proxy_addr(),
        &f.control_token(),
        "GET",
        "/r/nobody/mrp/v1/capabilities",
        "",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("no runtime named"), "{body}");
}

#[test]
fn killing_the_target_agent_mid_transfer_leaves_the_source_running() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "heavy", "--host", "h1", "--plan", "pro"]);
    f.py("heavy", BIG);
    common::slow_link(&f, "h2", "400mbit");
    let probe = WriteProbe::start(&f, "heavy");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["heavy", "--to", "h2"]);
    // Wait until the stream has begun arriving at the target, then kill its agent.
    wait_for_stream_at(&f, "h2");
    // With ferry's CRIU build (the one setup installs) the frozen source's traffic is blocked by
    // ferry (a table in the runtime's own namespace), not by CRIU's iptables rules.
    let id = f.json(&["inspect", "heavy"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lock_tables = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}h1-{id}", f.prefix),
                "nft",
                "list",
                "tables",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.ends_with(" ferry_lock"))
            .count()
    };
    if ferry_criu_build() {
        assert_eq!(lock_tables(), 1, "the source is not locked by ferry");
    }
    let pid = f.agent_pid("h2");
    kill9(pid);
    let out = migration.join().unwrap();
    assert!(!out.status.success(), "the migration should fail");
    assert_eq!(lock_tables(), 0, "the failed move left its network lock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("thawed") || err.contains("runs on h1 again") || err.contains("broke off"),
        "{err}"
    );
    assert_writes_once(probe);
    let rt = f.json(&["inspect", "heavy"]);
    assert_eq!(rt["host"], "h1");
    assert_eq!(rt["state"], "running");
    assert_eq!(
        f.py("heavy", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );
    let (status, _) = f
        .proxy(
            "GET",
            "/r/heavy/mrp/v1/capabilities",
            "",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(status, 200, "the proxy routes to the source again");
    let left = containers(&f, "h2");
    assert!(
        left.is_empty(),
        "the target has a leftover container: {left:?}"
    );
    // With the target's agent gone, a new migration is refused before anything is touched.
    let err = f.fails(&["migrate", "heavy", "--to", "h2"]);
    assert!(
        err.contains("does not answer") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(f.json(&["inspect", "heavy"])["state"], "running");
}

#[test]
fn a_second_migration_of_a_moving_runtime_is_refused() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "busy", "--host", "h1", "--plan", "pro"]);
    f.py("busy", BIG);
    let first = migrate_in_background(&f, &["busy", "--to", "h2"]);
    let start = Instant::now();
    while f.json(&["inspect", "busy"])["state"] != "migrating" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the first migration never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let phase = f.json(&["inspect", "busy"])["phase"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        phase.contains("h2"),
        "inspect shows the migration's phase: {phase:?}"
    );
    let err = f.fails(&["migrate", "busy", "--to", "h2"]);
    assert!(err.contains("busy") || err.contains("not running"), "{err}");
    let out = first.join().unwrap();
    assert!(
        out.status.success(),
        "the first migration failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.json(&["inspect", "busy"])["host"], "h2");
    assert_eq!(f.py("busy", "print(x)").trim(), "41");
}

#[test]
fn lazy_migration_whose_source_dies_is_reported_lost_with_its_last_snapshot() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&[
        "create", "--name", "fragile", "--host", "h1", "--plan", "team",
    ]);
    f.py("fragile", "import numpy as np\nblob = np.random.randint(0, 256, size=400 * 1024 * 1024, dtype=np.uint8)");
    let snap = f.json(&["checkpoint", "fragile", "--leave-running"]);
    let snap_id = snap["id"].as_str().unwrap().to_string();
    let id = f.json(&["inspect", "fragile"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // ferry-pages fetches every page from the start: a slow link keeps pages pending long enough
    // for the source to die in the middle (400 MB at 400 Mbit/s: ~8 s).
    slow_link(&f, "h2", "400mbit");
    let migration = migrate_in_background(&f, &["fragile", "--to", "h2", "--mode", "lazy"]);
    // Once the target runs on pages still arriving, the source "dies": its page server is killed.
    let pending = f
        .state
        .join(format!("agents/h2/runtimes/{id}/lazy-pending"));
    let start = Instant::now();
    loop {
        let rt = f.json(&["inspect", "fragile"]);
        if rt["host"] == "h2" && rt["state"] == "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the lazy migration never switched: {rt}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let source_root = f.state.join("agents/h1/runc");
    let dumper = find_process(&[source_root.to_str().unwrap(), "checkpoint", "--lazy-pages"])
        .expect("the source's lazy dump process");
    assert!(
        pending.exists(),
        "all pages arrived before the source could be killed; make the runtime bigger"
    );
    std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{dumper}")])
        .status()
        .unwrap();
    let out = migration.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the migration must not report success"
    );
    assert!(err.contains("lost") && err.contains(&snap_id), "{err}");
    let rt = f.json(&["inspect", "fragile"]);
    assert_eq!(rt["state"], "lost", "{rt}");
    // The lazy-pages daemon said why it stopped.
    let log = std::fs::read_to_string(f.state.join(format!(
        "agents/h2/runtimes/{id}/criu-restore/lazy-pages.log"
    )))
    .unwrap_or_default();
    assert!(
        log.contains("the page source went away before every page was delivered"),
        "{log}"
    );
    assert!(rt["state_reason"].as_str().unwrap().contains(&snap_id));
    // Never half-alive: no container runs for it anywhere, and the proxy says it is lost.
    for h in ["h1", "h2"] {
        assert!(containers(&f, h).is_empty(), "a container is left on {h}");
    }
    let (status, body) = f
        .proxy(
            "GET",
            "/r/fragile/mrp/v1/capabilities",
            "",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lost"), "{body}");
    // The offered snapshot restores.
    f.ok(&["restore", &snap_id, "--name", "fragile-restored"]);
    assert_eq!(
        f.py("fragile-restored", "print(blob.size)").trim(),
        (400 * 1024 * 1024).to_string()
    );
}

#[test]
fn a_lazy_move_keeps_a_200_mb_array_intact_and_the_next_move_fetches_its_first_faults_first() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "big", "--host", "h1", "--plan", "team"]);
    f.py("big", "import numpy as np, hashlib\nrng = np.random.default_rng(7)\narr = rng.integers(0, 2**63, size=25 * 1024 * 1024, dtype=np.int64)\nh0 = hashlib.sha256(arr.tobytes()).hexdigest()\nprint(arr.nbytes)");
    let h0 = f.py("big", "print(h0)").trim().to_string();
    let id = f.json(&["inspect", "big"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (to, from) in [("h2", "h1"), ("h1", "h2")] {
        let m = f.json(&["migrate", "big", "--to", to, "--mode", "lazy"]);
        eprintln!("lazy to {to}: {}", m["timings"]);
        assert_eq!(f.json(&["inspect", "big"])["host"], to);
        // Every byte of the array is the source's: the checksum computed again at the target.
        assert_eq!(
            f.py("big", "print(hashlib.sha256(arr.tobytes()).hexdigest())")
                .trim(),
            h0,
            "the array changed in the move to {to}"
        );
        let dir = f.state.join(format!("agents/{to}/runtimes/{id}"));
        let log = std::fs::read_to_string(dir.join("criu-restore/lazy-pages.log")).unwrap();
        eprintln!("{log}");
        assert!(log.contains("ferry-pages:"), "served by ferry-pages: {log}");
        assert!(
            log.contains("all lazy pages delivered; the source was told to finish"),
            "{log}"
        );
        // The first faults were recorded where the next move from here picks them up.
        let hot = std::fs::read_to_string(dir.join("hot-pages")).unwrap();
        // (Few: the background fetch takes the interpreter's small areas first, so most of its
        // working set is there before it touches it.)
        assert!(hot.lines().count() > 0, "recorded faults: {hot}");
        if from == "h2" {
            assert!(
                log.contains("hot list: "),
                "the second move fetched the first move's faults first: {log}"
            );
        }
    }
    assert_eq!(f.py("big", "print(int(arr[12345] >= 0))").trim(), "1");
}

#[test]
fn a_streaming_execution_survives_a_migration_through_the_proxy() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "streamer", "--host", "h1"]);
    let addr = f.proxy_addr();
    let token = f.token("streamer");
    // A cell that prints a line every 50 ms for 5 s, read as SSE through the proxy while it moves
    // twice (stop-copy, then lazy): the stream goes on across both moves.
    let reader = std::thread::spawn(move || {
        let code = r#"{"code":"import time\nfor i in range(100):\n    print('line', i, flush=True)\n    time.sleep(0.05)\nprint('finished')"}"#;
        http_as(
            &addr,
            &token,
            "POST",
            "/r/streamer/mrp/v1/execute/stream",
            code,
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_millis(800));
    f.ok(&["migrate", "streamer", "--to", "h2"]);
    f.ok(&["migrate", "streamer", "--to", "h1", "--mode", "lazy"]);
    let (status, body) = reader.join().unwrap().expect("the stream broke off");
    assert_eq!(status, 200, "{body}");
    // Everything printed arrives, in order, exactly once (lines printed while the runtime was
    // frozen may arrive together in one event).
    let mut streamed = String::new();
    let mut event = "";
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e;
        } else if let (Some(data), "stdout") = (line.strip_prefix("data: "), event) {
            let v: Value = serde_json::from_str(data).unwrap();
            streamed.push_str(v["content"].as_str().unwrap());
        }
    }
    let expected: String = (0..100)
        .map(|i| format!("line {i}\r\n"))
        .chain(std::iter::once("finished\r\n".to_string()))
        .collect();
    assert_eq!(streamed, expected, "the streamed output differs:\n{body}");
    assert!(
        body.contains("finished") && body.contains("event: done"),
        "the stream did not complete:\n{body}"
    );
    assert_eq!(f.json(&["inspect", "streamer"])["host"], "h1");
}

#[test]
fn moving_back_and_forth_keeps_one_migration_snapshot() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "pingpong", "--host", "h1"]);
    f.ok(&["checkpoint", "pingpong", "--leave-running"]);
    for to in ["h2", "h1", "h2"] {
        f.ok(&["migrate", "pingpong", "--to", to]);
    }
    let snaps = f.json(&["snapshots", "ls"]);
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("mig")).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("snap")).count(),
        1,
        "the user's snapshot stays: {ids:?}"
    );
    let last = f.json(&["inspect", "pingpong"])["last_snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.starts_with("mig") && ids.contains(&last.as_str()));
    // Distinct ids: the newest snapshot also has a verified copy on the other host (host loss);
    // copies of superseded ones go once the newer copy verified.
    let on_disk = || {
        ["h1", "h2"]
            .iter()
            .flat_map(|h| {
                std::fs::read_dir(f.state.join(format!("agents/{h}/snapshots")))
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let start = std::time::Instant::now();
    while on_disk().len() != 2 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        on_disk().len(),
        2,
        "superseded migration snapshots are removed from disk: {:?}",
        on_disk()
    );
}

#[test]
fn a_hibernated_runtime_wakes_on_the_next_request_through_the_proxy() {
    let Some(f) = Ferry::start_dev(1) else { return };
    f.ok(&["create", "--name", "sleepy", "--host", "h1"]);
    f.py(
        "sleepy",
        "x = 41\nimport pandas as pd\ndf = pd.DataFrame({'a': range(1000)})",
    );
    let rt = f.json(&["hibernate", "sleepy"]);
    assert_eq!(rt["state"], "hibernated");
    // Its memory is given back: no container runs for it.
    assert!(
        containers(&f, "h1").is_empty(),
        "a hibernated runtime still has a container"
    );
    assert_eq!(f.json(&["host", "ls"])[0]["used_mb"], 0);
    // A client's request is held, the runtime restored, and the request answered — not failed.
    let t = Instant::now();
    let (status, body) = f
        .proxy(
            "POST",
            "/r/sleepy/mrp/v1/execute",
            r#"{"code":"print(x + 1, int(df.a.sum()))"}"#,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42 499500"), "{body}");
    eprintln!("woken and answered in {} ms", t.elapsed().as_millis());
    assert_eq!(f.json(&["inspect", "sleepy"])["state"], "running");
    let kinds: Vec<String> = f
        .json(&["events", "--runtime", "sleepy"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"runtime.hibernated".to_string())
            && kinds.contains(&"runtime.woken".to_string()),
        "{kinds:?}"
    );
    // And by hand; hibernating twice keeps one hibernation snapshot.
    f.ok(&["hibernate", "sleepy"]);
    f.ok(&["wake", "sleepy"]);
    assert_eq!(f.py("sleepy", "print(x)").trim(), "41");
    f.ok(&["hibernate", "sleepy"]);
    let snaps = f.json(&["snapshots", "ls"]);
    assert_eq!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["id"].as_str().unwrap().starts_with("hib"))
            .count(),
        1,
        "{snaps}"
    );
    // `ferry exec` wakes it too.
    assert_eq!(f.py("sleepy", "print(x + 2)").trim(), "43");
    assert_eq!(f.json(&["inspect", "sleepy"])["state"], "running");
}

#[test]
fn killing_the_control_plane_mid_migration_then_restarting_it_leaves_one_running_copy() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&[
        "create", "--name", "orphan", "--host", "h1", "--plan", "pro",
    ]);
    f.py("orphan", BIG);
    common::slow_link(&f, "h2", "400mbit");
    let probe = WriteProbe::start(&f, "orphan");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["orphan", "--to", "h2"]);
    // Once the stream reaches the target, the control plane dies (SIGKILL).
    wait_for_stream_at(&f, "h2");
    kill9(f.serve_pid());
    assert!(!migration.join().unwrap().status.success());
    f.ok(&["dev", "restart-serve"]);
    let rt = f.json(&["inspect", "orphan"]);
    assert_eq!(rt["state"], "running", "{rt}");
    // Polls failed while the proxy was down; none that was answered is gone or ran twice.
    assert_writes_once(probe);
    assert_eq!(
        f.py("orphan", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );
    // Exactly one copy runs, where the control plane says it is; nothing is left frozen.
    let running: Vec<(String, String)> = ["h1", "h2"]
        .iter()
        .flat_map(|h| {
            containers(&f, h)
                .into_iter()
                .map(move |(_, status)| (h.to_string(), status))
        })
        .collect();
    assert_eq!(
        running,
        vec![(
            rt["host"].as_str().unwrap().to_string(),
            "running".to_string()
        )]
    );
    let ops = f.json(&["operations", "--runtime", "orphan"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "migrate"
                && o["error"].as_str().unwrap_or("").contains("interrupted")),
        "{ops}"
    );
    let (status, _) = f
        .proxy(
            "GET",
            "/r/orphan/mrp/v1/capabilities",
            "",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 200);
}

/// A cell that makes the runtime exit at once wherever it is restored (its process's start time
/// changes) within the next `secs` seconds: a copy that fails right after its processes were
/// continued, before it answers its readiness check.
fn exit_when_restored(secs: u32) -> String {
    format!("import threading, os, time\ndef _born():\n    with open('/proc/self/stat') as f:\n        return f.read().rsplit(')', 1)[1].split()[19]\ndef _trap(deadline):\n    b = _born()\n    while time.time() < deadline:\n        if _born() != b:\n            os._exit(1)\n        time.sleep(0.002)\nthreading.Thread(target=_trap, args=(time.time() + {secs},), daemon=True).start()")
}

#[test]
fn a_lazy_move_whose_target_fails_after_continuing_never_resumes_the_source() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "lazy1", "--host", "h1"]);
    f.py("lazy1", COUNTER);
    let snap = f.json(&["checkpoint", "lazy1", "--leave-running"]);
    let snap = snap["id"].as_str().unwrap().to_string();
    f.py("lazy1", &exit_when_restored(20));
    let err = f.fails(&["migrate", "lazy1", "--to", "h2", "--mode", "lazy"]);
    assert!(
        err.contains("lost"),
        "the move says the runtime is lost: {err}"
    );
    let rt = f.json(&["inspect", "lazy1"]);
    assert_eq!(rt["state"], "lost", "{rt}");
    assert!(
        rt["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains(&snap) && r.contains("not resumed")),
        "the reason says the source was not resumed and offers the last full snapshot: {rt}"
    );
    // The source was not resumed: no copy runs anywhere.
    for h in ["h1", "h2"] {
        assert!(
            containers(&f, h).is_empty(),
            "a copy was left on {h}: {:?}",
            containers(&f, h)
        );
    }
}

#[test]
fn a_stop_copy_whose_target_fails_after_continuing_never_resumes_the_source() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "once", "--host", "h1"]);
    f.py("once", COUNTER);
    let probe = WriteProbe::start(&f, "once");
    std::thread::sleep(Duration::from_millis(300));
    let armed = Instant::now();
    let trap_secs = 20;
    f.py("once", &exit_when_restored(trap_secs));
    let err = f.fails(&["migrate", "once", "--to", "h2"]);
    assert!(
        err.contains("lost"),
        "the move says the runtime is lost: {err}"
    );
    let rt = f.json(&["inspect", "once"]);
    assert_eq!(rt["state"], "lost", "{rt}");
    // The source was not thawed: no copy runs anywhere (it would run again what the target ran).
    for h in ["h1", "h2"] {
        assert!(
            containers(&f, h).is_empty(),
            "a copy was left on {h}: {:?}",
            containers(&f, h)
        );
    }
    let reason = rt["state_reason"].as_str().unwrap_or_default().to_string();
    let snap = reason
        .split("ferry restore ")
        .nth(1)
        .map(|s| {
            s.trim_matches(|c: char| c == '`' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_else(|| panic!("the snapshot is offered: {reason}"));
    assert!(
        snap.starts_with("mig"),
        "the move's own snapshot is offered: {reason}"
    );
    // Restored by the user, once the trap has expired: exactly one copy, each write at most once.
    let wait = Duration::from_secs(trap_secs as u64 + 1).saturating_sub(armed.elapsed());
    std::thread::sleep(wait);
    f.ok(&["restore", &snap]);
    std::thread::sleep(Duration::from_millis(300));
    let seen = probe.finish();
    eprintln!("{seen:?}");
    let running: usize = ["h1", "h2"].iter().map(|h| containers(&f, h).len()).sum();
    assert_eq!(running, 1, "exactly one running copy");
    assert!(seen.polls > 10, "{seen:?}");
    assert_eq!(seen.duplicated, 0.0, "a write ran twice: {seen:?}");
    assert_eq!(seen.lost_writes, 0.0, "an answered write is gone: {seen:?}");
}

/// A writer for the pre-copy tests: a 128 MiB array of one-page slots, rewritten at ~40 MB/s in
/// slot order, each slot holding the sequence number of its last write (so the array checks
/// itself: slot j must hold the largest s <= last with s = j mod N, or 0 if there is none yet).
/// Once the write tracker has registered the process (`uw` in its smaps: the move is under way)
/// the writer forks a child that fills memory of its own and maps a new private area that it
/// keeps writing.
const WRITER: &str = r#"
import numpy as np, threading, time, os, mmap
N = 32768
a = np.zeros((N, 512), dtype=np.int64)
state = {'seq': 0, 'stop': False, 'child': 0, 'extra': None}
def tracked():
    with open('/proc/self/smaps') as f:
        return any(l.startswith('VmFlags:') and ' uw' in l for l in f)
def has_uffd():
    n = 0
    for d in os.listdir('/proc/self/fd'):
        try:
            n += 'userfaultfd' in os.readlink('/proc/self/fd/' + d)
        except OSError:
            pass
    return n > 0
def _write():
    K = 256
    seq = 0
    probed = 0.0
    while not state['stop']:
        t = time.monotonic()
        s = np.arange(seq + 1, seq + K + 1, dtype=np.int64)
        a[s % N] = s[:, None]
        seq += K
        state['seq'] = seq
        if state['extra'] is not None:
            state['extra'][:512] = seq
        elif t - probed > 0.05:
            probed = t
            if tracked():
                pid = os.fork()
                if pid == 0:
                    b = np.full(1 << 20, 7, dtype=np.int64)
                    while True:
                        time.sleep(1)
                state['child'] = pid
                state['mm'] = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                e = np.frombuffer(state['mm'], dtype=np.int64)
                e[:] = 3
                e[:512] = seq
                state['extra'] = e
        time.sleep(max(0.0, K * 4096 / 40e6 - (time.monotonic() - t)))
writer = threading.Thread(target=_write, daemon=True)
writer.start()
"#;

const WRITER_CHECK: &str = "state['stop'] = True\nwriter.join()\nm = int(a[:, 0].max())\nrows = np.arange(N)\nexp = m - ((m - rows) % N)\nexp[exp < 0] = 0\nos.kill(state['child'], 0)\nprint(bool((a == exp[:, None]).all()), m == state['seq'], m > N // 4, bool((state['extra'][:512] == m).all()), bool((state['extra'][512:] == 3).all()), tracked(), has_uffd())";

#[test]
fn pre_copy_under_a_writer_leaves_no_stale_page_through_a_fork_and_a_new_mapping() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "busy", "--host", "h1", "--plan", "pro"]);
    f.py("busy", WRITER);
    std::thread::sleep(Duration::from_millis(500));
    let m = f.json(&["migrate", "busy", "--to", "h2", "--mode", "pre-copy"]);
    let t = &m["timings"];
    eprintln!("pre-copy: {t}");
    assert_eq!(m["mode"], "pre-copy");
    assert_eq!(f.json(&["inspect", "busy"])["host"], "h2");
    let num = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("no {k} in {t}"));
    assert!(num("precopy_rounds") >= 2.0, "{t}");
    assert!(
        num("precopy_round1_bytes") >= 128.0 * 1024.0 * 1024.0,
        "round 1 sends the whole array: {t}"
    );
    let stopped = ["small", "rounds", "seconds"]
        .iter()
        .filter(|k| t[format!("precopy_stopped_{k}")].as_f64() == Some(1.0))
        .count();
    assert_eq!(stopped, 1, "the timings say why the rounds stopped: {t}");
    // From the freeze on it moved as a lazy move does, with most of its memory served from the
    // page store the rounds filled at the target: far more pages from the store than fetched
    // from the frozen source (the dirty list and what no round sent).
    let (stored, fetched) = (num("target_pages_from_store"), num("target_pages_fetched"));
    assert!(stored > 32768.0, "the array came from the store: {t}");
    assert!(fetched < stored, "{t}");
    assert!(num("precopy_final_dirty_bytes") > 0.0, "{t}");
    assert!(
        m["snapshot"].is_null(),
        "a post-copy move leaves no snapshot: {m}"
    );
    // The runtime itself, the proof that no page was stale: every slot holds its last write
    // before the freeze (a page served from the store that the writer changed after its round
    // would hold an older sequence number); the child and the new mapping came along; no trace
    // of the tracker is left.
    assert_eq!(
        f.py("busy", WRITER_CHECK).trim(),
        "True True True True True False False"
    );
    f.py(
        "busy",
        "os.kill(state['child'], 9)\nos.waitpid(state['child'], 0)",
    );
}

/// The runtime's processes on `host` (its init and every descendant), as host pids.
fn runtime_pids(f: &Ferry, host: &str, id: &str) -> Vec<u32> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(f.state.join(format!("agents/{host}/runc")))
        .args(["state", id])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut pids = vec![st["pid"].as_u64().expect("runc state has a pid") as u32];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        for task in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    pids
}

/// Nothing of the write tracker in the process: no userfaultfd among its descriptors, no area
/// registered for write-protect.
fn assert_untracked(pid: u32) {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let l = std::fs::read_link(e.path()).unwrap_or_default();
        assert!(
            !l.to_string_lossy().contains("userfaultfd"),
            "pid {pid} still holds a userfaultfd"
        );
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    assert!(
        !smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw")),
        "pid {pid} still has areas registered for write-protect"
    );
}

#[test]
fn a_pre_copy_move_the_target_refuses_after_round_one_leaves_the_source_untouched() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "held", "--host", "h1", "--plan", "pro"]);
    f.py("held", BIG);
    let id = f.json(&["inspect", "held"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    common::slow_link(&f, "h2", "400mbit");
    let migration = migrate_in_background(&f, &["held", "--to", "h2", "--mode", "pre-copy"]);
    // Round 1 is arriving in the target's page store: the target then drops the migration.
    let store = f.state.join(format!("agents/h2/runtimes/{id}/precopy"));
    let start = Instant::now();
    while !store.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "round 1 never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let agent = f.dev_host("h2")["agent_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let token = std::fs::read_to_string(f.state.join("agent-token")).unwrap();
    let (status, body) = http_as(
        &agent,
        token.trim(),
        "DELETE",
        &format!("/agent/v1/runtimes/{id}"),
        "",
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let out = migration.join().unwrap();
    assert!(!out.status.success(), "the move must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pre-copy") && err.contains("no migration of runtime"),
        "{err}"
    );
    let rt = f.json(&["inspect", "held"]);
    assert_eq!(rt["host"], "h1");
    assert_eq!(rt["state"], "running");
    assert_eq!(
        f.py("held", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );
    for pid in runtime_pids(&f, "h1", &id) {
        assert_untracked(pid);
    }
    assert!(containers(&f, "h2").is_empty());
    assert!(
        !f.state.join(format!("agents/h2/runtimes/{id}")).exists(),
        "the target's staging for the move is gone"
    );
}

/// Whether the installed CRIU is ferry's build (`scripts/setup.sh`), which CI always has.
fn ferry_criu_build() -> bool {
    let v = Command::new("criu").arg("--version").output().unwrap();
    let ours = String::from_utf8_lossy(&v.stdout).contains("-ferry.");
    assert!(
        ours || std::env::var("CI").as_deref() != Ok("true"),
        "CI must run with ferry's CRIU build (scripts/setup.sh)"
    );
    ours
}

/// A runtime's connection to itself over loopback (a server thread and a client thread in the
/// runtime, echoing a counter every 20 ms) goes on across a stop-copy and a lazy move: CRIU
/// dumps and restores both ends, and nothing may reach a half-restored end (ferry's network
/// lock covers the runtime's loopback as CRIU's does).
#[test]
fn a_runtimes_loopback_connection_survives_both_kinds_of_move() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "selfie", "--host", "h1"]);
    f.py(
        "selfie",
        r#"import socket, threading, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9009)); srv.listen(1)
def serve():
    c, _ = srv.accept()
    while True:
        b = c.recv(64)
        if not b:
            break
        c.sendall(b)
threading.Thread(target=serve, daemon=True).start()
echoed, broken = [0], []
def talk():
    s = socket.create_connection(("127.0.0.1", 9009))
    n = 0
    try:
        while True:
            n += 1
            s.sendall(b"%08d" % n)
            got = b""
            while len(got) < 8:
                part = s.recv(8 - len(got))
                if not part:
                    raise ConnectionError("closed by the other end")
                got += part
            echoed[0] = int(got)
            time.sleep(0.02)
    except Exception as e:
        broken.append(repr(e))
threading.Thread(target=talk, daemon=True).start()
time.sleep(0.5)"#,
    );
    for (to, mode) in [("h2", "stop-copy"), ("h1", "lazy")] {
        let before: u64 = f.py("selfie", "print(echoed[0])").trim().parse().unwrap();
        f.ok(&["migrate", "selfie", "--to", to, "--mode", mode]);
        std::thread::sleep(Duration::from_millis(500));
        let out = f.py("selfie", "print(echoed[0], broken)");
        let (n, broken) = out.trim().split_once(' ').unwrap();
        assert_eq!(broken, "[]", "{mode}: the loopback connection broke: {out}");
        let n: u64 = n.parse().unwrap();
        assert!(
            n > before + 5,
            "{mode}: no echo since the move ({before} -> {n})"
        );
    }
}
