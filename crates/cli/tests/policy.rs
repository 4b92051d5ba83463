//! The monitor and its policy on real cgroups: a runtime that outgrows its plan moves to a host
//! with room for a larger one; an idle runtime is hibernated and wakes on the next request.

mod common;
use common::{http, Ferry};
use std::time::{Duration, Instant};

fn wait_until(f: &Ferry, what: &str, limit: Duration, mut ok: impl FnMut(&serde_json::Value) -> bool, rt: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = f.json(&["inspect", rt]);
        if ok(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}: {v}\nevents: {}", f.json(&["events", "--runtime", rt]));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_runtime_past_75_percent_moves_to_a_larger_plan_on_another_host() {
    let Some(f) = Ferry::start_dev_with(2, &["--monitor-interval=200ms"]) else { return };
    f.ok(&["create", "--name", "grower", "--host", "h1", "--plan", "free"]);
    f.py("grower", "x = 41");
    // ~40 MiB of Python + 165 MiB touched: ~80 % of the free plan's 256 MiB.
    f.py("grower", "import numpy as np\nblob = np.ones(165 * 1024 * 1024, dtype=np.uint8)");
    let rt = wait_until(&f, "the automatic move", Duration::from_secs(60), |v| v["host"] == "h2" && v["state"] == "running" && v["phase"].is_null(), "grower");
    assert_eq!(rt["plan"]["name"], "pro");
    assert_eq!(rt["stats"]["memory_limit_bytes"].as_u64().unwrap(), 512 * 1024 * 1024, "it arrived with the larger limit");
    assert_eq!(f.py("grower", "print(x + 1, int(blob[:1000].sum()))").trim(), "42 1000");
    let kinds: Vec<String> = f.json(&["events", "--runtime", "grower"]).as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    for k in ["memory.migrate", "policy.migrating", "runtime.migrated"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event: {kinds:?}");
    }
}

#[test]
fn an_idle_runtime_is_hibernated_and_wakes_on_request() {
    let Some(f) = Ferry::start_dev_with(1, &["--monitor-interval=200ms", "--idle-after=2s"]) else { return };
    // A follower of the event stream sees the policy's decisions as they happen.
    let mut follower = std::process::Command::new(common::BIN)
        .args(["--state-dir", f.state.to_str().unwrap(), "--json", "events", "--follow", "--runtime", "idler"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let seen = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut kinds = Vec::new();
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            kinds.push(v["kind"].as_str().unwrap().to_string());
            if kinds.iter().any(|k| k == "runtime.hibernated") {
                break;
            }
        }
        kinds
    });
    std::thread::sleep(Duration::from_millis(300));
    f.ok(&["create", "--name", "idler", "--host", "h1"]);
    f.py("idler", "x = 41");
    wait_until(&f, "hibernation", Duration::from_secs(30), |v| v["state"] == "hibernated", "idler");
    let streamed = seen.join().unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(streamed.iter().any(|k| k == "runtime.created") && streamed.iter().any(|k| k == "idle"), "streamed: {streamed:?}");
    // Prometheus metrics count it.
    let serve = std::fs::read_to_string(f.state.join("serve.addr")).unwrap();
    let (status, metrics) = http(serve.trim(), "GET", "/metrics", "", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("ferry_runtimes{state=\"hibernated\"} 1") && metrics.contains("ferry_checkpoint_ms_count 1"), "{metrics}");
    let kinds: Vec<String> = f.json(&["events", "--runtime", "idler"]).as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert!(kinds.iter().any(|k| k == "idle") && kinds.iter().any(|k| k == "runtime.hibernated"), "{kinds:?}");
    let (status, body) = http(&f.proxy_addr(), "POST", "/r/idler/mrp/v1/execute", r#"{"code":"print(x + 1)"}"#, Duration::from_secs(60)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"42\\n\""), "{body}");
}

#[test]
fn without_auto_the_monitor_only_reports() {
    let Some(f) = Ferry::start_dev_with(2, &["--monitor-interval=200ms", "--idle-after=1s", "--no-auto"]) else { return };
    f.ok(&["create", "--name", "watched", "--host", "h1", "--plan", "free"]);
    f.py("watched", "import numpy as np\nblob = np.ones(165 * 1024 * 1024, dtype=np.uint8)");
    let start = Instant::now();
    loop {
        let kinds: Vec<String> = f.json(&["events", "--runtime", "watched"]).as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
        if kinds.iter().any(|k| k == "memory.migrate") && kinds.iter().any(|k| k == "idle") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "events missing: {kinds:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = f.json(&["inspect", "watched"]);
    assert_eq!((rt["host"].as_str(), rt["state"].as_str()), (Some("h1"), Some("running")), "no action without auto");
}

#[test]
fn a_gpu_hint_steers_the_next_move_to_a_gpu_host() {
    let Some(f) = Ferry::start_dev_with(3, &["--monitor-interval=200ms"]) else { return };
    let hosts = f.json(&["host", "ls"]);
    let url = hosts.as_array().unwrap().iter().find(|h| h["name"] == "h2").unwrap()["url"].as_str().unwrap().to_string();
    f.ok(&["host", "add", "h2", &url, "--labels", "gpu"]);
    f.ok(&["create", "--name", "trainer", "--host", "h1", "--plan", "free"]);
    // The user's notebook imports torch (not installed here: the cell fails, the hint stands).
    let (status, _) = http(&f.proxy_addr(), "POST", "/r/trainer/mrp/v1/execute", r#"{"code":"import torch"}"#, Duration::from_secs(30)).unwrap();
    assert_eq!(status, 200);
    let kinds: Vec<String> = f.json(&["events", "--runtime", "trainer"]).as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert!(kinds.iter().any(|k| k == "hint.gpu"), "{kinds:?}");
    f.py("trainer", "import numpy as np\nblob = np.ones(165 * 1024 * 1024, dtype=np.uint8)");
    let rt = wait_until(&f, "the automatic move", Duration::from_secs(60), |v| v["host"] != "h1" && v["state"] == "running" && v["phase"].is_null(), "trainer");
    assert_eq!(rt["host"], "h2", "the gpu-labelled host is preferred (h3 has as much room)");
}
