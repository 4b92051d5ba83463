//! The verbs: each parses its flags, calls the control API (or runs a daemon), and prints a table
//! or, with `--json`, the API's JSON.

use crate::client::Client;
use crate::progress::{phased, step};
use crate::{Cli, Cmd};
use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Subcommand};
use ferry_core::api::{CheckpointOptions, CreateRequest, Event, ExecRequest, Host, Operation, RestoreOptions, Runtime, Snapshot};
use futures::StreamExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7700", env = "FERRY_LISTEN")]
    listen: SocketAddr,
    /// Address of the proxy: one stable URL per runtime, /r/NAME/...
    #[arg(long, default_value = "127.0.0.1:7780", env = "FERRY_PROXY_LISTEN")]
    proxy_listen: SocketAddr,
    /// Address of the embedded local agent.
    #[arg(long, default_value = "127.0.0.1:7701")]
    agent_listen: SocketAddr,
    /// Do not run a local agent (hosts are added with `ferry host add`).
    #[arg(long)]
    no_local_agent: bool,
    /// First address of the range runtimes' /30 networks come from.
    #[arg(long, default_value = "10.201.0.0")]
    subnet: std::net::Ipv4Addr,
    /// Where runtime images live (built by scripts/setup.sh).
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    images: PathBuf,
    /// Prefix of the netns and cgroup names of this machine's runtimes.
    #[arg(long, default_value = "ferry-")]
    prefix: String,
    #[arg(long, default_value = "mrmd-python")]
    image: String,
}

#[derive(Args)]
pub struct AgentArgs {
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "127.0.0.1:7701")]
    listen: SocketAddr,
    /// The agent's state dir (default: /var/lib/ferry/agents/NAME).
    #[arg(long)]
    agent_state_dir: Option<PathBuf>,
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    images: PathBuf,
    /// File holding the token the control plane presents.
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long)]
    prefix: Option<String>,
    /// Network namespace that plays this host (holds the host ends of the runtimes' veths and
    /// the agent's sockets).
    #[arg(long)]
    netns: Option<String>,
    /// This host's address in the root namespace's view; runtimes' networks are routed through it.
    #[arg(long, requires = "netns")]
    route_via: Option<std::net::Ipv4Addr>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: Option<String>,
    /// free (256 MB, 0.5 CPU), pro (512 MB, 1 CPU) or team (1 GB, 2 CPUs).
    #[arg(long)]
    plan: Option<String>,
    /// Explicit memory limit, e.g. 512M or 1G.
    #[arg(long)]
    memory: Option<String>,
    /// Explicit CPU limit, e.g. 0.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Host to place it on (default: the one with most room).
    #[arg(long)]
    host: Option<String>,
}

#[derive(Args)]
pub struct CheckpointArgs {
    name: String,
    /// Keep the runtime running after the snapshot.
    #[arg(long)]
    leave_running: bool,
    /// Also write the snapshot as an archive file.
    #[arg(long)]
    export: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id (see `ferry snapshots`).
    snapshot: Option<String>,
    /// Restore from an exported archive file instead.
    #[arg(long, conflicts_with = "snapshot")]
    import: Option<PathBuf>,
    /// Name of the restored runtime (default: the snapshot's runtime).
    #[arg(long)]
    name: Option<String>,
    /// Come back on another plan (default: the snapshot's limits), e.g. after an OOM kill.
    #[arg(long)]
    plan: Option<String>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    cpus: Option<f64>,
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    Ls,
    Inspect { id: String },
    Rm { id: String },
    /// Write a snapshot as an archive file.
    Export { id: String, file: PathBuf },
    /// Import (and verify) an archive file as a snapshot.
    Import {
        file: PathBuf,
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Args)]
pub struct MigrateArgs {
    name: String,
    /// Target host (see `ferry host ls`).
    #[arg(long)]
    to: String,
    /// stop-copy (consistent, the default), lazy (post-copy), pre-copy, or fork (a new runtime
    /// copied from the live one, which keeps running).
    #[arg(long, default_value = "stop-copy")]
    mode: String,
    /// With --mode fork: the new runtime's name.
    #[arg(long = "name")]
    new_name: Option<String>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// local, migrate, roundtrip, proxy or soak.
    suite: String,
    /// Memory sizes (MB) the runtime holds.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    sizes: Vec<u64>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// zeros (untouched pages, like the seed), random (every page random: the worst case) or pandas.
    #[arg(long, default_value = "random")]
    workload: String,
    /// Migration modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "stop-copy,lazy")]
    modes: Vec<String>,
    /// Also run the seed's method (leave-running checkpoint, zstd archive, copy, restore).
    #[arg(long)]
    baseline: bool,
    /// Migrations in the soak suite.
    #[arg(long, default_value_t = 100)]
    migrations: usize,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    images: PathBuf,
}

#[derive(Subcommand)]
pub enum DevCmd {
    /// Simulated hosts on this machine: network namespaces on a bridge, an agent in each,
    /// `ferry serve` in the root namespace. Returns when all of it answers.
    ///
    /// Example: ferry --state-dir /tmp/ferry-dev dev up --hosts 3
    Up {
        #[arg(long, default_value_t = 2)]
        hosts: u32,
        /// Prefix of every netns, interface and cgroup it makes (at most 9 characters).
        #[arg(long, default_value = "ferry-")]
        prefix: String,
        /// The /24 the hosts live on.
        #[arg(long, default_value = "10.200.0.0")]
        net: std::net::Ipv4Addr,
        /// First address of the runtimes' /30 networks.
        #[arg(long, default_value = "10.201.0.0")]
        subnet: std::net::Ipv4Addr,
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:7780")]
        proxy_listen: SocketAddr,
        #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
        images: PathBuf,
    },
    /// Stop and remove everything `dev up` made in this state dir.
    Down {
        /// Default: the prefix `dev up` recorded.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Remove everything a state dir made: containers, mounts, netns named with PREFIX, cgroups,
    /// and the state dir itself. Stop `ferry serve` first.
    ///
    /// Example: ferry --state-dir /tmp/ferry-test dev purge --prefix ft1-
    Purge {
        #[arg(long)]
        prefix: String,
    },
}

#[derive(Subcommand)]
pub enum HostCmd {
    /// Register a host's agent.
    ///
    /// Example: ferry host add h2 http://10.200.2.2:7701 --labels gpu --capacity-mb 4096
    Add {
        name: String,
        url: String,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[arg(long)]
        capacity_mb: Option<u64>,
    },
    Ls,
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap());
}

fn table(rows: Vec<Vec<String>>) {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n).map(|i| rows.iter().map(|r| r.get(i).map(|c| c.chars().count()).unwrap_or(0)).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

fn timings(t: &ferry_core::api::Timings) -> String {
    t.iter().map(|(k, v)| format!("{}={:.0}ms", k.trim_end_matches("_ms"), v)).collect::<Vec<_>>().join(" ")
}

pub async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let client = || Client::new(cli.url.clone(), cli.token.clone(), &cli.state_dir);
    match cli.cmd {
        Cmd::Serve(a) => {
            let o = ferry_core::server::ServeOptions {
                state_dir: cli.state_dir.clone(),
                images_dir: a.images,
                listen: a.listen,
                proxy_listen: a.proxy_listen,
                subnet: a.subnet,
                local_agent: (!a.no_local_agent).then_some(a.agent_listen),
                prefix: a.prefix,
                default_image: a.image,
            };
            ferry_core::server::serve(o).await?;
        }
        Cmd::Agent(a) => {
            let token = std::fs::read_to_string(&a.token_file).with_context(|| format!("reading the agent token from {}", a.token_file.display()))?;
            let o = ferry_core::server::AgentOptions {
                state_dir: a.agent_state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/ferry/agents").join(&a.name)),
                images_dir: a.images,
                listen: a.listen,
                token: token.trim().into(),
                prefix: a.prefix.unwrap_or_else(|| format!("ferry-{}-", a.name)),
                outer_netns: a.netns,
                route_via: a.route_via,
                name: a.name,
            };
            ferry_core::server::start_agent(o).await?;
            tokio::signal::ctrl_c().await?;
        }
        Cmd::Create(a) => {
            let c = client()?;
            let req = CreateRequest { name: a.name, plan: a.plan, memory: a.memory, cpus: a.cpus, host: a.host };
            let rt: Runtime = step(json, "creating runtime", c.post("/runtimes", &req)).await?;
            if json {
                print_json(&rt);
            } else {
                println!("{} created on {} (plan {}: {} MB, {} CPU), MRP at {}", rt.name, rt.host, rt.plan.name, rt.plan.memory_mb, rt.plan.cpus, rt.mrp_url);
            }
        }
        Cmd::Ls => {
            let v: Vec<Runtime> = client()?.get("/runtimes").await?;
            if json {
                return Ok(print_json(&v));
            }
            let mut rows = vec![vec!["NAME".into(), "STATE".into(), "HOST".into(), "PLAN".into(), "MEMORY".into(), "ADDRESS".into(), "CREATED".into()]];
            for r in v {
                rows.push(vec![r.name, r.state, r.host, r.plan.name, format!("{} MB", r.plan.memory_mb), format!("{}:8888", r.ip), r.created_at]);
            }
            table(rows);
        }
        Cmd::Inspect { name } => {
            let v: Value = client()?.get(&format!("/runtimes/{name}")).await?;
            if json {
                return Ok(print_json(&v));
            }
            let rt: Runtime = serde_json::from_value(v.clone())?;
            println!("name:      {}\nid:        {}\nstate:     {}{}", rt.name, rt.id, rt.state, rt.state_reason.map(|r| format!(" ({r})")).unwrap_or_default());
            println!("host:      {}\nplan:      {} ({} MB, {} CPU)\naddress:   {}", rt.host, rt.plan.name, rt.plan.memory_mb, rt.plan.cpus, rt.mrp_url);
            if let Some(s) = rt.stats {
                println!("memory:    {} of {} (peak {})", mb(s.memory_bytes), mb(s.memory_limit_bytes), mb(s.memory_peak_bytes));
            }
            if let Some(u) = rt.uptime_s {
                println!("uptime:    {u:.0} s");
            }
            println!("snapshot:  {}", rt.last_snapshot.unwrap_or_else(|| "-".into()));
            let ops: Vec<Operation> = serde_json::from_value(v["operations"].clone()).unwrap_or_default();
            for o in ops.iter().take(5) {
                println!("op:        {} {} {} {}", o.started_at, o.kind, o.result, timings(&o.timings));
            }
        }
        Cmd::Exec { name, code } => {
            let code = if code == "-" { std::io::read_to_string(std::io::stdin())? } else { code };
            let v: Value = client()?.post(&format!("/runtimes/{name}/exec"), &ExecRequest { code }).await?;
            if json {
                return Ok(print_json(&v));
            }
            print!("{}", v["stdout"].as_str().unwrap_or(""));
            eprint!("{}", v["stderr"].as_str().unwrap_or(""));
            if !v["error"].is_null() {
                let e = &v["error"];
                eprintln!("{}: {}", e["type"].as_str().unwrap_or("Error"), e["message"].as_str().unwrap_or(""));
                std::process::exit(1);
            }
        }
        Cmd::Stop { name } => {
            let rt: Runtime = step(json, "stopping", client()?.post(&format!("/runtimes/{name}/stop"), &())).await?;
            if json { print_json(&rt) } else { println!("{} stopped", rt.name) }
        }
        Cmd::Rm { name, force } => {
            let v: Value = client()?.delete(&format!("/runtimes/{name}?force={force}")).await?;
            if json { print_json(&v) } else { println!("{name} removed") }
        }
        Cmd::Checkpoint(a) => {
            let c = client()?;
            let s: Snapshot = step(json, "checkpointing", c.post(&format!("/runtimes/{}/checkpoint", a.name), &CheckpointOptions { leave_running: a.leave_running })).await?;
            if let Some(f) = &a.export {
                step(json, "exporting", export(&c, &s.id, f)).await?;
            }
            if json {
                print_json(&s);
            } else {
                println!("snapshot {} of {} ({}, images {}) {}", s.id, s.runtime_name, mb(s.size_bytes), mb(s.image_bytes), timings(&s.timings));
                if let Some(f) = a.export {
                    println!("exported to {}", f.display());
                }
            }
        }
        Cmd::Restore(a) => {
            let c = client()?;
            let snapshot = match (a.snapshot, a.import) {
                (Some(s), None) => s,
                (None, Some(f)) => step(json, "importing", import(&c, &f, None)).await?.id,
                _ => bail!("give a snapshot id (see `ferry snapshots`) or --import FILE"),
            };
            let opts = RestoreOptions { snapshot: snapshot.clone(), name: a.name, plan: a.plan, memory: a.memory, cpus: a.cpus };
            let rt: Runtime = step(json, "restoring", c.post("/restore", &opts)).await?;
            if json { print_json(&rt) } else { println!("{} restored from {} on {}, MRP at {}", rt.name, snapshot, rt.host, rt.mrp_url) }
        }
        Cmd::Snapshots { cmd } => {
            let c = client()?;
            match cmd.unwrap_or(SnapshotCmd::Ls) {
                SnapshotCmd::Ls => {
                    let v: Vec<Snapshot> = c.get("/snapshots").await?;
                    if json {
                        return Ok(print_json(&v));
                    }
                    let mut rows = vec![vec!["ID".into(), "RUNTIME".into(), "HOST".into(), "SIZE".into(), "LEAVE-RUNNING".into(), "CREATED".into()]];
                    for s in v {
                        rows.push(vec![s.id, s.runtime_name, s.host, mb(s.size_bytes), s.leave_running.to_string(), s.created_at]);
                    }
                    table(rows);
                }
                SnapshotCmd::Inspect { id } => print_json(&c.get::<Snapshot>(&format!("/snapshots/{id}")).await?),
                SnapshotCmd::Rm { id } => {
                    let v: Value = c.delete(&format!("/snapshots/{id}")).await?;
                    if json { print_json(&v) } else { println!("{id} removed") }
                }
                SnapshotCmd::Export { id, file } => {
                    let n = step(json, "exporting", export(&c, &id, &file)).await?;
                    if json { print_json(&serde_json::json!({"id": id, "file": file, "archive_bytes": n})) } else { println!("{id} exported to {} ({})", file.display(), mb(n)) }
                }
                SnapshotCmd::Import { file, host } => {
                    let s = step(json, "importing", import(&c, &file, host)).await?;
                    if json { print_json(&s) } else { println!("imported {} (runtime {})", s.id, s.runtime_name) }
                }
            }
        }
        Cmd::Operations { runtime } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Operation> = client()?.get(&format!("/operations{q}")).await?;
            if json {
                return Ok(print_json(&v));
            }
            let mut rows = vec![vec!["ID".into(), "KIND".into(), "RUNTIME".into(), "RESULT".into(), "STARTED".into(), "TIMINGS".into()]];
            for o in v {
                rows.push(vec![o.id.to_string(), o.kind, o.runtime.unwrap_or_default(), o.result, o.started_at, timings(&o.timings)]);
            }
            table(rows);
        }
        Cmd::Events { runtime } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Event> = client()?.get(&format!("/events{q}")).await?;
            if json {
                return Ok(print_json(&v));
            }
            for e in v {
                println!("{} {} {} {}", e.at, e.runtime.unwrap_or_else(|| "-".into()), e.kind, e.reason);
            }
        }
        Cmd::Host { cmd } => {
            let c = client()?;
            match cmd {
                HostCmd::Add { name, url, labels, capacity_mb } => {
                    let h: Host = c.post("/hosts", &serde_json::json!({"name": name, "url": url, "labels": labels, "capacity_mb": capacity_mb})).await?;
                    if json { print_json(&h) } else { println!("host {} added ({} MB)", h.name, h.capacity_mb) }
                }
                HostCmd::Ls => {
                    let v: Vec<Host> = c.get("/hosts").await?;
                    if json {
                        return Ok(print_json(&v));
                    }
                    let mut rows = vec![vec!["NAME".into(), "URL".into(), "USED".into(), "CAPACITY".into(), "LABELS".into(), "HEALTHY".into()]];
                    for h in v {
                        rows.push(vec![h.name, h.url, format!("{} MB", h.used_mb), format!("{} MB", h.capacity_mb), h.labels.join(","), h.healthy.to_string()]);
                    }
                    table(rows);
                }
            }
        }
        Cmd::Migrate(a) => {
            let c = client()?;
            let req = ferry_core::api::MigrateRequest { to: a.to.clone(), mode: a.mode.clone(), name: a.new_name };
            let msg = format!("migrating {} to {} ({})", a.name, a.to, a.mode);
            let phase = || async { c.get::<Runtime>(&format!("/runtimes/{}", a.name)).await.ok().and_then(|r| r.phase) };
            let m: ferry_core::api::Migration = phased(json, &msg, c.post(&format!("/runtimes/{}/migrate", a.name), &req), phase).await?;
            if json {
                print_json(&m);
            } else {
                println!("{} {} {} -> {} ({}, archive {})", m.runtime, if m.mode == "fork" { "forked" } else { "moved" }, m.from, m.to, m.mode, mb(m.archive_bytes));
                for phase in ["freeze_ms", "dump_ms", "copy_layer_ms", "hash_ms", "transfer_ms", "restore_ms", "downtime_ms", "total_ms"] {
                    if let Some(v) = m.timings.get(phase) {
                        println!("  {:<10} {v:>8.0} ms", phase.trim_end_matches("_ms"));
                    }
                }
            }
        }
        Cmd::Migrations { runtime } => {
            let q = runtime.map(|r| format!("?runtime={r}")).unwrap_or_default();
            let v: Vec<Operation> = client()?.get(&format!("/migrations{q}")).await?;
            if json {
                return Ok(print_json(&v));
            }
            let mut rows = vec![vec!["ID".into(), "RUNTIME".into(), "MODE".into(), "FROM".into(), "TO".into(), "RESULT".into(), "DOWNTIME".into(), "TOTAL".into(), "STARTED".into()]];
            for o in v {
                let f = |k: &str| o.timings.get(k).map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into());
                let d = |k: &str| o.detail[k].as_str().unwrap_or("-").to_string();
                rows.push(vec![o.id.to_string(), o.runtime.clone().unwrap_or_default(), d("mode"), d("from"), d("to"), o.result.clone(), f("downtime_ms"), f("total_ms"), o.started_at.clone()]);
            }
            table(rows);
        }
        Cmd::Dev { cmd: DevCmd::Up { hosts, prefix, net, subnet, listen, proxy_listen, images } } => {
            let o = ferry_core::dev::DevOptions { state_dir: cli.state_dir.clone(), hosts, prefix, net, subnet, images_dir: images, listen, proxy_listen, bin: std::env::current_exe()? };
            let st = step(json, "starting hosts", ferry_core::dev::up(&o)).await?;
            if json {
                print_json(&st);
            } else {
                for h in &st.hosts {
                    println!("host {} in netns {} at {} (agent pid {})", h.name, h.netns, h.agent_url, h.pid);
                }
                println!("ferry serve at {} (pid {}), proxy at {}/r/NAME/", st.serve_url, st.serve_pid, st.proxy_url);
                println!("stop it all with: ferry --state-dir {} dev down", cli.state_dir.display());
            }
        }
        Cmd::Dev { cmd: DevCmd::Down { prefix } } => {
            let prefix = prefix.or_else(|| ferry_core::dev::load(&cli.state_dir).map(|s| s.prefix)).unwrap_or_else(|| "ferry-".into());
            ferry_core::dev::down(&cli.state_dir, &prefix).await;
            if !json {
                println!("dev topology in {} removed", cli.state_dir.display());
            }
        }
        Cmd::Bench(a) => {
            let o = ferry_bench::BenchOptions {
                suite: a.suite,
                sizes: a.sizes,
                runs: a.runs,
                workload: a.workload.parse()?,
                modes: a.modes,
                baseline: a.baseline,
                out: a.out.clone(),
                migrations: a.migrations,
                bin: std::env::current_exe()?,
                images_dir: a.images,
                quiet: json,
            };
            let r = ferry_bench::run(&o).await?;
            if json {
                print_json(&r);
            } else {
                print!("{}", std::fs::read_to_string(a.out.join(format!("{}.md", r.suite)))?);
                println!("\nwrote {}/{}.{{json,md,svg}}", a.out.display(), r.suite);
            }
        }
        Cmd::Dev { cmd: DevCmd::Purge { prefix } } => {
            ferry_core::server::purge(&cli.state_dir, &prefix).await;
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// Streams a snapshot's archive into `file` (written beside it first, renamed when complete).
async fn export(c: &Client, id: &str, file: &std::path::Path) -> Result<u64> {
    let r = c.send_raw(c.request(reqwest::Method::GET, &format!("/snapshots/{id}/export"))).await?;
    let tmp = file.with_extension("partial");
    let mut f = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
    let mut n = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                bail!("export of {id} broke off: {e}");
            }
        };
        n += chunk.len() as u64;
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    tokio::fs::rename(&tmp, file).await?;
    Ok(n)
}

async fn import(c: &Client, file: &std::path::Path, host: Option<String>) -> Result<Snapshot> {
    let f = tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util_stream(f));
    let q = host.map(|h| format!("?host={h}")).unwrap_or_default();
    c.send(c.request(reqwest::Method::POST, &format!("/snapshots/import{q}")).body(body))
        .await
        .with_context(|| format!("import of {} refused", file.display()))
}

fn tokio_util_stream(f: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}
