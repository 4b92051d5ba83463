//! `ferry`: move live Python runtimes between machines. A thin CLI over `ferry-core`: the daemons
//! (`serve`, `agent`) run the library; every other verb talks to `ferry serve`'s API.

mod archive_io;
pub mod args;
mod client;
mod commands;
mod config;
mod images;
mod output;
mod progress;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Run, snapshot and move live Python runtimes (runc + CRIU)",
    propagate_version = true
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// URL of `ferry serve` (default: the address it wrote into the state dir, else http://127.0.0.1:7700).
    #[arg(long, global = true, env = "FERRY_URL")]
    pub url: Option<String>,
    /// Token of the control API (default: read from the state dir).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust when `ferry serve` speaks TLS.
    #[arg(long, global = true, env = "FERRY_CA")]
    pub ca: Option<PathBuf>,
    /// State directory of `ferry serve`.
    #[arg(
        long,
        global = true,
        env = "FERRY_STATE_DIR",
        default_value = "/var/lib/ferry"
    )]
    pub state_dir: PathBuf,
    /// Configuration file: every option of `serve` and `agent` as a key (see docs/CONFIG.md).
    /// Flags win over FERRY_* variables, which win over the file.
    #[arg(long, global = true, env = "FERRY_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format of the daemons: text or json (one JSON object per line).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

// Parsed once per process: the size of `serve`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the control plane and its API, with a local agent (the single-machine default).
    ///
    /// Example: ferry serve --listen 127.0.0.1:7700
    ///
    /// Example (state in PostgreSQL, shared with other instances):
    ///   ferry serve --no-local-agent --database postgres://ferry:PASSWORD@db.internal/ferry
    Serve(args::ServeArgs),
    /// Run one host's agent (for multi-host setups; `ferry serve` embeds one for its own host).
    ///
    /// Example: ferry agent --name h2 --listen 10.200.2.2:7701 --token-file /etc/ferry/agent-token
    Agent(args::AgentArgs),
    /// Create a runtime and wait until its MRP server answers.
    ///
    /// Example: ferry create --plan pro --name alice
    Create(args::CreateArgs),
    /// Show a runtime's access token for the proxy, rotate it, or sign an expiring one.
    ///
    /// Example: ferry token alice              (its access token)
    /// Example: ferry token alice --rotate     (a new one; the old one and its browser sessions stop working)
    /// Example: ferry token alice --ttl 1h     (a signed token, valid for an hour)
    /// Example: ferry token --signing-key      (the key platforms sign their own tokens with)
    Token {
        name: Option<String>,
        /// Replace the runtime's access token with a new one.
        #[arg(long)]
        rotate: bool,
        /// Print a signed token valid this long (e.g. 1h, 15m) instead.
        #[arg(long, value_parser = args::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Print the signing key of signed tokens (operators only: whoever has it can mint tokens
        /// for every runtime).
        #[arg(long)]
        signing_key: bool,
    },
    /// List runtimes.
    ///
    /// Example: ferry ls --json
    #[command(alias = "ps")]
    Ls,
    /// Show one runtime: state, plan, host, address, memory use, uptime, recent operations.
    ///
    /// Example: ferry inspect alice
    Inspect { name: String },
    /// Run Python code in a runtime (through MRP) and print its output. `-` reads code from stdin.
    ///
    /// Example: ferry exec alice 'x = 41'
    Exec { name: String, code: String },
    /// Stop a runtime (its files stay; restore a snapshot to run it again).
    ///
    /// Example: ferry stop alice
    Stop { name: String },
    /// Remove a runtime.
    ///
    /// Example: ferry rm alice --force
    Rm {
        name: String,
        /// Remove it even if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// Snapshot a runtime with CRIU. Stops it unless --leave-running.
    ///
    /// Example: ferry checkpoint alice --leave-running --export alice.ferry
    Checkpoint(args::CheckpointArgs),
    /// Start a runtime from a snapshot (or an exported archive), with its session intact.
    ///
    /// Example: ferry restore snap-0123456789 --name alice-copy
    Restore(args::RestoreArgs),
    /// Put a runtime to sleep: snapshot it and free its memory. The next request through the
    /// proxy wakes it (the request waits, then is answered), as does `ferry wake`.
    ///
    /// Example: ferry hibernate alice
    Hibernate { name: String },
    /// Wake a hibernated runtime now.
    ///
    /// Example: ferry wake alice
    Wake { name: String },
    /// Move a live runtime to another host behind the same proxy URL, or fork it there.
    ///
    /// Example: ferry migrate alice --to h2 --mode stop-copy
    Migrate(args::MigrateArgs),
    /// Control-plane instances sharing this state, and whether each is alive (heartbeat).
    ///
    /// Example: ferry instances
    Instances,
    /// Recorded migrations and forks with their phases.
    ///
    /// Example: ferry migrations --runtime alice
    Migrations {
        #[arg(long)]
        runtime: Option<String>,
    },
    /// List, inspect, export or remove snapshots.
    ///
    /// Example: ferry snapshots rm snap-0123456789
    Snapshots {
        #[command(subcommand)]
        cmd: Option<args::SnapshotCmd>,
    },
    /// The operations journal (what ran, when, how long each phase took).
    ///
    /// Example: ferry operations --runtime alice
    Operations {
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Recorded events (created, checkpointed, OOM-killed, memory thresholds, idle, ...).
    ///
    /// Example: ferry events --follow --kind memory.
    Events {
        #[arg(long)]
        runtime: Option<String>,
        /// Keep printing events as they happen.
        #[arg(short, long)]
        follow: bool,
        /// With --follow: only kinds starting with this.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Webhooks: events POSTed to your URLs, signed with HMAC-SHA256.
    ///
    /// Example: ferry webhook add https://platform.example/hooks --secret "$SECRET"
    Webhook {
        #[command(subcommand)]
        cmd: args::WebhookCmd,
    },
    /// Turn the monitor's automatic actions (moves, hibernation) on or off for one runtime.
    ///
    /// Example: ferry policy alice --auto false
    Policy {
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        auto: bool,
    },
    /// Runtime images: build, import (OCI layout, docker save), list, remove.
    ///
    /// Example: ferry image import python-mrmd.tar --name python:3.12-mrmd
    Image {
        #[command(subcommand)]
        cmd: args::ImageCmd,
    },
    /// Manage hosts (agents) known to the control plane.
    ///
    /// Example: ferry host add h2 http://10.0.0.12:7701 --labels gpu
    Host {
        #[command(subcommand)]
        cmd: args::HostCmd,
    },
    /// Benchmarks: reproduce the seed report's tables, ferry and the seed's method side by side.
    /// Writes DIR/SUITE.json, DIR/SUITE.md and DIR/SUITE.svg. Suites: local, migrate, roundtrip,
    /// proxy, soak. Brings up (and removes) its own simulated hosts; needs root.
    ///
    /// Example: ferry bench migrate --sizes 128,256,512 --runs 3 --workload random --baseline --out bench/
    Bench(args::BenchArgs),
    /// Check that this host can run ferry (root, runc, CRIU and its features, cgroups, image,
    /// memory, disk) and say what to fix. Exits non-zero when something required is missing.
    ///
    /// Example: sudo ferry doctor
    Doctor {
        #[arg(long, default_value = "/var/cache/ferry/images", env = "FERRY_IMAGES")]
        images: PathBuf,
    },
    /// Development and test helpers: simulated hosts on this machine.
    ///
    /// Example: ferry --state-dir /tmp/ferry-dev dev up --hosts 3
    Dev {
        #[command(subcommand)]
        cmd: args::DevCmd,
    },
    /// The notebook editor (MRMD) that `ferry serve` offers at /notebook/NAME.
    ///
    /// Example: ferry editor install
    Editor {
        #[command(subcommand)]
        cmd: args::EditorCmd,
    },
    /// Print shell completions.
    ///
    /// Example: ferry completions bash > /etc/bash_completion.d/ferry
    Completions { shell: clap_complete::Shell },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = config::load(&argv).and_then(|file| {
        config::apply(Cli::command(), file.as_ref().map(|(p, t)| (p.as_path(), t)))
    });
    let cmd = cmd.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let cli = Cli::from_arg_matches(&cmd.get_matches_from(argv)).unwrap_or_else(|e| e.exit());
    let daemon = matches!(cli.cmd, Cmd::Serve(_) | Cmd::Agent(_));
    if daemon {
        init_tracing(cli.json || cli.log_format == "json");
        ferry_core::sys::host::raise_fd_limit();
    }
    if let Err(e) = commands::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
