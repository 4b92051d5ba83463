//! The agent's images: list, import (a tarball streamed in, verified), remove (refused while a
//! runtime here uses the image), export as an OCI layout, and send to a peer agent — how a
//! migration target that lacks a runtime's image receives it from the source, verified by digest.

use super::Agent;
use crate::api::SendImageRequest;
use crate::image::ImageRecord;
use crate::{Error, Result};
use axum::body::Body;
use bytes::Bytes;

impl Agent {
    pub fn image_list(&self) -> Vec<ImageRecord> {
        self.host.image_store().list()
    }

    /// Imports an image tarball read from `input`. Blocking.
    pub fn import_image_blocking(
        &self,
        input: impl std::io::Read,
        name: Option<&str>,
    ) -> Result<ImageRecord> {
        if let Some(n) = name {
            crate::image::check_name(n)?;
        }
        let store = self.host.image_store();
        let rec = store.import(input, name, &|i, n| {
            tracing::debug!(layer = i, of = n, "importing image")
        })?;
        if rec.mrp_server.is_none() {
            tracing::warn!(image = %rec.name, "imported image has no mrmd-python on its PATH: runtimes cannot be created from it");
        }
        Ok(rec)
    }

    pub fn remove_image(&self, name: &str) -> Result<ImageRecord> {
        let users: Vec<String> = self
            .specs()
            .into_iter()
            .filter(|s| s.image == name)
            .map(|s| s.name)
            .collect();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "image {name} is used by runtime(s) {} on host {}: remove them first",
                users.join(", "),
                self.host.name
            )));
        }
        self.host.image_store().remove(name)
    }

    /// Image `name` as an OCI image layout tar stream, produced on a blocking thread as it is sent.
    pub fn image_body(&self, name: &str) -> Result<Body> {
        let rec = self.host.image_store().get(name)?;
        if !rec.sendable() {
            return Err(Error::Invalid(format!(
                "image {name} was built on host {} (`ferry image build`) and has no layers to send: build it on the other host too",
                self.host.name
            )));
        }
        let store = self.host.image_store();
        let name = name.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
        tokio::task::spawn_blocking(move || {
            let w = super::api::ChannelWriter::new(tx.clone());
            if let Err(e) = store.export(&name, w) {
                tracing::warn!(image = %name, error = %e, "image stream failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        Ok(Body::from_stream(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        )))
    }

    /// Streams image `name` to a peer agent, which verifies every digest; returns its record there.
    pub async fn send_image(&self, name: &str, r: &SendImageRequest) -> Result<ImageRecord> {
        let t0 = std::time::Instant::now();
        let body = self.image_body(name)?;
        let path = format!("/agent/v1/images/import?name={}", name);
        let bytes = self
            .put_to_peer(&r.target_url, &r.target_token, &path, body)
            .await?;
        let rec: ImageRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("target answer: {e}")))?;
        let here = self.host.image_store().get(name)?;
        if rec.digest != here.digest {
            return Err(Error::Internal(format!(
                "image {name} arrived as {} instead of {}",
                rec.digest, here.digest
            )));
        }
        tracing::info!(image = %name, digest = %rec.digest, target = %r.target_url, ms = t0.elapsed().as_millis() as u64, "image sent");
        Ok(rec)
    }
}
