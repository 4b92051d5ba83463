//! Recovery of what a control-plane instance left half-done when it stopped — this instance's
//! previous run, on start, or (with several instances on one database) another instance whose
//! heartbeat and leases expired: operations that were under way are closed as interrupted, and
//! runtimes caught between two states are settled from what the agents report — so that each runs
//! exactly once, or is checkpointed / hibernated with a verified snapshot, or is
//! reported lost with its last snapshot offered.
//!
//! - A migration interrupted before its switch was recorded: if the copy at the target runs, the
//!   move is completed (for lazy, once every page has arrived) and the frozen source removed;
//!   otherwise the source is thawed and whatever the target made is removed.
//! - A checkpoint (or hibernation) interrupted after the agent finished it: its snapshot is verified
//!   and recorded, and the runtime is `checkpointed` / `hibernated` if its container is gone.
//!   A partial snapshot is removed.
//! - Nothing is decided about a runtime while a host it may be on does not answer: the reconcile
//!   loop settles it once that host is back (a runtime left `migrating` by a source agent that died
//!   mid-transfer is settled the same way).

use super::db::RuntimeRow;
use super::Control;
use crate::api::{AgentRuntime, Operation};

impl Control {
    /// With `restarted`, this instance just started: what its previous run held is recovered at
    /// once. Otherwise (periodically, `lease.rs`) only what instances whose heartbeat and leases
    /// expired left: their operations are closed, and each runtime they left between states is
    /// settled under its lease, by one instance.
    pub async fn recover(&self, restarted: bool) {
        let me = restarted.then_some(self.cfg.instance_id.as_str());
        let mut interrupted: Vec<Operation> = Vec::new();
        for op in self.db.orphaned_operations(me).await.unwrap_or_default() {
            // Closed by one instance only; that one recovers what the operation left.
            if let Ok(true) = self
                .db
                .close_interrupted_op(
                    op.id,
                    "interrupted: the control-plane instance running it stopped",
                )
                .await
            {
                tracing::warn!(op = op.id, kind = %op.kind, runtime = ?op.runtime, "closed an operation its control-plane instance left unfinished");
                interrupted.push(op);
            }
        }
        for op in interrupted.iter().filter(|o| o.kind == "checkpoint") {
            self.recover_checkpoint(op).await;
        }
        let rows = self.db.runtimes().await.unwrap_or_default();
        let between =
            |r: &RuntimeRow| matches!(r.state.as_str(), "migrating" | "restoring" | "creating");
        for row in rows
            .into_iter()
            .filter(|r| between(r) && !self.is_busy(&r.id))
        {
            let orphaned = match &row.leased_by {
                None => true,
                Some(owner) => restarted && *owner == self.cfg.instance_id,
            };
            if !orphaned {
                continue;
            }
            // Take it over; if another instance is settling it right now, leave it to that one.
            if let Some((row, false)) = self.settle_claimed(&row.id, &row.name, between).await {
                tracing::warn!(runtime = %row.name, state = %row.state, "a host it may be on does not answer; it is settled when the host is back");
            }
        }
        for op in interrupted
            .iter()
            .filter(|o| matches!(o.kind.as_str(), "migrate" | "fork"))
        {
            self.remove_unrecorded_transfer(op).await;
        }
    }

    /// The snapshot an interrupted move streamed, on the hosts it went between, unless the move
    /// was completed and recorded it (runtimes are settled first).
    async fn remove_unrecorded_transfer(&self, op: &Operation) {
        let Some(snap) = op.detail["snapshot"].as_str() else {
            return;
        };
        if self.db.snapshot(snap).await.ok().flatten().is_some() {
            return;
        }
        for host in [&op.detail["from"], &op.detail["to"]]
            .into_iter()
            .filter_map(|h| h.as_str())
        {
            if let Ok(agent) = self.agent(host) {
                if agent.remove_snapshot(snap).await.is_ok() {
                    tracing::info!(
                        snapshot = snap,
                        host,
                        "removed the snapshot of an interrupted move"
                    );
                }
            }
        }
    }

    /// A checkpoint the control plane did not see finish: if the agent has the snapshot and it
    /// verifies, record it (the agent finished); otherwise remove what is there.
    async fn recover_checkpoint(&self, op: &Operation) {
        let (Some(name), Some(snap_id)) = (op.runtime.as_deref(), op.detail["snapshot"].as_str())
        else {
            return;
        };
        let Ok(Some(row)) = self.db.runtime_by_name(name).await else {
            return;
        };
        let Ok(agent) = self.agent(&row.host) else {
            return;
        };
        if self.db.snapshot(snap_id).await.ok().flatten().is_some() {
            return;
        }
        let leave_running = op.detail["leave_running"].as_bool().unwrap_or(false);
        // The agent finishes what it was doing even when its caller died: wait for that first.
        let container = match agent.runtime_settled(&row.id).await {
            Ok(a) => Some(a.status),
            Err(crate::Error::NotFound(_)) => None,
            Err(_) => return,
        };
        let decision = match agent.verify_snapshot(snap_id).await {
            Ok(info) => {
                let snap = super::snapshots::to_snapshot(&info);
                let _ = self.db.insert_snapshot(&snap).await;
                let _ = self.db.set_last_snapshot(&row.id, &snap.id).await;
                let gone = !matches!(container.as_deref(), Some("running") | Some("paused"));
                if !leave_running && gone {
                    let (state, reason) = if snap_id.starts_with("hib") {
                        (
                            "hibernated",
                            format!("hibernated; wakes on the next request (snapshot {snap_id})"),
                        )
                    } else {
                        ("checkpointed", format!("checkpointed to {snap_id}"))
                    };
                    let _ = self.set_state(&row, state, Some(&reason)).await;
                }
                format!("its interrupted checkpoint had finished: snapshot {snap_id} verified and recorded")
            }
            Err(crate::Error::Unavailable(_)) => return,
            Err(e) => {
                let _ = agent.remove_snapshot(snap_id).await;
                format!("its interrupted checkpoint had not finished ({e}); the partial snapshot was removed")
            }
        };
        self.event(
            Some(name),
            "runtime.recovered",
            &decision,
            serde_json::json!({"operation": op.id}),
        )
        .await;
    }

    /// The runtime's last full snapshot, if it is recorded and verifies on its host.
    async fn verified_last_snapshot(&self, row: &RuntimeRow) -> Option<String> {
        let id = row.last_snapshot.clone()?;
        let snap = self.db.snapshot(&id).await.ok()??;
        self.agent(&snap.host)
            .ok()?
            .verify_snapshot(&id)
            .await
            .ok()?;
        Some(id)
    }

    /// Under the runtime's claim, reads it again and settles it if `still` holds for what was read:
    /// the row and what [`Control::settle`] returned; `None` if another operation holds the
    /// runtime, or it is gone or no longer `still`.
    pub(crate) async fn settle_claimed(
        &self,
        id: &str,
        name: &str,
        still: impl Fn(&RuntimeRow) -> bool,
    ) -> Option<(RuntimeRow, bool)> {
        let _busy = self.claim_housekeeping(id, name).await.ok()?;
        let row = self.db.runtime_by_id(id).await.ok()??;
        if !still(&row) {
            return None;
        }
        let settled = self.settle(&row).await;
        Some((row, settled))
    }

    /// Settles a runtime caught between states. Returns false (and changes nothing) while a host
    /// it may be on does not answer.
    pub(crate) async fn settle(&self, row: &RuntimeRow) -> bool {
        let mut copies: Vec<(String, AgentRuntime)> = Vec::new();
        let mut silent: Vec<String> = Vec::new();
        for host in self
            .db
            .hosts()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.name)
        {
            let Ok(agent) = self.agent(&host) else {
                continue;
            };
            match agent.runtime_settled(&row.id).await {
                Ok(a) => copies.push((host, a)),
                Err(crate::Error::NotFound(_)) => {}
                Err(_) => silent.push(host),
            }
        }
        let elsewhere_running = copies
            .iter()
            .find(|(h, a)| *h != row.host && a.status == "running")
            .map(|(h, _)| h.clone());
        let decision = if let Some(target) = elsewhere_running.filter(|_| row.state == "migrating")
        {
            // The restore at the target finished: complete the move. A frozen source whose agent
            // does not answer now is removed as a stray copy when it is back.
            if let Ok(agent) = self.agent(&target) {
                while matches!(agent.runtime(&row.id).await, Ok(a) if a.lazy_pending && a.status == "running")
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            let _ = self.db.set_host(&row.id, &target).await;
            let mut moved = row.clone();
            moved.host = target.clone();
            let _ = self.set_state(&moved, "running", None).await;
            if let Ok(src) = self.agent(&row.host) {
                let _ = src.remove(&row.id).await;
            }
            format!(
                "its move to {target} had finished: completed it and removed the frozen copy on {}",
                row.host
            )
        } else if !silent.is_empty() {
            return false;
        } else if let Some((_, a)) = copies.iter().find(|(h, _)| *h == row.host) {
            // Still at the source: remove any partial copy elsewhere, thaw it if frozen.
            for (h, _) in copies.iter().filter(|(h, _)| *h != row.host) {
                if let Ok(agent) = self.agent(h) {
                    let _ = agent.remove(&row.id).await;
                }
            }
            match a.status.as_str() {
                "paused" | "running" => {
                    if let Ok(src) = self.agent(&row.host) {
                        let _ = src.thaw(&row.id).await;
                    }
                    let _ = self.set_state(row, "running", None).await;
                    format!(
                        "its interrupted operation was rolled back; it runs on {}",
                        row.host
                    )
                }
                other => {
                    let _ = self.set_state(row, "exited", Some(&format!("its operation was interrupted and its container is {other}; restore a snapshot"))).await;
                    format!("its container on {} is {other}", row.host)
                }
            }
        } else if let Some(snap) = self.verified_last_snapshot(row).await {
            // A restore or wake that never got its container running: the snapshot it came from
            // is intact, so the runtime sleeps on it and wakes on the next request.
            let reason =
                format!("its restore was interrupted; wakes on the next request (snapshot {snap})");
            let _ = self.set_state(row, "hibernated", Some(&reason)).await;
            reason
        } else {
            let why = "its operation was interrupted and no host runs it";
            let _ = self.mark_lost(row, why).await;
            why.to_string()
        };
        self.event(
            Some(&row.name),
            "runtime.recovered",
            &decision,
            serde_json::json!({"was": row.state}),
        )
        .await;
        true
    }
}
