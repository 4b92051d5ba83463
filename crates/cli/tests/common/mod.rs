//! Test harness: a real `ferry serve` (real runc, real CRIU, real netns) in its own state dir,
//! with its own netns/cgroup prefix and address range, driven through the real CLI binary.
//! Dropping it stops the server and purges everything it made, even when the test failed.
//!
//! The control plane keeps its state in SQLite, or, with `FERRY_TEST_DATABASE=postgres`, in a
//! fresh PostgreSQL database made for each test and dropped after it (the server's URL from
//! `FERRY_TEST_PG_URL`, default: the one scripts/setup.sh wrote). Tests of several control-plane
//! instances always use PostgreSQL.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can run the integration tests; under CI a missing piece is a failure.
pub fn environment_ready() -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root".to_string());
    }
    if !Command::new("criu")
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        missing.push("a working CRIU (`criu check`)".into());
    }
    if !Command::new("runc")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        missing.push("runc".into());
    }
    if !images_dir().join("mrmd-python/.complete").exists() {
        missing.push(format!("the runtime image in {}", images_dir().display()));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "integration test needs {}; run scripts/setup.sh as root",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: skipping is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn images_dir() -> PathBuf {
    std::env::var_os("FERRY_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferry/images"))
}

/// A PostgreSQL database made for one test and dropped (with its connections) afterwards.
pub struct TestDatabase {
    server: String,
    pub name: String,
}

impl TestDatabase {
    /// A fresh database; `None` where no PostgreSQL server is set up (a failure under CI).
    pub fn create(tag: &str) -> Option<TestDatabase> {
        let server = std::env::var("FERRY_TEST_PG_URL")
            .ok()
            .or_else(|| std::fs::read_to_string(pg_url_file()).ok())
            .map(|s| s.trim().trim_end_matches('/').to_string());
        let ready = server
            .as_ref()
            .is_some_and(|s| psql(s, "postgres", "SELECT 1").is_ok());
        if !ready {
            let msg = format!("this test needs PostgreSQL: run scripts/setup.sh as root (it starts a cluster and writes {}), or set FERRY_TEST_PG_URL", pg_url_file().display());
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg} (CI=true: skipping is a failure)");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let server = server.unwrap();
        let name = format!(
            "ferry_test_{tag}_{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000_000
        );
        psql(&server, "postgres", &format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        Some(TestDatabase { server, name })
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let r = psql(
            &self.server,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if !std::thread::panicking() {
            r.expect("drop the test database");
        }
    }
}

fn pg_url_file() -> PathBuf {
    PathBuf::from("/var/cache/ferry/pg-test-url")
}

/// Runs one SQL statement with psql; returns its output (unaligned, tuples only).
pub fn psql(server: &str, db: &str, sql: &str) -> Result<String, String> {
    let o = Command::new("psql")
        .args([
            "-qAtX",
            "-v",
            "ON_ERROR_STOP=1",
            &format!("{server}/{db}"),
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Whether this run's tests keep the control plane's state in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("FERRY_TEST_DATABASE").as_deref() == Ok("postgres")
}

pub struct Ferry {
    pub state: PathBuf,
    pub prefix: String,
    pub subnet: String,
    serve: Option<Child>,
    /// Started with `ferry dev up` (several hosts) rather than a single `ferry serve`.
    dev: bool,
    /// More flags for `ferry serve` (see [`Ferry::start_with`]).
    serve_args: Vec<String>,
    /// Where the state lives when not in SQLite (dropped after the servers stop).
    pub database: Option<TestDatabase>,
}

impl Ferry {
    /// A fresh state dir, netns/cgroup prefix and address range, unique to this test.
    fn fresh(letter: char, dev: bool) -> (Ferry, u32) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 10000, n);
        let state = std::env::temp_dir().join(format!("ferry-test-{tag}"));
        let _ = std::fs::remove_dir_all(&state);
        let subnet = format!("10.{}.{}.0", 150 + (pid % 50), n * 8);
        (
            Ferry {
                state,
                prefix: format!("f{letter}{tag}-"),
                subnet,
                serve: None,
                dev,
                serve_args: Vec::new(),
                database: None,
            },
            n,
        )
    }

    /// A running `ferry serve` with a local agent, or `None` where the machine cannot run it.
    pub fn start() -> Option<Ferry> {
        Self::start_with(&[])
    }

    /// As [`Ferry::start`], with more flags for `ferry serve`; `{state}` in a flag becomes the
    /// test's state dir (e.g. `--images={state}/images` for images of its own, removed with it).
    pub fn start_with(serve_args: &[&str]) -> Option<Ferry> {
        if !environment_ready() {
            return None;
        }
        let (mut f, _) = Self::fresh('t', false);
        let state = f.state.display().to_string();
        f.serve_args = serve_args
            .iter()
            .map(|a| a.replace("{state}", &state))
            .collect();
        if on_postgres() {
            f.database = Some(TestDatabase::create(&f.prefix.replace('-', ""))?);
            f.serve_args
                .push(format!("--database={}", f.database.as_ref().unwrap().url()));
        }
        f.launch();
        Some(f)
    }

    /// `ferry dev up --hosts N`: simulated hosts h1..hN in network namespaces, one agent each.
    /// The monitor takes no automatic action unless a test asks for it (`start_dev_with`).
    pub fn start_dev(hosts: u32) -> Option<Ferry> {
        Self::start_dev_with(hosts, &["--no-auto"])
    }

    /// As [`Ferry::start_dev`], with agents that speak TLS (`ferry dev up --tls`).
    pub fn start_dev_tls(hosts: u32) -> Option<Ferry> {
        Self::start_dev_inner(hosts, &["--no-auto"], &["--tls"], on_postgres())
    }

    /// As [`Ferry::start_dev`], with these flags for `ferry serve`.
    pub fn start_dev_with(hosts: u32, serve_args: &[&str]) -> Option<Ferry> {
        Self::start_dev_inner(hosts, serve_args, &[], on_postgres())
    }

    /// As [`Ferry::start_dev_with`]; with `postgres`, the state is in a fresh PostgreSQL database.
    pub fn start_dev_on(hosts: u32, serve_args: &[&str], postgres: bool) -> Option<Ferry> {
        Self::start_dev_inner(hosts, serve_args, &[], postgres)
    }

    /// As [`Ferry::start_dev_with`], with more flags for `ferry dev up` (e.g. `--images-per-host`).
    pub fn start_dev_args(hosts: u32, dev_args: &[&str], serve_args: &[&str]) -> Option<Ferry> {
        Self::start_dev_inner(hosts, serve_args, dev_args, on_postgres())
    }

    fn start_dev_inner(
        hosts: u32,
        serve_args: &[&str],
        dev_args: &[&str],
        postgres: bool,
    ) -> Option<Ferry> {
        if !environment_ready() {
            return None;
        }
        let (mut f, n) = Self::fresh('m', true);
        let mut serve_args: Vec<String> = serve_args.iter().map(|a| a.to_string()).collect();
        if postgres {
            let db = TestDatabase::create(&f.prefix.replace('-', ""))?;
            serve_args.push(format!("--database={}", db.url()));
            f.database = Some(db);
        }
        let net = format!("10.{}.{}.0", 100 + (std::process::id() % 50), n);
        let hosts = hosts.to_string();
        let mut args = vec![
            "dev",
            "up",
            "--hosts",
            &hosts,
            "--prefix",
            &f.prefix,
            "--net",
            &net,
            "--subnet",
            &f.subnet,
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ];
        let flags: Vec<String> = serve_args
            .iter()
            .map(|a| format!("--serve-arg={a}"))
            .collect();
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(dev_args);
        f.ok(&args);
        Some(f)
    }

    /// Another `ferry serve` on the same database and agents (no local agent): its own state dir,
    /// API and proxy, the same tokens. Dropping it stops it and removes its state dir.
    pub fn second_instance(&self, serve_args: &[&str]) -> Ferry {
        let db = self
            .database
            .as_ref()
            .expect("a second instance needs the first one's PostgreSQL database");
        let (mut b, _) = Self::fresh('b', false);
        std::fs::create_dir_all(&b.state).unwrap();
        b.subnet = self.subnet.clone();
        for f in ["token", "agent-token"] {
            std::fs::copy(self.state.join(f), b.state.join(f)).unwrap();
        }
        let mut args: Vec<String> = [
            "serve",
            "--no-local-agent",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
            "--prefix",
            &b.prefix,
            "--subnet",
            &b.subnet,
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--database={}", db.url()));
        args.extend(serve_args.iter().map(|a| a.to_string()));
        b.spawn_serve(&args, &["serve.addr", "proxy.addr"], "a second ferry serve");
        b
    }

    /// PID of `ferry serve` (of a dev topology, or started by the harness).
    pub fn serve_pid(&self) -> u32 {
        match &self.serve {
            Some(c) => c.id(),
            None => {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(self.state.join("dev.json")).unwrap())
                        .unwrap();
                v["serve_pid"].as_u64().unwrap() as u32
            }
        }
    }

    /// The proxy's base URL (`http://ADDR`).
    pub fn proxy_addr(&self) -> String {
        std::fs::read_to_string(self.state.join("proxy.addr"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// What `ferry dev up` recorded of a dev host (name, netns, addr, agent_url, pid, ...).
    pub fn dev_host(&self, host: &str) -> Value {
        let v: Value =
            serde_json::from_slice(&std::fs::read(self.state.join("dev.json")).unwrap()).unwrap();
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == host)
            .unwrap()
            .clone()
    }

    /// PID of a dev host's agent.
    pub fn agent_pid(&self, host: &str) -> u32 {
        self.dev_host(host)["pid"].as_u64().unwrap() as u32
    }

    fn launch(&mut self) {
        assert!(!self.dev, "dev topologies are started by `ferry dev up`");
        let _ = std::fs::remove_file(self.state.join("serve.addr"));
        std::fs::create_dir_all(&self.state).unwrap();
        let mut args: Vec<String> = [
            "serve",
            "--no-auto",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--prefix",
            &self.prefix,
            "--subnet",
            &self.subnet,
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.serve_args.iter().cloned());
        self.spawn_serve(&args, &["serve.addr"], "ferry serve");
    }

    /// Starts `ferry ARGS` (a `serve`) on this state dir, its output appended to `serve.log`, and
    /// waits until it has written `files` (its address files).
    fn spawn_serve(&mut self, args: &[String], files: &[&str], what: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("serve.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        self.serve = Some(child);
        let start = Instant::now();
        while !files.iter().all(|f| self.state.join(f).exists()) {
            if let Some(st) = self.serve.as_mut().unwrap().try_wait().unwrap() {
                panic!("{what} exited ({st}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("serve.log")).unwrap_or_default()
    }

    /// Stops `ferry serve` (its runtimes keep running) and starts it again on the same state.
    pub fn restart(&mut self) {
        self.stop_serve();
        self.launch();
    }

    fn stop_serve(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ferry")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "ferry {args:?} failed:\nstdout: {}\nstderr: {}\nserve log tail:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the CLI and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            !o.status.success(),
            "ferry {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    /// Runs Python in a runtime and returns its stdout.
    pub fn py(&self, rt: &str, code: &str) -> String {
        let v = self.json(&["exec", rt, code]);
        assert!(v["error"].is_null(), "python error in {rt}: {v}");
        v["stdout"].as_str().unwrap_or("").to_string()
    }

    /// The control (operator) token of this instance.
    pub fn control_token(&self) -> String {
        std::fs::read_to_string(self.state.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runtime `rt`'s current access token for the proxy (`ferry token RT`).
    pub fn token(&self, rt: &str) -> String {
        self.ok(&["token", rt]).trim().to_string()
    }

    /// A request through this instance's proxy to `path` (`/r/NAME/...`), with NAME's access
    /// token: how tests that are not about credentials reach a runtime.
    pub fn proxy(
        &self,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> std::io::Result<(u16, String)> {
        let name = path
            .strip_prefix("/r/")
            .and_then(|p| p.split(['/', '?']).next())
            .expect("a proxy path is /r/NAME/...");
        http_as(
            &self.proxy_addr(),
            &self.token(name),
            method,
            path,
            body,
            timeout,
        )
    }

    pub fn state_of(&self, rt: &str) -> String {
        self.json(&["inspect", rt])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn snapshot_count(&self) -> usize {
        self.json(&["snapshots", "ls"]).as_array().unwrap().len()
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// What a state dir left on the machine: netns with the prefix, mounts under the dir, runc containers.
pub fn leftovers(state: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .map(|n| format!("netns {n}"))
        .collect();
    // nftables tables of runtimes whose host end is in the root namespace (those of simulated
    // hosts go with their namespaces, which the check above covers).
    let tables = Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mine = format!(
        "ferry_{}",
        prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    v.extend(
        tables
            .lines()
            .filter_map(|l| l.trim().strip_prefix("table inet "))
            .filter(|t| t.starts_with(&mine))
            .map(|t| format!("nft table {t}")),
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let s = state.display().to_string();
    v.extend(
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&s))
            .map(|m| format!("mount {m}")),
    );
    // Loop devices backed by a file under the state dir (runtimes' writable layers).
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if b.starts_with(&s) {
                v.push(format!("loop device {:?} on {}", e.file_name(), b.trim()));
            }
        }
    }
    v
}

/// A failed test's logs (`serve.log`, every agent's, the runtimes' CRIU and runc logs) are kept in
/// `<target dir>/test-artifacts/logs/<prefix>/` (the target dir holds this test binary).
fn keep_logs(state: &std::path::Path, prefix: &str) {
    let Some(dest) = std::env::current_exe().ok().and_then(|e| {
        e.ancestors().nth(3).map(|t| {
            t.join("test-artifacts/logs")
                .join(prefix.trim_end_matches('-'))
        })
    }) else {
        return;
    };
    fn walk(dir: &std::path::Path, depth: usize, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let ft = e.file_type();
            if ft.as_ref().is_ok_and(|t| t.is_dir()) && depth < 6 && !p.ends_with("rootfs") {
                walk(&p, depth + 1, out);
            } else if p.extension().is_some_and(|x| x == "log") {
                out.push(p);
            }
        }
    }
    let mut logs = Vec::new();
    walk(state, 0, &mut logs);
    for log in logs {
        let rel = log.strip_prefix(state).unwrap_or(&log);
        let to = dest.join(rel);
        if let Some(d) = to.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::copy(&log, &to);
    }
    eprintln!("logs kept in {}", dest.display());
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(&self.state, &self.prefix);
        }
        self.stop_serve();
        let verb = if self.dev { "down" } else { "purge" };
        let st = Command::new(BIN)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["dev", verb, "--prefix", &self.prefix])
            .status();
        let left = leftovers(&self.state, &self.prefix);
        if !std::thread::panicking() {
            assert!(st.map(|s| s.success()).unwrap_or(false), "purge failed");
            assert!(left.is_empty(), "left behind: {left:?}");
            assert!(!self.state.exists(), "state dir left behind");
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body). A client of the proxy as
/// simple as a browser's fetch: no retries. It sends no credential: for `/r/NAME/...` use
/// [`Ferry::proxy`] or [`http_as`].
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    request(addr, method, path, &[], body, timeout).map(|(s, _, b)| (s, b))
}

/// As [`http`], sending `Authorization: Bearer TOKEN`: the one way tests present a runtime's
/// credential to the proxy (see [`Ferry::token`]).
pub fn http_as(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    request(
        addr,
        method,
        path,
        &[("Authorization", &auth)],
        body,
        timeout,
    )
    .map(|(s, _, b)| (s, b))
}

/// One HTTP/1.1 request with extra `headers`; returns (status, response head, body).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}", body.len())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// The bench's write probe as a test client of the proxy (`ferry_bench::probe`): every 10 ms a
/// cell appends its own sequence number to a list in the runtime; `finish` reads the list back
/// and counts duplicated and lost writes, failed polls and the longest gap. It finds the proxy
/// where `ferry serve` last recorded it, so it follows a control plane restarted by a test.
pub struct WriteProbe {
    state: PathBuf,
    token: String,
    path: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    polls: std::thread::JoinHandle<Vec<ferry_bench::probe::Poll>>,
}

/// Runs `code` through the proxy at `addr` with a runtime's `token`: its stdout, or why not.
pub fn proxy_exec(addr: &str, token: &str, path: &str, code: &str) -> Result<String, String> {
    let body = serde_json::json!({ "code": code }).to_string();
    match http_as(addr, token, "POST", path, &body, Duration::from_secs(30)) {
        Ok((200, b)) => {
            let v: Value = serde_json::from_str(&b).map_err(|e| format!("{e}: {b}"))?;
            if !v["error"].is_null() {
                return Err(format!("python error: {}", v["error"]));
            }
            Ok(v["stdout"].as_str().unwrap_or_default().to_string())
        }
        Ok((status, b)) => Err(format!("{status}: {b}")),
        Err(e) => Err(e.to_string()),
    }
}

impl WriteProbe {
    pub fn start(f: &Ferry, rt: &str) -> WriteProbe {
        use ferry_bench::probe::{parse_answer, setup_code, write_code, Poll};
        let token = f.token(rt);
        let path = format!("/r/{rt}/mrp/v1/execute");
        proxy_exec(&f.proxy_addr(), &token, &path, &setup_code())
            .expect("the write probe creates its list");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = f.state.clone();
        let (st, t, p, s) = (state.clone(), token.clone(), path.clone(), stop.clone());
        let polls = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let mut out = Vec::new();
            let mut seq = 0;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                seq += 1;
                let sent_ms = t0.elapsed().as_secs_f64() * 1000.0;
                let a = probe_proxy_addr(&st);
                let answer = proxy_exec(&a, &t, &p, &write_code(seq))
                    .ok()
                    .and_then(|o| parse_answer(&o));
                out.push(Poll {
                    sent_ms,
                    done_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    seq,
                    answer,
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            out
        });
        WriteProbe {
            state,
            token,
            path,
            stop,
            polls,
        }
    }

    /// Stops polling and reads the list back (a failure to do so fails the test).
    pub fn finish(self) -> ferry_bench::probe::Observed {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let polls = self.polls.join().expect("the write probe's thread");
        assert!(!polls.is_empty(), "the write probe made no poll");
        let list = proxy_exec(
            &probe_proxy_addr(&self.state),
            &self.token,
            &self.path,
            &ferry_bench::probe::read_code(),
        )
        .expect("the write probe reads its list back");
        let list = ferry_bench::probe::parse_list(&list).expect("the list the probe wrote");
        ferry_bench::probe::observe(&polls, &list, 0.0)
    }

    /// Stops polling without reading the list (the runtime is gone): the polls only.
    pub fn polls(self) -> Vec<ferry_bench::probe::Poll> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.polls.join().expect("the write probe's thread")
    }
}

/// Where the proxy listens now (`ferry serve` rewrites the file when it starts).
fn probe_proxy_addr(state: &Path) -> String {
    std::fs::read_to_string(state.join("proxy.addr"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A runtime big enough that its transfer takes a while: 120 MB of random bytes, and `x = 41`.
pub const BIG: &str = "import numpy as np\nblob = np.random.randint(0, 256, size=120 * 1024 * 1024, dtype=np.uint8)\nx = 41";

/// `ferry migrate ARGS` in a thread, for tests that act while it runs.
pub fn migrate_in_background(f: &Ferry, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let args: Vec<&str> = std::iter::once("migrate")
        .chain(args.iter().copied())
        .collect();
    in_background(f, &args)
}

/// `ferry ARGS` in a thread, for tests that act while it runs.
pub fn in_background(f: &Ferry, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--state-dir").arg(&f.state).args(args);
    std::thread::spawn(move || cmd.output().unwrap())
}

/// Waits until a migration's stream has begun arriving at `host` (its import staging dir exists).
/// Shapes the simulated link into dev host `host` to `rate` (a real `tbf` qdisc on the bridge side
/// of its veth, e.g. "400mbit"): a transfer to it then lasts long enough (a 120 MB runtime: ~3 s)
/// for a fault to land in its middle on any machine, however fast the stream. Gone with the
/// topology.
pub fn slow_link(f: &Ferry, host: &str, rate: &str) {
    let (ns, dev) = (format!("{}net", f.prefix), format!("{}{host}b", f.prefix));
    let st = Command::new("tc")
        .args([
            "-n", &ns, "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", rate, "burst",
            "1mb", "latency", "1s",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tc qdisc on {dev} in {ns}");
}

/// Waits until a stream has begun arriving at dev host `host` (its hidden staging dir exists).
/// Tests that fault a transfer in its middle slow the link first ([`slow_link`]).
pub fn wait_for_stream_at(f: &Ferry, host: &str) {
    let snaps = f.state.join(format!("agents/{host}/snapshots"));
    let start = Instant::now();
    while !std::fs::read_dir(&snaps)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with('.'))
        })
        .unwrap_or(false)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the transfer never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The containers runc knows on a dev host: (id, status).
pub fn containers(f: &Ferry, host: &str) -> Vec<(String, String)> {
    let root = f.state.join(format!("agents/{host}/runc"));
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// PID of the process whose command line contains all of `needles`.
pub fn find_process(needles: &[&str]) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) && !cmd.contains("nsenter") {
            return Some(pid);
        }
    }
    None
}

/// SIGKILL to a process the test started (directly or through `ferry dev up`).
pub fn kill9(pid: u32) {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}
