//! ferry-core: everything ferry does, as a library; the `ferry` binary is a thin CLI over it.
//!
//! - [`sys`]: thin, typed wrappers over the host: runc, CRIU, network namespaces, cgroups, mounts.
//! - [`container`]: one runtime container on one host, one file per verb (create, checkpoint, ...).
//! - [`agent`]: the per-host daemon: owns containers and the snapshot store, serves the agent API.
//! - [`control`]: the control plane: state in SQLite, placement, operations journal, the public API.
//! - [`mrp`]: a client for the runtime's own HTTP API (MRP).
//! - [`plan`], [`api`]: plans and the JSON types shared by the APIs and the CLI.
//! - [`access`], [`dest`]: who may reach a runtime through the proxy, and where it may connect.
//! - [`ui`], [`editor`]: the dashboard (`/ui`) and the notebook page with the MRMD editor.

pub mod access;
pub mod agent;
pub mod api;
pub mod container;
pub mod control;
pub mod dest;
pub mod dev;
pub mod doctor;
pub mod editor;
pub mod egress;
pub mod error;
pub mod image;
pub mod mrp;
pub mod plan;
pub mod proxy;
pub mod server;
pub mod sys;
pub mod tls;
pub mod ui;

pub use error::{Error, Result};

/// The version of ferry, as shown by `ferry --version` and written into bench results.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
