//! The control plane's side of runtime credentials: it builds the proxy's credential check from
//! the database (the signing key, every runtime's token), keeps its cache fresh, and shows,
//! rotates and signs tokens for `ferry token`.

use super::Control;
use crate::access::Access;
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// The proxy's check, with every runtime's current token loaded.
pub(super) async fn open(cfg: &super::ControlConfig, db: &super::Db) -> Result<Arc<Access>> {
    let key = db.signing_key().await?;
    let mut a = Access::new(cfg.proxy_auth, &cfg.token, &key);
    a.secure = cfg.proxy_tls;
    a.editor_dir = cfg.editor_dir.clone();
    a.replace_all(db.access_tokens().await?);
    Ok(Arc::new(a))
}

impl Control {
    /// Lets the proxy read a token its cache does not hold yet (a runtime another instance made
    /// within the last refresh): one database read for that name.
    pub(super) fn wire_access(self: &Arc<Control>) {
        let weak = Arc::downgrade(self);
        self.access.set_lookup(Arc::new(move |name: String| {
            let c = weak.upgrade();
            Box::pin(async move { c?.db.access_token(&name).await.ok().flatten() })
        }));
    }

    /// Reloads every runtime's token every [`crate::access::REFRESH`]: a token rotated (or a
    /// runtime removed) through another instance stops working here within that time.
    pub async fn access_loop(self: Arc<Control>) {
        loop {
            tokio::time::sleep(crate::access::REFRESH).await;
            let since = self.access.generation();
            match self.db.access_tokens().await {
                Ok(all) => self.access.refresh(since, all),
                Err(e) => {
                    tracing::warn!(error = %e, "could not refresh the runtimes' access tokens")
                }
            }
        }
    }

    /// Runtime `name`'s access token.
    pub async fn access_token(&self, name: &str) -> Result<String> {
        self.runtime_row(name).await?;
        self.db
            .access_token(name)
            .await?
            .ok_or_else(|| Error::Internal(format!("runtime {name} has no access token")))
    }

    /// Gives runtime `name` a new access token: the old one, and every browser session made from
    /// any credential, stop working at once on this instance (within [`crate::access::REFRESH`]
    /// on the others).
    pub async fn rotate_access_token(&self, name: &str) -> Result<String> {
        self.runtime_row(name).await?;
        let t = self.db.rotate_access_token(name).await?;
        self.access.set(name, &t);
        self.event(
            Some(name),
            "runtime.token_rotated",
            "access token rotated",
            serde_json::Value::Null,
        )
        .await;
        Ok(t)
    }

    /// A signed token for runtime `name`, valid for `ttl`: (token, expiry unix seconds).
    pub async fn signed_token(&self, name: &str, ttl: Duration) -> Result<(String, u64)> {
        self.runtime_row(name).await?;
        if ttl.is_zero() || ttl > Duration::from_secs(366 * 86400) {
            return Err(Error::Invalid("--ttl must be between 1s and 366d".into()));
        }
        Ok(self.access.mint(name, ttl))
    }

    /// The signing key of signed tokens (hex), for platforms that mint their own.
    pub async fn signing_key(&self) -> Result<String> {
        self.db.signing_key().await
    }
}
