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
        let mut seen_by_host = std::collections::BTreeMap::new();
        for (host, ..) in self.db.hosts().unwrap_or_default() {
            let Ok(agent) = self.agent(&host) else { continue };
            let Ok(seen) = agent.list().await else { continue };
            for row in rows.iter().filter(|r| r.host == host) {
                let live = seen.iter().find(|a| a.spec.id == row.id);
                self.apply(row, live);
            }
            seen_by_host.insert(host, seen);
        }
        self.remove_strays(&rows, &seen_by_host).await;
        // Migrations cut off by a source agent that stopped answering: settled once it is back.
        for row in rows.iter().filter(|r| r.state == "migrating" && !self.is_busy(&r.id)) {
            self.settle(row).await;
        }
    }

    /// A copy of a runtime on a host other than its own, while its own host runs it (a restore
    /// that finished on a target after the migration had been rolled back, or a frozen source left
    /// behind by an agent that was down at the switch): removed, so the runtime runs exactly once.
    /// Runtimes the control plane does not know are never touched.
    async fn remove_strays(&self, rows: &[RuntimeRow], seen_by_host: &std::collections::BTreeMap<String, Vec<AgentRuntime>>) {
        for (host, seen) in seen_by_host {
            for a in seen {
                let Some(row) = rows.iter().find(|r| r.id == a.spec.id) else { continue };
                if row.host == *host || self.is_busy(&row.id) || row.state != "running" {
                    continue;
                }
                let home_runs = seen_by_host.get(&row.host).is_some_and(|s| s.iter().any(|h| h.spec.id == row.id && h.status == "running"));
                if !home_runs {
                    continue;
                }
                // Decide again under the runtime's claim, from fresh answers: no operation can
                // start on it meanwhile.
                let Ok(_busy) = self.claim(&row.id, &row.name) else { continue };
                let Ok(Some(row)) = self.db.runtime_by_name(&row.name) else { continue };
                if row.host == *host || row.state != "running" {
                    continue;
                }
                let (Ok(home), Ok(agent)) = (self.agent(&row.host), self.agent(host)) else { continue };
                if !matches!(home.runtime(&row.id).await, Ok(h) if h.status == "running") {
                    continue;
                }
                if agent.remove(&row.id).await.is_ok() {
                    let why = format!("a stray {} copy on {host} was removed; it runs on {}", a.status, row.host);
                    self.event(Some(&row.name), "runtime.stray_removed", &why, serde_json::json!({"host": host}));
                }
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
        if self.is_busy(&row.id) {
            return;
        }
        // `row` and `live` may be seconds old (a slow host, a busy control plane): an operation may
        // have started and finished since. Operations change the state before they release the
        // runtime, so the state read now, after the busy check, is the one to compare with.
        let Ok(Some(fresh)) = self.db.runtime_by_name(&row.name) else { return };
        if fresh.state != row.state || !matches!(row.state.as_str(), "running" | "paused") {
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
