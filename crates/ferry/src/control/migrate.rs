//! Migration: a live runtime moves to another host, behind the same proxy URL, losing nothing.
//! The whole data path reads top to bottom here; the agents do the local steps.
//!
//! `stop-copy` (default, consistent):
//!   0. prepare the target while the source still runs (`POST /agent/v1/prepare`): the runtime's
//!      netns with its addresses and rules, and its writable layer's fresh filesystem — what the
//!      restore needs that does not depend on the dump (timed as `target_ahead_*`, outside the
//!      downtime). A failure here changes nothing; a later rollback removes it with the rest;
//!   1. hold: the proxy queues new requests for the runtime;
//!   2. source agent: freeze (cgroup freezer) → CRIU dump with the processes left in place (the
//!      page images hashed as CRIU writes them) → stream the snapshot (tar, zstd where it
//!      compresses, produced while sent, with those sha256s) into the target agent's store; the
//!      runtime stays frozen at the source;
//!   3. target agent: restore into what step 0 prepared (same id, same addresses; the snapshot's
//!      files copied into the layer, the overlay mounted, config.json written) while verifying every sha256, the
//!      processes held stopped until it passed, and wait until MRP answers;
//!   4. switch: the runtime's host becomes the target, the proxy route opens, held requests go;
//!   5. destroy the frozen source and its local dump.
//!
//!   A failure before the target's processes were continued thaws the source (the route follows
//!   it back) and removes what the target made. Once they were continued, the source is never
//!   thawed: the copy may have run a request in flight at the freeze, which the source would run
//!   again. Then the runtime is `lost` with the move's snapshot offered (the target failed after
//!   continuing) or stays `migrating` until the target reports whether its copy ran (its agent
//!   does not answer): exactly once, or `lost` with the snapshot offered — never twice. Requests in
//!   flight at the freeze complete at the target: CRIU carries their TCP connections
//!   (`--tcp-established`); the proxy resends only those the runtime never read.
//!
//! `fork`: the same stream, but the source is thawed right after the dump and the copy starts as a
//!   new runtime (new id, name and addresses) — the seed design's "leave-running", named honestly.
//!
//! `lazy` (post-copy): as stop-copy, but the dump leaves memory out and the source serves it from a
//!   CRIU page server; the target resumes at once and pulls pages on fault (userfaultfd) and in the
//!   background, so the freeze does not grow with memory size. The source must live until every
//!   page has arrived; if it dies first, the target kills the half-restored runtime and ferry
//!   reports it `lost`, offering its last full snapshot (see `container/lazy.rs`).
//!
//! `pre-copy` is checked against both hosts' write trackers (`sys/memtrack.rs`: the PAGEMAP_SCAN
//!   tracker of `ferry-tracker`, soft-dirty, or none) and refused before anything is frozen,
//!   naming what is missing. Where both offer the PAGEMAP_SCAN tracker, rounds run ahead of the
//!   hold and the freeze (`agent/precopy.rs`): the source streams the runtime's memory into a page
//!   store at the target while it runs, then what it wrote since, until a round is small enough or
//!   the round/time bound is reached (the timings say which). Then it moves as `lazy` does, from
//!   the freeze on: the last dirty set goes to the target as its dirty list, the dump leaves memory
//!   out, and the target's lazy-pages server serves every page the store holds and the dirty list
//!   does not name from that host; only the rest (the dirty list, what no round sent) is fetched
//!   from the frozen source. The source must live until those arrived, as for `lazy`; the
//!   migration's timings give both counts (`target_pages_from_store`, `target_pages_fetched`).

use super::db::{now, RuntimeRow};
use super::{check_name, new_id, Control};
use crate::api::{MigrateRequest, Migration, RestoreRequest, SendRequest, Timings};
use crate::container::ms;
use crate::{Error, Result};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    StopCopy,
    Lazy,
    PreCopy,
    Fork,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "stop-copy" => Ok(Mode::StopCopy),
            "lazy" => Ok(Mode::Lazy),
            "pre-copy" => Ok(Mode::PreCopy),
            "fork" => Ok(Mode::Fork),
            other => Err(Error::Invalid(format!(
                "unknown migration mode {other:?}: use stop-copy (default), lazy, pre-copy or fork"
            ))),
        }
    }
}

impl Control {
    pub async fn migrate(&self, name: &str, req: &MigrateRequest) -> Result<Migration> {
        let mode: Mode = req.mode.parse()?;
        let row = self.runtime_row(name).await?;
        self.require_running(&row)?;
        let target = self.agent_fresh(&req.to).await?;
        if mode != Mode::Fork || req.to != row.host {
            self.refuse_cordoned(&req.to).await?;
        }
        if req.to == row.host && mode != Mode::Fork {
            return Err(Error::Invalid(format!(
                "runtime {name} already runs on host {}: choose another host (`ferry host ls`)",
                row.host
            )));
        }
        if mode == Mode::PreCopy {
            // Both sides must offer the same tracker; refused before anything is frozen.
            let source = self.agent(&row.host)?.info().await?.write_tracker;
            let theirs = target
                .info()
                .await
                .map(|i| i.write_tracker)
                .unwrap_or_default();
            if let Some(why) = crate::sys::memtrack::precopy_refusal(&source, &theirs) {
                return Err(Error::Invalid(format!("pre-copy migration is not available: {why}. Use --mode stop-copy (consistent; the default), --mode lazy (post-copy: the shortest freeze) or --mode fork (a copy that leaves the source running)")));
            }
        }
        let need = req.plan.as_ref().unwrap_or(&row.plan).memory_mb;
        let cap = self
            .db
            .hosts()
            .await?
            .into_iter()
            .find(|h| h.name == req.to)
            .map(|h| h.capacity_mb)
            .unwrap_or(0);
        let used = self.used_mb_for(&req.to, &row.id).await?;
        if used + need > cap {
            return Err(Error::Conflict(format!("host {} has {} MB free of {cap} MB, not enough for {name}'s {need} MB: choose another host", req.to, cap.saturating_sub(used))));
        }
        target.info().await.map_err(|e| {
            Error::Unavailable(format!(
                "target host {} does not answer ({e}); nothing was changed",
                req.to
            ))
        })?;
        // The target must have the runtime's image before the source is touched: send it or refuse.
        self.phase(
            &row.id,
            &format!("making sure {} has image {}", req.to, row.image),
        )
        .await;
        let has_image = self.ensure_image(&req.to, &row.image).await;
        self.phases.lock().unwrap().remove(&row.id);
        has_image.map_err(|e| match e {
            Error::NotFound(m) => Error::Conflict(format!("cannot move {name} to {}: {m}", req.to)),
            other => other,
        })?;
        let _busy = self.claim(&row.id, name).await?;
        // Read again under the claim: housekeeping it waited out may have changed the runtime.
        let fresh = self.runtime_row(name).await?;
        self.require_running(&fresh)?;
        if fresh.host != row.host {
            return Err(Error::Conflict(format!(
                "runtime {name} moved to {} meanwhile: check `ferry inspect {name}` and ask again",
                fresh.host
            )));
        }
        let row = fresh;
        // The snapshot's id is journaled before anything is sent, so that recovery can find and
        // remove what an interrupted move left on either host.
        let snapshot_id = new_id(if mode == Mode::Fork { "fork" } else { "mig" });
        let detail = serde_json::json!({"mode": req.mode, "from": row.host, "to": req.to, "snapshot": snapshot_id});
        let kind = if mode == Mode::Fork {
            "fork"
        } else {
            "migrate"
        };
        let moved = self.journal_with(kind, Some(name), detail, async {
            let m = match mode {
                Mode::Fork => self.fork(&row, &req.to, req.name.as_deref(), snapshot_id).await?,
                _ => self.move_runtime(&row, &req.to, mode, req.plan.clone(), snapshot_id).await?,
            };
            let t = m.timings.clone();
            let d = serde_json::json!({"mode": m.mode, "from": m.from, "to": m.to, "archive_bytes": m.archive_bytes, "snapshot": m.snapshot, "runtime": m.runtime, "plan": req.plan});
            Ok((m, t, Some(d)))
        })
        .await;
        if moved.is_ok() && mode != Mode::Fork {
            self.release_reservation(&row.id);
        }
        moved
    }

    /// `stop-copy`, `lazy` and `pre-copy`: the runtime moves; it runs at the source until the
    /// switch.
    async fn move_runtime(
        &self,
        row: &RuntimeRow,
        to: &str,
        mode: Mode,
        plan: Option<crate::plan::Plan>,
        snapshot_id: String,
    ) -> Result<Migration> {
        let precopy = mode == Mode::PreCopy;
        // From the freeze on, pre-copy moves as lazy does: memory comes after the switch (from the
        // target's page store, and what only the source holds from the source).
        let lazy = mode == Mode::Lazy || precopy;
        let mode = match mode {
            Mode::Lazy => "lazy",
            Mode::PreCopy => "pre-copy",
            _ => "stop-copy",
        };
        let source = self.agent(&row.host)?;
        let target = self.agent(to)?;
        // A move to a larger plan arrives with the new limits (CRIU restores into the new cgroup).
        let mut arriving = row.clone();
        if let Some(p) = &plan {
            arriving.plan = p.clone();
        }
        // 0. prepare the target while the source still runs: what the restore needs that does not
        //    depend on the dump (netns with addresses and rules, the writable layer's filesystem).
        self.phase(&row.id, &format!("preparing {to}")).await;
        let t_ahead = Instant::now();
        let ahead = match target.prepare(&self.spec_of(&arriving)).await {
            Ok(t) => t,
            Err(e) => {
                let _ = target.remove(&row.id).await;
                self.phases.lock().unwrap().remove(&row.id);
                return Err(e.context(&format!(
                    "cannot prepare {to} for {}; nothing was changed, it runs on {}",
                    row.name, row.host
                )));
            }
        };
        let ahead_ms = ms(t_ahead);
        let req = SendRequest {
            snapshot_id: snapshot_id.clone(),
            target_url: target.url.clone(),
            target_token: self.cfg.agent_token.clone(),
            thaw_after_dump: false,
            lazy,
            precopy,
        };
        // 0b. pre-copy: the rounds, while the runtime runs and answers (not held). A failure
        //     here leaves it running at the source, untracked; what the target made goes.
        let mut rounds = Timings::new();
        if precopy {
            self.phase(
                &row.id,
                &format!("pre-copy rounds from {} to {to}", row.host),
            )
            .await;
            match source.precopy(&row.id, &req).await {
                Ok(t) => rounds = t,
                Err(e) => {
                    let _ = target.remove(&row.id).await;
                    self.phases.lock().unwrap().remove(&row.id);
                    let context = format!(
                        "pre-copy of {} to {to} failed before the freeze; nothing was frozen, it runs on {}",
                        row.name, row.host
                    );
                    self.event(
                        Some(&row.name),
                        "migration.failed",
                        &format!("{context}: {e}"),
                        serde_json::json!({}),
                    )
                    .await;
                    return Err(e.context(&context));
                }
            }
        }
        let t0 = Instant::now();
        // 1. hold
        self.set_state(
            row,
            "migrating",
            Some(&format!("moving from {} to {to}", row.host)),
        )
        .await?;
        // Every instance's proxy holds before the freeze (`routes.rs`).
        self.await_holds(&row.id).await;
        self.phase(
            &row.id,
            &format!("freezing and dumping on {}, streaming to {to}", row.host),
        )
        .await;
        let (target_ref, snapshot_ref) = (&target, &snapshot_id);
        let rollback = |why: Error| async move {
            // Called only where no copy at the target can have run: what it prepared goes too.
            let _ = target_ref.remove(&row.id).await;
            let _ = target_ref.remove_snapshot(snapshot_ref).await;
            let _ = self.set_state(row, "running", None).await;
            let context = format!(
                "migration to {to} failed; {} runs on {} again",
                row.name, row.host
            );
            self.event(
                Some(&row.name),
                "migration.failed",
                &format!("{context}: {why}"),
                serde_json::json!({}),
            )
            .await;
            why.context(&context)
        };
        // 2. freeze, dump (lazy: all but memory, which the source then serves), stream; the source
        //    stays frozen
        let sent = match source.send_runtime(&row.id, &req).await {
            Ok(s) => s,
            // The source agent thawed it, unless the agent itself is gone: then the runtime stays
            // `migrating` (the proxy holds its requests) until that host answers again and the
            // reconcile loop settles it — thawed where it is, never started twice.
            Err(e) => match source.runtime(&row.id).await {
                Err(crate::Error::Unavailable(_)) => {
                    let _ = target_ref.remove(&row.id).await;
                    let _ = target_ref.remove_snapshot(snapshot_ref).await;
                    let why = format!("the source host {}'s agent stopped answering during the transfer ({e}); the runtime stays on {} and is resumed when that agent is back", row.host, row.host);
                    let _ = self.set_state(row, "migrating", Some(&why)).await;
                    self.event(
                        Some(&row.name),
                        "migration.failed",
                        &why,
                        serde_json::json!({}),
                    )
                    .await;
                    return Err(Error::Unavailable(why));
                }
                Ok(a) if a.status == "paused" => {
                    let _ = source.thaw(&row.id).await;
                    return Err(rollback(e).await);
                }
                _ => return Err(rollback(e).await),
            },
        };
        // 3. restore at the target, same identity and addresses (lazy: pages come on fault)
        self.phase(&row.id, &format!("restoring on {to}")).await;
        let t_restore = Instant::now();
        let restore = RestoreRequest {
            snapshot_id: snapshot_id.clone(),
            spec: self.spec_of(&arriving),
            verify: sent.verify_on_restore,
            lazy_from: sent.page_server.clone(),
        };
        let restored = target.restore(&restore).await;
        if let Err(e) = restored {
            if !lazy {
                // The source is thawed only when no copy at the target can have run.
                return Err(
                    match self.restore_failed(row, &source, &target, &sent, to, e).await {
                        Ok(never_ran) => match source.thaw(&row.id).await {
                            Ok(_) => rollback(never_ran).await,
                            Err(te) => self.mark_lost(row, &format!("the restore on {to} failed ({never_ran}) and the source could not be resumed ({te})")).await,
                        },
                        Err(settled) => settled,
                    },
                );
            }
            let _ = target.remove(&row.id).await;
            if let Error::Diverged(_) = e {
                // The lazy copy ran and then failed: resuming the source would run again what it
                // ran. The frozen source goes; the runtime is lost with its last full snapshot.
                if let Err(se) = source.remove(&row.id).await {
                    tracing::error!(runtime = %row.name, error = %se, "the frozen source could not be removed; it stays frozen");
                }
                let _ = source.remove_snapshot(&snapshot_id).await;
                let why = format!("its copy on {to} ran and then failed ({e}), so the frozen source on {} was not resumed (that would run again what the copy ran) and was removed", row.host);
                return Err(self.mark_lost(row, &why).await);
            }
            let back = if lazy {
                source.lazy_abort(&row.id, &snapshot_id).await.map(|_| ())
            } else {
                source.thaw(&row.id).await.map(|_| ())
            };
            return match back {
                Ok(()) => Err(rollback(e).await),
                // Neither copy can run: say so, and offer the last full snapshot.
                Err(te) => Err(self.mark_lost(row, &format!("the restore on {to} failed ({e}) and the source could not be resumed ({te})")).await),
            };
        }
        let restore_ms = ms(t_restore);
        let target_phases = phases(&restored.map(|a| a.timings).unwrap_or_default(), "target_");
        // 4. switch
        self.db.set_host(&row.id, to).await?;
        self.db.set_plan(&row.id, &arriving.plan).await?;
        let mut moved = arriving.clone();
        moved.host = to.to_string();
        self.set_state(&moved, "running", None).await?;
        let downtime_ms = ms(t0);
        // 4b. lazy: the source must live until every page has arrived
        let mut target_pages = Timings::new();
        if lazy {
            self.phase(
                &row.id,
                &format!("running on {to}; copying the remaining memory pages"),
            )
            .await;
            let t_pages = Instant::now();
            match self.wait_for_pages(&moved, &target).await {
                Ok(counts) => target_pages = counts,
                Err(e) => {
                    let _ = source.remove(&row.id).await;
                    return Err(e);
                }
            }
            tracing::info!(runtime = %row.name, pages_ms = ms(t_pages), "lazy migration complete");
        }
        // The move is complete: the runtime runs at the target alone. (What follows is cleanup,
        // timed on its own, as the baseline's is not timed at all.)
        let total_ms = ms(t0);
        // 5. destroy the frozen source and its dump
        let t_cleanup = Instant::now();
        self.phase(&row.id, &format!("removing the source on {}", row.host))
            .await;
        if let Err(e) = source.remove(&row.id).await {
            tracing::error!(runtime = %row.name, error = %e, "the frozen source could not be removed; it stays frozen");
        }
        let _ = source.remove_snapshot(&snapshot_id).await;
        let snapshot = if lazy {
            None // it holds no memory pages: not a snapshot anyone could restore
        } else {
            let snap = super::snapshots::to_snapshot(&sent.snapshot);
            self.db.insert_snapshot(&snap).await?;
            self.db.set_last_snapshot(&row.id, &snap.id).await?;
            self.drop_older_automatic_snapshots(&row.id, &snap.id).await;
            Some(snap.id)
        };
        let mut t = phases(&sent.timings, "");
        t.extend(rounds);
        t.insert("restore_ms".into(), restore_ms);
        t.extend(target_phases);
        // Before the freeze, so not part of downtime_ms or total_ms.
        t.insert("target_ahead_ms".into(), ahead_ms);
        t.extend(phases(&ahead, "target_ahead_"));
        t.insert("downtime_ms".into(), downtime_ms);
        t.insert("total_ms".into(), total_ms);
        t.insert("cleanup_ms".into(), ms(t_cleanup));
        t.extend(phases(&target_pages, "target_"));
        self.event(
            Some(&row.name),
            "runtime.migrated",
            &format!(
                "moved from {} to {to} ({mode}), frozen {downtime_ms:.0} ms",
                row.host
            ),
            serde_json::json!({"timings": t}),
        )
        .await;
        Ok(Migration {
            runtime: row.name.clone(),
            mode: mode.into(),
            from: row.host.clone(),
            to: to.into(),
            snapshot,
            archive_bytes: sent.archive_bytes,
            timings: t,
        })
    }

    /// A stop-copy restore at the target failed with `e`, the source still frozen. `Ok(e)`: the
    /// target made no copy that ran (its agent says so: no container left), so thawing the source
    /// is safe. `Err`: the source must not be thawed, and this is the error to return:
    ///
    /// - the target's processes were continued before the failure (`Error::Diverged`): they may
    ///   have run a request carried over in a restored connection, so resuming the source would run
    ///   it a second time. The frozen source is destroyed and the runtime is `lost`, with the move's
    ///   snapshot (the state at the freeze) offered: restoring it is the user's decision.
    /// - the target agent does not answer (or still has a copy): whether that copy was continued is
    ///   unknown. The runtime stays `migrating`, frozen at the source with its requests held, until
    ///   the reconcile loop settles it from what the target reports once it answers: a copy that
    ///   runs there becomes the runtime; a copy never continued (`leave-stopped` still in its CRIU
    ///   config) is removed at that agent's start, and the source is thawed.
    ///
    /// Either way the runtime runs exactly once, or is `lost` with its snapshot offered.
    async fn restore_failed(
        &self,
        row: &RuntimeRow,
        source: &crate::agent::client::AgentClient,
        target: &crate::agent::client::AgentClient,
        sent: &crate::api::SendResult,
        to: &str,
        e: Error,
    ) -> std::result::Result<Error, Error> {
        if let Error::Diverged(_) = e {
            let _ = target.remove(&row.id).await;
            if let Err(se) = source.remove(&row.id).await {
                tracing::error!(runtime = %row.name, error = %se, "the frozen source could not be removed; it stays frozen");
            }
            let _ = source.remove_snapshot(&sent.snapshot.id).await;
            let snap = super::snapshots::to_snapshot(&sent.snapshot);
            let mut lost = row.clone();
            if self.db.insert_snapshot(&snap).await.is_ok() {
                let _ = self.db.set_last_snapshot(&row.id, &snap.id).await;
                lost.last_snapshot = Some(snap.id.clone());
            }
            let why = format!("its copy on {to} ran and then failed ({e}), so the frozen source on {} was not resumed (that would run again what the copy ran) and was removed", row.host);
            return Err(self.mark_lost(&lost, &why).await);
        }
        match target.runtime_settled(&row.id).await {
            Err(Error::NotFound(_)) => Ok(e),
            other => {
                let seen = match other {
                    Ok(a) => format!("it still has a copy ({})", a.status),
                    Err(te) => format!("its agent does not answer ({te})"),
                };
                let why = format!("the restore on {to} failed ({e}) and {seen}: the runtime stays frozen on {} and is settled when {to} reports whether its copy ran", row.host);
                let _ = self.set_state(row, "migrating", Some(&why)).await;
                self.event(
                    Some(&row.name),
                    "migration.failed",
                    &why,
                    serde_json::json!({}),
                )
                .await;
                Err(Error::Unavailable(why))
            }
        }
    }

    /// A migration (or hibernation) leaves a full snapshot (the runtime's newest, offered if it is
    /// ever lost); the ones earlier migrations and hibernations left are superseded and removed, so
    /// that moving a runtime back and forth does not fill the disks. Snapshots users took are kept.
    pub(crate) async fn drop_older_automatic_snapshots(&self, runtime_id: &str, keep: &str) {
        let Ok(all) = self.db.snapshots().await else {
            return;
        };
        for s in all.into_iter().filter(|s| {
            s.runtime_id == runtime_id
                && s.id != keep
                && (s.id.starts_with("mig") || s.id.starts_with("hib"))
        }) {
            if let Err(e) = self.remove_snapshot(&s.id).await {
                tracing::warn!(snapshot = %s.id, error = %e, "could not remove a superseded migration snapshot");
            }
        }
    }

    /// Records that a runtime is lost — it runs nowhere and cannot be resumed — and offers its last
    /// full snapshot. Returns the error to give the caller.
    pub(crate) async fn mark_lost(&self, row: &RuntimeRow, why: &str) -> Error {
        let offer = match &row.last_snapshot {
            Some(s) => format!("its last full snapshot is {s}: `ferry restore {s}`"),
            None => "it has no full snapshot to restore".into(),
        };
        let reason = format!("{why}; {offer}");
        let _ = self.set_state(row, "lost", Some(&reason)).await;
        self.event(
            Some(&row.name),
            "runtime.lost",
            &reason,
            serde_json::json!({"last_snapshot": row.last_snapshot}),
        )
        .await;
        Error::Internal(format!(
            "runtime {} was lost during its migration: {reason}",
            row.name
        ))
    }

    /// Waits until the target has every memory page; returns the target's page counts. If the
    /// pages stop coming (the source died), the target kills the half-restored runtime and the
    /// runtime is reported lost, with its last full snapshot offered.
    async fn wait_for_pages(
        &self,
        row: &RuntimeRow,
        target: &crate::agent::client::AgentClient,
    ) -> Result<Timings> {
        let start = Instant::now();
        loop {
            match target.runtime(&row.id).await {
                Ok(a) if a.status == "lost" => {
                    let why = a
                        .reason
                        .unwrap_or_else(|| "its memory pages never all arrived".into());
                    return Err(self
                        .mark_lost(row, why.lines().next().unwrap_or_default())
                        .await);
                }
                Ok(a) if !a.lazy_pending => return Ok(a.pages),
                _ => {}
            }
            if start.elapsed() > std::time::Duration::from_secs(600) {
                return Err(Error::Internal(format!(
                    "runtime {}: memory pages still arriving after 10 minutes",
                    row.name
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn fork(
        &self,
        row: &RuntimeRow,
        to: &str,
        new_name: Option<&str>,
        snapshot_id: String,
    ) -> Result<Migration> {
        let source = self.agent(&row.host)?;
        let target = self.agent(to)?;
        let id = new_id("rt");
        let name = new_name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-fork-{}", row.name, &id[2..8]));
        check_name(&name)?;
        if self.db.runtime_by_name(&name).await?.is_some() {
            return Err(Error::Conflict(format!(
                "a runtime named {name:?} already exists: choose another --name"
            )));
        }
        let mut copy = RuntimeRow {
            id: id.clone(),
            name: name.clone(),
            host: to.into(),
            plan: row.plan.clone(),
            image: row.image.clone(),
            net_index: 0,
            state: "restoring".into(),
            state_reason: Some(format!("forking from {}", row.name)),
            created_at: now(),
            started_at: None,
            last_snapshot: None,
            auto: row.auto,
            leased_by: None,
            egress: row.egress.clone(),
            addrs: None,
            route_epoch: 0,
        };
        let lease = self.new_lease();
        self.db
            .insert_runtime_new_slot(&mut copy, Some(&lease))
            .await?;
        let _copy_busy = self.claim_with(&id, &name, lease).await?;
        let t0 = Instant::now();
        let req = SendRequest {
            snapshot_id: snapshot_id.clone(),
            target_url: target.url.clone(),
            target_token: self.cfg.agent_token.clone(),
            thaw_after_dump: true,
            lazy: false,
            precopy: false,
        };
        let result = async {
            self.phase(
                &row.id,
                &format!(
                    "dumping on {} (it keeps running) and streaming to {to}",
                    row.host
                ),
            )
            .await;
            let sent = source.send_runtime(&row.id, &req).await?;
            self.phase(&row.id, &format!("restoring the copy {name} on {to}"))
                .await;
            let _ = source.remove_snapshot(&snapshot_id).await;
            let t1 = Instant::now();
            target
                .restore(&RestoreRequest {
                    snapshot_id: snapshot_id.clone(),
                    spec: self.spec_of(&copy),
                    verify: sent.verify_on_restore,
                    lazy_from: None,
                })
                .await?;
            Ok::<_, Error>((sent, ms(t1)))
        }
        .await;
        let (sent, restore_ms) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = target.remove(&id).await;
                let _ = target.remove_snapshot(&snapshot_id).await;
                self.db.delete_runtime(&id).await?;
                return Err(e);
            }
        };
        self.set_state(&copy, "running", None).await?;
        let snap = super::snapshots::to_snapshot(&sent.snapshot);
        self.db.insert_snapshot(&snap).await?;
        self.db.set_last_snapshot(&id, &snap.id).await?;
        let mut t = phases(&sent.timings, "");
        t.insert("restore_ms".into(), restore_ms);
        t.insert("total_ms".into(), ms(t0));
        self.event(
            Some(&name),
            "runtime.forked",
            &format!("forked from {} on {} to {to}", row.name, row.host),
            serde_json::json!({"timings": t}),
        )
        .await;
        Ok(Migration {
            runtime: name,
            mode: "fork".into(),
            from: row.host.clone(),
            to: to.into(),
            snapshot: Some(snap.id),
            archive_bytes: sent.archive_bytes,
            timings: t,
        })
    }
}

/// An agent's phase timings without its own total (the migration has its own), keys prefixed.
fn phases(t: &Timings, prefix: &str) -> Timings {
    t.iter()
        .filter(|(k, _)| *k != "total_ms")
        .map(|(k, v)| (format!("{prefix}{k}"), *v))
        .collect()
}
