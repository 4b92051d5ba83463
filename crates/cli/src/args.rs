//! The verbs' flags (clap).

use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7700", env = "FERRY_LISTEN")]
    pub listen: SocketAddr,
    /// Address of the proxy: one stable URL per runtime, /r/NAME/...
    #[arg(long, default_value = "127.0.0.1:7780", env = "FERRY_PROXY_LISTEN")]
    pub proxy_listen: SocketAddr,
    /// Address of the embedded local agent.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub agent_listen: SocketAddr,
    /// Do not run a local agent (hosts are added with `ferry host add`).
    #[arg(long)]
    pub no_local_agent: bool,
    /// First address of the range runtimes' /30 networks come from.
    #[arg(long, default_value = "10.201.0.0")]
    pub subnet: std::net::Ipv4Addr,
    /// Where runtime images live (`ferry image build` / `ferry image import` put them there).
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    pub images: PathBuf,
    /// Prefix of the netns and cgroup names of this machine's runtimes.
    #[arg(long, default_value = "ferry-")]
    pub prefix: String,
    /// Image of runtimes created without --image.
    #[arg(long, default_value = "mrmd-python")]
    pub image: String,
    /// How often the monitor samples every runtime (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub monitor_interval: std::time::Duration,
    /// CPU under 1% of a core for this long = idle, and the runtime is hibernated (e.g. 15m).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub idle_after: std::time::Duration,
    /// A threshold fires again only after this long (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub debounce: std::time::Duration,
    /// Report monitor events but take no automatic action (no migrations, no hibernation).
    #[arg(long)]
    pub no_auto: bool,
    /// Memory thresholds (% of the limit): pre-provision, migrate, urgent, critical.
    #[arg(long, value_delimiter = ',', default_value = "50,75,90,95")]
    pub thresholds: Vec<f64>,
    /// Mode of automatic migrations: stop-copy or lazy.
    #[arg(long, default_value = "stop-copy", value_parser = ["stop-copy", "lazy"])]
    pub auto_mode: String,
    /// PEM CA certificates to trust for agents registered with `https://` URLs.
    #[arg(long)]
    pub agent_ca: Option<PathBuf>,
    /// Serve the control API and the proxy over TLS: this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the notebook editor bundle is (`ferry editor install`); default STATE_DIR/editor.
    #[arg(long, env = "FERRY_EDITOR_DIR")]
    pub editor_dir: Option<PathBuf>,
    /// The proxy's URL as browsers reach it (for /notebook/NAME), e.g. https://rt.example.com;
    /// default: http://PROXY_LISTEN, or the page's own host name when the proxy listens on 0.0.0.0.
    #[arg(long, env = "FERRY_PUBLIC_PROXY_URL")]
    pub public_proxy_url: Option<String>,
    /// Where `ferry bench --out` wrote its reports: the dashboard shows their plots; default
    /// STATE_DIR/bench.
    #[arg(long, env = "FERRY_BENCH_DIR")]
    pub bench_dir: Option<PathBuf>,
    /// Where the control plane keeps its state: sqlite:///PATH (default: ferry.db in the state
    /// dir) or postgres://USER:PASSWORD@HOST/DB, which several `ferry serve` instances can share.
    #[arg(long, env = "FERRY_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// An instance's operations are taken over by the others this long after it stops (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// A host whose agent does not answer for this long is dead: its running runtimes are marked
    /// `lost` (their replicated snapshot offered) and its hibernated ones wake elsewhere (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub host_dead_after: std::time::Duration,
    /// Egress policy of a plan's runtimes, PLAN=allow|deny (repeatable; plans not named: allow).
    /// `ferry create --egress` overrides it per runtime.
    #[arg(
        long = "plan-egress",
        value_name = "PLAN=POLICY",
        value_delimiter = ','
    )]
    pub plan_egress: Vec<String>,
    /// What the proxy asks of a request to /r/NAME/...: `token` (NAME's credential; the default)
    /// or `none` (anyone who reaches the proxy runs code in every runtime: a laptop only).
    #[arg(long, default_value = "token", value_parser = parse_proxy_auth)]
    pub proxy_auth: ferry_core::access::Mode,
}

/// `token` or `none`.
fn parse_proxy_auth(s: &str) -> Result<ferry_core::access::Mode, String> {
    s.parse()
}

/// `90`, `90s`, `15m`, `2h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("cannot read {s:?} as a duration: write it like 90s, 15m or 2h"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("duration {s:?} must not be negative"));
    }
    Ok(std::time::Duration::from_secs_f64(v * mul))
}

#[derive(Args)]
pub struct AgentArgs {
    /// This host's name (as `ferry host add NAME URL` registers it).
    #[arg(long)]
    pub name: String,
    /// Address of the agent API.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub listen: SocketAddr,
    /// The agent's state dir (default: /var/lib/ferry/agents/NAME).
    #[arg(long)]
    pub agent_state_dir: Option<PathBuf>,
    /// Where this host's runtime images live.
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    pub images: PathBuf,
    /// File holding the token the control plane presents.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Prefix of the netns and cgroup names of its runtimes (default: ferry-NAME-).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Network namespace that plays this host (holds the host ends of the runtimes' veths and
    /// the agent's sockets).
    #[arg(long)]
    pub netns: Option<String>,
    /// This host's address in the root namespace's view; runtimes' networks are routed through it.
    #[arg(long, requires = "netns")]
    pub route_via: Option<std::net::Ipv4Addr>,
    /// A namespace that routes between hosts (the dev topology's fabric): its route to each
    /// runtime's network is pointed at this host too, as the root namespace's is.
    #[arg(long, requires = "route_via")]
    pub fabric_netns: Option<String>,
    /// Serve the agent API over TLS: this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates to trust when sending snapshots to `https://` peer agents.
    #[arg(long)]
    pub peer_ca: Option<PathBuf>,
}

/// A plan, or explicit limits (which win over the plan's).
#[derive(Args)]
pub struct LimitArgs {
    /// free (256 MB, 0.5 CPU), pro (512 MB, 1 CPU) or team (1 GB, 2 CPUs).
    #[arg(long)]
    pub plan: Option<String>,
    /// Explicit memory limit, e.g. 512M or 1G.
    #[arg(long)]
    pub memory: Option<String>,
    /// Explicit CPU limit, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Host to place it on (default: the one with most room).
    #[arg(long)]
    pub host: Option<String>,
    /// The monitor only reports on it: no automatic moves or hibernation.
    #[arg(long)]
    pub no_auto: bool,
    /// Image to run (see `ferry image ls`; default: the server's --image, mrmd-python).
    #[arg(long)]
    pub image: Option<String>,
    /// Outbound connections to public addresses: allow or deny (default: the plan's policy).
    #[arg(long, value_parser = ["allow", "deny"])]
    pub egress: Option<String>,
    /// Open this private network (IPv4 CIDR, e.g. a package mirror's 10.50.0.0/24) to the
    /// runtime; repeatable. Never opens the runtime networks, the hosts, the control plane or
    /// link-local.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allow_cidr: Vec<String>,
}

#[derive(Args)]
pub struct CheckpointArgs {
    pub name: String,
    /// Keep the runtime running after the snapshot.
    #[arg(long)]
    pub leave_running: bool,
    /// Also write the snapshot as an archive file.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id (see `ferry snapshots`).
    pub snapshot: Option<String>,
    /// Restore from an exported archive file instead.
    #[arg(long, conflicts_with = "snapshot")]
    pub import: Option<PathBuf>,
    /// Name of the restored runtime (default: the snapshot's runtime).
    #[arg(long)]
    pub name: Option<String>,
    /// Come back with other limits than the snapshot's (e.g. a larger plan after an OOM kill).
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    Ls,
    Inspect {
        id: String,
    },
    Rm {
        id: String,
    },
    /// Write a snapshot as an archive file.
    Export {
        id: String,
        file: PathBuf,
    },
    /// Import (and verify) an archive file as a snapshot.
    Import {
        file: PathBuf,
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Args)]
pub struct MigrateArgs {
    pub name: String,
    /// Target host (see `ferry host ls`).
    #[arg(long)]
    pub to: String,
    /// stop-copy (consistent, the default), lazy (post-copy), pre-copy, or fork (a new runtime
    /// copied from the live one, which keeps running).
    #[arg(long, default_value = "stop-copy")]
    pub mode: String,
    /// With --mode fork: the new runtime's name.
    #[arg(long = "name")]
    pub new_name: Option<String>,
    /// Arrive on this plan (free, pro, team): a move to a bigger machine with bigger limits.
    #[arg(long)]
    pub plan: Option<String>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// local, migrate, roundtrip, proxy or soak.
    pub suite: String,
    /// Memory sizes (MB) the runtime holds.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    pub sizes: Vec<u64>,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// zeros (untouched pages, like the seed), random (every page random: the worst case) or pandas.
    #[arg(long, default_value = "random")]
    pub workload: String,
    /// Migration modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "stop-copy,lazy")]
    pub modes: Vec<String>,
    /// Also run the seed's method (leave-running checkpoint, zstd archive, copy, restore).
    #[arg(long)]
    pub baseline: bool,
    /// migrate: a thread in the runtime rewrites its memory at this rate during the move
    /// (e.g. `50MB/s`; 0, the default, writes nothing but the counter).
    #[arg(long, default_value = "0")]
    pub write_rate: String,
    /// Migrations in the soak suite.
    #[arg(long, default_value_t = 100)]
    pub migrations: usize,
    /// migrate: how long the client keeps writing after the move (the window of the p99 latency
    /// after the switch), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub observe_after: std::time::Duration,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
    pub images: PathBuf,
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
        /// Each host gets its own images dir (built images of --images linked in), as separate
        /// machines would: an image imported on one host must be sent to another.
        #[arg(long)]
        images_per_host: bool,
        /// Flags passed on to `ferry serve`, e.g. --serve-arg=--idle-after=30s.
        #[arg(long = "serve-arg", allow_hyphen_values = true)]
        serve_args: Vec<String>,
        /// Agents speak TLS (a throwaway CA and a certificate per host are made in the state dir).
        #[arg(long)]
        tls: bool,
    },
    /// Start the dev topology's control plane (`ferry serve`) again; agents and runtimes carry on.
    RestartServe,
    /// Start a dev host's agent again (stopping it first if it still runs); the runtimes on its
    /// host carry on and the new agent adopts them.
    ///
    /// Example: ferry --state-dir /tmp/ferry-dev dev restart-agent h2
    RestartAgent {
        host: String,
        /// Flags added to the agent's command line, e.g. --agent-arg=--images=/srv/images.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Join a stand-in namespace holding ADDR to the topology's router (for tests: a TEST-NET
    /// "internet" such as 198.51.100.1, "cloud metadata" at 169.254.169.254, a private "mirror").
    /// Prints the namespace's name; `dev down` removes it.
    ///
    /// Example: ferry --state-dir /tmp/ferry-dev dev attach inet 198.51.100.1
    Attach {
        /// Letters and digits; the namespace is PREFIXxNAME.
        name: String,
        addr: std::net::Ipv4Addr,
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
pub enum WebhookCmd {
    /// Register a URL that receives every event (or those of --kinds) as signed JSON.
    ///
    /// Example: ferry webhook add https://platform.example/hooks/ferry --secret "$SECRET" --kinds memory.,runtime.lost
    Add {
        #[arg(value_name = "URL")]
        hook_url: String,
        /// Key of the HMAC-SHA256 signature in the X-Ferry-Signature header (16+ characters).
        #[arg(long, env = "FERRY_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Event kinds (prefixes) to send; default all.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
    },
    Ls,
    Rm {
        id: i64,
    },
    /// The delivery log of one webhook (every attempt, with its answer).
    Deliveries {
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum HostCmd {
    /// Register a host's agent.
    ///
    /// Example: ferry host add h2 http://10.200.2.2:7701 --labels gpu --capacity-mb 4096
    Add {
        name: String,
        /// The agent's URL (named apart from the global --url, which is the control plane's).
        #[arg(value_name = "URL")]
        agent_url: String,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[arg(long)]
        capacity_mb: Option<u64>,
    },
    /// The hosts, their memory and state (ready, cordoned, draining).
    Ls,
    /// Stop placing anything new on a host (creates, restores, wakes, automatic moves); an
    /// explicit --to/--host naming it is refused. Its runtimes keep running.
    Cordon { name: String },
    /// Let placement use a cordoned host again.
    Uncordon { name: String },
    /// Cordon a host and move every running runtime off it, hibernating what cannot be moved
    /// (no room elsewhere, or not within --within). A runtime whose move fails keeps running there.
    ///
    /// Example: ferry host drain h2 --mode lazy --parallel 4 --within 90s
    Drain {
        name: String,
        #[arg(long, default_value = "stop-copy", value_parser = ["stop-copy", "lazy", "hibernate"])]
        mode: String,
        /// Moves at a time.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Deadline: what the plan says cannot be moved in time is hibernated.
        #[arg(long, value_parser = parse_duration)]
        within: Option<std::time::Duration>,
    },
    /// Remove a host. Refused while runtimes or snapshots live there; with --force, after a
    /// drain (host cordoned, nothing running), the records of its stopped/hibernated runtimes and
    /// of its snapshots are forgotten (the files on that host are not touched).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum EditorCmd {
    /// Fetch the MRMD editor's browser bundle (npm package mrmd-electron) from the npm registry,
    /// verify its sha512 integrity, and install editor/mrmd.iife.js where `ferry serve` serves
    /// /notebook/NAME from.
    ///
    /// Example: ferry editor install --version 0.5.4
    #[command(disable_version_flag = true)]
    Install {
        /// Version of mrmd-electron (`npm view mrmd-electron versions`).
        #[arg(long, default_value = ferry_core::editor::DEFAULT_VERSION)]
        version: String,
        /// Install here (default: STATE_DIR/editor, where `ferry serve` looks).
        #[arg(long, env = "FERRY_EDITOR_DIR")]
        dir: Option<PathBuf>,
        /// The npm registry.
        #[arg(long, default_value = ferry_core::editor::DEFAULT_REGISTRY, env = "FERRY_NPM_REGISTRY")]
        registry: String,
        /// Download again even if this version is installed.
        #[arg(long)]
        force: bool,
    },
    /// Show the installed editor bundle.
    ///
    /// Example: ferry editor status --dir /var/cache/ferry/editor
    Status {
        #[arg(long, env = "FERRY_EDITOR_DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build ferry's runtime image on this machine (Debian bookworm + python3 + a venv with
    /// mrmd-python, numpy, pandas, matplotlib, scipy, pinned by image/requirements.lock) as a directory image. Needs root and debootstrap; cached.
    ///
    /// Example: sudo ferry image build --name mrmd-python
    Build {
        #[arg(long, default_value = "mrmd-python")]
        name: String,
        #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
        images: PathBuf,
        /// Build it again even if it is complete.
        #[arg(long)]
        force: bool,
    },
    /// Import an OCI image layout (directory or tar) or a `docker save` / `podman save` tarball.
    /// The image must contain the MRP server (`mrmd-python` on its PATH) to run as a runtime.
    ///
    /// Example: ferry image import python-mrmd.tar --name python:3.12-mrmd --host h1
    Import {
        /// The tarball, or an OCI image layout directory.
        file: PathBuf,
        /// NAME[:TAG] (default: the name the archive carries).
        #[arg(long)]
        name: Option<String>,
        /// Host that gets it (default: the only host, or `local`); others receive it when needed.
        #[arg(long)]
        host: Option<String>,
    },
    /// List the images of every host (or one), with their digests.
    ///
    /// Example: ferry image ls --host h2
    Ls {
        #[arg(long)]
        host: Option<String>,
    },
    /// Remove an image from every host (or one). Refused while a runtime uses it.
    ///
    /// Example: ferry image rm python:3.12-mrmd
    Rm {
        name: String,
        #[arg(long)]
        host: Option<String>,
    },
}
