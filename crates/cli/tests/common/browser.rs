//! Headless Chromium for the browser tests, driven through chromedriver (WebDriver) with
//! fantoccini. Each browser has its own chromedriver on a free port and a fresh profile dir;
//! dropping it ends the session, stops that chromedriver and any Chromium still running with that
//! profile (found by its unique --user-data-dir, killed by PID), and removes the profile.
//! Screenshots go to the artifacts dir (see [`artifacts_dir`]).

#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed; under CI their absence is a failure.
pub fn browser_ready() -> bool {
    let chromium = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let driver = std::env::var("FERRY_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
    if std::path::Path::new(&chromium).exists() && std::path::Path::new(&driver).exists() {
        return true;
    }
    let msg = format!("browser test needs {chromium} and {driver} (apt install chromium chromium-driver; scripts/setup.sh does)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: skipping is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Where screenshots are kept: $FERRY_TEST_ARTIFACTS, else `<target dir>/test-artifacts/browser`
/// (the target dir is the one holding this test binary, i.e. $CARGO_TARGET_DIR or ./target).
pub fn artifacts_dir() -> PathBuf {
    let dir = match std::env::var_os("FERRY_TEST_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test binary path");
            // <target>/debug/deps/browser-HASH
            exe.ancestors()
                .nth(3)
                .map(|t| t.join("test-artifacts/browser"))
                .unwrap_or_else(|| PathBuf::from("target/test-artifacts/browser"))
        }
    };
    std::fs::create_dir_all(&dir).expect("create the artifacts dir");
    dir
}

pub struct Browser {
    pub client: fantoccini::Client,
    guard: Guard,
}

/// What a browser leaves on the machine, removed on drop even when a test fails.
struct Guard {
    driver: Child,
    driver_addr: String,
    session: Option<String>,
    profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver_bin =
            std::env::var("FERRY_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("ferry-chromium-")
            .tempdir()
            .unwrap();
        let driver_addr = format!("127.0.0.1:{port}");
        let mut b = Guard {
            driver,
            driver_addr,
            session: None,
            profile,
        };
        let t0 = Instant::now();
        let http = reqwest::Client::new();
        loop {
            // (chromedriver keeps connections open: a client that reads to the end would hang.)
            let status = http
                .get(format!("http://{}/status", b.driver_addr))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = status {
                if r.json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not start on {}",
                b.driver_addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let chromium = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", b.profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": chromium, "args": args}),
        );
        // Starting Chromium can fail on a loaded machine (it did not report its DevTools port in
        // time): try again, a few times, before calling it a failure.
        let mut attempt = 0;
        let client = loop {
            attempt += 1;
            match fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            )
            .capabilities(caps.clone())
            .connect(&format!("http://{}", b.driver_addr))
            .await
            {
                Ok(c) => break c,
                Err(e) if attempt < 3 => {
                    eprintln!("starting chromium (attempt {attempt}) failed: {e}; trying again")
                }
                Err(e) => panic!("could not start chromium through chromedriver: {e}"),
            }
        };
        b.session = client.session_id().await.ok().flatten();
        Browser { client, guard: b }
    }

    /// Runs `script` (a function body; `return` its answer) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy (returned), or panics after `timeout`.
    pub async fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == Value::Bool(false) || v == Value::String(String::new())) {
                return v;
            }
            if t0.elapsed() > timeout {
                let shot = self
                    .screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for {what} (screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects, found and clicked in one step (rows re-render when the
    /// fleet changes, so a found element can go stale before a separate click).
    pub async fn click(&self, css: &str) {
        let sel = serde_json::to_string(css).unwrap();
        self.wait_js(&format!("{css} to be clickable"), &format!("const e = document.querySelector({sel}); if (!e || e.disabled) return false; e.click(); return true;"), Duration::from_secs(20)).await;
    }

    /// Saves a PNG screenshot as `<artifacts>/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let p = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&p, png).expect("write screenshot");
        eprintln!("screenshot: {}", p.display());
        p
    }

    /// Ends the session (Chromium exits); Drop does the rest.
    pub async fn close(mut self) {
        if self.guard.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Drop may run inside the test's runtime: end the session from a thread of its own.
            let url = format!("http://{}/session/{id}", self.driver_addr);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _ = rt.block_on(async move {
                    reqwest::Client::new()
                        .delete(url)
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await
                });
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium processes of this profile that outlived their driver (only ours: the profile
        // dir is unique to this browser).
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
