//! The monitor and its policy: samples every running runtime's cgroup through its agent (memory
//! used against its limit, CPU time), turns threshold crossings into events, and acts on them.
//!
//! Memory, as a share of the plan's limit: ≥ 50 % `memory.pre_provision` (a target host with room
//! for the next plan is named), ≥ 75 % `memory.migrate` and ≥ 90 % `memory.urgent` (the runtime
//! moves to a host with room for the next plan up and arrives with its larger limit), ≥ 95 %
//! `memory.critical` (the same move; stop-copy freezes it first, so it cannot grow meanwhile).
//! One crossing is one event, for the highest level reached (a jump from 50 % to 92 % fires only
//! `memory.urgent`): a level fires again only after the debounce and after dropping
//! below it. CPU below 1 % of a core for the idle window: `idle`, and the runtime is hibernated
//! (the next request wakes it); busy again: `active`. Every decision is an event with its reason.
//! Tasks: when the plan's pids limit refused a fork or a thread since the last sample,
//! `pids.limit` (a fork bomb, or a pool larger than the plan allows), debounced like memory.
//!
//! Sampling runs in the control plane over the agents' cgroup readings (cheap file reads there)
//! rather than in each agent, so that the thresholds, debounce and policy live in one place.
//!
//! Of several instances on one database only the decider (`decider.rs`) samples and acts.
//!
//! Automatic actions can be turned off globally (`ferry serve --no-auto`) or per runtime
//! (`ferry create --no-auto`, `ferry policy NAME --auto false`); events are reported regardless.

use super::db::RuntimeRow;
use super::Control;
use crate::api::{AgentRuntime, MigrateRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub interval: Duration,
    pub idle_after: Duration,
    pub debounce: Duration,
    /// Act on events (migrate, hibernate); without, only report them.
    pub auto: bool,
    /// Mode of automatic migrations.
    pub mode: String,
    /// Memory shares (of the limit) for pre-provision, migrate, urgent and critical.
    pub thresholds: [f64; 4],
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(5),
            idle_after: Duration::from_secs(15 * 60),
            debounce: Duration::from_secs(60),
            auto: true,
            mode: "stop-copy".into(),
            thresholds: [0.50, 0.75, 0.90, 0.95],
        }
    }
}

const LEVELS: [&str; 4] = [
    "memory.pre_provision",
    "memory.migrate",
    "memory.urgent",
    "memory.critical",
];
const IDLE_CPU: f64 = 0.01;

/// Python that ends every process of a runtime but its own (PID 1): stopped first, since a
/// stopped process cannot fork, then killed; the dead, orphaned to PID 1, are reaped by it.
pub const PIDS_RECOVER: &str = "import os, signal, time\nfor s in [signal.SIGSTOP] * 3 + [signal.SIGKILL]:\n    os.kill(-1, s)\ntime.sleep(0.5)\ntry:\n    while os.waitpid(-1, os.WNOHANG)[0]: pass\nexcept ChildProcessError: pass\n";

#[derive(Default)]
struct Watch {
    level: usize,
    fired: HashMap<&'static str, Instant>,
    last_cpu: Option<(Instant, u64)>,
    busy_at: Option<Instant>,
    idle: bool,
    /// The pids controller's refusals seen at the last sample.
    pids_refused: u64,
}

/// The memory level (0 = below every threshold) of `used` bytes against `limit`.
pub fn level(used: u64, limit: u64, thresholds: &[f64; 4]) -> usize {
    if limit == 0 || limit == u64::MAX {
        return 0;
    }
    let r = used as f64 / limit as f64;
    thresholds.iter().filter(|t| r >= **t).count()
}

impl Control {
    pub async fn monitor_loop(self: Arc<Self>, cfg: MonitorConfig) {
        let mut watches: HashMap<String, Watch> = HashMap::new();
        loop {
            tokio::time::sleep(cfg.interval).await;
            self.monitor_pass(&cfg, &mut watches).await;
        }
    }

    async fn monitor_pass(&self, cfg: &MonitorConfig, watches: &mut HashMap<String, Watch>) {
        if !self.is_decider() {
            // Another instance samples and acts (`decider.rs`); what was seen here is stale.
            watches.clear();
            self.samples.lock().unwrap().clear();
            return;
        }
        let Ok(rows) = self.db.runtimes().await else {
            return;
        };
        watches.retain(|id, _| rows.iter().any(|r| &r.id == id && r.state == "running"));
        self.samples
            .lock()
            .unwrap()
            .retain(|id, _| rows.iter().any(|r| &r.id == id && r.state == "running"));
        let gone: Vec<String> = self
            .reservations
            .lock()
            .unwrap()
            .keys()
            .filter(|id| !rows.iter().any(|r| &r.id == *id && r.state == "running"))
            .cloned()
            .collect();
        for id in gone {
            self.release_reservation(&id);
        }
        let hosts: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|r| r.state == "running")
            .map(|r| r.host.clone())
            .collect();
        for host in hosts {
            let Ok(agent) = self.agent(&host) else {
                continue;
            };
            let Ok(seen) = agent.list().await else {
                continue;
            };
            // Not while an operation (of this or another instance) holds it.
            for row in rows.iter().filter(|r| {
                r.host == host
                    && r.state == "running"
                    && !self.is_busy(&r.id)
                    && !self.held_elsewhere(r)
            }) {
                if let Some(a) = seen
                    .iter()
                    .find(|a| a.spec.id == row.id && a.status == "running")
                {
                    let w = watches.entry(row.id.clone()).or_default();
                    self.observe(cfg, row, a, w).await;
                }
            }
        }
    }

    async fn observe(
        &self,
        cfg: &MonitorConfig,
        row: &RuntimeRow,
        a: &AgentRuntime,
        w: &mut Watch,
    ) {
        let Some(stats) = &a.stats else { return };
        self.samples.lock().unwrap().insert(
            row.id.clone(),
            (row.name.clone(), row.host.clone(), stats.clone()),
        );
        let now = Instant::now();
        // Memory thresholds.
        let lvl = level(
            stats.memory_bytes,
            stats.memory_limit_bytes,
            &cfg.thresholds,
        );
        if lvl > w.level {
            let kind = LEVELS[lvl - 1];
            let debounced = w
                .fired
                .get(kind)
                .is_some_and(|t| now.duration_since(*t) < cfg.debounce);
            if !debounced {
                w.fired.insert(kind, now);
                let pct = 100.0 * stats.memory_bytes as f64 / stats.memory_limit_bytes as f64;
                let reason = format!("memory at {pct:.0}% of its {} MB limit", row.plan.memory_mb);
                self.event(Some(&row.name), kind, &reason, serde_json::json!({"memory_bytes": stats.memory_bytes, "limit_bytes": stats.memory_limit_bytes})).await;
                // Acts only while still the decider (its lease may have lapsed during the pass).
                let act = cfg.auto && row.auto && self.is_decider();
                if lvl == 1 {
                    self.pre_provision(row, act).await;
                } else if act {
                    self.move_up(cfg, row, &reason).await;
                }
            }
        }
        if lvl == 0 && w.level > 0 {
            self.release_reservation(&row.id); // it shrank back: the capacity is free again
        }
        w.level = lvl;
        self.observe_pids(cfg, row, stats, w, now).await;
        // Idle: CPU under 1 % of a core for the whole idle window.
        if let Some((t, ns)) = w.last_cpu {
            let dt = now.duration_since(t).as_secs_f64();
            let share = stats.cpu_usage_ns.saturating_sub(ns) as f64 / 1e9 / dt.max(1e-3);
            if share >= IDLE_CPU {
                w.busy_at = Some(now);
                if w.idle {
                    w.idle = false;
                    self.event(
                        Some(&row.name),
                        "active",
                        &format!("CPU at {:.1}% of a core", share * 100.0),
                        serde_json::json!({}),
                    )
                    .await;
                }
            }
        }
        w.last_cpu = Some((now, stats.cpu_usage_ns));
        let busy_at = *w.busy_at.get_or_insert(now);
        if !w.idle && now.duration_since(busy_at) >= cfg.idle_after {
            w.idle = true;
            let reason = format!("CPU below 1% of a core for {} s", cfg.idle_after.as_secs());
            self.event(Some(&row.name), "idle", &reason, serde_json::json!({}))
                .await;
            if cfg.auto && row.auto && self.is_decider() {
                if let Err(e) = self.hibernate(&row.name, &format!("idle: {reason}")).await {
                    self.event(
                        Some(&row.name),
                        "policy.failed",
                        &format!("could not hibernate: {e}"),
                        serde_json::json!({}),
                    )
                    .await;
                }
            }
        }
    }

    /// Reports refusals of the runtime's pids limit since the last sample (a fresh cgroup, after a
    /// restore or move, counts from 0 again).
    async fn observe_pids(
        &self,
        cfg: &MonitorConfig,
        row: &RuntimeRow,
        stats: &crate::sys::cgroup::Stats,
        w: &mut Watch,
        now: Instant,
    ) {
        let refused = stats.pids_max_events;
        let new = refused > w.pids_refused;
        w.pids_refused = refused;
        const KIND: &str = "pids.limit";
        if !new
            || w.fired
                .get(KIND)
                .is_some_and(|t| now.duration_since(*t) < cfg.debounce)
        {
            return;
        }
        w.fired.insert(KIND, now);
        let reason = format!(
            "it reached its plan's limit of {} tasks (plan {}): {refused} new processes or threads were refused; the host and other runtimes are unaffected. A fork bomb or a runaway pool: end every process but the runtime's own with `ferry exec {}` running this event's `recover` code (stop all, kill all, reap), restore a snapshot, or use a larger plan",
            row.plan.pids_max(),
            row.plan.name,
            row.name
        );
        self.event(
            Some(&row.name),
            KIND,
            &reason,
            serde_json::json!({"pids_current": stats.pids_current, "pids_limit": stats.pids_limit, "refused": refused, "recover": PIDS_RECOVER}),
        )
        .await;
    }

    /// The host with room for `memory_mb`, other than the runtime's own: among those with every
    /// label the runtime's code hinted at if any has them, the one with the most room.
    async fn roomiest_other_host(&self, row: &RuntimeRow, memory_mb: u64) -> Option<String> {
        let hosts = self.fleet_view(Some(&row.id)).await.ok()?;
        let need = super::placement::Need {
            memory_mb,
            image: None,
            prefer_labels: self.hinted_labels(&row.id).into_iter().collect(),
        };
        super::placement::move_target(&hosts, &need, &row.host).map(|i| hosts[i].name.clone())
    }

    /// Picks the host the runtime would move to and, with `reserve`, holds that capacity for it.
    async fn pre_provision(&self, row: &RuntimeRow, reserve: bool) {
        let Some(next) = row.plan.next_up() else {
            return;
        };
        match self.roomiest_other_host(row, next.memory_mb).await {
            Some(h) => {
                if reserve {
                    self.reserve(&row.id, &h, next.memory_mb);
                }
                let what = if reserve { "reserved" } else { "available" };
                self.event(
                    Some(&row.name),
                    "policy.pre_provisioned",
                    &format!(
                        "{} MB {what} on host {h} for plan {} when it is needed",
                        next.memory_mb, next.name
                    ),
                    serde_json::json!({"host": h, "plan": next, "reserved": reserve}),
                )
                .await
            }
            None => {
                self.event(
                    Some(&row.name),
                    "policy.no_host",
                    &format!(
                        "no host has room for plan {} ({} MB)",
                        next.name, next.memory_mb
                    ),
                    serde_json::json!({}),
                )
                .await
            }
        }
    }

    /// Moves the runtime to a host with room for the next plan up, arriving with that plan.
    async fn move_up(&self, cfg: &MonitorConfig, row: &RuntimeRow, why: &str) {
        let Some(next) = row.plan.next_up() else {
            self.event(
                Some(&row.name),
                "policy.no_larger_plan",
                &format!("{why}, and plan {} is the largest", row.plan.name),
                serde_json::json!({}),
            )
            .await;
            return;
        };
        let Some(to) = self.roomiest_other_host(row, next.memory_mb).await else {
            self.event(
                Some(&row.name),
                "policy.no_host",
                &format!(
                    "{why}, but no host has room for plan {} ({} MB); it stays where it is",
                    next.name, next.memory_mb
                ),
                serde_json::json!({}),
            )
            .await;
            return;
        };
        self.event(
            Some(&row.name),
            "policy.migrating",
            &format!(
                "{why}: moving to {to} on plan {} ({} MB)",
                next.name, next.memory_mb
            ),
            serde_json::json!({"to": to, "plan": next}),
        )
        .await;
        let req = MigrateRequest {
            to: to.clone(),
            mode: cfg.mode.clone(),
            name: None,
            plan: Some(next),
        };
        if let Err(e) = self.migrate(&row.name, &req).await {
            self.event(
                Some(&row.name),
                "policy.failed",
                &format!("automatic move to {to} failed: {e}"),
                serde_json::json!({}),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn levels() {
        let mb = 1024 * 1024;
        let t = super::MonitorConfig::default().thresholds;
        assert_eq!(level(100 * mb, 256 * mb, &t), 0);
        assert_eq!(level(130 * mb, 256 * mb, &t), 1);
        assert_eq!(level(200 * mb, 256 * mb, &t), 2);
        assert_eq!(level(235 * mb, 256 * mb, &t), 3);
        assert_eq!(level(250 * mb, 256 * mb, &t), 4);
        assert_eq!(level(250 * mb, u64::MAX, &t), 0, "no limit, no level");
        assert_eq!(
            level(100 * mb, 256 * mb, &[0.3, 0.35, 0.6, 0.7]),
            2,
            "thresholds are configurable"
        );
    }
}
