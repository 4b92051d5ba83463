//! The fault matrix: real processes killed, a real link cut, a real disk filled, real bytes
//! corrupted in flight, a real image taken away — never a mocked runc or CRIU. After each fault
//! the runtime answers through the proxy with its state intact, runs exactly once, and no host
//! keeps a partial import, a dump or a stray container (the harness checks netns and mounts when
//! the topology goes down). docs/FAULTS.md maps each case to its test.

mod common;
use common::{
    containers, in_background, kill9, migrate_in_background, wait_for_stream_at, Ferry, BIG,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: [&str; 2] = ["h1", "h2"];

/// The runtime `rt` (made with [`BIG`]) runs on `host` and nowhere else, answers through the
/// proxy with its state, and no host keeps a partial import or a migration dump. Waits up to
/// `settle` for the control plane to get there.
fn assert_settled(f: &Ferry, rt: &str, host: &str, settle: Duration) {
    let id = f.json(&["inspect", rt])["id"].as_str().unwrap().to_string();
    let copies = |h: &str| -> Vec<String> {
        containers(f, h)
            .into_iter()
            .filter(|(c, _)| *c == id)
            .map(|(_, status)| status)
            .collect()
    };
    let start = Instant::now();
    loop {
        let v = f.json(&["inspect", rt]);
        let others: Vec<String> = HOSTS
            .iter()
            .filter(|h| **h != host)
            .flat_map(|h| copies(h))
            .collect();
        if v["state"] == "running" && v["host"] == host && others.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < settle,
            "{rt} did not settle on {host}: {v}\nother hosts' containers: {others:?}\n{}",
            common::tail(&f.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        f.py(rt, "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024),
        "its state survived"
    );
    let (status, body) = f
        .proxy(
            "POST",
            &format!("/r/{rt}/mrp/v1/execute"),
            r#"{"code":"print(x)"}"#,
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(
        status == 200 && body.contains("41"),
        "the proxy answers for it: {status} {body}"
    );
    assert_eq!(
        copies(host),
        ["running"],
        "exactly one running container on {host}"
    );
    assert_no_partial_files(f);
}

/// No host keeps a partial import (hidden staging dirs) or a migration dump in its scratch dir.
fn assert_no_partial_files(f: &Ferry) {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for h in HOSTS {
            let snaps = f.state.join(format!("agents/{h}/snapshots"));
            left.extend(
                std::fs::read_dir(&snaps)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path().display().to_string()),
            );
            let scratch = std::path::PathBuf::from(format!("/dev/shm/ferry-{}{h}-", f.prefix));
            left.extend(
                std::fs::read_dir(&scratch)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().display().to_string()),
            );
        }
        if left.is_empty() {
            return;
        }
        // An import cut off by a dead link is abandoned when its stream stalls.
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "partial files left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The target of a failed move keeps no snapshot of it.
fn assert_target_kept_no_snapshot(f: &Ferry) {
    let snaps: Vec<_> = std::fs::read_dir(f.state.join("agents/h2/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(snaps.is_empty(), "the target kept {snaps:?}");
}

fn heavy(f: &Ferry, name: &str) {
    f.ok(&["create", "--name", name, "--host", "h1", "--plan", "pro"]);
    f.py(name, BIG);
}

/// Waits until the runtime's live phase (shown by `inspect`) contains `what`.
fn wait_for_phase(f: &Ferry, rt: &str, what: &str) {
    let start = Instant::now();
    loop {
        let phase = f.json(&["inspect", rt])["phase"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if phase.contains(what) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "phase {what:?} never came (last: {phase:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `rt` is running again (after a fault), up to a minute; its host.
fn wait_running(f: &Ferry, rt: &str) -> String {
    let start = Instant::now();
    loop {
        let v = f.json(&["inspect", rt]);
        if v["state"] == "running" {
            return v["host"].as_str().unwrap().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the write probe back: it polled, and no write ran twice or was lost once answered. (Run
/// before other cells: the runtime mixes up the output of cells run at the same time.)
fn assert_writes_once(probe: common::WriteProbe) {
    let seen = probe.finish();
    eprintln!("{seen:?}");
    assert!(seen.polls > 0, "the write probe polled");
    assert_eq!(seen.duplicated, 0.0, "a write ran twice: {seen:?}");
    assert_eq!(seen.lost_writes, 0.0, "an answered write is gone: {seen:?}");
}

fn failed(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "the migration should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// 1. kill -9 the source agent during the transfer.
#[test]
fn source_agent_killed_mid_transfer_the_runtime_resumes_at_the_source_when_it_is_back() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "src");
    common::slow_link(&f, "h2", "400mbit");
    let probe = common::WriteProbe::start(&f, "src");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["src", "--to", "h2"]);
    wait_for_stream_at(&f, "h2");
    kill9(f.agent_pid("h1"));
    let err = failed(migration.join().unwrap());
    assert!(
        err.contains("stopped answering") && err.contains("resumed when that agent is back"),
        "{err}"
    );
    // Frozen where it was; nothing runs at the target.
    assert_eq!(f.json(&["inspect", "src"])["state"], "migrating");
    assert!(containers(&f, "h2").is_empty());
    f.ok(&["dev", "restart-agent", "h1"]);
    wait_running(&f, "src");
    assert_writes_once(probe);
    assert_settled(&f, "src", "h1", Duration::from_secs(30));
    let events = f.json(&["events", "--runtime", "src"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "runtime.recovered"),
        "{events}"
    );
}

// 2. kill -9 the target agent during the restore.
#[test]
fn target_agent_killed_during_restore_leaves_the_runtime_running_once() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "tgt");
    let probe = common::WriteProbe::start(&f, "tgt");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["tgt", "--to", "h2"]);
    wait_for_phase(&f, "tgt", "restoring on h2");
    kill9(f.agent_pid("h2"));
    let err = failed(migration.join().unwrap());
    // Whether h2's copy was continued is unknown while h2 is silent: the source is not thawed.
    assert!(err.contains("is settled when h2 reports"), "{err}");
    assert_eq!(f.json(&["inspect", "tgt"])["state"], "migrating");
    f.ok(&["dev", "restart-agent", "h2"]);
    // Settled from what h2 reports: a copy never continued (leave-stopped still in its config) is
    // removed and the source thawed; a copy that runs completes the move. One copy either way.
    let host = wait_running(&f, "tgt");
    assert_writes_once(probe);
    assert_settled(&f, "tgt", &host, Duration::from_secs(30));
}

// 4. kill the proxy during the cut-over (it runs inside `ferry serve`).
#[test]
fn proxy_killed_during_the_cut_over_clients_see_an_error_never_a_wrong_answer_and_one_copy_runs() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "cut");
    let migration = migrate_in_background(&f, &["cut", "--to", "h2"]);
    wait_for_phase(&f, "cut", "restoring on h2");
    // A request arrives during the cut-over and is held by the proxy...
    let addr = f.proxy_addr();
    let token = f.token("cut");
    let held = std::thread::spawn(move || {
        common::http_as(
            &addr,
            &token,
            "POST",
            "/r/cut/mrp/v1/execute",
            r#"{"code":"print(x + 1)"}"#,
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(50));
    // ... when the proxy (and the control plane with it) is killed.
    kill9(f.serve_pid());
    // A broken connection (the proxy died) is fine: the client knows to retry. An answer must be
    // the right one; anything else fails.
    match held.join().unwrap() {
        Err(_) | Ok((0, _)) => {}
        Ok((200, body)) => assert!(
            body.contains("42"),
            "a held request got a wrong answer: {body}"
        ),
        Ok((status, body)) => panic!("a held request got {status}: {body}"),
    }
    assert!(!migration.join().unwrap().status.success());
    f.ok(&["dev", "restart-serve"]);
    let host = f.json(&["inspect", "cut"])["host"]
        .as_str()
        .unwrap()
        .to_string();
    assert_settled(&f, "cut", &host, Duration::from_secs(30));
}

// 5. take the link between the hosts down mid-transfer.
#[test]
fn link_cut_mid_transfer_fails_the_move_and_the_source_runs_on() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "link");
    let link = format!("{}h2b", f.prefix);
    let bridge = format!("{}net", f.prefix);
    common::slow_link(&f, "h2", "400mbit");
    let probe = common::WriteProbe::start(&f, "link");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["link", "--to", "h2"]);
    wait_for_stream_at(&f, "h2");
    let t = Instant::now();
    ip(&["-n", &bridge, "link", "set", &link, "down"]);
    let err = failed(migration.join().unwrap());
    eprintln!(
        "the move failed {} ms after the link went down: {err}",
        t.elapsed().as_millis()
    );
    assert!(
        err.contains("runs on h1 again") || err.contains("thawed"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "a dead link must not hang the move"
    );
    assert_writes_once(probe);
    assert_settled(&f, "link", "h1", Duration::from_secs(10));
    ip(&["-n", &bridge, "link", "set", &link, "up"]);
    // Once the link is back, the target abandoned its stalled import (checked above) and a new
    // move works.
    f.ok(&["migrate", "link", "--to", "h2"]);
    assert_settled(&f, "link", "h2", Duration::from_secs(10));
}

fn ip(args: &[&str]) {
    assert!(
        Command::new("ip").args(args).status().unwrap().success(),
        "ip {args:?}"
    );
}

/// A small tmpfs mounted over a directory for the length of a test.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> SmallDisk {
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "ferry-test-small-disk",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// 6. the target's disk is full.
#[test]
fn full_disk_on_the_target_fails_the_move_clearly_and_the_source_runs_on() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "disk");
    let _disk = SmallDisk::mount(f.state.join("agents/h2/snapshots"), "32m");
    let probe = common::WriteProbe::start(&f, "disk");
    std::thread::sleep(Duration::from_millis(200));
    let err = f.fails(&["migrate", "disk", "--to", "h2"]);
    assert!(
        err.contains("no space left") && err.contains("choose another host"),
        "{err}"
    );
    assert!(err.contains("runs on h1 again"), "{err}");
    assert_writes_once(probe);
    assert_settled(&f, "disk", "h1", Duration::from_secs(10));
    assert_target_kept_no_snapshot(&f);
}

/// A TCP relay that flips one byte of whatever passes from client to server once `at` bytes have
/// passed: a link that corrupts data in flight.
struct CorruptingRelay {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
}

impl CorruptingRelay {
    fn start(listen_ip: &str, upstream: std::net::SocketAddr, at: usize) -> CorruptingRelay {
        let listener = TcpListener::bind((listen_ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, Some(at)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        CorruptingRelay { addr, stop }
    }
}

impl Drop for CorruptingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, corrupt_at: Option<usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0usize;
    let mut done = false;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(at) = corrupt_at.filter(|at| !done && seen + n > *at) {
            buf[at - seen] ^= 0x5a;
            done = true;
        }
        seen += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

// 7. the archive is corrupted in flight.
#[test]
fn archive_corrupted_in_flight_is_rejected_by_the_target_and_the_source_runs_on() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "bits");
    // The target's agent, reached through a link that flips a byte 8 MB into a stream.
    let h2_addr: std::net::Ipv4Addr = f.dev_host("h2")["addr"].as_str().unwrap().parse().unwrap();
    let gateway = std::net::Ipv4Addr::from(u32::from(h2_addr) & 0xffff_ff00 | 1);
    let relay = CorruptingRelay::start(
        &gateway.to_string(),
        format!("{h2_addr}:7701").parse().unwrap(),
        8 << 20,
    );
    f.ok(&[
        "host",
        "add",
        "h2-via-bad-link",
        &format!("http://{}", relay.addr),
    ]);
    let probe = common::WriteProbe::start(&f, "bits");
    std::thread::sleep(Duration::from_millis(200));
    let err = f.fails(&["migrate", "bits", "--to", "h2-via-bad-link"]);
    assert!(
        err.contains("corrupt") && err.contains("runs on h1 again"),
        "{err}"
    );
    assert_writes_once(probe);
    assert_settled(&f, "bits", "h1", Duration::from_secs(10));
    assert_target_kept_no_snapshot(&f);
}

// 8. the restore fails on the target: its image disappears while the snapshot is on its way.
#[test]
fn restore_failing_on_the_target_rolls_back_to_the_source() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "noimg");
    // h2 gets its own images dir, holding the image by a link the test can take away.
    let images = f.state.join("h2-images");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(
        common::images_dir().join("mrmd-python"),
        images.join("mrmd-python"),
    )
    .unwrap();
    f.ok(&[
        "dev",
        "restart-agent",
        "h2",
        &format!("--agent-arg=--images={}", images.display()),
    ]);
    common::slow_link(&f, "h2", "400mbit");
    let probe = common::WriteProbe::start(&f, "noimg");
    std::thread::sleep(Duration::from_millis(200));
    let migration = migrate_in_background(&f, &["noimg", "--to", "h2"]);
    wait_for_stream_at(&f, "h2");
    std::fs::remove_file(images.join("mrmd-python")).unwrap();
    let err = failed(migration.join().unwrap());
    assert!(
        err.contains("image \"mrmd-python\" is not on host h2") && err.contains("runs on h1 again"),
        "{err}"
    );
    assert_writes_once(probe);
    assert_settled(&f, "noimg", "h1", Duration::from_secs(10));
    assert_target_kept_no_snapshot(&f);
    assert_target_prepared_nothing_left(&f, "noimg");
}

/// What the failed move prepared on the target before the freeze (the runtime's dir, netns,
/// writable layer's loop device and mounts) is gone.
fn assert_target_prepared_nothing_left(f: &Ferry, rt: &str) {
    let id = f.json(&["inspect", rt])["id"].as_str().unwrap().to_string();
    let dir = f.state.join("agents/h2/runtimes").join(&id);
    assert!(!dir.exists(), "the target kept {}", dir.display());
    let left = common::leftovers(&f.state.join("agents/h2"), &format!("{}h2-", f.prefix));
    assert!(left.is_empty(), "the target kept {left:?}");
}

// 10 and 12: an agent restarted with runtimes running adopts them; unknown hosts are refused.
#[test]
fn agent_restarted_with_runtimes_running_adopts_them_and_unknown_hosts_are_refused() {
    let Some(f) = Ferry::start_dev(2) else { return };
    heavy(&f, "keep");
    f.ok(&["create", "--name", "keep2", "--host", "h1"]);
    f.py("keep2", "y = 'still here'");
    kill9(f.agent_pid("h1"));
    // Runtimes do not need their agent to answer.
    let (status, body) = f
        .proxy(
            "POST",
            "/r/keep2/mrp/v1/execute",
            r#"{"code":"print(y)"}"#,
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        status == 200 && body.contains("still here"),
        "{status} {body}"
    );
    f.ok(&["dev", "restart-agent", "h1"]);
    let ls = f.json(&["ls"]);
    for rt in ["keep", "keep2"] {
        let r = ls
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == rt)
            .unwrap();
        assert_eq!(
            (r["host"].as_str(), r["state"].as_str()),
            (Some("h1"), Some("running")),
            "{r}"
        );
    }
    // The adopted runtimes take every operation again.
    f.ok(&["checkpoint", "keep2", "--leave-running"]);
    assert!(f.py("keep2", "print(y)").contains("still here"));
    let err = f.fails(&["migrate", "keep", "--to", "nowhere"]);
    assert!(
        err.contains("unknown host \"nowhere\"") && err.contains("ferry host ls"),
        "{err}"
    );
    assert_eq!(f.json(&["inspect", "keep"])["state"], "running");
    let probe = common::WriteProbe::start(&f, "keep");
    std::thread::sleep(Duration::from_millis(200));
    f.ok(&["migrate", "keep", "--to", "h2"]);
    assert_writes_once(probe);
    assert_settled(&f, "keep", "h2", Duration::from_secs(10));
}

/// After an interrupted hibernate or wake: running, or hibernated on a snapshot that is recorded.
fn runs_or_sleeps(f: &Ferry, rt: &str) {
    let v = f.json(&["inspect", rt]);
    match v["state"].as_str().unwrap() {
        "running" => {}
        "hibernated" => {
            let snap = v["last_snapshot"].as_str().unwrap();
            let snaps = f.json(&["snapshots", "ls"]);
            assert!(
                snaps.as_array().unwrap().iter().any(|s| s["id"] == snap),
                "{snap} is not recorded: {snaps}"
            );
        }
        other => panic!("{rt} is {other} after recovery: {v}"),
    }
}

// 3 (other operations). kill -9 the control plane during a hibernation, then during a wake.
#[test]
fn control_plane_killed_mid_hibernate_and_mid_wake_leaves_the_runtime_running_or_asleep_on_a_verified_snapshot(
) {
    let Some(f) = Ferry::start_dev(1) else { return };
    heavy(&f, "nap");
    let snaps = f.state.join("agents/h1/snapshots");
    let hibernate = in_background(&f, &["hibernate", "nap"]);
    let start = Instant::now();
    while !std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("hib"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hibernation never began"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    kill9(f.serve_pid());
    assert!(!hibernate.join().unwrap().status.success());
    f.ok(&["dev", "restart-serve"]);
    runs_or_sleeps(&f, "nap");
    // Either way it answers with its state (waking if it sleeps).
    assert_eq!(
        f.py("nap", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );

    f.ok(&["hibernate", "nap"]);
    let wake = in_background(&f, &["wake", "nap"]);
    let start = Instant::now();
    while f.json(&["inspect", "nap"])["state"] != "restoring" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the wake never began"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    kill9(f.serve_pid());
    let _ = wake.join().unwrap();
    f.ok(&["dev", "restart-serve"]);
    runs_or_sleeps(&f, "nap");
    assert_eq!(
        f.py("nap", "print(x + 1, blob.size)").trim(),
        format!("42 {}", 120 * 1024 * 1024)
    );
    assert_eq!(
        containers(&f, "h1").len(),
        1,
        "exactly one container runs it"
    );
    assert_no_partial_files(&f);
}

/// An agent that dies while a restore holds its processes stopped for their sha256 check leaves
/// them stopped and never verified. On its start it removes that copy instead of adopting (and so
/// continuing) it; the runtime is reported not running, and its snapshot restores it.
#[test]
fn a_restore_held_for_its_check_when_the_agent_died_is_removed_never_continued() {
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "held", "--host", "h1"]);
    f.py("held", "x = 41");
    let snap = f.json(&["checkpoint", "held"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(&["restore", &snap]);
    let rt_id = f.json(&["inspect", "held"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // What such an agent leaves behind: the container, its processes stopped, and the restore's
    // option still in the runtime's CRIU config.
    let conf = f
        .state
        .join(format!("agents/h1/runtimes/{rt_id}/criu.conf"));
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("leave-stopped\n");
    std::fs::write(&conf, text).unwrap();
    let server = common::find_process(&["--id", &rt_id]).expect("the runtime's MRP server");
    assert!(Command::new("kill")
        .args(["-STOP", &server.to_string()])
        .status()
        .unwrap()
        .success());
    kill9(f.agent_pid("h1"));
    f.ok(&["dev", "restart-agent", "h1"]);

    assert!(
        containers(&f, "h1").iter().all(|(id, _)| *id != rt_id),
        "the held copy was adopted"
    );
    assert!(
        common::find_process(&["--id", &rt_id]).is_none(),
        "the held processes still exist"
    );
    let start = Instant::now();
    loop {
        let state = f.json(&["inspect", "held"])["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state != "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still listed as running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    f.ok(&["restore", &snap]);
    assert_eq!(f.py("held", "print(x + 1)").trim(), "42");
}
