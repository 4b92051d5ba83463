//! One decider for the monitor: of the instances sharing a database, only the holder of the
//! `monitor` cluster lease (a row with holder and expiry on the database's clock, renewed by the
//! lease loop every third of the lease time) samples runtimes and acts on thresholds and idleness.
//! When it dies its lease expires and the next instance to renew takes it over, with an event
//! (`monitor.decider`). This instance trusts its own hold only until the lease time after it asked
//! for it (measured before the request went out), so it stops acting no later than the database
//! would let another start.

use super::Control;
use std::time::Instant;

/// The cluster lease's name.
pub const MONITOR_LEASE: &str = "monitor";

/// Kind of the event recorded when an instance becomes the monitor's decider.
pub const DECIDER_EVENT: &str = "monitor.decider";

impl Control {
    /// Whether this instance is the monitor's decider now.
    pub fn is_decider(&self) -> bool {
        self.decider_until
            .lock()
            .unwrap()
            .is_some_and(|t| Instant::now() < t)
    }

    /// Takes or renews the decider lease; records an event when this instance takes it over.
    pub(crate) async fn renew_decider(&self) {
        let was = self.is_decider();
        let previous = if was {
            None
        } else {
            self.db.cluster_lease(MONITOR_LEASE).await.ok().flatten()
        };
        let asked = Instant::now();
        let me = &self.cfg.instance_id;
        match self
            .db
            .take_cluster_lease(MONITOR_LEASE, me, self.cfg.lease_ttl)
            .await
        {
            Ok(true) => {
                *self.decider_until.lock().unwrap() = Some(asked + self.cfg.lease_ttl);
                if !was {
                    let before = previous.filter(|p| p.holder != *me).map(|p| p.holder);
                    let reason = match &before {
                        Some(p) => format!("instance {me} now samples runtimes and acts for the monitor; it took over from {p}, whose lease expired"),
                        None => format!("instance {me} now samples runtimes and acts for the monitor"),
                    };
                    self.event(
                        None,
                        DECIDER_EVENT,
                        &reason,
                        serde_json::json!({"instance": me, "previous": before}),
                    )
                    .await;
                }
            }
            Ok(false) => {
                if was {
                    tracing::warn!("another instance holds the monitor's lease now; this one stops sampling and acting");
                }
                *self.decider_until.lock().unwrap() = None;
            }
            // Not renewed: the hold lapses by itself at its time.
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the monitor's lease");
            }
        }
    }
}
