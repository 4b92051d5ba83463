//! Hibernate and wake: a runtime that is not being used gives its host's memory back. Hibernating
//! is a checkpoint that stops it (state `hibernated`); the next request through the proxy wakes
//! it — held, restored from that snapshot, then answered — and so does `ferry wake`.
//!
//! Does not (yet): decide by itself when a runtime is idle (the monitor's job).

use super::Control;
use crate::api::Runtime;
use crate::{Error, Result};

impl Control {
    pub async fn hibernate(&self, name: &str, reason: &str) -> Result<Runtime> {
        let snap = self.checkpoint_as(name, false, "hib").await?;
        let row = self.runtime_row(name).await?;
        self.set_state(
            &row,
            "hibernated",
            Some(&format!(
                "{reason}; wakes on the next request (snapshot {})",
                snap.id
            )),
        )
        .await?;
        self.drop_older_automatic_snapshots(&row.id, &snap.id).await;
        self.event(
            Some(name),
            "runtime.hibernated",
            reason,
            serde_json::json!({"snapshot": snap.id, "memory_mb": row.plan.memory_mb}),
        )
        .await;
        self.inspect(name).await
    }

    pub async fn wake(&self, name: &str) -> Result<Runtime> {
        let row = self.runtime_row(name).await?;
        if row.state != "hibernated" {
            return Err(Error::Conflict(format!(
                "runtime {name} is {}, not hibernated",
                row.state
            )));
        }
        let snap = row.last_snapshot.clone().ok_or_else(|| {
            Error::Internal(format!("runtime {name} is hibernated but has no snapshot"))
        })?;
        let t0 = std::time::Instant::now();
        let rt = self.restore(&snap, Some(name), None).await?;
        self.event(
            Some(name),
            "runtime.woken",
            &format!("restored from {snap} in {} ms", t0.elapsed().as_millis()),
            serde_json::json!({"snapshot": snap}),
        )
        .await;
        Ok(rt)
    }
}
