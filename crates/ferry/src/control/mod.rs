//! The control plane: knows every host and runtime (SQLite, or PostgreSQL shared by several
//! instances), decides placement, drives every operation through the agents and journals it with
//! its timings, and serves the public API.

mod access;
pub mod api;
pub mod auth;
mod baseline;
pub mod db;
pub mod decider;
pub mod extract;
mod hibernate;
pub mod hints;
mod hostloss;
mod hosts;
mod images;
mod lease;
pub mod metrics;
mod migrate;
pub mod monitor;
pub mod openapi;
pub mod placement;
mod reconcile;
mod recover;
mod routes;
mod runtimes;
mod snapshots;
pub mod webhooks;

use crate::agent::client::AgentClient;
use crate::api::{Host, RuntimeSpec, Timings};
use crate::{Error, Result};
use db::{Db, RuntimeRow};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use lease::Busy;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub state_dir: PathBuf,
    /// First address of the range runtimes get their `/30` networks from.
    pub subnet: Ipv4Addr,
    /// The token clients of the control API must present.
    pub token: String,
    /// The token the control plane presents to agents.
    pub agent_token: String,
    pub default_image: String,
    /// The CA to trust for `https://` agents.
    pub agent_tls: Option<Arc<rustls::ClientConfig>>,
    /// The monitor's memory thresholds (shares of the limit), shown by the dashboard.
    pub thresholds: [f64; 4],
    /// Where the state lives: `sqlite:///PATH` or `postgres://...`.
    pub database: String,
    /// This instance's id (kept in the state dir across restarts).
    pub instance_id: String,
    /// How long an operation's lease outlives its instance's last heartbeat.
    pub lease_ttl: Duration,
    /// How long a host's agent may not answer before the host counts as dead (`--host-dead-after`).
    pub host_dead_after: Duration,
    /// Egress policy per plan name (plans not listed: `allow`); a runtime's own choice wins.
    pub plan_egress: std::collections::BTreeMap<String, crate::egress::Egress>,
    /// Whether the proxy asks for runtime credentials (`--proxy-auth`).
    pub proxy_auth: crate::access::Mode,
    /// The proxy speaks TLS (its cookies are then `Secure`).
    pub proxy_tls: bool,
    /// Where the editor bundle is, for the notebook page the proxy serves.
    pub editor_dir: Option<PathBuf>,
}

pub struct Control {
    pub cfg: ControlConfig,
    pub db: Db,
    pub proxy: Arc<crate::proxy::Proxy>,
    /// The proxy's credential check (its cache of runtime tokens).
    pub access: Arc<crate::access::Access>,
    agents: RwLock<HashMap<String, AgentClient>>,
    /// Runtimes this instance runs an operation on (id → name).
    busy: Mutex<HashMap<String, String>>,
    /// Those of `busy` held by housekeeping (reconciling, host loss, recovery), which an operation
    /// a user asks for waits out instead of being refused.
    housekeeping: Mutex<std::collections::HashSet<String>>,
    /// Leases of finished claims, for the lease loop to give back.
    releases: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    /// What a long operation on a runtime is doing right now (shown by `inspect` and the CLI).
    phases: Mutex<HashMap<String, String>>,
    /// Every event as it is recorded, for `GET /api/v1/events/stream`.
    pub events: tokio::sync::broadcast::Sender<crate::api::Event>,
    /// The monitor's latest sample of each running runtime (runtime id → name, host, stats).
    pub samples: Mutex<HashMap<String, (String, String, crate::sys::cgroup::Stats)>>,
    /// Host labels each runtime's code asked for (runtime id → labels).
    hints: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    /// Capacity held for a runtime's expected move (runtime id → host, MB): pre-provisioning.
    reservations: Mutex<HashMap<String, (String, u64)>>,
    /// This machine's own IPv4 addresses (control API, proxy): no runtime may reach them.
    local_addrs: Vec<String>,
    /// Until when (this machine's clock) this instance holds the monitor's decider lease.
    decider_until: Mutex<Option<std::time::Instant>>,
}

impl Control {
    /// Opens the state; the returned receiver is for [`Control::lease_loop`].
    pub async fn open(
        cfg: ControlConfig,
    ) -> Result<(
        Arc<Control>,
        tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    )> {
        std::fs::create_dir_all(&cfg.state_dir)?;
        let db = Db::open(&cfg.database).await?;
        let recorded = db.settle_subnet(cfg.subnet).await?;
        if recorded != cfg.subnet {
            return Err(Error::Invalid(format!(
                "this database's runtime network is {recorded} (recorded by the first control-plane instance that used it), but this instance was started with --subnet {}: it would compute other addresses for the same runtimes. Start it with --subnet {recorded} (or FERRY_SUBNET / `subnet` in ferry.toml), or give it a database of its own",
                cfg.subnet
            )));
        }
        let proxy = crate::proxy::Proxy::new(std::time::Duration::from_secs(60));
        if db.backend() == db::Backend::Postgres {
            // Other instances may move runtimes: no route is trusted until the route watcher
            // listens for their changes (`routes.rs`).
            proxy.suspend();
        }
        proxy.set_managed(crate::dest::Managed::new(cfg.subnet, crate::dest::SLOTS));
        let access = access::open(&cfg, &db).await?;
        proxy.set_access(access.clone());
        let (releases, released) = tokio::sync::mpsc::unbounded_channel();
        let c = Arc::new(Control {
            cfg,
            db,
            proxy,
            access,
            agents: RwLock::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            housekeeping: Mutex::new(Default::default()),
            releases,
            phases: Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(1024).0,
            samples: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
            local_addrs: local_ipv4_addrs().await,
            decider_until: Mutex::new(None),
        });
        c.wire_access();
        let weak = Arc::downgrade(&c);
        let o = weak.clone();
        c.proxy
            .set_observer(Arc::new(move |name: &str, code: &str| {
                if let Some(c) = o.upgrade() {
                    let (name, code) = (name.to_string(), code.to_string());
                    tokio::spawn(async move { c.observe_code(&name, &code).await });
                }
            }));
        let w = weak.clone();
        c.proxy.set_waker(Arc::new(move |name: String| {
            if let Some(c) = w.upgrade() {
                tokio::spawn(async move {
                    if let Err(e) = c.wake(&name).await {
                        tracing::warn!(runtime = %name, error = %e, "wake on request failed");
                    }
                });
            }
        }));
        c.proxy.set_resolver(Arc::new(move |name: String| {
            let weak = weak.clone();
            Box::pin(async move {
                let c = weak.upgrade()?;
                let row = c.db.runtime_by_name(&name).await.ok()??;
                Some(c.route_for(&row, &row.state))
            })
        }));
        c.refresh_agents().await;
        Ok((c, released))
    }

    /// Registers (or updates) a host. Its agent must answer.
    pub async fn add_host(
        &self,
        name: &str,
        url: &str,
        labels: &[String],
        capacity_mb: Option<u64>,
    ) -> Result<Host> {
        check_name(name)?;
        if url.starts_with("https://") && self.cfg.agent_tls.is_none() {
            return Err(Error::Invalid(format!("host {name}'s agent speaks TLS ({url}) but this control plane trusts no CA: start `ferry serve` with --agent-ca FILE")));
        }
        let client = AgentClient::new(url, &self.cfg.agent_token, self.cfg.agent_tls.as_deref());
        let info = client.info().await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot add host {name}: its agent at {url} does not answer ({e})"
            ))
        })?;
        let capacity = capacity_mb.unwrap_or(info.mem_total_mb);
        self.db.upsert_host(name, url, labels, capacity).await?;
        self.agents
            .write()
            .unwrap()
            .insert(name.to_string(), client);
        self.db
            .add_event(
                None,
                "host.added",
                &format!("host {name} at {url}"),
                &serde_json::json!({"capacity_mb": capacity}),
            )
            .await?;
        self.host(name).await
    }

    pub fn agent(&self, host: &str) -> Result<AgentClient> {
        self.agents
            .read()
            .unwrap()
            .get(host)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "unknown host {host:?}: see `ferry host ls`, or add it with `ferry host add`"
                ))
            })
    }

    /// Memory a host's runtimes hold, plus what is reserved there for expected moves.
    pub(crate) async fn used_mb(&self, host: &str) -> Result<u64> {
        let held: u64 = self
            .db
            .runtimes()
            .await?
            .iter()
            .filter(|r| r.host == host && occupies_host(&r.state))
            .map(|r| r.plan.memory_mb)
            .sum();
        let reserved: u64 = self
            .reservations
            .lock()
            .unwrap()
            .values()
            .filter(|(h, _)| h == host)
            .map(|(_, mb)| mb)
            .sum();
        Ok(held + reserved)
    }

    /// As [`Control::used_mb`], not counting what is reserved for `runtime_id` itself.
    pub(crate) async fn used_mb_for(&self, host: &str, runtime_id: &str) -> Result<u64> {
        let own = self
            .reservations
            .lock()
            .unwrap()
            .get(runtime_id)
            .filter(|(h, _)| h == host)
            .map(|(_, mb)| *mb)
            .unwrap_or(0);
        Ok(self.used_mb(host).await?.saturating_sub(own))
    }

    pub(crate) fn reserve(&self, runtime_id: &str, host: &str, mb: u64) {
        self.reservations
            .lock()
            .unwrap()
            .insert(runtime_id.to_string(), (host.to_string(), mb));
    }

    pub(crate) fn release_reservation(&self, runtime_id: &str) {
        self.reservations.lock().unwrap().remove(runtime_id);
    }

    /// The database's row of host `name`, or a not-found error that says where to look.
    pub(crate) async fn host_row(&self, name: &str) -> Result<db::HostRow> {
        self.db
            .hosts()
            .await?
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::NotFound(format!("unknown host {name:?}: see `ferry host ls`")))
    }

    pub async fn host(&self, name: &str) -> Result<Host> {
        let h = self.host_row(name).await?;
        let healthy = self.agent(&h.name)?.info().await.is_ok();
        Ok(Host {
            used_mb: self.used_mb(&h.name).await?,
            name: h.name,
            url: h.url,
            labels: h.labels,
            capacity_mb: h.capacity_mb,
            healthy,
            state: h.state,
        })
    }

    pub async fn hosts(&self) -> Result<Vec<Host>> {
        let mut v = Vec::new();
        for h in self.db.hosts().await? {
            v.push(self.host(&h.name).await?);
        }
        Ok(v)
    }

    /// Picks a host with room for `memory_mb` (the requested one, or the uncordoned one with most
    /// room; see [`placement::place`]).
    async fn place(&self, wanted: Option<&str>, memory_mb: u64) -> Result<String> {
        let hosts = self.fleet_view(None).await?;
        let need = placement::Need {
            memory_mb,
            ..Default::default()
        };
        placement::place(&hosts, &need, wanted, None)
            .map(|i| hosts[i].name.clone())
            .map_err(placement_error)
    }

    pub fn spec_of(&self, r: &RuntimeRow) -> RuntimeSpec {
        // Stored with the row; computed only for a row not inserted yet (never the case for one
        // read from the database, whose addresses are filled when the network is settled).
        let (host_ip, ip) = r
            .addrs
            .unwrap_or_else(|| crate::sys::netns::slot_addresses(self.cfg.subnet, r.net_index));
        RuntimeSpec {
            id: r.id.clone(),
            name: r.name.clone(),
            plan: r.plan.clone(),
            image: r.image.clone(),
            host_ip,
            ip,
            prefix: 30,
            net: self.net_policy(r),
        }
    }

    /// The egress a runtime gets: its own choice, or its plan's.
    pub fn egress_of(&self, r: &RuntimeRow) -> crate::egress::EgressChoice {
        r.egress
            .clone()
            .unwrap_or_else(|| crate::egress::EgressChoice {
                egress: self
                    .cfg
                    .plan_egress
                    .get(&r.plan.name)
                    .copied()
                    .unwrap_or_default(),
                allow: Vec::new(),
            })
    }

    /// The managed runtime networks: the `/16` the slots of `--subnet` are taken from.
    pub fn runtime_nets(&self) -> Vec<String> {
        vec![ipnet::Ipv4Net::new(self.cfg.subnet, 16)
            .expect("16 is a valid prefix")
            .trunc()
            .to_string()]
    }

    /// Destinations no runtime may reach on any host: the runtime networks, every host's address
    /// (from its agent URL) and this machine's own addresses.
    pub fn always_denied(&self) -> Vec<String> {
        let hosts: Vec<String> = self
            .agents
            .read()
            .unwrap()
            .values()
            .filter_map(|a| url_ipv4(&a.url))
            .map(|ip| format!("{ip}/32"))
            .collect();
        self.runtime_nets()
            .into_iter()
            .chain(hosts)
            .chain(self.local_addrs.iter().cloned())
            .collect()
    }

    /// What the agent enforces for runtime `r`.
    pub fn net_policy(&self, r: &RuntimeRow) -> crate::egress::NetPolicy {
        let choice = self.egress_of(r);
        crate::egress::NetPolicy {
            egress: choice.egress,
            allow: choice.allow,
            deny: self.always_denied(),
            runtime_nets: self.runtime_nets(),
        }
    }

    /// Records a runtime's new state and points its proxy route accordingly.
    pub async fn set_state(
        &self,
        row: &RuntimeRow,
        state: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        self.db.set_state(&row.id, state, reason).await?;
        self.proxy.set(&row.name, self.route_for(row, state));
        Ok(())
    }

    pub fn route_for(&self, row: &RuntimeRow, state: &str) -> crate::proxy::Route {
        use crate::proxy::Route;
        match state {
            "running" => Route::Open(std::net::SocketAddr::new(
                self.spec_of(row).ip.into(),
                crate::mrp::PORT,
            )),
            "migrating" | "restoring" | "creating" => Route::Held,
            "hibernated" => Route::Asleep,
            other => Route::Down(format!(
                "runtime {} is {other}{}",
                row.name,
                row.state_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
        }
    }

    pub async fn runtime_row(&self, name: &str) -> Result<RuntimeRow> {
        self.db
            .runtime_by_name(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no runtime named {name:?}: see `ferry ls`")))
    }

    /// Records the step a runtime's operation has reached: in the database before the step is
    /// taken (as the reason of a `migrating` runtime's state, so the journal shows where a move
    /// stood if it is cut off), and on the event stream for live watchers.
    pub async fn phase(&self, id: &str, phase: &str) {
        tracing::info!(runtime = id, phase, "phase");
        self.phases
            .lock()
            .unwrap()
            .insert(id.to_string(), phase.to_string());
        let row = self.db.runtime_by_id(id).await.ok().flatten();
        if let Some(r) = row.as_ref().filter(|r| r.state == "migrating") {
            if let Err(e) = self.db.set_state(id, &r.state, Some(phase)).await {
                tracing::warn!(runtime = %r.name, error = %e, "could not record the phase");
            }
        }
        // Progress for live watchers (the dashboard): sent on the stream, not stored (id 0).
        let name = row.map(|r| r.name);
        let _ = self.events.send(crate::api::Event {
            id: 0,
            at: db::now(),
            runtime: name,
            kind: PHASE_EVENT.into(),
            reason: phase.into(),
            data: serde_json::Value::Null,
        });
    }

    pub fn current_phase(&self, id: &str) -> Option<String> {
        self.phases.lock().unwrap().get(id).cloned()
    }

    fn is_busy(&self, id: &str) -> bool {
        self.busy.lock().unwrap().contains_key(id)
    }

    /// Whether another instance holds `row` for an operation (its lease has not expired).
    pub(crate) fn held_elsewhere(&self, row: &RuntimeRow) -> bool {
        row.leased_by
            .as_ref()
            .is_some_and(|o| *o != self.cfg.instance_id)
    }

    /// Runs `f` as a journaled operation: recorded before it starts, finished with its result.
    pub async fn journal<T, F>(
        &self,
        kind: &str,
        runtime: Option<&str>,
        detail: serde_json::Value,
        f: F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<(T, Timings)>>,
    {
        self.journal_with(kind, runtime, detail, async {
            f.await.map(|(v, t)| (v, t, None))
        })
        .await
    }

    /// As [`Control::journal`]; the operation may replace its recorded detail when it finishes.
    pub async fn journal_with<T, F>(
        &self,
        kind: &str,
        runtime: Option<&str>,
        detail: serde_json::Value,
        f: F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<(T, Timings, Option<serde_json::Value>)>>,
    {
        let op = self
            .db
            .begin_op(kind, runtime, &detail, Some(&self.cfg.instance_id))
            .await?;
        tracing::info!(op, kind, runtime, "operation started");
        match f.await {
            Ok((v, t, d)) => {
                self.db.finish_op(op, None, &t, d.as_ref()).await?;
                tracing::info!(op, kind, runtime, timings = ?t, "operation finished");
                Ok(v)
            }
            Err(e) => {
                self.db
                    .finish_op(op, Some(&e.to_string()), &Timings::new(), None)
                    .await?;
                tracing::warn!(op, kind, runtime, error = %e, "operation failed");
                Err(e)
            }
        }
    }

    pub async fn event(
        &self,
        runtime: Option<&str>,
        kind: &str,
        reason: &str,
        data: serde_json::Value,
    ) {
        tracing::info!(runtime, kind, reason, "event");
        match self.db.add_event(runtime, kind, reason, &data).await {
            Ok(id) => {
                let ev = crate::api::Event {
                    id,
                    at: db::now(),
                    runtime: runtime.map(str::to_string),
                    kind: kind.into(),
                    reason: reason.into(),
                    data,
                };
                let _ = self.events.send(ev);
            }
            Err(e) => tracing::warn!(error = %e, "could not record event"),
        }
    }
}

/// A placement refusal as the API's error.
pub(crate) fn placement_error(r: placement::Refusal) -> Error {
    use placement::Refusal::*;
    match r {
        NoHosts => Error::Unavailable(r.to_string()),
        Unknown(_) => Error::NotFound(r.to_string()),
        _ => Error::Conflict(r.to_string()),
    }
}

/// Kind of the transient progress events an operation sends while it runs.
pub const PHASE_EVENT: &str = "operation.phase";

/// States in which a runtime holds memory on its host.
fn occupies_host(state: &str) -> bool {
    matches!(
        state,
        "running" | "paused" | "creating" | "restoring" | "migrating"
    )
}

/// Runtime and host names: what users type and what appears in URLs.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid name {name:?}: use 1-40 letters, digits, '-', '_' or '.', starting with a letter or digit")))
    }
}

pub fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 5];
    rand::thread_rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// The IPv4 address in an `http(s)://ADDR:PORT` URL, if it is one.
fn url_ipv4(url: &str) -> Option<Ipv4Addr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.parse().ok()
}

/// This machine's IPv4 addresses as `A/32` (from `ip -4 -o addr`; none if it cannot run).
async fn local_ipv4_addrs() -> Vec<String> {
    let out = crate::sys::cmd::run("ip", &["-4", "-o", "addr", "show"])
        .await
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|t| *t == "inet")?;
            let a: Ipv4Addr = w.next()?.split('/').next()?.parse().ok()?;
            Some(format!("{a}/32"))
        })
        .collect()
}
