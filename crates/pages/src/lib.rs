//! Memory pages of a moving runtime.
//!
//! - [`store`]: the page store, the pages a target holds ahead of a restore (pushed while the
//!   runtime still ran at the source), and the list of pages the source wrote after they were
//!   pushed (which only the source can serve).
//! - [`server`]: the lazy-pages server (`ferry-pages serve`), which replaces `criu lazy-pages`
//!   for a lazily restored runtime: [`image`] reads CRIU's images, [`uffd`] talks to the kernel,
//!   [`wire`] and [`net`] to the source's page server, [`fetch`] decides what to fetch next,
//!   [`ranges`] tracks what each process is still owed, [`hot`] is the hot-list file.

pub mod cli;
pub mod fetch;
pub mod hot;
pub mod image;
pub mod net;
pub mod ranges;
pub mod server;
pub mod store;
pub mod uffd;
pub mod wire;

/// The page size this crate works in.
pub const PAGE: u64 = 4096;
