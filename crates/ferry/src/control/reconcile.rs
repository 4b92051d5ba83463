//! Keeps the recorded state of runtimes true to what the agents see: a runtime whose container
//! died is marked `exited` or `oom-killed` with an event, never silently listed as running. On
//! start this also adopts the containers that kept running while the control plane was down.

use super::db::RuntimeRow;
use super::Control;
use crate::api::AgentRuntime;
use std::sync::Arc;
use std::time::Duration;

impl Control {
    /// Runs forever: one pass every `every`.
    pub async fn reconcile_loop(self: Arc<Self>, every: Duration) {
        loop {
            self.reconcile_all().await;
            tokio::time::sleep(every).await;
        }
    }

    pub async fn reconcile_all(&self) {
        let Ok(rows) = self.db.runtimes() else { return };
        let hosts: std::collections::BTreeSet<String> = rows.iter().map(|r| r.host.clone()).collect();
        for host in hosts {
            let Ok(agent) = self.agent(&host) else { continue };
            let Ok(seen) = agent.list().await else { continue };
            for row in rows.iter().filter(|r| r.host == host) {
                let live = seen.iter().find(|a| a.spec.id == row.id);
                self.apply(row, live);
            }
        }
    }

    pub async fn reconcile_one(&self, row: &RuntimeRow) {
        if let Ok(agent) = self.agent(&row.host) {
            match agent.runtime(&row.id).await {
                Ok(a) => self.apply(row, Some(&a)),
                Err(crate::Error::NotFound(_)) => self.apply(row, None),
                Err(_) => {}
            }
        }
    }

    fn apply(&self, row: &RuntimeRow, live: Option<&AgentRuntime>) {
        if self.is_busy(&row.id) || !matches!(row.state.as_str(), "running" | "paused") {
            return;
        }
        let status = live.map(|a| a.status.as_str()).unwrap_or("absent");
        if status == "running" || status == "paused" {
            if status != row.state {
                let _ = self.set_state(row, status, None);
            }
            return;
        }
        let oom = live.is_some_and(|a| a.oom_killed);
        let (state, kind, reason) = if status == "lost" {
            let why = live.and_then(|a| a.reason.clone()).unwrap_or_default();
            let offer = row.last_snapshot.as_deref().map(|s| format!("; last full snapshot: {s}")).unwrap_or_default();
            ("lost", "runtime.lost", format!("{}{offer}", why.lines().next().unwrap_or("lost")))
        } else if oom {
            let limit = row.plan.memory_mb;
            ("oom-killed", "oom_killed", format!("killed by the kernel: it used more than its {limit} MB memory limit (plan {}); restore its last snapshot on a larger plan (`ferry restore SNAPSHOT --plan pro`) or create a new runtime", row.plan.name))
        } else {
            ("exited", "runtime.exited", format!("its container is {status}; restore a snapshot or create a new runtime"))
        };
        let _ = self.set_state(row, state, Some(&reason));
        self.event(Some(&row.name), kind, &reason, serde_json::json!({"host": row.host, "stats": live.and_then(|a| a.stats.clone())}));
    }
}
