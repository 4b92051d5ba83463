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
//! - `failures`: polls without an answer.
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
}

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
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()?;
            run(&http, &url, &token, &setup_code())
                .await
                .context("the write probe could not create its list")?;
            let t0 = Instant::now();
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
        Probe { stop, task }
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
        Ok(observe(&polls, &list))
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
    marks.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

pub fn observe(polls: &[Poll], list: &[u64]) -> Observed {
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
        let o = observe(&p, &[1, 2, 3, 4, 5]);
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
        assert_eq!(observe(&p, &[1, 2, 3, 4]).lost_updates, 30.0);
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
        let o = observe(&p, &[1, 2, 2, 3]);
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
