//! One module per suite. Each creates its runtimes, measures, and removes them again.

pub mod local;
pub mod migrate;
pub mod proxy;
pub mod roundtrip;
pub mod soak;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over a suite's steps (hidden when quiet or not on a terminal).
pub fn progress(quiet: bool, steps: usize, what: &str) -> ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(steps as u64);
    pb.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed}").unwrap());
    pb.set_message(what.to_string());
    pb
}
