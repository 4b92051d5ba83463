//! Memory pages of a moving runtime.
//!
//! - [`store`]: the page store, the pages a target holds ahead of a restore (pushed while the
//!   runtime still ran at the source), and the list of pages the source wrote after they were
//!   pushed (which only the source can serve).

pub mod store;

/// The page size this crate works in.
pub const PAGE: u64 = 4096;
