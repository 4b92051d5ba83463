//! The seed's migration method as an operation, for `ferry bench --baseline` only: checkpoint
//! with leave-running, archive file, copy, unpack, restore, switch. The source is never frozen; it
//! keeps running until the switch (and is then removed, so that one copy remains), so updates made
//! during the copy are lost — which is what the bench measures.

use super::{new_id, Control};
use crate::api::{Migration, Timings};
use crate::container::ms;
use crate::{Error, Result};
use std::time::Instant;

impl Control {
    pub async fn baseline_migrate(&self, name: &str, to: &str) -> Result<Migration> {
        let row = self.runtime_row(name).await?;
        self.require_running(&row)?;
        if row.host == to {
            return Err(Error::Invalid(format!(
                "runtime {name} already runs on {to}"
            )));
        }
        let source = self.agent(&row.host)?;
        let target = self.agent(to)?;
        let _busy = self.claim(&row.id, name).await?;
        let detail = serde_json::json!({"mode": "baseline", "from": row.host, "to": to});
        self.journal("baseline-migrate", Some(name), detail, async {
            let snap = new_id("base");
            let t0 = Instant::now();
            let mut t = Timings::new();
            let export = source.baseline_export(&row.id, &snap).await?;
            let archive_bytes = export["archive_bytes"].as_u64().unwrap_or(0);
            for (k, v) in export["timings"].as_object().into_iter().flatten() {
                t.insert(k.clone(), v.as_f64().unwrap_or(0.0));
            }
            t.extend(
                source
                    .baseline_send(&snap, &target.url, &self.cfg.agent_token)
                    .await?,
            );
            t.extend(target.baseline_restore(&snap, &self.spec_of(&row)).await?);
            self.db.set_host(&row.id, to).await?;
            let mut moved = row.clone();
            moved.host = to.to_string();
            self.set_state(&moved, "running", None).await?;
            t.insert("total_ms".into(), ms(t0));
            let _ = source.remove(&row.id).await;
            let m = Migration {
                runtime: name.into(),
                mode: "baseline".into(),
                from: row.host.clone(),
                to: to.into(),
                snapshot: None,
                archive_bytes,
                timings: t.clone(),
            };
            Ok((m, t))
        })
        .await
    }
}
