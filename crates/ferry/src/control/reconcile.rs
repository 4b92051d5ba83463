//! Keeps the recorded state of runtimes true to what the agents see: a runtime whose container
//! died is marked `exited` or `oom-killed` with an event, never silently listed as running. On
//! start this also adopts the containers that kept running while the control plane was down.
//! Runtimes under an operation (of this or another instance) are left alone; each pass also points
//! this instance's proxy routes at where the database says runtimes are (another instance may have
//! moved them).

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
        let Ok(rows) = self.db.runtimes().await else {
            return;
        };
        self.refresh_routes(&rows);
        // A move another instance runs waits for this acknowledgement before it freezes: given
        // here too, so a listener that died silently delays it by one pass at most.
        if !self.proxy.suspended() {
            for row in rows
                .iter()
                .filter(|r| r.state == "migrating" && !self.is_busy(&r.id))
            {
                self.ack(row).await;
            }
        }
        let mut seen_by_host = std::collections::BTreeMap::new();
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
            let Ok(seen) = agent.list().await else {
                continue;
            };
            for row in rows.iter().filter(|r| r.host == host) {
                let live = seen.iter().find(|a| a.spec.id == row.id);
                self.apply(row, live).await;
            }
            seen_by_host.insert(host, seen);
        }
        self.remove_strays(&rows, &seen_by_host).await;
        // Migrations cut off by a source agent that stopped answering: settled once it is back,
        // under the runtime's lease (never one another live instance is running).
        for row in rows
            .iter()
            .filter(|r| r.state == "migrating" && !self.is_busy(&r.id) && !self.held_elsewhere(r))
        {
            self.settle_claimed(&row.id, &row.name, |r| r.state == "migrating")
                .await;
        }
    }

    /// A copy of a runtime on a host other than its own, while its own host runs it (a restore
    /// that finished on a target after the migration had been rolled back, or a frozen source left
    /// behind by an agent that was down at the switch): removed, so the runtime runs exactly once.
    /// Runtimes the control plane does not know are never touched.
    async fn remove_strays(
        &self,
        rows: &[RuntimeRow],
        seen_by_host: &std::collections::BTreeMap<String, Vec<AgentRuntime>>,
    ) {
        for (host, seen) in seen_by_host {
            for a in seen {
                let Some(row) = rows.iter().find(|r| r.id == a.spec.id) else {
                    continue;
                };
                if row.host == *host
                    || self.is_busy(&row.id)
                    || self.held_elsewhere(row)
                    || row.state != "running"
                {
                    continue;
                }
                let home_runs = seen_by_host.get(&row.host).is_some_and(|s| {
                    s.iter()
                        .any(|h| h.spec.id == row.id && h.status == "running")
                });
                if !home_runs {
                    continue;
                }
                // Decide again under the runtime's claim, from fresh answers: no operation can
                // start on it meanwhile.
                let Ok(_busy) = self.claim_housekeeping(&row.id, &row.name).await else {
                    continue;
                };
                let Ok(Some(row)) = self.db.runtime_by_name(&row.name).await else {
                    continue;
                };
                if row.host == *host || row.state != "running" {
                    continue;
                }
                let (Ok(home), Ok(agent)) = (self.agent(&row.host), self.agent(host)) else {
                    continue;
                };
                if !matches!(home.runtime(&row.id).await, Ok(h) if h.status == "running") {
                    continue;
                }
                if agent.remove(&row.id).await.is_ok() {
                    let why = format!(
                        "a stray {} copy on {host} was removed; it runs on {}",
                        a.status, row.host
                    );
                    self.event(
                        Some(&row.name),
                        "runtime.stray_removed",
                        &why,
                        serde_json::json!({"host": host}),
                    )
                    .await;
                }
            }
        }
    }

    pub async fn reconcile_one(&self, row: &RuntimeRow) {
        if let Ok(agent) = self.agent(&row.host) {
            match agent.runtime(&row.id).await {
                Ok(a) => self.apply(row, Some(&a)).await,
                Err(crate::Error::NotFound(_)) => self.apply(row, None).await,
                Err(_) => {}
            }
        }
    }

    fn refresh_routes(&self, rows: &[RuntimeRow]) {
        use crate::proxy::Route;
        if self.proxy.suspended() {
            return; // the route watcher re-reads them all once it listens again
        }
        for row in rows.iter().filter(|r| !self.is_busy(&r.id)) {
            let want = self.route_for(row, &row.state);
            match self.proxy.route(&row.name) {
                None => {} // resolved from the database on its first request
                Some(have) if have == want => {}
                // A wake this instance's proxy started is about to claim it.
                Some(Route::Held) if want == Route::Asleep => {}
                Some(_) => self.proxy.set(&row.name, want),
            }
        }
    }

    async fn apply(&self, row: &RuntimeRow, live: Option<&AgentRuntime>) {
        if self.is_busy(&row.id)
            || self.held_elsewhere(row)
            || !matches!(row.state.as_str(), "running" | "paused")
        {
            return;
        }
        let status = live.map(|a| a.status.as_str()).unwrap_or("absent");
        if status == row.state {
            return;
        }
        // A change to record: hold the runtime meanwhile (so that of several instances seeing the
        // same change one records it, and no operation starts in between). `row` and `live` may be
        // seconds old: an operation may have started and finished since. Operations change the
        // state before they release the runtime, so the state read now, under the claim, is the
        // one to compare with.
        let Ok(_busy) = self.claim_housekeeping(&row.id, &row.name).await else {
            return;
        };
        let Ok(Some(fresh)) = self.db.runtime_by_id(&row.id).await else {
            return;
        };
        if fresh.state != row.state || fresh.host != row.host {
            return;
        }
        if status == "running" || status == "paused" {
            let _ = self.set_state(row, status, None).await;
            return;
        }
        let oom = live.is_some_and(|a| a.oom_killed);
        let (state, kind, reason) = if status == "lost" {
            let why = live.and_then(|a| a.reason.clone()).unwrap_or_default();
            let offer = row
                .last_snapshot
                .as_deref()
                .map(|s| format!("; last full snapshot: {s}"))
                .unwrap_or_default();
            (
                "lost",
                "runtime.lost",
                format!("{}{offer}", why.lines().next().unwrap_or("lost")),
            )
        } else if oom {
            ("oom-killed", "oom_killed", oom_reason(&row.plan))
        } else {
            (
                "exited",
                "runtime.exited",
                format!("its container is {status}; restore a snapshot or create a new runtime"),
            )
        };
        let _ = self.set_state(row, state, Some(&reason)).await;
        self.event(
            Some(&row.name),
            kind,
            &reason,
            serde_json::json!({"host": row.host, "stats": live.and_then(|a| a.stats.clone())}),
        )
        .await;
    }
}

/// Why a runtime was OOM-killed and what to do: restore on the next larger plan (or, on the
/// largest, with explicit limits).
fn oom_reason(plan: &crate::plan::Plan) -> String {
    let advice = match plan.next_up() {
        Some(next) => format!(
            "restore its last snapshot on a larger plan (`ferry restore SNAPSHOT --plan {}`, {} MB)",
            next.name, next.memory_mb
        ),
        None => format!(
            "restore its last snapshot with more memory (`ferry restore SNAPSHOT --memory {}M`)",
            plan.memory_mb * 2
        ),
    };
    format!(
        "killed by the kernel: it used more than its {} MB memory limit (plan {}); {advice} or create a new runtime",
        plan.memory_mb, plan.name
    )
}

#[cfg(test)]
mod oom_tests {
    use crate::plan::Plan;

    #[test]
    fn an_oom_kill_suggests_the_next_larger_plan() {
        let pro = super::oom_reason(&Plan::named("pro").unwrap());
        assert!(pro.contains("--plan team"), "{pro}");
        assert!(!pro.contains("--plan pro"), "{pro}");
        assert!(super::oom_reason(&Plan::named("free").unwrap()).contains("--plan pro"));
        assert!(super::oom_reason(&Plan::named("team").unwrap()).contains("--memory 2048M"));
    }
}
