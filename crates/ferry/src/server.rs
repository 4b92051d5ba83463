//! Assembles the daemons: `ferry serve` (control plane + API, with an embedded local agent by
//! default) and `ferry agent` (one host's agent alone).

use crate::agent::Agent;
use crate::container::Host;
use crate::control::{auth, Control, ControlConfig};
use crate::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub name: String,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    /// Prefix of netns names and cgroups (unique per host on one machine).
    pub prefix: String,
    pub outer_netns: Option<String>,
    pub route_via: Option<std::net::Ipv4Addr>,
    /// A routing namespace whose route to each runtime also points at this host (dev fabric).
    pub fabric_netns: Option<String>,
    /// Serve the agent API over TLS with this certificate and key.
    pub tls: Option<crate::tls::ServerFiles>,
    /// CA certificates to trust when sending snapshots to `https://` peer agents.
    pub peer_ca: Option<PathBuf>,
}

pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot listen on {addr}: {e} (is another ferry running? choose another address)"
        ))
    })
}

/// Starts an agent; returns the address it listens on.
pub async fn start_agent(o: AgentOptions) -> Result<(Arc<Agent>, SocketAddr)> {
    if !crate::sys::host::is_root() {
        return Err(Error::Unavailable("ferry's agent must run as root (it manages containers, namespaces and CRIU): run it with sudo".into()));
    }
    let mut host = Host::new(
        &o.name,
        o.state_dir.clone(),
        o.images_dir.clone(),
        &o.prefix,
        o.outer_netns.clone(),
        o.route_via,
    );
    host.fabric_netns = o.fabric_netns.clone();
    if !o.listen.ip().is_unspecified() {
        host.addr = o.listen.ip();
    }
    let tls = o.tls.as_ref().map(crate::tls::server_config).transpose()?;
    let peer_tls = o
        .peer_ca
        .as_deref()
        .map(crate::tls::client_config)
        .transpose()?;
    let agent = Arc::new(Agent::new(host, o.token.clone(), peer_tls).await?);
    let listener = crate::sys::inns::listen(o.outer_netns.clone(), o.listen)?;
    let addr = listener.local_addr()?;
    let app = crate::agent::api::router(agent.clone());
    tokio::spawn(async move {
        if let Err(e) = crate::tls::serve(listener, app, tls).await {
            tracing::error!(error = %e, "agent server stopped");
        }
    });
    tracing::info!(%addr, host = %o.name, "agent listening");
    Ok((agent, addr))
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub listen: SocketAddr,
    /// Address of the proxy (`/r/{runtime}/...`).
    pub proxy_listen: SocketAddr,
    pub subnet: std::net::Ipv4Addr,
    /// Run a local agent (host `local`) in this process, listening here.
    pub local_agent: Option<SocketAddr>,
    pub prefix: String,
    pub default_image: String,
    pub monitor: crate::control::monitor::MonitorConfig,
    /// The CA to trust for agents registered with `https://` URLs.
    pub agent_ca: Option<PathBuf>,
    /// Serve the control API and the proxy over TLS with this certificate and key.
    pub tls: Option<crate::tls::ServerFiles>,
    /// Where the editor bundle is installed (`ferry editor install`), for `/notebook/NAME`.
    pub editor_dir: PathBuf,
    /// The proxy's URL as browsers reach it (default: from its listen address).
    pub public_proxy_url: Option<String>,
    /// Where `ferry bench` reports are, for the dashboard's plots.
    pub bench_dir: PathBuf,
    /// `sqlite:///PATH` or `postgres://...`; default: SQLite in the state dir.
    pub database: Option<String>,
    /// How long an operation's lease outlives this instance's last heartbeat.
    pub lease_ttl: Duration,
    /// How long a host's agent may not answer before the host counts as dead.
    pub host_dead_after: Duration,
    /// Egress policy per plan name (`--plan-egress PLAN=allow|deny`).
    pub plan_egress: std::collections::BTreeMap<String, crate::egress::Egress>,
    /// Whether the proxy asks for runtime credentials (`--proxy-auth token|none`).
    pub proxy_auth: crate::access::Mode,
}

/// This instance's id: made once per state dir and kept, so that after a restart it recognises
/// (and recovers at once) what its previous run held.
fn instance_id(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(20)
        .collect();
    let id = format!(
        "{}-{}",
        if host.is_empty() { "ferry" } else { &host },
        &crate::control::new_id("")[..6]
    );
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// Runs `ferry serve` until the process is stopped.
pub async fn serve(o: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&o.state_dir)?;
    let token = auth::load_or_create(&o.state_dir.join("token"))?;
    let agent_token = auth::load_or_create(&o.state_dir.join("agent-token"))?;
    let database = o
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", o.state_dir.join("ferry.db").display()));
    crate::control::db::backend_of(&database)?;
    if o.lease_ttl < Duration::from_secs(1) {
        return Err(Error::Invalid("--lease-ttl must be at least 1s".into()));
    }
    let proxy_listener = bind(o.proxy_listen).await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let listener = bind(o.listen).await?;
    let addr = listener.local_addr()?;
    let tls = o.tls.as_ref().map(crate::tls::server_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let instance_id = instance_id(&o.state_dir)?;
    if o.proxy_auth == crate::access::Mode::None {
        tracing::warn!("--proxy-auth none: the proxy lets ANYONE who reaches it run code in EVERY runtime; use it only on a laptop, never on a shared network");
    }
    let (control, releases) = Control::open(ControlConfig {
        state_dir: o.state_dir.clone(),
        subnet: o.subnet,
        token,
        agent_token: agent_token.clone(),
        default_image: o.default_image.clone(),
        agent_tls: o
            .agent_ca
            .as_deref()
            .map(crate::tls::client_config)
            .transpose()?,
        thresholds: o.monitor.thresholds,
        database: database.clone(),
        instance_id: instance_id.clone(),
        lease_ttl: o.lease_ttl,
        host_dead_after: o.host_dead_after,
        plan_egress: o.plan_egress.clone(),
        proxy_auth: o.proxy_auth,
        proxy_tls: tls.is_some(),
        editor_dir: Some(o.editor_dir.clone()),
    })
    .await?;
    control
        .db
        .register_instance(
            &instance_id,
            &format!("{scheme}://{addr}"),
            &format!("{scheme}://{proxy_addr}"),
            o.lease_ttl,
        )
        .await?;
    tracing::info!(instance = %instance_id, database = %crate::control::db::redact(&database), "control plane state opened");
    if let Some(addr) = o.local_agent {
        let (_agent, bound) = start_agent(AgentOptions {
            name: "local".into(),
            state_dir: o.state_dir.join("agent"),
            images_dir: o.images_dir.clone(),
            listen: addr,
            token: agent_token,
            prefix: o.prefix.clone(),
            outer_netns: None,
            route_via: None,
            fabric_netns: None,
            tls: None,
            peer_ca: None,
        })
        .await?;
        control
            .add_host("local", &format!("http://{bound}"), &[], None)
            .await?;
    }
    // Settle what was half-done when we stopped, adopt what is still running, and mark what died
    // while we were away.
    tokio::spawn(control.clone().lease_loop(releases)); // the heartbeat runs during recovery
    control.recover(true).await;
    control.reconcile_all().await;
    tokio::spawn(control.clone().recovery_loop());
    tokio::spawn(control.clone().reconcile_loop(Duration::from_secs(1)));
    tokio::spawn(control.clone().route_watch_loop());
    tokio::spawn(control.clone().monitor_loop(o.monitor.clone()));
    tokio::spawn(control.clone().host_loss_loop(Duration::from_secs(1)));
    tokio::spawn(control.clone().webhook_loop());
    tokio::spawn(control.clone().access_loop());
    let proxy_app = crate::proxy::router(control.proxy.clone());
    let proxy_tls = tls.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::tls::serve(proxy_listener, proxy_app, proxy_tls).await {
            tracing::error!(error = %e, "proxy stopped");
        }
    });
    crate::sys::host::write_atomically(&o.state_dir.join("proxy.addr"), proxy_addr.to_string())?;
    // What `ferry doctor` reads of how this instance serves.
    crate::sys::host::write_atomically(&o.state_dir.join("proxy.auth"), o.proxy_auth.to_string())?;
    tracing::info!(%proxy_addr, "proxy listening");
    crate::sys::host::write_atomically(
        &o.state_dir.join("serve.url"),
        format!("{scheme}://{addr}"),
    )?;
    crate::sys::host::write_atomically(&o.state_dir.join("serve.addr"), addr.to_string())?;
    tracing::info!(%addr, scheme, "ferry serve listening");
    let ui = crate::ui::UiConfig {
        editor_dir: o.editor_dir.clone(),
        proxy_addr,
        proxy_tls: tls.is_some(),
        public_proxy_url: o.public_proxy_url.clone(),
        bench_dir: o.bench_dir.clone(),
    };
    let app = crate::control::api::router(control.clone()).merge(crate::ui::router(control, ui));
    crate::tls::serve(listener, app, tls)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Removes everything a ferry state dir made on this machine: the containers of every runc root
/// under it, mounts under it, network namespaces named with `prefix`, its cgroups, and the dir
/// itself. Used by `ferry dev purge` and by the tests' cleanup, which must leave nothing behind.
pub async fn purge(state_dir: &std::path::Path, prefix: &str) {
    use crate::sys::{cgroup, cmd, mount, netns, runc::Runc};
    let mut roots = Vec::new();
    find_runc_roots(state_dir, 0, &mut roots);
    for root in roots {
        let runc = Runc::new(root);
        for id in runc.ids() {
            if let Ok(Some(s)) = runc.state(&id).await {
                if s.status == "paused" {
                    let _ = runc.resume(&id).await;
                }
            }
            let _ = runc.kill(&id, "KILL").await;
            let _ = runc.delete_force(&id).await;
        }
    }
    for m in mount::mounts_under(state_dir) {
        let _ = mount::unmount(&m);
    }
    // Tables of runtimes whose host end is in the root namespace (simulated hosts' tables go
    // with their namespaces below).
    crate::sys::firewall::remove_orphans(None, prefix, &[]).await;
    crate::sys::layer::detach_loops_under(state_dir).await;
    for ns in netns::list_with_prefix(prefix) {
        cmd::run_quiet("ip", &["netns", "del", &ns]).await;
    }
    cgroup::remove_with_prefix("/ferry", prefix);
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("ferry-{prefix}"))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    cgroup::remove("/ferry"); // only if now empty
    let _ = std::fs::remove_dir_all(state_dir);
}

fn find_runc_roots(dir: &std::path::Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if e.file_name() == "runc" {
            out.push(p);
        } else if e.file_name() != "runtimes" && e.file_name() != "snapshots" {
            find_runc_roots(&p, depth + 1, out);
        }
    }
}
