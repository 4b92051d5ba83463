//! The dev topology: several simulated hosts on one machine, for the demo, tests and bench.
//!
//! `up` makes a network namespace `<prefix>net` holding a bridge, joins the root namespace
//! (`<prefix>r0`, first address of the /24) and one namespace per host (`<prefix>h<i>`, address
//! .10+i, IP forwarding on) to it with veth pairs, starts `ferry agent` for each host (sockets in
//! the host's namespace, runtimes' veths too), starts `ferry serve` in the root namespace and
//! registers the hosts. Addresses exist only inside namespaces it made. `down` stops every process
//! it started (by PID) and removes everything it made.
//!
//! The fabric namespace is also the router between hosts, as a real network would be: its bridge
//! has the /24's address .254, hosts route everything not on the /24 to it, and each agent points
//! the fabric's route for each of its runtimes' /30 at its host (as it does the root namespace's).
//! It has no default route: nothing it does not know leaves it. `attach` joins a stand-in
//! namespace to it (a TEST-NET "internet", 169.254.169.254 "metadata", a private "mirror").

use crate::sys::cmd::run;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub state_dir: PathBuf,
    pub hosts: u32,
    pub prefix: String,
    /// First address of the /24 the hosts live on.
    pub net: Ipv4Addr,
    /// First address of the range runtimes' /30 networks come from.
    pub subnet: Ipv4Addr,
    pub images_dir: PathBuf,
    /// Give each host its own images dir (inside its state dir) that starts with the built images
    /// of `images_dir` linked in: imports then land on one host only, as on separate machines.
    pub images_per_host: bool,
    pub listen: SocketAddr,
    pub proxy_listen: SocketAddr,
    /// The ferry binary to start agents and serve with.
    pub bin: PathBuf,
    /// More flags for `ferry serve` (monitor settings, ...).
    pub serve_args: Vec<String>,
    /// Agents serve TLS with certificates of a CA made for this topology (`tls/` in the state dir).
    pub tls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevHost {
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    pub agent_url: String,
    pub pid: u32,
    /// How its agent was started (for `ferry dev restart-agent`).
    #[serde(default)]
    pub agent_cmd: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevState {
    pub prefix: String,
    pub hosts: Vec<DevHost>,
    pub serve_pid: u32,
    pub serve_url: String,
    pub proxy_url: String,
    /// How `ferry serve` was started (for `ferry dev restart-serve`).
    #[serde(default)]
    pub serve_cmd: Vec<String>,
    #[serde(default)]
    pub bin: PathBuf,
}

fn nth(net: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net) + n)
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("dev.json")
}

pub fn load(dir: &Path) -> Option<DevState> {
    serde_json::from_slice(&std::fs::read(state_file(dir)).ok()?).ok()
}

pub async fn up(o: &DevOptions) -> Result<DevState> {
    if o.prefix.len() > 9 {
        return Err(Error::Invalid(format!(
            "prefix {:?} is too long: interface names are limited to 15 characters, keep it to 9",
            o.prefix
        )));
    }
    if !(1..=50).contains(&o.hosts) {
        return Err(Error::Invalid("--hosts must be between 1 and 50".into()));
    }
    if load(&o.state_dir).is_some() {
        return Err(Error::Conflict(format!(
            "a dev topology is already up in {}: run `ferry dev down` first",
            o.state_dir.display()
        )));
    }
    std::fs::create_dir_all(&o.state_dir)?;
    let r = up_inner(o).await;
    if r.is_err() {
        down(&o.state_dir, &o.prefix).await;
    }
    r
}

async fn up_inner(o: &DevOptions) -> Result<DevState> {
    let p = &o.prefix;
    let netns = format!("{p}net");
    let root_if = format!("{p}r0");
    let root_peer = format!("{p}r0b");
    run("ip", &["netns", "add", &netns]).await?;
    run("ip", &["-n", &netns, "link", "set", "lo", "up"]).await?;
    run(
        "ip",
        &["-n", &netns, "link", "add", "br0", "type", "bridge"],
    )
    .await?;
    run("ip", &["-n", &netns, "link", "set", "br0", "up"]).await?;
    let router = nth(o.net, 254);
    run(
        "ip",
        &[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{router}/24"),
            "dev",
            "br0",
        ],
    )
    .await?;
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        // Hosts talk to each other on the bridge directly: no redirects to teach them that.
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.br0.send_redirects", "0"),
    ] {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &netns,
                "sysctl",
                "-qw",
                &format!("{k}={v}"),
            ],
        )
        .await?;
    }
    run(
        "ip",
        &[
            "link", "add", &root_if, "type", "veth", "peer", "name", &root_peer,
        ],
    )
    .await?;
    run("ip", &["link", "set", &root_peer, "netns", &netns]).await?;
    run(
        "ip",
        &[
            "-n", &netns, "link", "set", &root_peer, "master", "br0", "up",
        ],
    )
    .await?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/24", nth(o.net, 1)),
            "dev",
            &root_if,
        ],
    )
    .await?;
    run("ip", &["link", "set", &root_if, "up"]).await?;

    let token_file = o.state_dir.join("agent-token");
    crate::control::auth::load_or_create(&token_file)?;
    let tls_dir = o.state_dir.join("tls");
    let ca = if o.tls {
        let names: Vec<(String, std::net::IpAddr)> = (1..=o.hosts)
            .map(|i| (format!("h{i}"), nth(o.net, 10 + i).into()))
            .collect();
        Some(crate::tls::dev_ca(&tls_dir, &names)?)
    } else {
        None
    };
    let scheme = if o.tls { "https" } else { "http" };
    let http = crate::tls::http_client(ca.as_deref(), reqwest::Client::builder())?;
    let mut hosts = Vec::new();
    for i in 1..=o.hosts {
        let name = format!("h{i}");
        let hns = format!("{p}h{i}");
        let (bridge_end, host_end) = (format!("{p}h{i}b"), format!("{p}h{i}e"));
        let addr = nth(o.net, 10 + i);
        run("ip", &["netns", "add", &hns]).await?;
        run(
            "ip",
            &[
                "link",
                "add",
                &bridge_end,
                "type",
                "veth",
                "peer",
                "name",
                &host_end,
            ],
        )
        .await?;
        run("ip", &["link", "set", &bridge_end, "netns", &netns]).await?;
        run(
            "ip",
            &[
                "-n",
                &netns,
                "link",
                "set",
                &bridge_end,
                "master",
                "br0",
                "up",
            ],
        )
        .await?;
        run("ip", &["link", "set", &host_end, "netns", &hns]).await?;
        run(
            "ip",
            &["-n", &hns, "link", "set", &host_end, "name", "eth0"],
        )
        .await?;
        run(
            "ip",
            &[
                "-n",
                &hns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ],
        )
        .await?;
        run("ip", &["-n", &hns, "link", "set", "eth0", "up"]).await?;
        run("ip", &["-n", &hns, "link", "set", "lo", "up"]).await?;
        run(
            "ip",
            &[
                "-n",
                &hns,
                "route",
                "add",
                "default",
                "via",
                &router.to_string(),
            ],
        )
        .await?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &hns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )
        .await?;
        let agent_dir = o.state_dir.join("agents").join(&name);
        std::fs::create_dir_all(&agent_dir)?;
        let listen = format!("{addr}:7701");
        let images = if o.images_per_host {
            own_images(&o.images_dir, &agent_dir.join("images"))?
        } else {
            o.images_dir.clone()
        };
        let mut args: Vec<String> = vec![
            "--state-dir".into(),
            o.state_dir.display().to_string(),
            "agent".into(),
            "--name".into(),
            name.clone(),
            "--listen".into(),
            listen.clone(),
            "--netns".into(),
            hns.clone(),
            "--route-via".into(),
            addr.to_string(),
            "--fabric-netns".into(),
            netns.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--agent-state-dir".into(),
            agent_dir.display().to_string(),
            "--prefix".into(),
            format!("{p}h{i}-"),
            "--images".into(),
            images.display().to_string(),
        ];
        if let Some(ca) = &ca {
            let (cert, key) = (
                tls_dir.join(format!("{name}.pem")),
                tls_dir.join(format!("{name}.key")),
            );
            args.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
                "--peer-ca".into(),
                ca.display().to_string(),
            ]);
        }
        let pid = spawn(
            &o.bin,
            &args,
            &o.state_dir.join(format!("agent-{name}.log")),
        )?;
        hosts.push(DevHost {
            name,
            netns: hns,
            addr,
            agent_url: format!("{scheme}://{listen}"),
            pid,
            agent_cmd: args,
        });
    }
    for h in &hosts {
        wait_for(&format!("agent {}", h.name), || async {
            http.get(format!("{}/agent/v1/info", h.agent_url))
                .send()
                .await
                .is_ok()
        })
        .await?;
    }
    let _ = std::fs::remove_file(o.state_dir.join("serve.addr"));
    let args: Vec<String> = vec![
        "--state-dir".into(),
        o.state_dir.display().to_string(),
        "serve".into(),
        "--no-local-agent".into(),
        "--listen".into(),
        o.listen.to_string(),
        "--proxy-listen".into(),
        o.proxy_listen.to_string(),
        "--subnet".into(),
        o.subnet.to_string(),
        "--prefix".into(),
        p.clone(),
    ];
    let ca_args = ca
        .iter()
        .flat_map(|ca| ["--agent-ca".to_string(), ca.display().to_string()]);
    let args: Vec<String> = args
        .into_iter()
        .chain(ca_args)
        .chain(o.serve_args.iter().cloned())
        .collect();
    let (serve_pid, serve_url, proxy_url) = start_serve(&o.bin, &args, &o.state_dir).await?;
    let token = std::fs::read_to_string(o.state_dir.join("token"))?;
    for h in &hosts {
        let r = http
            .post(format!("{serve_url}/api/v1/hosts"))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"name": h.name, "url": h.agent_url}))
            .send()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        crate::agent::client::check(r).await?;
    }
    let st = DevState {
        prefix: p.clone(),
        hosts,
        serve_pid,
        serve_url,
        proxy_url,
        serve_cmd: args,
        bin: o.bin.clone(),
    };
    std::fs::write(
        state_file(&o.state_dir),
        serde_json::to_vec_pretty(&st).unwrap(),
    )?;
    Ok(st)
}

/// A host's own images dir, with the complete built images of `shared` linked in.
fn own_images(shared: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(shared).into_iter().flatten().flatten() {
        let built = e.path().join(".complete").exists() && !e.path().join("image.json").exists();
        if built && !e.file_name().to_string_lossy().starts_with('.') {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name()))?;
        }
    }
    Ok(dir.to_path_buf())
}

/// Starts `ferry serve` and waits until it answers; returns its PID, API and proxy URLs.
async fn start_serve(
    bin: &Path,
    args: &[String],
    state_dir: &Path,
) -> Result<(u32, String, String)> {
    let _ = std::fs::remove_file(state_dir.join("serve.addr"));
    let _ = std::fs::remove_file(state_dir.join("proxy.addr"));
    let pid = spawn(bin, args, &state_dir.join("serve.log"))?;
    let state = state_dir.to_path_buf();
    wait_for("ferry serve", || async {
        state.join("serve.addr").exists() && state.join("proxy.addr").exists()
    })
    .await?;
    let serve_url = format!(
        "http://{}",
        std::fs::read_to_string(state_dir.join("serve.addr"))?.trim()
    );
    let proxy_url = format!(
        "http://{}",
        std::fs::read_to_string(state_dir.join("proxy.addr"))?.trim()
    );
    Ok((pid, serve_url, proxy_url))
}

/// Starts the dev topology's `ferry serve` again (stopping it first if it still runs): the control
/// plane restarts on the same state while the agents and runtimes carry on.
pub async fn restart_serve(state_dir: &Path) -> Result<DevState> {
    let mut st = load(state_dir).ok_or_else(|| {
        Error::NotFound(format!(
            "no dev topology in {}: run `ferry dev up` first",
            state_dir.display()
        ))
    })?;
    if st.serve_cmd.is_empty() {
        return Err(Error::Invalid(
            "this dev topology predates restart-serve: run `ferry dev down` and `ferry dev up`"
                .into(),
        ));
    }
    stop_pid(st.serve_pid).await;
    let (serve_pid, serve_url, proxy_url) = start_serve(&st.bin, &st.serve_cmd, state_dir).await?;
    (st.serve_pid, st.serve_url, st.proxy_url) = (serve_pid, serve_url, proxy_url);
    std::fs::write(
        state_file(state_dir),
        serde_json::to_vec_pretty(&st).unwrap(),
    )?;
    Ok(st)
}

/// Starts a dev host's agent again (stopping it first if it still runs), with `extra` flags added
/// (e.g. `--images DIR`): the agent adopts the runtimes still running on its host.
pub async fn restart_agent(state_dir: &Path, host: &str, extra: &[String]) -> Result<DevState> {
    let mut st = load(state_dir).ok_or_else(|| {
        Error::NotFound(format!(
            "no dev topology in {}: run `ferry dev up` first",
            state_dir.display()
        ))
    })?;
    let bin = st.bin.clone();
    let names: Vec<String> = st.hosts.iter().map(|h| h.name.clone()).collect();
    let h = st
        .hosts
        .iter_mut()
        .find(|h| h.name == host)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no dev host {host:?}: the hosts are {}",
                names.join(", ")
            ))
        })?;
    if h.agent_cmd.is_empty() {
        return Err(Error::Invalid(
            "this dev topology predates restart-agent: run `ferry dev down` and `ferry dev up`"
                .into(),
        ));
    }
    stop_pid(h.pid).await;
    let args = with_overrides(&h.agent_cmd, extra);
    h.pid = spawn(&bin, &args, &state_dir.join(format!("agent-{host}.log")))?;
    let url = format!("{}/agent/v1/info", h.agent_url);
    let ca = state_dir.join("tls/ca.pem");
    let http = crate::tls::http_client(
        ca.exists().then_some(ca.as_path()),
        reqwest::Client::builder(),
    )?;
    wait_for(&format!("agent {host}"), || async {
        http.get(&url).send().await.is_ok()
    })
    .await?;
    std::fs::write(
        state_file(state_dir),
        serde_json::to_vec_pretty(&st).unwrap(),
    )?;
    Ok(st)
}

/// `base` with `extra` flags added; an extra `--flag=value` replaces `--flag VALUE` in `base`.
fn with_overrides(base: &[String], extra: &[String]) -> Vec<String> {
    let replaced: Vec<&str> = extra
        .iter()
        .filter_map(|e| e.split_once('=').map(|(f, _)| f))
        .collect();
    let mut out = Vec::new();
    let mut it = base.iter();
    while let Some(a) = it.next() {
        if replaced.contains(&a.as_str()) {
            it.next();
        } else {
            out.push(a.clone());
        }
    }
    out.extend(extra.iter().cloned());
    out
}

/// SIGTERM, then SIGKILL after 5 s, to a process this topology started, if it still runs.
async fn stop_pid(pid: u32) {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    if nix::sys::signal::kill(p, None).is_err() || is_zombie(pid) {
        return;
    }
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Internal(format!("starting {}: {e}", bin.display())))?;
    Ok(child.id())
}

async fn wait_for<F, Fut>(what: &str, mut ok: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !ok().await {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(Error::Unavailable(format!(
                "{what} did not come up within 30 s: see the logs in the state dir"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Joins a stand-in namespace `<prefix>x<name>` holding `addr` (e.g. 198.51.100.1 for "the
/// internet", 169.254.169.254 for "cloud metadata") to the fabric router, which routes `addr` to
/// it; returns the namespace's name. It goes with `down`, like everything the topology made.
pub async fn attach(state_dir: &Path, name: &str, addr: Ipv4Addr) -> Result<String> {
    let st = load(state_dir).ok_or_else(|| {
        Error::NotFound(format!(
            "no dev topology in {}: run `ferry dev up` first",
            state_dir.display()
        ))
    })?;
    let p = &st.prefix;
    if name.is_empty()
        || p.len() + 1 + name.len() > 15
        || !name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Error::Invalid(format!(
            "stand-in name {name:?}: give letters and digits, at most {} characters (interface names are limited to 15)",
            15usize.saturating_sub(p.len() + 1)
        )));
    }
    let (fabric, ns) = (format!("{p}net"), format!("{p}x{name}"));
    if crate::sys::netns::exists(&ns) {
        return Err(Error::Conflict(format!(
            "stand-in {name} is already attached"
        )));
    }
    let router = br0_addr(&fabric).await?;
    let r = async {
        run("ip", &["netns", "add", &ns]).await?;
        run(
            "ip",
            &[
                "-n", &fabric, "link", "add", &ns, "type", "veth", "peer", "name", "sx0",
            ],
        )
        .await?;
        run("ip", &["-n", &fabric, "link", "set", "sx0", "netns", &ns]).await?;
        run("ip", &["-n", &fabric, "link", "set", &ns, "up"]).await?;
        let host = format!("{addr}/32");
        run("ip", &["-n", &fabric, "route", "add", &host, "dev", &ns]).await?;
        run("ip", &["-n", &ns, "link", "set", "sx0", "name", "eth0"]).await?;
        run("ip", &["-n", &ns, "addr", "add", &host, "dev", "eth0"]).await?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
        let via = router.to_string();
        run(
            "ip",
            &[
                "-n", &ns, "route", "add", "default", "via", &via, "dev", "eth0", "onlink",
            ],
        )
        .await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = r {
        crate::sys::cmd::run_quiet("ip", &["netns", "del", &ns]).await;
        return Err(e);
    }
    Ok(ns)
}

/// The fabric router's address (on its bridge).
async fn br0_addr(fabric: &str) -> Result<Ipv4Addr> {
    let out = run(
        "ip",
        &["-n", fabric, "-4", "-o", "addr", "show", "dev", "br0"],
    )
    .await?;
    out.split_whitespace()
        .skip_while(|t| *t != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| {
            Error::Invalid(
                "this dev topology has no fabric router: run `ferry dev down` and `ferry dev up`"
                    .into(),
            )
        })
}

/// Stops what `up` started (by PID) and removes every container, mount, netns and cgroup it made.
pub async fn down(state_dir: &Path, prefix: &str) {
    if let Some(st) = load(state_dir) {
        let pids: Vec<u32> = std::iter::once(st.serve_pid)
            .chain(st.hosts.iter().map(|h| h.pid))
            .collect();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let start = Instant::now();
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
            && start.elapsed() < Duration::from_secs(3)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    crate::server::purge(state_dir, prefix).await;
    crate::sys::cmd::run_quiet("ip", &["link", "del", &format!("{prefix}r0")]).await;
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_extra_flag_replaces_the_same_flag_and_its_value() {
        let base: Vec<String> = ["agent", "--images", "/a", "--name", "h1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out =
            super::with_overrides(&base, &["--images=/b".to_string(), "--verbose".to_string()]);
        assert_eq!(out, ["agent", "--name", "h1", "--images=/b", "--verbose"]);
    }
}
