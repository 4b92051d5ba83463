//! One view of routes across the instances sharing a PostgreSQL database: every change of a
//! runtime's state (`Db::set_state`, a removal) is followed by a `NOTIFY` with its name on
//! `ferry_routes`; each instance LISTENs and re-reads that runtime's row, so a move, wake or
//! restore run by any instance holds and releases requests in every instance's proxy, and a
//! hibernation makes every proxy wake the runtime on its next request.
//!
//! A move waits, right after it recorded `migrating` and before it freezes the runtime, until
//! every other live instance acknowledged (in `route_acks`) the row's route epoch it applied, so
//! that no proxy still forwards to the runtime once it is frozen; the wait is bounded.
//!
//! Fail-safe: a notification carries only a name, and the row is read afresh, so a late one
//! never applies an old state. While the listening connection is down (or not yet up at start),
//! the proxy is suspended — every open route is held and new ones start held — and once it
//! listens again every route is re-read before the proxy resumes. The reconcile loop re-reads all
//! routes once a second as well. SQLite (one instance) needs none of this.

use super::db::{Backend, ROUTES_CHANNEL};
use super::Control;
use crate::proxy::Route;
use std::sync::Arc;
use std::time::Duration;

/// How long an operation waits for the other instances to confirm they hold a runtime's requests.
pub const HOLD_ACK_WAIT: Duration = Duration::from_secs(2);

impl Control {
    /// Runs forever on PostgreSQL (returns at once on SQLite): keeps this instance's proxy routes
    /// in step with what every instance records.
    pub async fn route_watch_loop(self: Arc<Self>) {
        if self.db.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match self.listen().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for route changes; the proxy holds every runtime's requests until it can");
                    self.suspend_routes();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            // Listening: what changed while we were not is read now, before routes are trusted.
            if let Err(e) = self.reread_routes().await {
                tracing::warn!(error = %e, "cannot re-read the routes; the proxy keeps holding");
                tokio::time::sleep(backoff).await;
                continue;
            }
            if self.proxy.suspended() {
                tracing::info!("listening for route changes of every instance; routes re-read");
            }
            self.proxy.resume();
            backoff = Duration::from_millis(100);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => self.reread_route(n.payload()).await,
                    Ok(None) | Err(_) => {
                        tracing::warn!("the route-change connection to the database was lost; the proxy holds every runtime's requests until it is back and the routes are re-read");
                        self.suspend_routes();
                        break;
                    }
                }
            }
        }
    }

    /// Suspends the proxy but for the runtimes this instance's own operations are moving.
    fn suspend_routes(&self) {
        let own: Vec<String> = self.busy.lock().unwrap().values().cloned().collect();
        self.proxy.suspend_except(&own);
    }

    async fn listen(&self) -> sqlx::Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect(&self.cfg.database).await?;
        l.listen(ROUTES_CHANNEL).await?;
        Ok(l)
    }

    /// Points the proxy's route for `name` at what its row says now (removed if it is gone), then
    /// acknowledges the epoch applied, so that the instance running the operation may go on.
    async fn reread_route(&self, name: &str) {
        match self.db.runtime_by_name(name).await {
            Ok(Some(row)) => {
                // Without a route here there is nothing stale to hold: the first request reads
                // the row.
                if self.proxy.route(name).is_some() {
                    self.apply_route(&row);
                }
                self.ack(&row).await;
            }
            Ok(None) => self.proxy.remove(name),
            Err(e) => {
                // Cannot tell where it is: hold it until the next notification or pass says.
                tracing::warn!(runtime = name, error = %e, "cannot read a changed route; holding its requests");
                if self.proxy.route(name).is_some() {
                    self.proxy.hold(name);
                }
            }
        }
    }

    /// Re-reads every route the proxy has, and acknowledges every runtime's epoch.
    async fn reread_routes(&self) -> crate::Result<()> {
        let rows = self.db.runtimes().await?;
        for name in self.proxy.names() {
            match rows.iter().find(|r| r.name == name) {
                Some(row) => self.apply_route(row),
                None => self.proxy.remove(&name),
            }
        }
        for row in &rows {
            self.ack(row).await;
        }
        Ok(())
    }

    /// Acknowledges the route epoch of `row` (as read) for this instance.
    pub(super) async fn ack(&self, row: &super::db::RuntimeRow) {
        if let Err(e) = self
            .db
            .ack_route(&row.id, &self.cfg.instance_id, row.route_epoch)
            .await
        {
            tracing::warn!(runtime = %row.name, error = %e, "cannot acknowledge a route change; the instance running the operation waits for it (bounded)");
        }
    }

    /// Called by an operation right after it recorded a state that holds requests (`migrating`):
    /// waits until every other live instance's proxy has applied it (acknowledged the row's route
    /// epoch), so that no instance still forwards to the runtime when it is frozen. Bounded by
    /// [`HOLD_ACK_WAIT`]: an instance that does not answer by then has lost its listener (its
    /// proxy is then suspended, holding everything) or is dying; the operation goes on.
    pub(crate) async fn await_holds(&self, id: &str) {
        if self.db.backend() != Backend::Postgres {
            return;
        }
        let Ok(Some(row)) = self.db.runtime_by_id(id).await else {
            return;
        };
        let start = std::time::Instant::now();
        loop {
            match self
                .db
                .unacked_route(id, &self.cfg.instance_id, row.route_epoch)
                .await
            {
                Ok(left) if left.is_empty() => return,
                Ok(left) if start.elapsed() >= HOLD_ACK_WAIT => {
                    tracing::warn!(runtime = %row.name, instances = ?left, "these instances did not confirm that they hold this runtime's requests; going on (they hold everything while their route listener is down)");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(runtime = %row.name, error = %e, "cannot read the other instances' acknowledgements; going on");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sets the route of `row` as its state says, unless this instance runs an operation on it
    /// (that operation points the route itself) or this proxy is waking it.
    fn apply_route(&self, row: &super::db::RuntimeRow) {
        if self.is_busy(&row.id) {
            return;
        }
        let want = self.route_for(row, &row.state);
        match self.proxy.route(&row.name) {
            Some(have) if have == want => {}
            Some(Route::Held) if want == Route::Asleep && !self.proxy.suspended() => {}
            _ => self.proxy.set(&row.name, want),
        }
    }
}
