//! The tracker on real processes (a Python child writing known pages): exact written sets, new
//! areas, fork, and that nothing stays in the process once tracking ends or the tracker dies.
//! Needs root and Linux >= 6.7; with `CI=true` a host that cannot run them fails instead of skipping.

use ferry_tracker::{ProcessRound, Tracker};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const PAGE: u64 = 4096;

struct Testee {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    extra: Vec<i32>,
}

impl Testee {
    fn start() -> Testee {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testee.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut t = Testee {
            child,
            stdin,
            stdout,
            extra: vec![],
        };
        assert_eq!(t.cmd("ping"), "ok");
        t
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn cmd(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").unwrap();
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "testee died on {c:?}");
        l.trim().to_string()
    }
    fn alloc(&mut self, pages: u64) -> u64 {
        self.cmd(&format!("alloc {pages}")).parse().unwrap()
    }
}

impl Drop for Testee {
    fn drop(&mut self) {
        for &p in &self.extra {
            unsafe { libc::kill(p, libc::SIGKILL) };
            unsafe { libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pages (indexes from `base`) of `[base, base + pages*PAGE)` that the round reports dirty.
fn pages_in(r: &ProcessRound, base: u64, pages: u64) -> Vec<u64> {
    let end = base + pages * PAGE;
    let mut v = Vec::new();
    for &(a, b) in &r.dirty {
        let (a, b) = (a.max(base), b.min(end));
        let mut p = a;
        while p < b {
            v.push((p - base) / PAGE);
            p += PAGE;
        }
    }
    v
}

fn for_pid(rs: &[ProcessRound], pid: i32) -> &ProcessRound {
    rs.iter()
        .find(|r| r.pid == pid)
        .expect("a round for the pid")
}

fn can_run() -> bool {
    let ok = unsafe { libc::geteuid() } == 0 && ferry_tracker::probe().is_ok();
    if !ok {
        let why = ferry_tracker::probe()
            .err()
            .unwrap_or_else(|| "not root".into());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the tracker cannot run here: {why}");
        }
        eprintln!("skipped: {why}");
    }
    ok
}

fn has_uffd(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .any(|e| {
            std::fs::read_link(e.unwrap().path())
                .map(|l| l.to_string_lossy().contains("userfaultfd"))
                .unwrap_or(false)
        })
}

fn registered_areas(pid: i32) -> usize {
    ferry_tracker::maps::read(pid)
        .unwrap()
        .iter()
        .filter(|v| v.uffd_wp)
        .count()
}

#[test]
fn reports_exactly_the_written_pages() {
    if !can_run() {
        return;
    }
    let mut t = Testee::start();
    let a = t.alloc(256);
    let mut tr = Tracker::new();
    let first = tr.round(&[t.pid()]).unwrap();
    let r = for_pid(&first, t.pid());
    assert!(r.new);
    assert_eq!(
        pages_in(r, a, 256).len(),
        256,
        "round 1 covers the whole area"
    );
    // The process holds no userfaultfd of its own, its areas are registered, THP is off.
    assert!(!has_uffd(t.pid()));
    assert!(registered_areas(t.pid()) > 0);
    assert!(ferry_tracker::maps::read(t.pid())
        .unwrap()
        .iter()
        .all(|v| !v.thp_eligible));
    let _ = tr.round(&[t.pid()]).unwrap();
    assert_eq!(t.cmd("write 0 3 7 8 100 255"), "ok");
    let rs = tr.round(&[t.pid()]).unwrap();
    let r = for_pid(&rs, t.pid());
    assert!(!r.new);
    assert_eq!(pages_in(r, a, 256), vec![3, 7, 8, 100, 255]);
    // Re-protected in the same walk: nothing new until the next write.
    let rs = tr.round(&[t.pid()]).unwrap();
    assert_eq!(pages_in(for_pid(&rs, t.pid()), a, 256), Vec::<u64>::new());
    assert_eq!(t.cmd("write 0 3 200"), "ok");
    let rs = tr.round(&[t.pid()]).unwrap();
    assert_eq!(pages_in(for_pid(&rs, t.pid()), a, 256), vec![3, 200]);
    tr.stop();
    assert!(!has_uffd(t.pid()));
    assert_eq!(
        registered_areas(t.pid()),
        0,
        "stop() unregisters every area"
    );
    assert_eq!(t.cmd("write 0 1"), "ok", "the process keeps running");
}

#[test]
fn an_area_mapped_during_tracking_counts_dirty_whole() {
    if !can_run() {
        return;
    }
    let mut t = Testee::start();
    let a = t.alloc(16);
    let mut tr = Tracker::new();
    tr.round(&[t.pid()]).unwrap();
    tr.round(&[t.pid()]).unwrap();
    let b = t.alloc(64);
    let rs = tr.round(&[t.pid()]).unwrap();
    let r = for_pid(&rs, t.pid());
    assert_eq!(pages_in(r, b, 64).len(), 64, "the new area is dirty whole");
    assert_eq!(pages_in(r, a, 16), Vec::<u64>::new());
    // From then on it is tracked page by page.
    assert_eq!(t.cmd("write 1 5 6"), "ok");
    let rs = tr.round(&[t.pid()]).unwrap();
    assert_eq!(pages_in(for_pid(&rs, t.pid()), b, 64), vec![5, 6]);
}

#[test]
fn a_child_forked_during_tracking_is_tracked_from_its_first_round() {
    if !can_run() {
        return;
    }
    let mut t = Testee::start();
    let a = t.alloc(32);
    let mut tr = Tracker::new();
    tr.round(&[t.pid()]).unwrap();
    tr.round(&[t.pid()]).unwrap();
    let child: i32 = t.cmd("fork 9").parse().unwrap();
    t.extra.push(child);
    assert!(!has_uffd(child), "the child inherits no userfaultfd");
    assert_eq!(t.cmd("write 0 4"), "ok");
    let rs = tr.round(&[t.pid(), child]).unwrap();
    assert_eq!(
        pages_in(for_pid(&rs, t.pid()), a, 32),
        vec![4],
        "the parent's own writes only"
    );
    let c = for_pid(&rs, child);
    assert!(c.new);
    assert_eq!(pages_in(c, a, 32).len(), 32);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(t.cmd("write 0 12"), "ok");
    let rs = tr.round(&[t.pid(), child]).unwrap();
    assert_eq!(pages_in(for_pid(&rs, t.pid()), a, 32), vec![12]);
    assert_eq!(
        pages_in(for_pid(&rs, child), a, 32),
        vec![9],
        "the child keeps writing page 9"
    );
    tr.stop();
    assert!(!has_uffd(child) && registered_areas(child) == 0);
    assert!(!has_uffd(t.pid()) && registered_areas(t.pid()) == 0);
}

#[test]
fn the_last_round_reports_a_process_not_yet_tracked_whole_without_attaching() {
    if !can_run() {
        return;
    }
    let mut t = Testee::start();
    let a = t.alloc(32);
    let mut tr = Tracker::new();
    tr.round(&[t.pid()]).unwrap();
    let child: i32 = t.cmd("fork 9").parse().unwrap();
    t.extra.push(child);
    assert_eq!(t.cmd("write 0 4"), "ok");
    let rs = tr.last_round(&[t.pid(), child]).unwrap();
    assert_eq!(pages_in(for_pid(&rs, t.pid()), a, 32), vec![4]);
    let c = for_pid(&rs, child);
    assert!(c.new);
    assert_eq!(pages_in(c, a, 32).len(), 32, "the child whole");
    assert!(
        !has_uffd(child) && registered_areas(child) == 0,
        "the child was not attached"
    );
    assert_eq!(tr.pids(), vec![t.pid()]);
    tr.stop();
    assert!(!has_uffd(t.pid()) && registered_areas(t.pid()) == 0);
}

#[test]
fn a_killed_tracker_leaves_nothing_in_the_process() {
    if !can_run() {
        return;
    }
    let mut t = Testee::start();
    t.alloc(16);
    let mut tracker = Command::new(env!("CARGO_BIN_EXE_ferry-track"))
        .arg(t.pid().to_string())
        .arg("--interval-ms")
        .arg("50")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tracker.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("round 1 pid"), "{line:?}");
    assert!(registered_areas(t.pid()) > 0);
    tracker.kill().unwrap();
    tracker.wait().unwrap();
    assert!(!has_uffd(t.pid()));
    assert_eq!(
        registered_areas(t.pid()),
        0,
        "the kernel unregistered everything"
    );
    assert_eq!(t.cmd("write 0 1 2 3"), "ok", "the process keeps running");
    // A new tracker can take over.
    let mut tr = Tracker::new();
    assert!(for_pid(&tr.round(&[t.pid()]).unwrap(), t.pid()).new);
}
