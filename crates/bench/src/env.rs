//! The bench's own world: simulated hosts brought up for the run and removed after it, and a
//! client of the control API.

use crate::BenchOptions;
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub struct Env {
    pub state: PathBuf,
    pub prefix: String,
    pub api: Api,
    /// `ADDR:PORT` of the proxy.
    pub proxy: String,
    pub criu_version: String,
}

impl Env {
    pub async fn up(o: &BenchOptions) -> Result<Env> {
        let pid = std::process::id();
        let state = std::env::temp_dir().join(format!("ferry-bench-{pid}"));
        let prefix = format!("fb{}-", pid % 10000);
        let dev = ferry_core::dev::DevOptions {
            state_dir: state.clone(),
            hosts: 3,
            prefix: prefix.clone(),
            // Distinct per bench process, so that benches may run side by side.
            net: format!("10.{}.{}.0", 210 + pid % 20, (pid / 20) % 256).parse()?,
            subnet: format!("10.{}.{}.0", 230 + pid % 20, ((pid / 20) % 64) * 4).parse()?,
            images_dir: o.images_dir.clone(),
            images_per_host: false,
            listen: "127.0.0.1:0".parse()?,
            proxy_listen: "127.0.0.1:0".parse()?,
            bin: o.bin.clone(),
            // The bench measures what it asks for: no automatic migrations or hibernation.
            serve_args: vec!["--no-auto".into()],
            tls: false,
        };
        let st = ferry_core::dev::up(&dev).await?;
        let token = std::fs::read_to_string(state.join("token"))?
            .trim()
            .to_string();
        let api = Api {
            url: st.serve_url.clone(),
            token,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?,
        };
        api.get("/info").await?; // the control plane answers with its token
        let criu_version = ferry_core::sys::criu::Criu::detect().await.version;
        Ok(Env {
            state,
            prefix,
            api,
            proxy: st.proxy_url.trim_start_matches("http://").to_string(),
            criu_version,
        })
    }

    pub async fn down(&self) {
        ferry_core::dev::down(&self.state, &self.prefix).await;
    }
}

pub struct Api {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let r = rb
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(anyhow!(
                "{status}: {}",
                v["error"]["message"].as_str().unwrap_or("")
            ));
        }
        Ok(v)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}/api/v1{path}", self.url)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.url))
                .json(&body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}/api/v1{path}", self.url)))
            .await
    }

    pub async fn create(&self, name: &str, host: &str, memory_mb: u64) -> Result<Value> {
        self.post("/runtimes", serde_json::json!({"name": name, "host": host, "memory": format!("{memory_mb}M"), "cpus": 1.0})).await
    }

    /// Runs code; an error in the code is an error here.
    pub async fn exec(&self, name: &str, code: &str) -> Result<Value> {
        let v = self
            .post(
                &format!("/runtimes/{name}/exec"),
                serde_json::json!({"code": code}),
            )
            .await?;
        if !v["error"].is_null() {
            return Err(anyhow!("python error in {name}: {}", v["error"]));
        }
        Ok(v)
    }

    /// Runtime `name`'s access token for the proxy.
    pub async fn token(&self, name: &str) -> Result<String> {
        let v = self.get(&format!("/runtimes/{name}/token")).await?;
        v["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("no token for {name}: {v}"))
    }

    pub async fn remove(&self, name: &str) {
        let _ = self.delete(&format!("/runtimes/{name}?force=true")).await;
    }

    /// Timings of the newest operation of `kind` on `runtime`.
    pub async fn last_timings(&self, runtime: &str, kind: &str) -> Result<Value> {
        let ops = self
            .get(&format!("/operations?runtime={runtime}&limit=20"))
            .await?;
        ops.as_array()
            .into_iter()
            .flatten()
            .find(|o| o["kind"] == kind)
            .map(|o| o["timings"].clone())
            .ok_or_else(|| anyhow!("no {kind} operation for {runtime}"))
    }

    /// Size of a snapshot's archive, streamed and counted.
    pub async fn archive_len(&self, snapshot: &str) -> Result<u64> {
        use futures::StreamExt;
        let r = self
            .http
            .get(format!("{}/api/v1/snapshots/{snapshot}/export", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let mut n = 0u64;
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            n += c?.len() as u64;
        }
        Ok(n)
    }
}

pub fn ms(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}
