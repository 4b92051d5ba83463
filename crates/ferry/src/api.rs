//! JSON types of ferry's APIs (agent, control) shared with the CLI.

use crate::plan::Plan;
use crate::sys::cgroup::Stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Millisecond timings of an operation's phases, in the order they ran.
pub type Timings = BTreeMap<String, f64>;

/// What an agent needs to run a runtime. Chosen by the control plane; travels with migrations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuntimeSpec {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub image: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Where its code may connect to (enforced by the agent's nftables rules).
    #[serde(default)]
    pub net: crate::egress::NetPolicy,
}

/// A runtime as one agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRuntime {
    pub spec: RuntimeSpec,
    /// `running`, `paused`, `stopped` (exited), or `absent` (no container).
    pub status: String,
    pub pid: Option<i64>,
    pub oom_killed: bool,
    pub stats: Option<Stats>,
    #[serde(default)]
    pub timings: Timings,
    /// Why the runtime is `lost` (e.g. its memory pages never arrived).
    #[serde(default)]
    pub reason: Option<String>,
    /// A lazy restore is still fetching memory pages from the source.
    #[serde(default)]
    pub lazy_pending: bool,
    /// The last lazy restore's page counts once every page arrived (`pages_fetched` from the
    /// source, `pages_from_store` from a pre-copy page store, `faults`, ...); empty otherwise.
    #[serde(default)]
    pub pages: Timings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    pub version: String,
    pub criu: crate::sys::criu::Criu,
    pub runc_version: String,
    pub kernel: String,
    pub mem_total_mb: u64,
    pub images: Vec<String>,
    /// The same images with their digests and configs.
    #[serde(default)]
    pub image_records: Vec<crate::image::ImageRecord>,
    /// Which write tracker this host offers for pre-copy migration.
    #[serde(default)]
    pub write_tracker: crate::sys::memtrack::WriteTracker,
}

/// Send an image to a peer agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendImageRequest {
    pub target_url: String,
    pub target_token: String,
}

/// An image on one host (control API).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostImage {
    pub host: String,
    #[serde(flatten)]
    pub image: crate::image::ImageRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub snapshot_id: String,
    #[serde(default)]
    pub leave_running: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub snapshot_id: String,
    pub spec: RuntimeSpec,
    /// Verify every checksum first (skipped only right after a verified import of that snapshot).
    #[serde(default = "yes")]
    pub verify: bool,
    /// Lazy (post-copy) restore: memory pages come from this page server (ADDR:PORT).
    #[serde(default)]
    pub lazy_from: Option<String>,
}

fn yes() -> bool {
    true
}

/// Source side of a migration: snapshot the runtime and stream it to the target agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRequest {
    pub snapshot_id: String,
    /// Target agent's URL and token (the stream is authenticated like any agent request).
    pub target_url: String,
    pub target_token: String,
    /// Thaw the source right after the dump (a fork) instead of leaving it frozen (a move).
    #[serde(default)]
    pub thaw_after_dump: bool,
    /// Lazy (post-copy): dump everything but memory and serve the pages from a page server.
    #[serde(default)]
    pub lazy: bool,
    /// Pre-copy: stream memory to the target's page store in rounds while the runtime runs, and
    /// send the last dirty set at the freeze (`agent/precopy.rs`).
    #[serde(default)]
    pub precopy: bool,
}

/// The source side of a lazy migration: still serving pages, done, or failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LazyStatus {
    /// `serving`, `done` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// Process group of the dumping runc + CRIU.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResult {
    /// The snapshot as the target imported and verified it.
    pub snapshot: SnapshotInfo,
    pub archive_bytes: u64,
    pub timings: Timings,
    /// Lazy: where the source serves the memory pages.
    #[serde(default)]
    pub page_server: Option<String>,
    /// The target stored the snapshot without checking its content (`verify=later`): restore it
    /// with `verify`, which checks while CRIU restores.
    #[serde(default)]
    pub verify_on_restore: bool,
}

/// One migration, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Migration {
    pub runtime: String,
    pub mode: String,
    pub from: String,
    pub to: String,
    pub snapshot: Option<String>,
    pub archive_bytes: u64,
    pub timings: Timings,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrateRequest {
    pub to: String,
    /// `stop-copy` (default), `lazy`, `pre-copy` or `fork`.
    #[serde(default = "default_mode")]
    #[schema(pattern = "^(stop-copy|lazy|pre-copy|fork)$")]
    pub mode: String,
    /// For `fork`: the new runtime's name.
    pub name: Option<String>,
    /// Arrive with these limits (a move to a larger plan); default: the current ones.
    #[serde(default)]
    pub plan: Option<Plan>,
}

fn default_mode() -> String {
    "stop-copy".into()
}

/// A snapshot in an agent's store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub runtime_id: String,
    pub runtime_name: String,
    pub host: String,
    pub leave_running: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Bytes of the snapshot's files (CRIU images + writable layer).
    pub size_bytes: u64,
    /// Bytes of the CRIU image dir alone.
    pub image_bytes: u64,
    pub criu_version: String,
    pub format_version: u32,
    pub plan: Plan,
    #[serde(default)]
    pub timings: Timings,
    /// The image the runtime ran (a restore under a new name runs the same one).
    #[serde(default)]
    pub runtime_image: Option<String>,
}

// ---- control plane ----------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Runtime {
    pub id: String,
    pub name: String,
    pub host: String,
    pub plan: Plan,
    pub image: String,
    pub ip: String,
    /// `running`, `paused`, `stopped`, `checkpointed`, `exited`, `oom-killed`, `migrating`, `lost`.
    pub state: String,
    pub state_reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub last_snapshot: Option<String>,
    /// Where the runtime's MRP API answers directly (`http://IP:8888/mrp/v1`).
    pub mrp_url: String,
    #[serde(default)]
    pub stats: Option<Stats>,
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// The step a long operation (a migration) on it has reached, while it runs.
    #[serde(default)]
    pub phase: Option<String>,
    /// Whether the monitor may move or hibernate it.
    #[serde(default)]
    pub auto: bool,
    /// Its outbound network policy: `allow` or `deny`, and the extra CIDRs opened.
    #[serde(default)]
    pub egress: crate::egress::EgressChoice,
    /// The egress policy comes from its plan (not set for this runtime).
    #[serde(default)]
    pub egress_from_plan: bool,
    /// Its access token for the proxy: only in the answer to `create` (`ferry token NAME` shows
    /// it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateRequest {
    /// The monitor only reports on it, never moves or hibernates it.
    #[serde(default)]
    pub no_auto: bool,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub host: Option<String>,
    /// The image to run (default: the server's `--image`).
    #[serde(default)]
    pub image: Option<String>,
    /// Outbound policy, overriding the plan's: `allow` or `deny`.
    #[serde(default)]
    pub egress: Option<crate::egress::Egress>,
    /// Extra destinations (IPv4 CIDRs) opened to the runtime, e.g. a package mirror.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    pub code: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointOptions {
    #[serde(default)]
    pub leave_running: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestoreOptions {
    pub snapshot: String,
    pub name: Option<String>,
    /// Restore with other limits than the snapshot's (e.g. a larger plan after an OOM kill).
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub plan: Plan,
    pub runtime_id: String,
    pub runtime_name: String,
    pub host: String,
    pub leave_running: bool,
    pub size_bytes: u64,
    pub image_bytes: u64,
    pub created_at: String,
    pub timings: Timings,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: i64,
    pub kind: String,
    pub runtime: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `ok` or `failed`.
    pub result: String,
    pub error: Option<String>,
    pub timings: Timings,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub runtime: Option<String>,
    pub kind: String,
    pub reason: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    pub name: String,
    pub url: String,
    pub labels: Vec<String>,
    pub capacity_mb: u64,
    pub used_mb: u64,
    pub healthy: bool,
    /// `ready`, `cordoned` (nothing new is placed there) or `draining`.
    #[serde(default = "ready")]
    pub state: String,
}

fn ready() -> String {
    "ready".into()
}

/// `POST /api/v1/hosts/{name}/drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainRequest {
    /// `stop-copy` (default), `lazy` or `hibernate`.
    #[serde(default)]
    #[schema(pattern = "^(stop-copy|lazy|hibernate)$")]
    pub mode: Option<String>,
    /// Moves at a time (default 2).
    #[serde(
        default,
        deserialize_with = "crate::control::extract::opt_integral_u64"
    )]
    #[schema(minimum = 1, maximum = 64)]
    pub parallel: Option<u64>,
    /// Deadline in seconds: what cannot be moved in time is hibernated.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 86400.0)]
    pub within_s: Option<f64>,
}

/// What a drain did with one runtime.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainOutcome {
    pub runtime: String,
    /// `moved`, `hibernated`, `failed` (it still runs on the drained host) or `skipped`.
    pub action: String,
    /// The host it moved to.
    pub to: Option<String>,
    /// The plan's estimate (moves), seconds after the start.
    pub estimate_s: Option<f64>,
    pub ms: f64,
    /// Why it was hibernated, failed or skipped.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainReport {
    pub host: String,
    pub mode: String,
    /// The move rate the plan assumed (MB/s) and whether it was measured.
    pub rate_mb_per_s: f64,
    pub rate_measured: bool,
    pub outcomes: Vec<DrainOutcome>,
    pub total_ms: f64,
    /// Runtimes still on the host (failed or skipped moves): empty when the drain succeeded.
    pub remaining: Vec<String>,
}
