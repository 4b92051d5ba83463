//! Webhooks: every event, POSTed as JSON to each registered URL that wants its kind, signed with
//! HMAC-SHA256 of the body under the webhook's secret (`X-Ferry-Signature: sha256=<hex>`), retried
//! with exponential backoff (5 attempts), each attempt kept in the delivery log.

use super::Control;
use crate::api::Event;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

pub const SIGNATURE_HEADER: &str = "X-Ferry-Signature";
const ATTEMPTS: i64 = 5;

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Control {
    /// Runs forever: delivers every event to the webhooks that want it.
    pub async fn webhook_loop(self: Arc<Self>) {
        let mut rx = self.events.subscribe();
        // Receivers are the users' own services: `https://` ones are checked against this
        // system's CA certificates.
        let builder = || reqwest::Client::builder().timeout(Duration::from_secs(10));
        let http = crate::tls::system_roots_client(builder()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "webhooks to https:// receivers will fail");
            builder().build().expect("http client")
        });
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "webhook deliveries fell behind");
                    continue;
                }
                Err(_) => return,
            };
            if ev.id == 0 {
                continue; // transient progress, not a recorded event
            }
            for hook in self.db.webhooks().await.unwrap_or_default() {
                if !hook.kinds.is_empty()
                    && !hook.kinds.iter().any(|k| ev.kind.starts_with(k.as_str()))
                {
                    continue;
                }
                let c = self.clone();
                let http = http.clone();
                let ev = ev.clone();
                tokio::spawn(async move { c.deliver(&http, &hook, &ev).await });
            }
        }
    }

    async fn deliver(&self, http: &reqwest::Client, hook: &super::db::Webhook, ev: &Event) {
        let body = serde_json::to_vec(ev).expect("events serialize");
        let signature = sign(&hook.secret, &body);
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let r = http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header("X-Ferry-Event", &ev.kind)
                .body(body.clone())
                .send()
                .await;
            let (status, error) = match &r {
                Ok(resp) if resp.status().is_success() => {
                    (Some(resp.status().as_u16() as i64), None)
                }
                Ok(resp) => (
                    Some(resp.status().as_u16() as i64),
                    Some(format!("answered {}", resp.status())),
                ),
                Err(e) => (None, Some(e.to_string())),
            };
            let _ = self
                .db
                .add_delivery(hook.id, ev.id, attempt, status, error.as_deref())
                .await;
            if error.is_none() {
                return;
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::warn!(
            webhook = hook.id,
            event = ev.id,
            "webhook delivery failed after {ATTEMPTS} attempts"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
