//! Snapshots through the control plane: checkpoint, restore (same or new name), import, export.

use super::db::{now, RuntimeRow};
use super::{check_name, new_id, Control};
use crate::api::{CheckpointRequest, RestoreRequest, Runtime, Snapshot, SnapshotInfo};
use crate::{Error, Result};

pub fn to_snapshot(s: &SnapshotInfo) -> Snapshot {
    Snapshot {
        id: s.id.clone(),
        plan: s.plan.clone(),
        runtime_id: s.runtime_id.clone(),
        runtime_name: s.runtime_name.clone(),
        host: s.host.clone(),
        leave_running: s.leave_running,
        size_bytes: s.size_bytes,
        image_bytes: s.image_bytes,
        created_at: s
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        timings: s.timings.clone(),
    }
}

impl Control {
    pub async fn checkpoint(&self, name: &str, leave_running: bool) -> Result<Snapshot> {
        self.checkpoint_as(name, leave_running, "snap").await
    }

    /// A checkpoint whose snapshot id starts with `prefix` (`snap` for users', `hib` for
    /// hibernation's, which supersede each other).
    pub(crate) async fn checkpoint_as(
        &self,
        name: &str,
        leave_running: bool,
        prefix: &str,
    ) -> Result<Snapshot> {
        let row = self.runtime_row(name).await?;
        self.require_running(&row)?;
        let _busy = self.claim(&row.id, name).await?;
        let agent = self.agent(&row.host)?;
        let req = CheckpointRequest {
            snapshot_id: new_id(prefix),
            leave_running,
        };
        let info = self
            .journal(
                "checkpoint",
                Some(name),
                serde_json::json!({"leave_running": leave_running, "snapshot": req.snapshot_id}),
                async {
                    agent.checkpoint(&row.id, &req).await.map(|s| {
                        let t = s.timings.clone();
                        (s, t)
                    })
                },
            )
            .await?;
        let snap = to_snapshot(&info);
        self.db.insert_snapshot(&snap).await?;
        self.db.set_last_snapshot(&row.id, &snap.id).await?;
        if !leave_running {
            self.set_state(
                &row,
                "checkpointed",
                Some(&format!("checkpointed to {}", snap.id)),
            )
            .await?;
        }
        self.event(
            Some(name),
            "runtime.checkpointed",
            &format!("snapshot {} ({} bytes)", snap.id, snap.size_bytes),
            serde_json::json!({"leave_running": leave_running}),
        )
        .await;
        Ok(snap)
    }

    pub async fn snapshot(&self, id: &str) -> Result<Snapshot> {
        self.db
            .snapshot(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no snapshot {id:?}: see `ferry snapshots`")))
    }

    /// Restores `snapshot` as `name` (default: the runtime it was taken from). The name must be
    /// free, or belong to that same runtime while it is not running.
    /// With `plan`, the runtime comes back with those limits instead of the snapshot's.
    pub async fn restore(
        &self,
        snapshot: &str,
        name: Option<&str>,
        plan: Option<crate::plan::Plan>,
    ) -> Result<Runtime> {
        let mut snap = self.snapshot(snapshot).await?;
        // From a verified replica on another host when the snapshot's own host is dead.
        snap.host = self.snapshot_source(&snap, None).await;
        let name = name.unwrap_or(&snap.runtime_name).to_string();
        check_name(&name)?;
        let existing = self.db.runtime_by_name(&name).await?;
        let lease = self.new_lease();
        let (row, fresh) = match existing {
            Some(r) if r.id == snap.runtime_id && r.state != "running" && r.state != "paused" && !self.is_busy(&r.id) => (r, false),
            Some(r) => {
                return Err(Error::Conflict(format!(
                    "a runtime named {name:?} already exists ({}): restore under another name with --name NEW, or remove it first",
                    r.state
                )))
            }
            None => {
                let plan = snap.plan.clone();
                let image = match self.agent(&snap.host)?.snapshot(&snap.id).await {
                    Ok(info) => info.runtime_image.unwrap_or_else(|| self.cfg.default_image.clone()),
                    Err(_) => self.cfg.default_image.clone(),
                };
                let original = self.db.runtime_by_id(&snap.runtime_id).await?;
                // The copy keeps the policy of the runtime it was taken from, while that exists.
                let egress = original.as_ref().and_then(|r| r.egress.clone());
                let id = if original.is_some() || name != snap.runtime_name { new_id("rt") } else { snap.runtime_id.clone() };
                let mut row = RuntimeRow {
                    id, name: name.clone(), host: snap.host.clone(), plan, image, net_index: 0,
                    state: "restoring".into(), state_reason: None, created_at: now(), started_at: None, last_snapshot: Some(snap.id.clone()), auto: true, leased_by: None, egress, addrs: None, route_epoch: 0,
                };
                self.db.insert_runtime_new_slot(&mut row, Some(&lease)).await.map_err(|e| Error::Conflict(format!("cannot restore as {name}: {e}")))?;
                (row, true)
            }
        };
        if row.host != snap.host {
            self.db.set_host(&row.id, &snap.host).await?;
        }
        let _busy = match self.claim_with(&row.id, &name, lease).await {
            Ok(b) => b,
            Err(e) => {
                if fresh {
                    self.db.delete_runtime(&row.id).await?;
                }
                return Err(e);
            }
        };
        let mut row = row;
        row.host = snap.host.clone();
        let old_plan = row.plan.clone();
        if let Some(p) = plan {
            let cap = self
                .db
                .hosts()
                .await?
                .into_iter()
                .find(|h| h.name == row.host)
                .map(|h| h.capacity_mb)
                .unwrap_or(0);
            // A fresh row already counts (it is "restoring") with the snapshot's plan.
            let used = self.used_mb(&row.host).await?.saturating_sub(if fresh {
                old_plan.memory_mb
            } else {
                0
            });
            if used + p.memory_mb > cap {
                if fresh {
                    self.db.delete_runtime(&row.id).await?;
                }
                return Err(Error::Conflict(format!(
                    "host {} has {} MB free, not enough for {} MB: choose a smaller plan",
                    row.host,
                    cap.saturating_sub(used),
                    p.memory_mb
                )));
            }
            self.db.set_plan(&row.id, &p).await?;
            row.plan = p;
        }
        let spec = self.spec_of(&row);
        let agent = self.agent(&snap.host)?;
        let req = RestoreRequest {
            snapshot_id: snap.id.clone(),
            spec,
            verify: true,
            lazy_from: None,
        };
        let prev_state = row.state.clone();
        if !fresh {
            // A stopped or exited runtime of the same id: clear its old container first.
            let _ = agent.remove(&row.id).await;
            // Recorded before the agent acts: the proxy holds requests meanwhile, and a control
            // plane restarted mid-way knows to settle it.
            self.set_state(
                &row,
                "restoring",
                Some(&format!("restoring from snapshot {}", snap.id)),
            )
            .await?;
        }
        let r = self
            .journal(
                "restore",
                Some(&name),
                serde_json::json!({"snapshot": snap.id, "host": snap.host}),
                async {
                    agent.restore(&req).await.map(|a| {
                        let t = a.timings.clone();
                        (a, t)
                    })
                },
            )
            .await;
        match r {
            Ok(_) => {
                self.set_state(&row, "running", None).await?;
                self.event(
                    Some(&name),
                    "runtime.restored",
                    &format!("restored from snapshot {}", snap.id),
                    serde_json::json!({"host": snap.host}),
                )
                .await;
                self.inspect(&name).await
            }
            Err(e) => {
                if fresh {
                    self.db.delete_runtime(&row.id).await?;
                } else {
                    self.db.set_plan(&row.id, &old_plan).await?;
                    self.set_state(&row, &prev_state, row.state_reason.as_deref())
                        .await?;
                }
                Err(e)
            }
        }
    }

    /// Imports an archive onto `host` (default: the one with most room); it is verified on arrival.
    pub async fn import(&self, body: reqwest::Body, host: Option<&str>) -> Result<Snapshot> {
        let host = self.place(host, 0).await?;
        let id = new_id("snap");
        let agent = self.agent_fresh(&host).await?;
        let info = self
            .journal(
                "import",
                None,
                serde_json::json!({"snapshot": id, "host": host}),
                async {
                    agent
                        .import(&id, body)
                        .await
                        .map(|s| (s, Default::default()))
                },
            )
            .await?;
        let snap = to_snapshot(&info);
        self.db.insert_snapshot(&snap).await?;
        self.event(
            None,
            "snapshot.imported",
            &format!(
                "snapshot {} of {} imported on {host}",
                snap.id, snap.runtime_name
            ),
            serde_json::json!({}),
        )
        .await;
        Ok(snap)
    }

    pub async fn export(&self, id: &str) -> Result<reqwest::Response> {
        let snap = self.snapshot(id).await?;
        self.agent(&snap.host)?.export(&snap.id).await
    }

    pub async fn remove_snapshot(&self, id: &str) -> Result<()> {
        let snap = self.snapshot(id).await?;
        match self.agent(&snap.host)?.remove_snapshot(&snap.id).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        for host in self.replica_hosts(Some(&snap.id)).await {
            if let Ok(a) = self.agent(&host) {
                let _ = a.remove_snapshot(&snap.id).await;
            }
        }
        self.db.delete_snapshot(id).await
    }
}
