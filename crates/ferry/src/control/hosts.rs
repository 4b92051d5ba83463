//! Host lifecycle: cordon (nothing new is placed there), drain (every runtime moved off, or
//! hibernated when it cannot be moved in time), and removal (refused while runtimes or snapshots
//! live there). The drain's plan comes from [`super::placement::plan_drain`]; this file gathers
//! the fleet's picture for it and carries the plan out with the ordinary migrate and hibernate.

use super::placement::{self, Action, DrainItem, DrainMode, DrainOptions, HostView, MoveRate};
use super::{occupies_host, Control};
use crate::api::{DrainOutcome, DrainReport, DrainRequest, Host, MigrateRequest, Timings};
use crate::container::ms;
use crate::{Error, Result};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

impl Control {
    /// The fleet as placement sees it; `for_runtime`'s own reservation is not counted.
    pub(crate) async fn fleet_view(&self, for_runtime: Option<&str>) -> Result<Vec<HostView>> {
        let mut used: HashMap<String, u64> = HashMap::new();
        for r in self.db.runtimes().await? {
            if occupies_host(&r.state) {
                *used.entry(r.host).or_default() += r.plan.memory_mb;
            }
        }
        for (rt, (h, mb)) in self.reservations.lock().unwrap().iter() {
            if Some(rt.as_str()) != for_runtime {
                *used.entry(h.clone()).or_default() += mb;
            }
        }
        Ok(self
            .db
            .hosts()
            .await?
            .into_iter()
            .map(|h| HostView {
                used_mb: used.get(&h.name).copied().unwrap_or(0),
                cordoned: h.state != "ready",
                name: h.name,
                capacity_mb: h.capacity_mb,
                labels: h.labels,
                images: None,
            })
            .collect())
    }

    /// Refuses `host` as an explicit destination when it is cordoned or draining.
    pub(crate) async fn refuse_cordoned(&self, host: &str) -> Result<()> {
        let h = self.db.hosts().await?.into_iter().find(|h| h.name == host);
        match h {
            Some(h) if h.state != "ready" => Err(Error::Conflict(
                placement::Refusal::Cordoned(host.to_string()).to_string(),
            )),
            _ => Ok(()),
        }
    }

    async fn set_host_state(&self, name: &str, state: &str) -> Result<Host> {
        if !self.db.set_host_state(name, state).await? {
            return Err(Error::NotFound(format!(
                "unknown host {name:?}: see `ferry host ls`"
            )));
        }
        self.event(
            None,
            &format!("host.{state}"),
            &format!("host {name} is {state}"),
            serde_json::json!({"host": name}),
        )
        .await;
        self.host(name).await
    }

    pub async fn cordon(&self, name: &str) -> Result<Host> {
        self.set_host_state(name, "cordoned").await
    }

    pub async fn uncordon(&self, name: &str) -> Result<Host> {
        self.set_host_state(name, "ready").await
    }

    /// Removes a host from the fleet. Refused while runtimes or snapshots live there, unless
    /// `force` and the host is cordoned (drained): then its remaining rows are forgotten.
    pub async fn remove_host(&self, name: &str, force: bool) -> Result<serde_json::Value> {
        let h = self.host_row(name).await?;
        let runtimes: Vec<_> = self
            .db
            .runtimes()
            .await?
            .into_iter()
            .filter(|r| r.host == name)
            .collect();
        let snapshots: Vec<_> = self
            .db
            .snapshots()
            .await?
            .into_iter()
            .filter(|s| s.host == name)
            .collect();
        let live: Vec<String> = runtimes
            .iter()
            .filter(|r| occupies_host(&r.state))
            .map(|r| format!("{} ({})", r.name, r.state))
            .collect();
        if force {
            if h.state == "ready" && !(runtimes.is_empty() && snapshots.is_empty()) {
                return Err(Error::Conflict(format!("host {name} is not cordoned: --force only applies after a drain; run `ferry host drain {name}` first")));
            }
            if !live.is_empty() {
                return Err(Error::Conflict(format!("host {name} still runs {}: --force does not forget running runtimes; run `ferry host drain {name}` again, or `ferry rm` them", live.join(", "))));
            }
        } else if !runtimes.is_empty() || !snapshots.is_empty() {
            let mut why = Vec::new();
            if !runtimes.is_empty() {
                let names: Vec<String> = runtimes
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.state))
                    .collect();
                why.push(format!("runtimes {}", names.join(", ")));
            }
            if !snapshots.is_empty() {
                let ids: Vec<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
                why.push(format!("snapshots {}", ids.join(", ")));
            }
            return Err(Error::Conflict(format!("host {name} still holds {}: drain it first (`ferry host drain {name}`), move or delete the snapshots (`ferry snapshot export`/`ferry snapshot rm`), or, after a drain, `ferry host rm {name} --force` to forget them", why.join(" and "))));
        }
        // --force: the stopped runtimes' rows and the snapshots' rows that point at this host go.
        for s in &snapshots {
            self.db.delete_snapshot(&s.id).await?;
        }
        for r in &runtimes {
            self.db.delete_runtime(&r.id).await?;
        }
        self.db.delete_host(name).await?;
        self.agents.write().unwrap().remove(name);
        let forgot = serde_json::json!({
            "host": name,
            "forgot_runtimes": runtimes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "forgot_snapshots": snapshots.iter().map(|s| &s.id).collect::<Vec<_>>(),
        });
        self.event(
            None,
            "host.removed",
            &format!("host {name} removed"),
            forgot.clone(),
        )
        .await;
        Ok(forgot)
    }

    /// The move rate measured by past stop-copy and lazy moves (their archive size over their
    /// total time), or a conservative default.
    async fn measured_rate(&self) -> (MoveRate, bool) {
        let ops = self.db.operations(None, 200).await.unwrap_or_default();
        let samples: Vec<(u64, f64)> = ops
            .iter()
            .filter(|o| o.kind == "migrate" && o.result == "ok")
            .filter_map(|o| {
                let bytes = o.detail.get("archive_bytes")?.as_u64()?;
                let total = *o.timings.get("total_ms")?;
                Some(((bytes / (1 << 20)).max(1), total))
            })
            .take(20)
            .collect();
        (MoveRate::from_samples(&samples), !samples.is_empty())
    }

    /// Drains `name`: cordons it, plans (see [`placement::plan_drain`]) and carries out the moves
    /// and hibernations, `parallel` at a time. A runtime whose move fails stays where it is (a
    /// failed move leaves it running at its source) and is reported. The host ends cordoned.
    pub async fn drain(&self, name: &str, req: &DrainRequest) -> Result<DrainReport> {
        let mode_s = req.mode.clone().unwrap_or_else(|| "stop-copy".into());
        let mode: DrainMode = mode_s.parse().map_err(Error::Invalid)?;
        let parallel = req.parallel.unwrap_or(2) as usize;
        if parallel == 0 || parallel > 64 {
            return Err(Error::Invalid("--parallel must be between 1 and 64".into()));
        }
        let within = match req.within_s {
            Some(s) if !(s > 0.0 && s < 86_400.0) => {
                return Err(Error::Invalid(
                    "--within must be a positive duration under a day, e.g. 90s".into(),
                ))
            }
            s => s.map(Duration::from_secs_f64),
        };
        self.set_host_state(name, "draining").await?;
        let detail = serde_json::json!({"host": name, "mode": mode_s, "parallel": parallel, "within_s": req.within_s});
        let r = self
            .journal_with("drain", None, detail, async {
                let rep = self
                    .run_drain(name, mode, &mode_s, parallel, within)
                    .await?;
                let mut t = Timings::new();
                t.insert("total_ms".into(), rep.total_ms);
                let d = serde_json::to_value(&rep).ok();
                Ok((rep, t, d))
            })
            .await;
        // Drained or not, nothing new goes there until it is uncordoned.
        let _ = self.db.set_host_state(name, "cordoned").await;
        let rep = r?;
        let count = |a: &str| rep.outcomes.iter().filter(|o| o.action == a).count();
        self.event(
            None,
            "host.drained",
            &format!(
                "host {name}: {} moved, {} hibernated, {} failed, {} skipped in {:.1} s{}",
                count("moved"),
                count("hibernated"),
                count("failed"),
                count("skipped"),
                rep.total_ms / 1000.0,
                if rep.remaining.is_empty() {
                    String::new()
                } else {
                    format!("; still there: {}", rep.remaining.join(", "))
                }
            ),
            serde_json::to_value(&rep).unwrap_or_default(),
        )
        .await;
        Ok(rep)
    }

    async fn run_drain(
        &self,
        name: &str,
        mode: DrainMode,
        mode_s: &str,
        parallel: usize,
        within: Option<Duration>,
    ) -> Result<DrainReport> {
        let t0 = Instant::now();
        let (rate, measured) = self.measured_rate().await;
        let mut fleet = self.fleet_view(None).await?;
        // Hosts whose agent does not answer take nothing; the images each one has.
        let mut have: HashMap<String, BTreeSet<String>> = HashMap::new();
        for hi in self.images(None).await? {
            have.entry(hi.host).or_default().insert(hi.image.name);
        }
        for h in fleet.iter_mut() {
            match have.get(&h.name) {
                Some(s) => h.images = Some(s.clone()),
                None => match self.agent(&h.name) {
                    Ok(a) if a.info().await.is_ok() => h.images = Some(BTreeSet::new()),
                    _ => h.cordoned = true,
                },
            }
        }
        let source_images: HashMap<String, bool> = self
            .agent(name)?
            .images()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.name, !i.layers.is_empty()))
            .collect();
        let on_host: Vec<_> = self
            .db
            .runtimes()
            .await?
            .into_iter()
            .filter(|r| r.host == name && occupies_host(&r.state))
            .collect();
        let mut outcomes = Vec::new();
        let mut items = Vec::new();
        for r in &on_host {
            if r.state != "running" {
                outcomes.push(DrainOutcome {
                    runtime: r.name.clone(),
                    action: "skipped".into(),
                    to: None,
                    estimate_s: None,
                    ms: 0.0,
                    reason: Some(format!("it is {}; only running runtimes move", r.state)),
                });
                continue;
            }
            let sendable = source_images.get(&r.image).copied().unwrap_or(false);
            items.push(DrainItem {
                name: r.name.clone(),
                memory_mb: r.plan.memory_mb,
                image_needed: (!sendable).then(|| r.image.clone()),
                prefer_labels: self.hinted_labels(&r.id).into_iter().collect(),
            });
        }
        let steps = placement::plan_drain(
            &fleet,
            name,
            &items,
            &DrainOptions {
                mode,
                parallel,
                within,
                rate,
            },
        );
        let move_mode = if mode == DrainMode::Lazy {
            "lazy"
        } else {
            "stop-copy"
        };
        let (moves, hibernations): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .partition(|s| matches!(s.action, Action::Move { .. }));
        let do_moves = futures::stream::iter(moves.into_iter().map(|s| async move {
            let Action::Move { to, finish } = s.action else {
                unreachable!("partitioned")
            };
            let t = Instant::now();
            let req = MigrateRequest {
                to: to.clone(),
                mode: move_mode.into(),
                name: None,
                plan: None,
            };
            let r = self.migrate(&s.runtime, &req).await;
            let o = DrainOutcome {
                runtime: s.runtime.clone(),
                action: if r.is_ok() { "moved" } else { "failed" }.into(),
                to: Some(to.clone()),
                estimate_s: Some(finish.as_secs_f64()),
                ms: ms(t),
                reason: r.as_ref().err().map(|e| e.to_string()),
            };
            self.drain_event(name, &o).await;
            o
        }))
        .buffer_unordered(parallel)
        .collect::<Vec<_>>();
        let do_hibernations = futures::stream::iter(hibernations.into_iter().map(|s| async move {
            let Action::Hibernate { why } = s.action else {
                unreachable!("partitioned")
            };
            let t = Instant::now();
            let r = self
                .hibernate(&s.runtime, &format!("host {name} drained: {why}"))
                .await;
            let o = DrainOutcome {
                runtime: s.runtime.clone(),
                action: if r.is_ok() { "hibernated" } else { "failed" }.into(),
                to: None,
                estimate_s: None,
                ms: ms(t),
                reason: Some(match &r {
                    Ok(_) => why,
                    Err(e) => format!("{why}; hibernating failed: {e}"),
                }),
            };
            self.drain_event(name, &o).await;
            o
        }))
        .buffer_unordered(parallel)
        .collect::<Vec<_>>();
        let (m, h) = tokio::join!(do_moves, do_hibernations);
        outcomes.extend(m);
        outcomes.extend(h);
        let remaining = self
            .db
            .runtimes()
            .await?
            .into_iter()
            .filter(|r| r.host == name && occupies_host(&r.state))
            .map(|r| r.name)
            .collect();
        Ok(DrainReport {
            host: name.to_string(),
            mode: mode_s.to_string(),
            rate_mb_per_s: rate.mb_per_s,
            rate_measured: measured,
            outcomes,
            total_ms: ms(t0),
            remaining,
        })
    }

    async fn drain_event(&self, host: &str, o: &DrainOutcome) {
        let what = match (o.action.as_str(), &o.to) {
            ("moved", Some(to)) => format!("moved from {host} to {to} in {:.0} ms", o.ms),
            ("failed", _) => format!(
                "could not leave {host}; it still runs there: {}",
                o.reason.as_deref().unwrap_or("")
            ),
            (a, _) => format!("{a} on {host}: {}", o.reason.as_deref().unwrap_or("")),
        };
        self.event(
            Some(&o.runtime),
            &format!("drain.{}", o.action),
            &what,
            serde_json::to_value(o).unwrap_or_default(),
        )
        .await;
    }
}
