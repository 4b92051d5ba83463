//! A client probing a runtime through the proxy every 10 ms with a write: each poll runs a cell
//! that appends the poll's own sequence number to a list in the runtime and prints the list's
//! length (and the workload's `counter`, if any). At the end the probe reads the whole list back.
//!
//! What it measures:
//! - `downtime_ms`: the longest time between answered polls, counting a pause that ends (or
//!   begins) in failures — the downtime the user sees;
//! - `lost_updates`: how far `counter` went back (a copy resumed from an older state);
//! - `duplicated`: sequence numbers present more than once in the list (a request run twice);
//! - `lost_writes`: sequence numbers whose answer the client saw but that the list lacks;
//! - `failures`: polls without an answer;
//! - `p99_after_ms`: the 99th percentile of the request latency over a window after the longest
//!   gap ended (the switch, for a migration), so that a short freeze paid for with slow requests
//!   afterwards shows as what it is (failed polls count with the time they took).
//!
//! The probe's own failure (it could not set up its list, made no poll, or could not read the
//! list back) is an error, never zeros.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The list the probe writes into, in the runtime's namespace.
const LIST: &str = "_ferry_probe_writes";

/// One poll: when it was sent and answered (ms since the probe started), the sequence number it
/// wrote, and what it printed (list length, counter) if it was answered.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub sent_ms: f64,
    pub done_ms: f64,
    pub seq: u64,
    pub answer: Option<(u64, i64)>,
}

pub struct Probe {
    t0: Instant,
    /// When the move was asked for, in µs since `t0` (0: not marked).
    marked_us: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(Vec<Poll>, Vec<u64>)>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub downtime_ms: f64,
    pub lost_updates: f64,
    pub failures: f64,
    pub polls: usize,
    pub duplicated: f64,
    pub lost_writes: f64,
    pub p99_after_ms: f64,
}

/// How long after the longest gap `p99_after_ms` looks.
pub const AFTER_WINDOW_MS: f64 = 10_000.0;

/// The cell a poll runs.
pub fn write_code(seq: u64) -> String {
    format!("{LIST}.append({seq}); print(len({LIST}), globals().get('counter', -1))")
}

/// The cell that creates the list (once, before the first poll).
pub fn setup_code() -> String {
    format!("{LIST} = []")
}

/// The cell that prints the whole list at the end.
pub fn read_code() -> String {
    format!("print(','.join(map(str, {LIST})))")
}

/// Parses what [`read_code`] printed.
pub fn parse_list(stdout: &str) -> Result<Vec<u64>> {
    stdout
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("not a sequence number: {s:?}"))
        })
        .collect()
}

/// Parses what [`write_code`] printed: (list length, counter).
pub fn parse_answer(stdout: &str) -> Option<(u64, i64)> {
    let mut it = stdout.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A request to the proxy: the one place that adds what the proxy asks of its clients.
/// Runs `code` through the proxy, with the runtime's access token; its stdout, or why not.
async fn run(http: &reqwest::Client, url: &str, token: &str, code: &str) -> Result<String> {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await?;
    if !status.is_success() || !v["error"].is_null() {
        bail!("{status}: {v}");
    }
    Ok(v["stdout"].as_str().unwrap_or_default().to_string())
}

impl Probe {
    /// Probes `runtime` through `proxy`, with the runtime's access `token` (as a user would).
    pub fn start(proxy: &str, runtime: &str, token: &str) -> Probe {
        let url = format!("http://{proxy}/r/{runtime}/mrp/v1/execute");
        let token = token.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()?;
            run(&http, &url, &token, &setup_code())
                .await
                .context("the write probe could not create its list")?;
            let mut out = Vec::new();
            let mut seq = 0;
            while !s.load(Ordering::SeqCst) {
                seq += 1;
                let sent_ms = t0.elapsed().as_secs_f64() * 1000.0;
                let answer = run(&http, &url, &token, &write_code(seq))
                    .await
                    .ok()
                    .and_then(|o| parse_answer(&o));
                out.push(Poll {
                    sent_ms,
                    done_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    seq,
                    answer,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let list = run(&http, &url, &token, &read_code())
                .await
                .context("the write probe could not read its list back")?;
            Ok((out, parse_list(&list)?))
        });
        Probe {
            t0,
            marked_us: Default::default(),
            stop,
            task,
        }
    }

    /// Records that the move is being asked for now (where `p99_after_ms` starts looking for the
    /// switch).
    pub fn mark(&self) {
        let us = self.t0.elapsed().as_micros() as u64;
        self.marked_us.store(us, Ordering::SeqCst);
    }

    pub async fn finish(self) -> Result<Observed> {
        self.stop.store(true, Ordering::SeqCst);
        let (polls, list) = self
            .task
            .await
            .map_err(|e| anyhow!("the write probe died: {e}"))??;
        if polls.is_empty() {
            bail!("the write probe made no poll");
        }
        let moved_at = self.marked_us.load(Ordering::SeqCst) as f64 / 1000.0;
        Ok(observe(&polls, &list, moved_at))
    }
}

/// (duplicated, lost_writes) of a list read back, given the polls whose answer the client saw.
pub fn count_writes(answered: impl IntoIterator<Item = u64>, list: &[u64]) -> (usize, usize) {
    let mut times: HashMap<u64, usize> = HashMap::new();
    for n in list {
        *times.entry(*n).or_default() += 1;
    }
    let duplicated = times.values().map(|c| c - 1).sum();
    let present: HashSet<u64> = times.into_keys().collect();
    let lost = answered
        .into_iter()
        .filter(|n| !present.contains(n))
        .count();
    (duplicated, lost)
}

/// The longest time without an answer: between answered polls, and from the probe's first poll
/// (or to its last) where the polls there failed.
pub fn longest_gap(polls: &[Poll]) -> f64 {
    gap(polls).0
}

/// The longest gap's length and the time it ended.
fn gap(polls: &[Poll]) -> (f64, f64) {
    gaps(polls).fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

/// Every gap between answers: (length, the time it ended), in order.
fn gaps(polls: &[Poll]) -> impl Iterator<Item = (f64, f64)> {
    let mut marks: Vec<f64> = Vec::new();
    if let Some(first) = polls.first().filter(|p| p.answer.is_none()) {
        marks.push(first.sent_ms);
    }
    marks.extend(
        polls
            .iter()
            .filter(|p| p.answer.is_some())
            .map(|p| p.done_ms),
    );
    if let Some(last) = polls.last().filter(|p| p.answer.is_none()) {
        marks.push(last.done_ms);
    }
    let v: Vec<(f64, f64)> = marks.windows(2).map(|w| (w[1] - w[0], w[1])).collect();
    v.into_iter()
}

/// Where the switch is taken to be: the end of the first gap after `from_ms` (when the move was
/// asked for) at least half as long as the longest one after it — the freeze, even when slow
/// requests after it took a little longer. `from_ms` itself when no poll was answered after it.
pub fn switch_at(polls: &[Poll], from_ms: f64) -> f64 {
    let after: Vec<(f64, f64)> = gaps(polls).filter(|g| g.1 - g.0 >= from_ms).collect();
    let longest = after.iter().map(|g| g.0).fold(0.0, f64::max);
    after
        .iter()
        .find(|g| g.0 >= longest / 2.0)
        .map(|g| g.1)
        .unwrap_or(from_ms)
}

/// The 99th percentile of the latency of the polls sent within `window_ms` after `start_ms`
/// (0 when none were).
pub fn p99_after(polls: &[Poll], start_ms: f64, window_ms: f64) -> f64 {
    let mut lat: Vec<f64> = polls
        .iter()
        .filter(|p| p.sent_ms >= start_ms && p.sent_ms < start_ms + window_ms)
        .map(|p| p.done_ms - p.sent_ms)
        .collect();
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort_by(f64::total_cmp);
    let i = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i]
}

/// What the polls show; `moved_at_ms` is when the move was asked for (for `p99_after_ms`; 0 when
/// unknown: the whole run is looked at).
pub fn observe(polls: &[Poll], list: &[u64], moved_at_ms: f64) -> Observed {
    let mut max_seen = i64::MIN;
    let mut lost = 0i64;
    for (_, counter) in polls.iter().filter_map(|p| p.answer) {
        if counter < max_seen {
            lost = lost.max(max_seen - counter);
        }
        max_seen = max_seen.max(counter);
    }
    let answered = polls.iter().filter(|p| p.answer.is_some());
    let (duplicated, lost_writes) = count_writes(answered.clone().map(|p| p.seq), list);
    Observed {
        downtime_ms: longest_gap(polls),
        lost_updates: lost as f64,
        failures: (polls.len() - answered.count()) as f64,
        polls: polls.len(),
        duplicated: duplicated as f64,
        lost_writes: lost_writes as f64,
        p99_after_ms: p99_after(polls, switch_at(polls, moved_at_ms), AFTER_WINDOW_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polls(p: &[(f64, Option<i64>)]) -> Vec<Poll> {
        p.iter()
            .enumerate()
            .map(|(i, (t, v))| Poll {
                sent_ms: t - 1.0,
                done_ms: *t,
                seq: i as u64 + 1,
                answer: v.map(|v| (i as u64 + 1, v)),
            })
            .collect()
    }

    #[test]
    fn gaps_and_lost_updates() {
        let p = polls(&[
            (0.0, Some(1)),
            (10.0, Some(2)),
            (20.0, None),
            (300.0, Some(3)),
            (310.0, Some(4)),
        ]);
        let o = observe(&p, &[1, 2, 3, 4, 5], 0.0);
        assert_eq!(
            (o.downtime_ms, o.lost_updates, o.failures),
            (290.0, 0.0, 1.0)
        );
        // A copy restored from an older checkpoint: values go back from 50 to 20.
        let p = polls(&[
            (0.0, Some(40)),
            (10.0, Some(50)),
            (20.0, Some(20)),
            (30.0, Some(21)),
        ]);
        assert_eq!(observe(&p, &[1, 2, 3, 4], 0.0).lost_updates, 30.0);
    }

    #[test]
    fn a_pause_that_ends_in_failures_counts() {
        let p = polls(&[(0.0, Some(1)), (10.0, Some(2)), (20.0, None), (900.0, None)]);
        assert_eq!(longest_gap(&p), 890.0);
        let p = polls(&[(500.0, None), (800.0, Some(1)), (810.0, Some(2))]);
        assert_eq!(
            longest_gap(&p),
            301.0,
            "from the first (failed) poll's send"
        );
    }

    /// Sequential polls (each sent 10 ms after the previous answer) taking `took[i]` ms.
    fn seq(took: &[f64]) -> Vec<Poll> {
        let mut t = 0.0;
        took.iter()
            .enumerate()
            .map(|(i, d)| {
                let p = Poll {
                    sent_ms: t,
                    done_ms: t + d,
                    seq: i as u64 + 1,
                    answer: Some((i as u64 + 1, 0)),
                };
                t += d + 10.0;
                p
            })
            .collect()
    }

    #[test]
    fn the_p99_after_the_switch_sees_slow_requests_after_a_short_freeze() {
        // 20 fast polls, the move asked for, a 300 ms freeze, then 200 polls of which 4 took 400 ms
        // (longer than the freeze).
        let mut took = vec![2.0; 20];
        took.push(300.0);
        for i in 0..200 {
            took.push(if i % 50 == 7 { 400.0 } else { 2.0 });
        }
        let p = seq(&took);
        let moved_at = p[19].done_ms;
        let switch = switch_at(&p, moved_at);
        assert_eq!(
            switch, p[20].done_ms,
            "the freeze, not a later slow request"
        );
        assert_eq!(
            p99_after(&p, switch, AFTER_WINDOW_MS),
            400.0,
            "4 of 200 slow: p99 sees them"
        );
        let o = observe(&p, &[], moved_at);
        assert_eq!(o.p99_after_ms, 400.0);
        // Only 1 slow of 200: below the 99th percentile.
        let mut took = vec![2.0; 20];
        took.push(300.0);
        took.extend((0..200).map(|i| if i == 7 { 400.0 } else { 2.0 }));
        let p = seq(&took);
        assert_eq!(observe(&p, &[], p[19].done_ms).p99_after_ms, 2.0);
        // Nothing after the window's start: 0.
        assert_eq!(p99_after(&p, 1e9, AFTER_WINDOW_MS), 0.0);
    }

    #[test]
    fn duplicated_and_lost_writes() {
        // 2 ran twice, 4 was answered but is gone, 5 failed (its absence is no lost write).
        let p = polls(&[
            (0.0, Some(0)),
            (10.0, Some(0)),
            (20.0, Some(0)),
            (30.0, Some(0)),
            (40.0, None),
        ]);
        let o = observe(&p, &[1, 2, 2, 3], 0.0);
        assert_eq!((o.duplicated, o.lost_writes, o.failures), (1.0, 1.0, 1.0));
        assert_eq!(count_writes([1, 2, 3], &[1, 2, 3]), (0, 0));
        assert_eq!(
            parse_list("1,2,3\n").unwrap(),
            vec![1, 2, 3],
            "what read_code prints"
        );
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list("1,x").is_err());
        assert_eq!(parse_answer("7 -1\n"), Some((7, -1)));
        assert_eq!(parse_answer("Traceback"), None);
    }
}
