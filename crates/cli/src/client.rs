//! The CLI's client for the control API.

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

pub struct Client {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// Finds the server (`--url`, `FERRY_URL`, or the address `ferry serve` wrote into the state
    /// dir) and the token (`--token`, `FERRY_TOKEN`, or the state dir's token file).
    /// With `ca`, an `https://` server must have a certificate signed by it.
    pub fn new(
        url: Option<String>,
        token: Option<String>,
        state_dir: &Path,
        ca: Option<&Path>,
    ) -> Result<Client> {
        let url = url
            .or_else(|| {
                std::fs::read_to_string(state_dir.join("serve.url"))
                    .ok()
                    .map(|a| a.trim().to_string())
            })
            .or_else(|| {
                std::fs::read_to_string(state_dir.join("serve.addr"))
                    .ok()
                    .map(|a| format!("http://{}", a.trim()))
            })
            .unwrap_or_else(|| "http://127.0.0.1:7700".into());
        let token = match token {
            Some(t) => t,
            None => std::fs::read_to_string(state_dir.join("token"))
                .map(|t| t.trim().to_string())
                .with_context(|| format!("no token: pass --token or FERRY_TOKEN, or run as root so the CLI can read {}/token", state_dir.display()))?,
        };
        if url.starts_with("https://") && ca.is_none() {
            return Err(anyhow!("{url} speaks TLS: pass --ca FILE (or FERRY_CA) with the CA certificate that signed its certificate"));
        }
        let http = ferry_core::tls::http_client(ca, reqwest::Client::builder())?;
        Ok(Client {
            url: url.trim_end_matches('/').into(),
            token,
            http,
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let r = rb.send().await.map_err(|e| {
            anyhow!(
                "cannot reach ferry at {} ({}): is `ferry serve` running?",
                self.url,
                chain(&e)
            )
        })?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(text);
        tracing::debug!(%status, "error answer");
        Err(anyhow!("{msg}"))
    }

    pub async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        let r = self.send_raw(rb).await?;
        Ok(r.json().await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}

/// An error with its causes ("error sending request: ...: invalid peer certificate: ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}
