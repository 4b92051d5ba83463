//! The control plane's client for an agent's API.

use crate::api::*;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

#[derive(Clone)]
pub struct AgentClient {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

/// Turns an error answer of a ferry API back into an [`Error`] of the same kind.
pub async fn check(r: reqwest::Response) -> Result<reqwest::Response> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let kind = v["error"]["kind"].as_str().unwrap_or("").to_string();
    let msg = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(text);
    Err(Error::from_api(status, &kind, msg))
}

/// The longest a call that does no heavy work may take (a host behind a dead link never answers).
const QUICK: Duration = Duration::from_secs(30);

impl AgentClient {
    /// A client of the agent at `url`; `tls` says which CA to trust for `https://` agents.
    pub fn new(url: &str, token: &str, tls: Option<&rustls::ClientConfig>) -> AgentClient {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(5));
        let http = crate::tls::with_tls(builder, tls)
            .build()
            .expect("http client");
        AgentClient {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(m, format!("{}/agent/v1{path}", self.url))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        let r = rb
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("agent {} unreachable: {e}", self.url)))?;
        check(r)
            .await?
            .json()
            .await
            .map_err(|e| Error::Internal(format!("agent {}: bad answer: {e}", self.url)))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(
            self.req(reqwest::Method::GET, path)
                .timeout(Duration::from_secs(10)),
        )
        .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn info(&self) -> Result<AgentInfo> {
        self.get("/info").await
    }
    pub async fn list(&self) -> Result<Vec<AgentRuntime>> {
        self.get("/runtimes").await
    }
    pub async fn runtime(&self, id: &str) -> Result<AgentRuntime> {
        self.get(&format!("/runtimes/{id}")).await
    }
    /// The runtime once the operation under way on it (a checkpoint, a send, a restore) is over.
    pub async fn runtime_settled(&self, id: &str) -> Result<AgentRuntime> {
        self.send(
            self.req(reqwest::Method::GET, &format!("/runtimes/{id}/settled"))
                .timeout(Duration::from_secs(900)),
        )
        .await
    }
    pub async fn create(&self, spec: &RuntimeSpec) -> Result<AgentRuntime> {
        self.post("/runtimes", spec).await
    }
    pub async fn stop(&self, id: &str) -> Result<AgentRuntime> {
        self.post(&format!("/runtimes/{id}/stop"), &()).await
    }
    pub async fn remove(&self, id: &str) -> Result<serde_json::Value> {
        self.send(
            self.req(reqwest::Method::DELETE, &format!("/runtimes/{id}"))
                .timeout(QUICK),
        )
        .await
    }
    pub async fn freeze(&self, id: &str) -> Result<AgentRuntime> {
        self.post(&format!("/runtimes/{id}/freeze"), &()).await
    }
    pub async fn thaw(&self, id: &str) -> Result<AgentRuntime> {
        self.post(&format!("/runtimes/{id}/thaw"), &()).await
    }
    pub async fn checkpoint(&self, id: &str, req: &CheckpointRequest) -> Result<SnapshotInfo> {
        self.post(&format!("/runtimes/{id}/checkpoint"), req).await
    }
    /// Prepares the target of a migration before the freeze (see `Agent::prepare`).
    pub async fn prepare(&self, spec: &RuntimeSpec) -> Result<crate::api::Timings> {
        self.post("/prepare", spec).await
    }
    pub async fn restore(&self, req: &RestoreRequest) -> Result<AgentRuntime> {
        self.post("/restore", req).await
    }
    pub async fn send_runtime(&self, id: &str, req: &SendRequest) -> Result<SendResult> {
        self.post(&format!("/runtimes/{id}/send"), req).await
    }
    pub async fn baseline_export(&self, id: &str, snapshot: &str) -> Result<serde_json::Value> {
        self.post(&format!("/runtimes/{id}/baseline-export"), &snapshot)
            .await
    }
    pub async fn baseline_send(
        &self,
        snapshot: &str,
        target_url: &str,
        target_token: &str,
    ) -> Result<Timings> {
        self.post(
            &format!("/baseline/{snapshot}/send"),
            &(target_url, target_token),
        )
        .await
    }
    pub async fn baseline_restore(&self, snapshot: &str, spec: &RuntimeSpec) -> Result<Timings> {
        self.post(&format!("/baseline/{snapshot}/restore"), spec)
            .await
    }
    pub async fn lazy_status(&self, snapshot: &str) -> Result<LazyStatus> {
        self.get(&format!("/lazy/{snapshot}")).await
    }
    /// Stops a lazy dump of runtime `id` that is serving pages, and thaws the runtime here.
    pub async fn lazy_abort(&self, id: &str, snapshot: &str) -> Result<serde_json::Value> {
        self.post(&format!("/lazy/{snapshot}/abort"), &id).await
    }
    pub async fn snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        self.get(&format!("/snapshots/{id}")).await
    }
    /// Checks every file of the snapshot against its manifest's sha256 sums.
    pub async fn verify_snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        self.post(&format!("/snapshots/{id}/verify"), &()).await
    }
    /// Runs a pre-copy move's rounds at the source (the tracker stays for the `send` that follows).
    pub async fn precopy(&self, id: &str, req: &SendRequest) -> Result<Timings> {
        self.post(&format!("/runtimes/{id}/precopy"), req).await
    }
    pub async fn remove_snapshot(&self, id: &str) -> Result<serde_json::Value> {
        self.send(
            self.req(reqwest::Method::DELETE, &format!("/snapshots/{id}"))
                .timeout(QUICK),
        )
        .await
    }

    /// The snapshot as an archive stream.
    pub async fn export(&self, id: &str) -> Result<reqwest::Response> {
        let r = self
            .req(reqwest::Method::GET, &format!("/snapshots/{id}/archive"))
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("agent {} unreachable: {e}", self.url)))?;
        check(r).await
    }

    /// Sends an archive stream to be imported (and verified) as snapshot `id`.
    pub async fn import(&self, id: &str, body: reqwest::Body) -> Result<SnapshotInfo> {
        self.send(
            self.req(reqwest::Method::PUT, &format!("/snapshots/{id}/archive"))
                .body(body),
        )
        .await
    }

    pub async fn images(&self) -> Result<Vec<crate::image::ImageRecord>> {
        self.get("/images").await
    }
    pub async fn remove_image(&self, name: &str) -> Result<crate::image::ImageRecord> {
        self.send(self.req(reqwest::Method::DELETE, &format!("/images/{name}")))
            .await
    }
    /// Streams an image tarball to be imported (and verified) on this agent.
    pub async fn import_image(
        &self,
        name: Option<&str>,
        body: reqwest::Body,
    ) -> Result<crate::image::ImageRecord> {
        let mut rb = self.req(reqwest::Method::PUT, "/images/import").body(body);
        if let Some(n) = name {
            rb = rb.query(&[("name", n)]);
        }
        self.send(rb).await
    }
    /// Has this agent send image `name` to the agent at `target_url`.
    pub async fn send_image(
        &self,
        name: &str,
        req: &SendImageRequest,
    ) -> Result<crate::image::ImageRecord> {
        self.post(&format!("/images/{name}/send"), req).await
    }
}
