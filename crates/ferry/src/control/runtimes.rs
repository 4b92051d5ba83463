//! Runtime lifecycle through the control plane: create, list, inspect, exec, stop, remove.

use super::db::{now, RuntimeRow};
use super::{check_name, new_id, Control};
use crate::api::{CreateRequest, Runtime};
use crate::plan::Plan;
use crate::{Error, Result};
use std::time::Duration;

impl Control {
    pub async fn create(&self, req: CreateRequest) -> Result<Runtime> {
        let plan = Plan::resolve(req.plan.as_deref(), req.memory.as_deref(), req.cpus)?;
        let id = new_id("rt");
        let name = req.name.clone().unwrap_or_else(|| id.clone());
        check_name(&name)?;
        if self.db.runtime_by_name(&name).await?.is_some() {
            return Err(Error::Conflict(format!("a runtime named {name:?} already exists: choose another --name or remove it with `ferry rm {name}`")));
        }
        let host = self.place(req.host.as_deref(), plan.memory_mb).await?;
        let image = req
            .image
            .clone()
            .unwrap_or_else(|| self.cfg.default_image.clone());
        crate::image::check_name(&image)?;
        let egress = match (req.egress, req.allow_cidrs.is_empty()) {
            (None, true) => None,
            (e, _) => Some(crate::egress::EgressChoice {
                egress: e.unwrap_or_else(|| {
                    self.cfg
                        .plan_egress
                        .get(&plan.name)
                        .copied()
                        .unwrap_or_default()
                }),
                allow: crate::egress::check_allow(&req.allow_cidrs, &self.always_denied())?,
            }),
        };
        self.ensure_image(&host, &image).await?;
        let mut row = RuntimeRow {
            id: id.clone(),
            name: name.clone(),
            host: host.clone(),
            plan: plan.clone(),
            image,
            net_index: 0,
            state: "creating".into(),
            state_reason: None,
            created_at: now(),
            started_at: None,
            last_snapshot: None,
            auto: !req.no_auto,
            leased_by: None,
            egress,
            addrs: None,
            route_epoch: 0,
        };
        let lease = self.new_lease();
        self.db
            .insert_runtime_new_slot(&mut row, Some(&lease))
            .await
            .map_err(|e| Error::Conflict(format!("cannot create {name}: {e}")))?;
        let _busy = self.claim_with(&id, &name, lease).await?;
        let spec = self.spec_of(&row);
        let agent = self.agent_fresh(&host).await?;
        let detail = serde_json::json!({"host": host, "plan": plan, "image": row.image});
        let r = self
            .journal("create", Some(&name), detail, async {
                agent.create(&spec).await.map(|a| {
                    let t = a.timings.clone();
                    (a, t)
                })
            })
            .await;
        match r {
            Ok(_) => {
                self.set_state(&row, "running", None).await?;
                self.event(
                    Some(&name),
                    "runtime.created",
                    &format!("created on host {host} with plan {}", plan.name),
                    serde_json::json!({"host": host}),
                )
                .await;
                let mut rt = self.inspect(&name).await?;
                let token = self.access_token(&name).await?;
                self.access.set(&name, &token);
                rt.access_token = Some(token);
                Ok(rt)
            }
            Err(e) => {
                self.db.delete_runtime(&id).await?;
                Err(e)
            }
        }
    }

    pub fn to_api(&self, r: &RuntimeRow) -> Runtime {
        let spec = self.spec_of(r);
        Runtime {
            id: r.id.clone(),
            name: r.name.clone(),
            host: r.host.clone(),
            plan: r.plan.clone(),
            image: r.image.clone(),
            ip: spec.ip.to_string(),
            state: r.state.clone(),
            state_reason: r.state_reason.clone(),
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            last_snapshot: r.last_snapshot.clone(),
            mrp_url: crate::mrp::base_url(&spec.ip.to_string()),
            stats: None,
            uptime_s: None,
            phase: self.current_phase(&r.id),
            auto: r.auto,
            egress: self.egress_of(r),
            egress_from_plan: r.egress.is_none(),
            access_token: None,
        }
    }

    pub async fn list(&self) -> Result<Vec<Runtime>> {
        Ok(self
            .db
            .runtimes()
            .await?
            .iter()
            .map(|r| self.to_api(r))
            .collect())
    }

    /// The runtime with live figures from its agent (memory, uptime).
    pub async fn inspect(&self, name: &str) -> Result<Runtime> {
        let row = self.runtime_row(name).await?;
        let mut rt = self.to_api(&row);
        if let Ok(a) = self.agent(&row.host)?.runtime(&row.id).await {
            rt.stats = a.stats;
        }
        if row.state == "running" {
            rt.uptime_s = row
                .started_at
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| {
                    (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                        / 1000.0
                });
        }
        Ok(rt)
    }

    pub(crate) fn require_running(&self, row: &RuntimeRow) -> Result<()> {
        if row.state != "running" {
            let why = row
                .state_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(Error::Conflict(format!("runtime {} is {}{why}, not running: restore it from a snapshot (`ferry snapshots`) or create a new one", row.name, row.state)));
        }
        Ok(())
    }

    /// Runs code in the runtime (waking it first if it is hibernated).
    pub async fn exec(&self, name: &str, code: &str) -> Result<serde_json::Value> {
        let mut row = self.runtime_row(name).await?;
        if row.state == "hibernated" {
            self.wake(name).await?;
            row = self.runtime_row(name).await?;
        }
        self.require_running(&row)?;
        let spec = self.spec_of(&row);
        let r = crate::mrp::execute(
            &crate::mrp::base_url(&spec.ip.to_string()),
            code,
            Duration::from_secs(600),
        )
        .await;
        if r.is_err() {
            // The runtime may have died under this very request (e.g. OOM): say so.
            self.reconcile_one(&row).await;
            let now = self.runtime_row(name).await?;
            if now.state != "running" {
                return Err(Error::Conflict(format!(
                    "runtime {name} is {} ({})",
                    now.state,
                    now.state_reason.unwrap_or_default()
                )));
            }
        }
        r
    }

    pub async fn stop(&self, name: &str) -> Result<Runtime> {
        let row = self.runtime_row(name).await?;
        let _busy = self.claim(&row.id, name).await?;
        let agent = self.agent(&row.host)?;
        self.journal("stop", Some(name), serde_json::json!({}), async {
            agent.stop(&row.id).await.map(|_| ((), Default::default()))
        })
        .await?;
        self.set_state(&row, "stopped", Some("stopped by request"))
            .await?;
        self.event(
            Some(name),
            "runtime.stopped",
            "stopped by request",
            serde_json::json!({}),
        )
        .await;
        self.inspect(name).await
    }

    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let row = self.runtime_row(name).await?;
        if row.state == "running" && !force {
            return Err(Error::Conflict(format!("runtime {name} is running: stop it first (`ferry stop {name}`) or remove it with --force")));
        }
        let _busy = self.claim(&row.id, name).await?;
        let agent = self.agent(&row.host)?;
        self.journal(
            "remove",
            Some(name),
            serde_json::json!({"force": force}),
            async {
                match agent.remove(&row.id).await {
                    Ok(_) | Err(Error::NotFound(_)) => Ok(((), Default::default())),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        self.db.delete_runtime(&row.id).await?;
        self.proxy.remove(name);
        self.access.forget(name);
        self.event(
            Some(name),
            "runtime.removed",
            "removed by request",
            serde_json::json!({}),
        )
        .await;
        Ok(())
    }
}
