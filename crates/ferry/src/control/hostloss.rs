//! Host loss: each runtime's newest full snapshot is kept on a second host as well (streamed
//! from its host's agent into another agent's verifying import, recorded once the sha256 checks
//! pass); a host whose agent stays silent past `--host-dead-after` is declared dead (its running
//! runtimes become `lost` with their replicated snapshot offered, its hibernated ones wake from a
//! replica elsewhere); a dead host that answers again is fenced: every runtime it runs that now
//! lives elsewhere is removed there before anything else is done with it.
//!
//! Replication runs in this background loop of the monitor's decider (one instance at a time),
//! never inside the operation that made the snapshot; a failed copy is an event and is tried again
//! on a later pass.

use super::Control;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the loop remembers between passes.
#[derive(Default)]
struct Watch {
    last_seen: BTreeMap<String, Instant>,
    dead: BTreeSet<String>,
    /// Snapshot → when its replication last failed (retried after a pause), and why.
    failed: BTreeMap<String, (Instant, String)>,
}

impl Control {
    /// Runs forever: one pass every `every`.
    pub async fn host_loss_loop(self: Arc<Self>, every: Duration) {
        let mut w = Watch::default();
        loop {
            self.watch_hosts(&mut w).await;
            self.replicate_newest(&mut w).await;
            tokio::time::sleep(every).await;
        }
    }

    /// Whether `host`'s agent answers now (within 3 s).
    async fn answers(&self, host: &str) -> bool {
        match self.agent(host) {
            Ok(a) => tokio::time::timeout(Duration::from_secs(3), a.info())
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        }
    }

    async fn watch_hosts(&self, w: &mut Watch) {
        let hosts = self.db.hosts().await.unwrap_or_default();
        for h in hosts {
            let now = Instant::now();
            if self.answers(&h.name).await {
                w.last_seen.insert(h.name.clone(), now);
                if w.dead.remove(&h.name) {
                    self.fence(&h.name).await;
                }
                continue;
            }
            let seen = *w.last_seen.entry(h.name.clone()).or_insert(now);
            if now.duration_since(seen) >= self.cfg.host_dead_after && w.dead.insert(h.name.clone())
            {
                self.declare_dead(&h.name, now.duration_since(seen)).await;
            }
        }
    }

    /// The host's running runtimes are lost; their newest replicated snapshot is offered.
    async fn declare_dead(&self, host: &str, silent: Duration) {
        self.event(
            None,
            "host.dead",
            &format!(
                "host {host}'s agent has not answered for {} s; its running runtimes are lost, its hibernated ones wake elsewhere",
                silent.as_secs()
            ),
            serde_json::json!({"host": host}),
        )
        .await;
        let rows = self.db.runtimes().await.unwrap_or_default();
        for row in rows.into_iter().filter(|r| {
            r.host == host
                && matches!(r.state.as_str(), "running" | "paused")
                && !self.is_busy(&r.id)
        }) {
            let Ok(_busy) = self.claim_housekeeping(&row.id, &row.name).await else {
                continue;
            };
            let Ok(Some(row)) = self.db.runtime_by_id(&row.id).await else {
                continue;
            };
            if row.host != host || !matches!(row.state.as_str(), "running" | "paused") {
                continue;
            }
            let replica = self.replica_hosts(row.last_snapshot.as_deref()).await;
            let why = if replica.is_empty() {
                format!("its host {host} is dead")
            } else {
                format!(
                    "its host {host} is dead (a verified copy of its snapshot is on {}; restore it there)",
                    replica.join(", ")
                )
            };
            let _ = self.mark_lost(&row, &why).await;
        }
    }

    /// The hosts holding a verified replica of `snapshot`.
    pub(crate) async fn replica_hosts(&self, snapshot: Option<&str>) -> Vec<String> {
        let Some(snapshot) = snapshot else {
            return vec![];
        };
        self.db
            .replicas()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(s, _, _)| s == snapshot)
            .map(|(_, h, _)| h)
            .collect()
    }

    /// Where to restore `snapshot` from: its own host while that answers, otherwise a host with a
    /// verified replica that answers (preferring `want`).
    pub(crate) async fn snapshot_source(
        &self,
        snap: &crate::api::Snapshot,
        want: Option<&str>,
    ) -> String {
        let replicas = self.replica_hosts(Some(&snap.id)).await;
        if let Some(w) = want.filter(|w| *w == snap.host || replicas.iter().any(|r| r == w)) {
            return w.to_string();
        }
        // A cordoned (or draining) host takes nothing new, a wake or restore included, while a
        // verified copy answers on an open host; its own copy is used when there is no other.
        let home_answers = self.answers(&snap.host).await;
        if home_answers && self.refuse_cordoned(&snap.host).await.is_ok() {
            return snap.host.clone();
        }
        for r in &replicas {
            if self.refuse_cordoned(r).await.is_ok() && self.answers(r).await {
                return r.clone();
            }
        }
        if !home_answers {
            for r in replicas {
                if self.answers(&r).await {
                    return r;
                }
            }
        }
        snap.host.clone()
    }

    /// A host that answers again after it was declared dead: the runtimes it runs that the
    /// database places elsewhere (or that were lost with it and restored since) are removed there.
    async fn fence(&self, host: &str) {
        let Ok(agent) = self.agent(host) else {
            return;
        };
        let Ok(seen) = agent.list().await else {
            return;
        };
        let mut fenced = Vec::new();
        for a in seen {
            let Ok(Some(row)) = self.db.runtime_by_id(&a.spec.id).await else {
                continue; // not ours to touch
            };
            if row.host == host && row.state != "lost" {
                continue;
            }
            if row.host == host {
                // Lost with its host and not restored anywhere: it runs here again.
                if a.status == "running" {
                    let _ = self.set_state(&row, "running", None).await;
                    self.event(
                        Some(&row.name),
                        "runtime.returned",
                        &format!("its host {host} answers again and it still runs there"),
                        serde_json::json!({"host": host}),
                    )
                    .await;
                }
                continue;
            }
            match agent.remove(&row.id).await {
                Ok(_) => {
                    fenced.push(row.name.clone());
                    self.event(
                        Some(&row.name),
                        "runtime.fenced",
                        &format!(
                            "host {host} came back with a copy of it; that copy was removed (it lives on {})",
                            row.host
                        ),
                        serde_json::json!({"host": host, "owner": row.host}),
                    )
                    .await;
                }
                Err(e) => tracing::warn!(runtime = %row.name, host, "fencing failed: {e}"),
            }
        }
        self.event(
            None,
            "host.returned",
            &format!(
                "host {host} answers again; {} copies it no longer owns were removed",
                fenced.len()
            ),
            serde_json::json!({"host": host, "fenced": fenced}),
        )
        .await;
    }

    /// For each runtime's newest full snapshot without a verified replica: copy it to a second host.
    /// Only the monitor's decider copies (one instance of those sharing a database): two
    /// instances copying the same snapshot to the same host at once would race on it.
    async fn replicate_newest(&self, w: &mut Watch) {
        if !self.is_decider() {
            return;
        }
        // A single host has nowhere to keep a copy: nothing to do, nothing to report.
        if self.db.hosts().await.map(|h| h.len()).unwrap_or(0) < 2 {
            return;
        }
        let rows = self.db.runtimes().await.unwrap_or_default();
        let replicas = self.db.replicas().await.unwrap_or_default();
        for row in rows {
            let Some(snap_id) = row.last_snapshot.clone() else {
                continue;
            };
            if replicas.iter().any(|(s, _, _)| *s == snap_id) {
                continue;
            }
            if w.failed
                .get(&snap_id)
                .is_some_and(|(t, _)| t.elapsed() < Duration::from_secs(10))
            {
                continue;
            }
            let Ok(Some(snap)) = self.db.snapshot(&snap_id).await else {
                continue;
            };
            if w.dead.contains(&snap.host) {
                continue;
            }
            match self.replicate(&snap, &w.dead).await {
                Ok(host) => {
                    w.failed.remove(&snap_id);
                    self.event(
                        Some(&row.name),
                        "snapshot.replicated",
                        &format!("snapshot {snap_id} copied to {host} and verified"),
                        serde_json::json!({"snapshot": snap_id, "host": host}),
                    )
                    .await;
                    self.drop_older_replicas(&row.id, &snap_id).await;
                }
                Err(e) => {
                    let why = e.to_string();
                    let again = w.failed.get(&snap_id).is_some_and(|(_, w)| *w == why);
                    w.failed.insert(snap_id.clone(), (Instant::now(), why));
                    if again {
                        continue; // reported already; tried again quietly
                    }
                    self.event(
                        Some(&row.name),
                        "snapshot.replication_failed",
                        &format!("copying snapshot {snap_id} to a second host failed (tried again later): {e}"),
                        serde_json::json!({"snapshot": snap_id}),
                    )
                    .await;
                }
            }
        }
    }

    /// Streams `snap` from its host into the verifying import of the host with most free memory
    /// among the others that answer; records the replica once it verified there.
    async fn replicate(
        &self,
        snap: &crate::api::Snapshot,
        dead: &BTreeSet<String>,
    ) -> crate::Result<String> {
        let mut best: Option<(u64, String)> = None;
        for h in self.db.hosts().await? {
            if h.name == snap.host || dead.contains(&h.name) || !self.answers(&h.name).await {
                continue;
            }
            let free = h.capacity_mb.saturating_sub(self.used_mb(&h.name).await?);
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, h.name));
            }
        }
        let (_, target) = best.ok_or_else(|| {
            crate::Error::Unavailable("no other host answers to hold a copy".into())
        })?;
        let src = self.agent(&snap.host)?;
        let dst = self.agent(&target)?;
        let resp = src.export(&snap.id).await?;
        let body = reqwest::Body::wrap_stream(resp.bytes_stream());
        // The import verifies every file's sha256 against the manifest before it answers.
        dst.import(&snap.id, body).await.map_err(|e| {
            crate::Error::Unavailable(format!("{target} did not take the copy: {e}"))
        })?;
        if let Err(e) = self.db.insert_replica(&snap.id, &target).await {
            let _ = dst.remove_snapshot(&snap.id).await;
            return Err(e);
        }
        Ok(target)
    }

    /// Replicas of the runtime's older snapshots, once a newer one verified, and replicas whose
    /// snapshot was removed meanwhile.
    async fn drop_older_replicas(&self, runtime_id: &str, keep: &str) {
        let snaps = self.db.snapshots().await.unwrap_or_default();
        for (s, host, _) in self.db.replicas().await.unwrap_or_default() {
            if s == keep {
                continue;
            }
            let gone = !snaps.iter().any(|x| x.id == s);
            let older = snaps
                .iter()
                .any(|x| x.id == s && x.runtime_id == runtime_id);
            if !gone && !older {
                continue;
            }
            if let Ok(a) = self.agent(&host) {
                match a.remove_snapshot(&s).await {
                    Ok(_) | Err(crate::Error::NotFound(_)) => {
                        let _ = self.db.delete_replica(&s, &host).await;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
