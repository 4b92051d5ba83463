//! Recovery when the control plane starts: operations that were under way when it stopped are
//! closed as interrupted, and runtimes caught between two states are settled from what the agents
//! report — so that each runs exactly once (or is reported lost with its last snapshot offered).
//!
//! A migration interrupted before its switch was recorded: if the copy at the target runs, the
//! move is completed (for lazy, once every page has arrived) and the frozen source removed;
//! otherwise the source is thawed and whatever the target made is removed.

use super::db::RuntimeRow;
use super::Control;
use crate::api::{AgentRuntime, Timings};

impl Control {
    pub async fn recover(&self) {
        for op in self.db.operations(None, 10_000).unwrap_or_default().into_iter().filter(|o| o.result == "running") {
            let _ = self.db.finish_op(op.id, Some("interrupted: the control plane stopped while it ran"), &Timings::new(), None);
        }
        let rows = self.db.runtimes().unwrap_or_default();
        for row in rows.into_iter().filter(|r| matches!(r.state.as_str(), "migrating" | "restoring" | "creating")) {
            self.settle(&row).await;
        }
    }

    async fn settle(&self, row: &RuntimeRow) {
        let mut copies: Vec<(String, AgentRuntime)> = Vec::new();
        for (host, ..) in self.db.hosts().unwrap_or_default() {
            if let Ok(agent) = self.agent(&host) {
                if let Ok(a) = agent.runtime(&row.id).await {
                    copies.push((host, a));
                }
            }
        }
        let elsewhere_running = copies.iter().find(|(h, a)| *h != row.host && a.status == "running").map(|(h, _)| h.clone());
        let decision = if let Some(target) = elsewhere_running.filter(|_| row.state == "migrating") {
            // The restore at the target finished: complete the move.
            if let Ok(agent) = self.agent(&target) {
                while matches!(agent.runtime(&row.id).await, Ok(a) if a.lazy_pending && a.status == "running") {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            let _ = self.db.set_host(&row.id, &target);
            let mut moved = row.clone();
            moved.host = target.clone();
            let _ = self.set_state(&moved, "running", None);
            if let Ok(src) = self.agent(&row.host) {
                let _ = src.remove(&row.id).await;
            }
            format!("its move to {target} had finished: completed it and removed the frozen copy on {}", row.host)
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
                    let _ = self.set_state(row, "running", None);
                    format!("its interrupted operation was rolled back; it runs on {}", row.host)
                }
                other => {
                    let _ = self.set_state(row, "exited", Some(&format!("its operation was interrupted and its container is {other}; restore a snapshot")));
                    format!("its container on {} is {other}", row.host)
                }
            }
        } else {
            let why = "its operation was interrupted and no host runs it";
            let _ = self.mark_lost(row, why);
            why.to_string()
        };
        self.event(Some(&row.name), "runtime.recovered", &decision, serde_json::json!({"was": row.state}));
    }
}
