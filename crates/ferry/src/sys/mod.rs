//! Typed wrappers over the host's tools and kernel interfaces. Nothing here knows about ferry's
//! runtimes; each function does one thing and reports failures with the tool's own words.

pub mod cgroup;
pub mod cmd;
pub mod criu;
pub mod criu_stats;
pub mod firewall;
pub mod host;
pub mod inns;
pub mod layer;
pub mod lazy;
pub mod memtrack;
pub mod mount;
pub mod netns;
pub mod runc;
