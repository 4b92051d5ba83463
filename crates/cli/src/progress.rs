//! Progress on a terminal: a spinner with the step's name and elapsed time. Silent when stderr is
//! not a terminal or output is JSON.

use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

pub async fn step<T>(quiet: bool, msg: &str, f: impl Future<Output = T>) -> T {
    if quiet || !std::io::stderr().is_terminal() {
        return f.await;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(80));
    let out = f.await;
    pb.finish_and_clear();
    out
}
