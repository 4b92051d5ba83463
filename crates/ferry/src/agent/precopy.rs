//! Pre-copy rounds of a migration, both sides.
//!
//! Source (`POST /agent/v1/runtimes/ID/precopy` before the control plane holds the runtime's
//! requests, then `send` with `precopy`): while the runtime runs, a `ferry_tracker::Tracker`
//! follows its processes (host pids from its cgroup; the pages are tagged with each process's pid
//! inside the runtime's pid namespace, as CRIU's images name it). Round 1 streams all private writable memory to the target, each later
//! round what was written since the one before (areas that are new, or whose process is new, whole).
//! The rounds stop when one was small enough to send in [`DOWNTIME_TARGET`] at the rate the rounds
//! measured, after [`MAX_ROUNDS`] rounds, or after [`MAX_SECONDS`]; the timings say which
//! (`precopy_stopped_small`, `_rounds`, `_seconds`). After the freeze a last scan gives the final
//! dirty set (plus the areas the tracker cannot follow), sent as the dirty list; then the tracker
//! is dropped, which removes every trace of it from the processes, before CRIU dumps.
//!
//! Target: the page runs are appended to a page store (`ferry_pages::store`) in the runtime's dir,
//! accepted only for a runtime this host prepared for a migration and that does not run here. The
//! store goes with the runtime's files when the move is rolled back.
//!
//! The restore then serves memory from the store (`container/lazy.rs`, through ferry's lazy-pages
//! server): the move's freeze makes a lazy dump, the target's processes resume at once, pages held
//! in the store and not on the dirty list are copied in from this host, and only the dirty list
//! (and what no round sent) is fetched from the frozen source.

use super::Agent;
use crate::api::{SendRequest, Timings};
use crate::container::{ms, Container};
use crate::{Error, Result};
use ferry_pages::store;
use ferry_tracker::{ProcessRound, Tracker};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Rounds end when the last one would take at most this long to send.
pub const DOWNTIME_TARGET: Duration = Duration::from_millis(50);
/// At most this many rounds (round 1 included).
pub const MAX_ROUNDS: u32 = 10;
/// Rounds start no later than this after round 1 started.
pub const MAX_SECONDS: f64 = 30.0;
/// How long the tracker waits for the freeze after the rounds.
pub const KEEP_TRACKER: Duration = Duration::from_secs(120);

const PAGE: u64 = 4096;
/// Pages read from a process at once.
const CHUNK_PAGES: u64 = 256;

/// The pid of host process `pid` inside its innermost pid namespace (`NSpid` in its status).
pub fn ns_pid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// The store and dirty list of migration `snapshot` in the runtime's dir.
fn dir(c: &Container<'_>, snapshot: &str) -> std::path::PathBuf {
    crate::container::lazy::precopy_dir(&c.dir(), snapshot)
}

/// One process's runs to send: host pid, namespace pid, ranges.
type Runs = Vec<(i32, u32, Vec<(u64, u64)>)>;

fn runs_of(rounds: &[ProcessRound], with_untracked: bool) -> Runs {
    rounds
        .iter()
        .filter_map(|r| {
            let ns = ns_pid(r.pid)?;
            let mut v = r.dirty.clone();
            if with_untracked {
                v.extend(r.untracked.iter().copied());
            }
            Some((r.pid, ns, v))
        })
        .collect()
}

/// Writes `runs` as store records, reading the memory from /proc/PID/mem; what cannot be read
/// (an area unmapped meanwhile, an I/O mapping) is skipped. Returns the page bytes written.
fn write_runs(runs: &Runs, out: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; (CHUNK_PAGES * PAGE) as usize];
    let mut bytes = 0;
    for (pid, ns, ranges) in runs {
        let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
            continue; // exited: the next round (or the dump) no longer has it
        };
        for &(start, end) in ranges {
            let mut a = start;
            while a < end {
                let n = ((end - a) / PAGE).min(CHUNK_PAGES);
                let len = (n * PAGE) as usize;
                if mem.read_exact_at(&mut buf[..len], a).is_ok() {
                    out.write_all(&store::record_head(*ns, a, n as u32))?;
                    out.write_all(&buf[..len])?;
                    bytes += len as u64;
                } else {
                    for i in 0..n {
                        let p = a + i * PAGE;
                        let b = &mut buf[..PAGE as usize];
                        if mem.read_exact_at(b, p).is_ok() {
                            out.write_all(&store::record_head(*ns, p, 1))?;
                            out.write_all(b)?;
                            bytes += PAGE;
                        }
                    }
                }
                a += n * PAGE;
            }
        }
    }
    Ok(bytes)
}

/// The dirty list's runs (namespace pid, address, pages) of `runs`.
fn dirty_runs(runs: &Runs) -> Vec<(u32, u64, u32)> {
    let mut v = Vec::new();
    for (_, ns, ranges) in runs {
        for &(a, b) in ranges {
            let mut s = a;
            while s < b {
                let n = ((b - s) / PAGE).min(u32::MAX as u64);
                v.push((*ns, s, n as u32));
                s += n * PAGE;
            }
        }
    }
    v
}

/// One round on a blocking thread; `last`: the runtime is frozen (processes not tracked yet are
/// reported whole instead of attached).
async fn round(
    mut tracker: Tracker,
    cgroup: String,
    last: bool,
) -> Result<(Tracker, Vec<ProcessRound>)> {
    tokio::task::spawn_blocking(move || {
        let pids = crate::sys::cgroup::procs(&cgroup);
        let r = if last {
            tracker.last_round(&pids)
        } else {
            tracker.round(&pids)
        };
        r.map(|r| (tracker, r))
            .map_err(|e| Error::Internal(format!("write tracking failed: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("write tracking panicked: {e}")))?
}

impl Agent {
    /// Streams one round's runs to the target's store; returns the bytes sent.
    async fn precopy_send(&self, c: &Container<'_>, r: &SendRequest, runs: Runs) -> Result<u64> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let producer = tokio::task::spawn_blocking(move || {
            let mut w = super::api::ChannelWriter::new(tx.clone());
            let r = write_runs(&runs, &mut w).and_then(|b| w.flush().map(|_| b));
            if let Err(e) = &r {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            r
        });
        let body =
            axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            }));
        let path = format!(
            "/agent/v1/precopy/{}/pages?runtime={}",
            r.snapshot_id,
            c.id()
        );
        let answer = self
            .put_to_peer(&r.target_url, &r.target_token, &path, body)
            .await;
        let sent = producer.await.map_err(|e| Error::Internal(e.to_string()))?;
        answer?;
        sent.map_err(|e| Error::Internal(format!("reading the runtime's memory: {e}")))
    }

    /// Source: runs the rounds of migration `r` (the runtime running and answering) and keeps the
    /// tracker for the `send` that freezes it, for at most [`KEEP_TRACKER`]: a freeze that never
    /// comes (the control plane died) does not leave the runtime tracked. On failure the tracker
    /// is gone (nothing of it stays in the processes) and the runtime was never frozen.
    pub async fn precopy(&self, id: &str, r: &SendRequest) -> Result<Timings> {
        super::check_id(&r.snapshot_id)?;
        let _g = self.lock(id).await;
        let c = self.host.container(self.spec(id)?);
        let mut t = Timings::new();
        let tracker = self.precopy_rounds(&c, r, &mut t).await?;
        self.precopy_jobs
            .lock()
            .unwrap()
            .insert(r.snapshot_id.clone(), tracker);
        let jobs = self.precopy_jobs.clone();
        let snap = r.snapshot_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_TRACKER).await;
            if jobs.lock().unwrap().remove(&snap).is_some() {
                tracing::warn!(snapshot = %snap, "pre-copy rounds ran but no freeze came: tracking stopped");
            }
        });
        Ok(t)
    }

    /// Source: the tracker migration `snapshot`'s rounds left.
    pub(crate) fn precopy_take(&self, snapshot: &str) -> Result<Tracker> {
        self.precopy_jobs
            .lock()
            .unwrap()
            .remove(snapshot)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "host {} has no pre-copy rounds for migration {snapshot} (never run, or they expired after {} s)",
                    self.host.name,
                    KEEP_TRACKER.as_secs()
                ))
            })
    }

    /// The rounds, with the runtime running. Returns the tracker, still tracking.
    async fn precopy_rounds(
        &self,
        c: &Container<'_>,
        r: &SendRequest,
        t: &mut Timings,
    ) -> Result<Tracker> {
        match self.host.runc.state(c.id()).await? {
            Some(s) if s.status == "running" => {}
            _ => {
                return Err(Error::Conflict(format!(
                    "runtime {} is not running: pre-copy needs a running runtime",
                    c.spec.name
                )))
            }
        }
        let start = Instant::now();
        let mut tracker = Tracker::new();
        let mut rate: f64 = 0.0;
        let mut n = 0;
        let stopped = loop {
            n += 1;
            let t1 = Instant::now();
            let (tr, rounds) = round(tracker, c.cgroup_path(), false).await?;
            tracker = tr;
            let pages = rounds.iter().map(|p| p.dirty_bytes()).sum::<u64>() / PAGE;
            let bytes = self.precopy_send(c, r, runs_of(&rounds, false)).await?;
            let secs = t1.elapsed().as_secs_f64();
            t.insert(format!("precopy_round{n}_bytes"), bytes as f64);
            t.insert(format!("precopy_round{n}_ms"), secs * 1000.0);
            tracing::debug!(runtime = %c.spec.name, round = n, pages, bytes, "pre-copy round");
            if secs > 0.0 && bytes >= 16 << 20 {
                rate = rate.max(bytes as f64 / secs);
            }
            if n >= 2 && (bytes as f64) <= rate * DOWNTIME_TARGET.as_secs_f64() {
                break "small";
            }
            if n >= MAX_ROUNDS {
                break "rounds";
            }
            if start.elapsed().as_secs_f64() >= MAX_SECONDS {
                break "seconds";
            }
        };
        t.insert("precopy_rounds".into(), n as f64);
        t.insert(format!("precopy_stopped_{stopped}"), 1.0);
        t.insert("precopy_rate_mb_s".into(), rate / 1e6);
        t.insert("precopy_ms".into(), ms(start));
        Ok(tracker)
    }

    /// With the runtime frozen: the last scan, sent to the target as the dirty list, then the
    /// tracker is dropped (CRIU cannot dump a userfaultfd).
    pub(crate) async fn precopy_final(
        &self,
        c: &Container<'_>,
        r: &SendRequest,
        tracker: Tracker,
        t: &mut Timings,
    ) -> Result<()> {
        let t0 = Instant::now();
        let (tracker, rounds) = round(tracker, c.cgroup_path(), true).await?;
        drop(tracker);
        let runs = runs_of(&rounds, true);
        let dirty = dirty_runs(&runs);
        let bytes: u64 = dirty.iter().map(|d| d.2 as u64 * PAGE).sum();
        let mut body = Vec::new();
        {
            let tmp = tempfile::NamedTempFile::new()?;
            store::write_dirty(tmp.path(), &dirty).map_err(|e| Error::Internal(e.to_string()))?;
            std::fs::File::open(tmp.path())?.read_to_end(&mut body)?;
        }
        let path = format!(
            "/agent/v1/precopy/{}/dirty?runtime={}",
            r.snapshot_id,
            c.id()
        );
        self.put_to_peer(&r.target_url, &r.target_token, &path, body.into())
            .await?;
        t.insert("precopy_final_dirty_bytes".into(), bytes as f64);
        t.insert("precopy_final_ms".into(), ms(t0));
        Ok(())
    }

    /// Target: `runtime` must be a migration this host prepared and does not run.
    pub(crate) async fn precopy_target(&self, runtime: &str, snapshot: &str) -> Result<()> {
        super::check_id(runtime)?;
        super::check_id(snapshot)?;
        let refused = || {
            Error::Conflict(format!(
                "host {} has no migration of runtime {runtime} prepared: pre-copy pages refused",
                self.host.name
            ))
        };
        let c = self
            .host
            .container(self.spec(runtime).map_err(|_| refused())?);
        if !c.only_prepared() || self.host.runc.state(c.id()).await?.is_some() {
            return Err(refused());
        }
        Ok(())
    }

    /// Target: appends a stream of page runs to the migration's store.
    pub(crate) fn precopy_receive_blocking(
        &self,
        runtime: &str,
        snapshot: &str,
        mut body: impl Read,
    ) -> Result<serde_json::Value> {
        let c = self.host.container(self.spec(runtime)?);
        let d = dir(&c, snapshot);
        std::fs::create_dir_all(&d)?;
        let bad = |e: store::Error| Error::Internal(e.to_string());
        let mut w = store::Writer::open(&d.join("pages")).map_err(bad)?;
        let mut head = [0u8; store::RECORD_HEAD_LEN];
        let mut data = Vec::new();
        let mut pages = 0u64;
        loop {
            match read_full(&mut body, &mut head)? {
                0 => break,
                n if n < head.len() => {
                    return Err(Error::Invalid("a page run's head is cut short".into()))
                }
                _ => {}
            }
            let (pid, vaddr, n) = store::parse_record_head(&head);
            if n == 0 || n as u64 > CHUNK_PAGES * 16 {
                return Err(Error::Invalid(format!("a page run of {n} pages")));
            }
            data.resize((n as u64 * PAGE) as usize, 0);
            body.read_exact(&mut data)
                .map_err(|e| Error::Invalid(format!("a page run's data is cut short: {e}")))?;
            w.append(pid, vaddr, &data).map_err(bad)?;
            pages += n as u64;
        }
        let bytes = w.bytes();
        w.finish().map_err(bad)?;
        Ok(serde_json::json!({"pages": pages, "bytes": bytes}))
    }

    /// Target: stores the dirty list sent at the freeze (checked to be one).
    pub(crate) fn precopy_dirty(&self, runtime: &str, snapshot: &str, body: &[u8]) -> Result<()> {
        let c = self.host.container(self.spec(runtime)?);
        let d = dir(&c, snapshot);
        std::fs::create_dir_all(&d)?;
        let p = d.join("dirty");
        std::fs::write(&p, body)?;
        if let Err(e) = store::read_dirty(&p) {
            let _ = std::fs::remove_file(&p);
            return Err(Error::Invalid(e.to_string()));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stream_as_store_records_and_skip_what_cannot_be_read() {
        // This process's own memory: a buffer with known bytes, then a range past any mapping.
        let data: Vec<u8> = (0..3 * PAGE as usize)
            .map(|i| (i / 4096) as u8 + 1)
            .collect();
        let base = (data.as_ptr() as u64).div_ceil(PAGE) * PAGE;
        let me = std::process::id() as i32;
        let runs: Runs = vec![(me, 7, vec![(base, base + PAGE), (0x1000, 0x3000)])];
        let mut out = Vec::new();
        assert_eq!(write_runs(&runs, &mut out).unwrap(), PAGE);
        let (pid, vaddr, n) = store::parse_record_head(out[..16].try_into().unwrap());
        assert_eq!((pid, vaddr, n), (7, base, 1));
        let off = (base - data.as_ptr() as u64) as usize;
        assert_eq!(&out[16..], &data[off..off + PAGE as usize]);
        assert_eq!(
            dirty_runs(&runs),
            vec![(7, base, 1), (7, 0x1000, 2)],
            "the dirty list names the ranges whole"
        );
        assert!(ns_pid(me).is_some(), "NSpid read from /proc/self/status");
        assert_eq!(ns_pid(i32::MAX), None);
    }
}
