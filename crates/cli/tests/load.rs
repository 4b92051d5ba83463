//! Load: 50 runtimes on one host, created, checkpointed and restored concurrently (50 at a time,
//! through the real CLI, runc and CRIU). Every operation succeeds, every runtime keeps its own
//! state, and the control plane keeps answering while they run.

mod common;
use common::Ferry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 50;

/// Runs `op(i)` for every runtime at once; panics with every failure.
fn all_at_once(what: &str, op: impl Fn(usize) -> Result<(), String> + Send + Sync + 'static) {
    let op = Arc::new(op);
    let t = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let op = op.clone();
            std::thread::spawn(move || op(i))
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {N} {what} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{N} {what} in {} ms", t.elapsed().as_millis());
}

fn run(state: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new(common::BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Times `ferry ls` in a loop until stopped; returns the slowest answer.
fn watch_responsiveness(
    state: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            if let Err(e) = run(&state, &["ls"]) {
                let log = std::fs::read_to_string(state.join("serve.log")).unwrap_or_default();
                panic!(
                    "ferry ls while under load: {e}\nserve log:\n{}",
                    common::tail(&log, 40)
                );
            }
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        worst
    })
}

#[test]
fn fifty_runtimes_created_checkpointed_and_restored_concurrently() {
    let Some(f) = Ferry::start() else { return };
    let state = f.state.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_responsiveness(state.clone(), stop.clone());

    let s = state.clone();
    all_at_once("creates", move |i| {
        run(
            &s,
            &["create", "--name", &format!("load{i}"), "--plan", "free"],
        )?;
        let out = run(
            &s,
            &[
                "exec",
                &format!("load{i}"),
                &format!("mine = {i} * 1000\nprint(mine)"),
            ],
        )?;
        if out.contains(&format!("{}", i * 1000)) {
            Ok(())
        } else {
            Err(format!("load{i}: {out}"))
        }
    });
    let s = state.clone();
    all_at_once("checkpoints", move |i| {
        run(&s, &["checkpoint", &format!("load{i}")]).map(|_| ())
    });
    let ls = f.json(&["ls"]);
    assert_eq!(
        ls.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "checkpointed")
            .count(),
        N,
        "{ls}"
    );
    let snaps = f.json(&["snapshots", "ls"]);
    let ids: Vec<(String, String)> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["runtime_name"].as_str().unwrap().to_string(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids.len(), N);
    let s = state.clone();
    let ids = Arc::new(ids);
    all_at_once("restores", move |i| {
        let name = format!("load{i}");
        let snap = &ids
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or(format!("no snapshot of {name}"))?
            .1;
        run(&s, &["restore", snap])?;
        let out = run(&s, &["exec", &name, "print(mine + 1)"])?;
        if out.contains(&format!("{}", i * 1000 + 1)) {
            Ok(())
        } else {
            Err(format!("{name} lost its state: {out}"))
        }
    });

    stop.store(true, Ordering::SeqCst);
    let worst = watcher.join().unwrap();
    eprintln!("slowest `ferry ls` under load: {} ms", worst.as_millis());
    assert!(
        worst < Duration::from_secs(5),
        "the control plane stopped answering for {} ms under load",
        worst.as_millis()
    );
    let ls = f.json(&["ls"]);
    assert_eq!(
        ls.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "running")
            .count(),
        N,
        "{ls}"
    );
    for i in 0..N {
        f.ok(&["rm", "-f", &format!("load{i}")]);
    }
}
