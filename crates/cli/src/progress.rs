//! Progress on a terminal: a spinner with the step's name and elapsed time. Silent when stderr is
//! not a terminal or output is JSON.

use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

/// Like [`step`], with the message followed by whatever `phase` says, asked every 100 ms.
pub async fn phased<T, P, PF>(quiet: bool, msg: &str, f: impl Future<Output = T>, phase: P) -> T
where
    P: Fn() -> PF,
    PF: Future<Output = Option<String>>,
{
    if quiet || !std::io::stderr().is_terminal() {
        return f.await;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(80));
    tokio::pin!(f);
    let out = loop {
        tokio::select! {
            out = &mut f => break out,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(p) = phase().await {
                    pb.set_message(format!("{msg}: {p}"));
                }
            }
        }
    };
    pb.finish_and_clear();
    out
}

pub async fn step<T>(quiet: bool, msg: &str, f: impl Future<Output = T>) -> T {
    phased(quiet, msg, f, || async { None }).await
}

/// A bar that counts down what is left (asked every 500 ms through `left`) while `f` runs.
pub async fn counted<T, L, LF>(quiet: bool, msg: &str, f: impl Future<Output = T>, left: L) -> T
where
    L: Fn() -> LF,
    LF: Future<Output = Option<u64>>,
{
    if quiet || !std::io::stderr().is_terminal() {
        return f.await;
    }
    let total = left().await.unwrap_or(0);
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} done {elapsed}")
            .unwrap(),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(80));
    tokio::pin!(f);
    let out = loop {
        tokio::select! {
            out = &mut f => break out,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(n) = left().await {
                    pb.set_position(total.saturating_sub(n));
                }
            }
        }
    };
    pb.finish_and_clear();
    out
}
