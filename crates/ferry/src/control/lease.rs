//! Ownership of runtime operations across control-plane instances sharing one database.
//!
//! Every operation on a runtime first claims it: in this instance (one operation at a time) and in
//! the database, where a lease (`owner`, `lease_token`, `lease_until` on the runtime's row) is
//! taken atomically — of two instances trying at once exactly one gets it, the other is refused.
//! The lease loop renews this instance's heartbeat and every lease it holds; when an instance
//! dies its leases expire after the lease time, and the others then run the start-up recovery
//! (`recover.rs`) on what it left half-done. A claim's end gives its lease back.

use super::db::Lease;
use super::Control;
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// Holds a runtime for one operation (in this instance and, through its lease, in the database);
/// dropping it gives both back.
pub struct Busy<'a> {
    c: &'a Control,
    id: String,
    token: String,
}

/// How long an operation a user asks for waits for housekeeping on the same runtime to end (its
/// slowest step is one agent call, bounded by the agent client's 30 s timeout).
const HOUSEKEEPING_WAIT: Duration = Duration::from_secs(35);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut busy = self.c.busy.lock().unwrap();
        busy.remove(&self.id);
        self.c.housekeeping.lock().unwrap().remove(&self.id);
        drop(busy);
        self.c.phases.lock().unwrap().remove(&self.id);
        // Released by the lease loop; a stale release (another claim took the lease since) is a
        // no-op because it names this claim's token.
        let _ = self.c.releases.send((self.id.clone(), self.token.clone()));
    }
}

impl Control {
    /// A new lease of this instance (a fresh token).
    pub(crate) fn new_lease(&self) -> Lease {
        Lease {
            owner: self.cfg.instance_id.clone(),
            token: super::new_id("l"),
            ttl: self.cfg.lease_ttl,
        }
    }

    /// Claims `id` for one operation; one already under way (here or in another instance) makes
    /// this a conflict. Housekeeping of this instance on the same runtime (a stray copy being
    /// removed, a change being recorded) is waited out, for up to [`HOUSEKEEPING_WAIT`].
    pub async fn claim(&self, id: &str, name: &str) -> Result<Busy<'_>> {
        self.claim_with(id, name, self.new_lease()).await
    }

    /// As [`Control::claim`], for housekeeping: never waits, and operations asked for meanwhile
    /// wait for it rather than fail.
    pub(crate) async fn claim_housekeeping(&self, id: &str, name: &str) -> Result<Busy<'_>> {
        self.claim_inner(id, name, self.new_lease(), true).await
    }

    /// As [`Control::claim`], with a lease already taken in the database (a row inserted leased).
    pub(crate) async fn claim_with(&self, id: &str, name: &str, lease: Lease) -> Result<Busy<'_>> {
        self.claim_inner(id, name, lease, false).await
    }

    async fn claim_inner(
        &self,
        id: &str,
        name: &str,
        lease: Lease,
        housekeeping: bool,
    ) -> Result<Busy<'_>> {
        let deadline = std::time::Instant::now() + HOUSEKEEPING_WAIT;
        loop {
            {
                let mut busy = self.busy.lock().unwrap();
                if !busy.contains_key(id) {
                    busy.insert(id.to_string(), name.to_string());
                    if housekeeping {
                        self.housekeeping.lock().unwrap().insert(id.to_string());
                    }
                    break;
                }
                let waitable = !housekeeping
                    && self.housekeeping.lock().unwrap().contains(id)
                    && std::time::Instant::now() < deadline;
                if !waitable {
                    return Err(Error::Conflict(format!("runtime {name} is busy with another operation; try again when it finishes (see `ferry operations`)")));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let busy = Busy {
            c: self,
            id: id.to_string(),
            token: lease.token.clone(),
        };
        if !self.db.take_lease(id, &lease).await? {
            let Some(row) = self.db.runtime_by_id(id).await? else {
                return Err(Error::NotFound(format!("no runtime named {name:?} any more (another control-plane instance removed it): see `ferry ls`")));
            };
            let holder = row.leased_by.unwrap_or_else(|| "another instance".into());
            return Err(Error::Conflict(format!(
                "runtime {name} is busy with an operation of control-plane instance {holder}; try again when it finishes (see `ferry operations`)"
            )));
        }
        Ok(busy)
    }

    /// Runs forever: renews this instance's heartbeat and leases, gives back finished claims'
    /// leases, and picks up hosts other instances added.
    pub async fn lease_loop(
        self: Arc<Self>,
        mut releases: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    ) {
        let every = (self.cfg.lease_ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some((id, token)) = releases.recv() => {
                    if let Err(e) = self.db.release_lease(&id, &token).await {
                        tracing::warn!(runtime = %id, error = %e, "could not release a lease; it expires by itself");
                    }
                }
                _ = tick.tick() => {
                    match self.db.heartbeat(&self.cfg.instance_id, self.cfg.lease_ttl).await {
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "could not renew this instance's leases; other instances take over its runtimes once they expire"),
                    }
                    self.renew_decider().await;
                    self.refresh_agents().await;
                }
            }
        }
    }

    /// Runs forever: recovers what instances whose leases expired left half-done. Apart from the
    /// lease loop, so that a long recovery (a lazy move's last pages) never delays the heartbeat.
    pub async fn recovery_loop(self: Arc<Self>) {
        let every = (self.cfg.lease_ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            self.recover(false).await;
        }
    }

    /// As [`Control::agent`], first picking up a host another instance may have just added.
    pub(crate) async fn agent_fresh(
        &self,
        host: &str,
    ) -> Result<crate::agent::client::AgentClient> {
        match self.agent(host) {
            Err(Error::NotFound(_)) => {
                self.refresh_agents().await;
                self.agent(host)
            }
            other => other,
        }
    }

    /// Adds agents of hosts that other instances registered.
    pub(crate) async fn refresh_agents(&self) {
        let Ok(hosts) = self.db.hosts().await else {
            return;
        };
        let mut agents = self.agents.write().unwrap();
        for super::db::HostRow { name, url, .. } in hosts {
            if agents.get(&name).is_none_or(|a| a.url != url) {
                agents.insert(
                    name,
                    crate::agent::client::AgentClient::new(
                        &url,
                        &self.cfg.agent_token,
                        self.cfg.agent_tls.as_deref(),
                    ),
                );
            }
        }
    }
}
