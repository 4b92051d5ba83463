//! One view of routes across the instances sharing a PostgreSQL database: every change of a
//! runtime's state (`Db::set_state`, a removal) is followed by a `NOTIFY` with its name on
//! `ferry_routes`; each instance LISTENs and re-reads that runtime's row, so a move, wake or
//! restore run by any instance holds and releases requests in every instance's proxy, and a
//! hibernation makes every proxy wake the runtime on its next request.
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

    /// Points the proxy's route for `name` at what its row says now (removed if it is gone).
    async fn reread_route(&self, name: &str) {
        if self.proxy.route(name).is_none() {
            return; // resolved from the database on its first request
        }
        match self.db.runtime_by_name(name).await {
            Ok(Some(row)) => self.apply_route(&row),
            Ok(None) => self.proxy.remove(name),
            Err(e) => {
                // Cannot tell where it is: hold it until the next notification or pass says.
                tracing::warn!(runtime = name, error = %e, "cannot read a changed route; holding its requests");
                self.proxy.hold(name);
            }
        }
    }

    /// Re-reads every route the proxy has.
    async fn reread_routes(&self) -> crate::Result<()> {
        let rows = self.db.runtimes().await?;
        for name in self.proxy.names() {
            match rows.iter().find(|r| r.name == name) {
                Some(row) => self.apply_route(row),
                None => self.proxy.remove(&name),
            }
        }
        Ok(())
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
