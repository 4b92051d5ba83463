//! Images across hosts: each agent keeps its own (on its disk) and reports them with their
//! digests; the control plane lists them, imports to a host, removes, and makes sure a host has a
//! runtime's image before a runtime is created or moved there — sending it from a host that has
//! it (agent to agent, verified by digest on arrival) or refusing before anything changes.

use super::Control;
use crate::api::{HostImage, SendImageRequest};
use crate::image::ImageRecord;
use crate::{Error, Result};

impl Control {
    /// Every host's images (hosts that do not answer are left out, with a warning in the log).
    pub async fn images(&self, host: Option<&str>) -> Result<Vec<HostImage>> {
        let mut out = Vec::new();
        for name in self
            .db
            .hosts()
            .await?
            .into_iter()
            .map(|h| h.name)
            .filter(|n| host.is_none_or(|w| w == n))
        {
            match self.agent(&name)?.images().await {
                Ok(v) => out.extend(v.into_iter().map(|image| HostImage {
                    host: name.clone(),
                    image,
                })),
                Err(e) => tracing::warn!(host = %name, error = %e, "host did not list its images"),
            }
        }
        if let Some(h) = host {
            self.agent(h)?;
        }
        Ok(out)
    }

    /// Imports an image tarball on `host` (default: the only host, or `local`).
    pub async fn import_image(
        &self,
        body: reqwest::Body,
        host: Option<&str>,
        name: Option<&str>,
    ) -> Result<HostImage> {
        let hosts = self.db.hosts().await?;
        let host = match host {
            Some(h) => h.to_string(),
            None if hosts.len() == 1 => hosts[0].name.clone(),
            None if hosts.iter().any(|h| h.name == "local") => "local".into(),
            None => return Err(Error::Invalid("several hosts: say which one gets the image with --host (the others receive it when a runtime needs it)".into())),
        };
        let image = self.agent(&host)?.import_image(name, body).await?;
        self.event(
            None,
            "image.imported",
            &format!("image {} ({}) imported on {host}", image.name, image.digest),
            serde_json::json!({"host": host, "digest": image.digest}),
        )
        .await;
        Ok(HostImage { host, image })
    }

    /// Removes image `name` from `host`, or from every host that has it.
    pub async fn remove_image(&self, name: &str, host: Option<&str>) -> Result<Vec<HostImage>> {
        let holders: Vec<HostImage> = self
            .images(host)
            .await?
            .into_iter()
            .filter(|i| i.image.name == name)
            .collect();
        if holders.is_empty() {
            return Err(Error::NotFound(format!(
                "no image {name:?}{}: see `ferry image ls`",
                host.map(|h| format!(" on host {h}")).unwrap_or_default()
            )));
        }
        let in_use: Vec<String> = self
            .db
            .runtimes()
            .await?
            .into_iter()
            .filter(|r| r.image == name && holders.iter().any(|h| h.host == r.host))
            .map(|r| r.name)
            .collect();
        if !in_use.is_empty() {
            return Err(Error::Conflict(format!(
                "image {name} is used by runtime(s) {}: remove them first",
                in_use.join(", ")
            )));
        }
        for h in &holders {
            self.agent(&h.host)?.remove_image(name).await?;
        }
        self.event(
            None,
            "image.removed",
            &format!("image {name} removed"),
            serde_json::json!({"hosts": holders.iter().map(|h| &h.host).collect::<Vec<_>>()}),
        )
        .await;
        Ok(holders)
    }

    /// Makes sure `host` has image `name` (as the hosts that already run it have it). A host that
    /// lacks it receives it from one that has it; a built image cannot be sent, and a different
    /// image under the same name is not replaced: both are refused with what to do.
    pub async fn ensure_image(&self, host: &str, name: &str) -> Result<ImageRecord> {
        let all = self.images(None).await?;
        let want: Option<&HostImage> = all
            .iter()
            .find(|i| i.image.name == name && i.host != host && i.image.sendable())
            .or_else(|| all.iter().find(|i| i.image.name == name));
        let here = all.iter().find(|i| i.host == host && i.image.name == name);
        match (here, want) {
            (Some(h), Some(w)) if w.image.sendable() && h.image.digest != w.image.digest => Err(Error::Conflict(format!(
                "host {host} has another image named {name} ({}) than host {} ({}): remove it there (`ferry image rm {name} --host {host}`) and try again",
                h.image.digest, w.host, w.image.digest
            ))),
            (Some(h), _) => Ok(h.image.clone()),
            (None, None) => Err(Error::NotFound(format!("no host has image {name:?}: import it with `ferry image import FILE` (see `ferry image ls`)"))),
            (None, Some(w)) if !w.image.sendable() => Err(Error::Conflict(format!(
                "host {host} lacks image {name}, which was built on host {} and cannot be sent: build it on {host} (`ferry image build` there); nothing was changed",
                w.host
            ))),
            (None, Some(w)) => {
                let t0 = std::time::Instant::now();
                tracing::info!(image = %name, from = %w.host, to = %host, "sending an image to a host that lacks it");
                let target = self.agent(host)?;
                let req = SendImageRequest { target_url: target.url.clone(), target_token: self.cfg.agent_token.clone() };
                let rec = self.agent(&w.host)?.send_image(name, &req).await.map_err(|e| Error::Unavailable(format!("host {host} lacks image {name} and sending it from {} failed: {e}; nothing was changed", w.host)))?;
                self.event(None, "image.sent", &format!("image {name} sent from {} to {host}", w.host), serde_json::json!({"digest": rec.digest, "ms": t0.elapsed().as_millis() as u64})).await;
                Ok(rec)
            }
        }
    }
}
