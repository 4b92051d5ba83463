//! State every instance on one database shares: the runtime network (recorded by the first
//! instance, checked by every later one), the addresses stored with each runtime, route-change
//! notifications (PostgreSQL `NOTIFY`), and cluster-wide leases that one instance holds at a time.

use super::*;
use std::net::Ipv4Addr;

/// Name of the runtime network's row in `settings`.
const SUBNET: &str = "runtime_subnet";

/// The PostgreSQL channel a runtime's name is sent on whenever its row's state changes.
pub const ROUTES_CHANNEL: &str = "ferry_routes";

/// A cluster-wide lease as recorded: who holds it, whether it is still valid, since when.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterLease {
    pub holder: String,
    pub valid: bool,
    pub since: String,
}

impl Db {
    /// Records `wanted` as the cluster's runtime network unless one is recorded already; returns
    /// the recorded one. New rows store their addresses in it from then on, and rows of earlier
    /// versions (no stored addresses) get theirs now.
    pub async fn settle_subnet(&self, wanted: Ipv4Addr) -> Result<Ipv4Addr> {
        sqlx::query(
            "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SUBNET)
        .bind(wanted.to_string())
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(SUBNET)
            .fetch_one(&self.pool)
            .await?;
        let v = text(&row, "value")?;
        let recorded: Ipv4Addr = v.parse().map_err(|_| {
            Error::Internal(format!(
                "the database records the runtime network as {v:?}, which is not an IPv4 address"
            ))
        })?;
        let _ = self.subnet.set(recorded);
        if recorded == wanted {
            self.fill_addresses(recorded).await?;
        }
        Ok(recorded)
    }

    /// Stores the addresses of rows that have none (made before addresses were stored).
    async fn fill_addresses(&self, subnet: Ipv4Addr) -> Result<()> {
        let rows =
            sqlx::query("SELECT id, net_index FROM runtimes WHERE ip IS NULL OR host_ip IS NULL")
                .fetch_all(&self.pool)
                .await?;
        for r in rows {
            let (id, idx) = (text(&r, "id")?, int(&r, "net_index")?);
            let (host_ip, ip) = crate::sys::netns::slot_addresses(subnet, idx as u32);
            sqlx::query("UPDATE runtimes SET host_ip = $2, ip = $3 WHERE id = $1 AND ip IS NULL")
                .bind(id)
                .bind(host_ip.to_string())
                .bind(ip.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The addresses a new row in slot `index` stores: its own if it has them, else the slot's in
    /// the cluster's network (none before that is settled).
    pub(super) fn addresses_for(&self, r: &RuntimeRow, index: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
        r.addrs.or_else(|| {
            self.subnet
                .get()
                .map(|s| crate::sys::netns::slot_addresses(*s, index))
        })
    }

    /// Tells every instance listening (PostgreSQL) that runtime `name`'s route may have changed.
    /// A lost notification is not fatal: listeners re-read every route when their connection
    /// comes back, and every instance re-reads all of them once a second anyway.
    pub(super) async fn notify_route(&self, name: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        let r = sqlx::query("SELECT CAST(pg_notify($1, $2) AS TEXT)")
            .bind(ROUTES_CHANNEL)
            .bind(name)
            .execute(&self.pool)
            .await;
        if let Err(e) = r {
            tracing::warn!(runtime = name, error = %e, "could not notify the other instances of a route change; they see it at their next pass");
        }
    }

    /// Records that `instance`'s proxy points runtime `id`'s route as epoch `epoch` of its row
    /// says (PostgreSQL only: one instance needs no acknowledgements).
    pub async fn ack_route(&self, id: &str, instance: &str, epoch: i64) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO route_acks (runtime_id, instance, epoch) VALUES ($1, $2, $3)
             ON CONFLICT (runtime_id, instance) DO UPDATE SET epoch = excluded.epoch WHERE route_acks.epoch < excluded.epoch",
        )
        .bind(id)
        .bind(instance)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live instances but `me` whose proxies have not applied epoch `epoch` of runtime `id`'s
    /// route yet.
    pub async fn unacked_route(&self, id: &str, me: &str, epoch: i64) -> Result<Vec<String>> {
        let q = self.q(
            "SELECT i.id FROM instances i LEFT JOIN route_acks a ON a.runtime_id = $1 AND a.instance = i.id
             WHERE i.id <> $2 AND i.heartbeat_ms + i.ttl_ms >= {now_ms} AND (a.epoch IS NULL OR a.epoch < $3)",
        );
        let rows = sqlx::query(&q)
            .bind(id)
            .bind(me)
            .bind(epoch)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| text(r, "id"))
            .collect::<sqlx::Result<_>>()?)
    }

    /// Takes or renews the cluster lease `name` for `holder` when it is free, expired, or already
    /// `holder`'s. Atomic: of instances trying at once, one gets it. Returns whether `holder`
    /// holds it now (for `ttl`, on the database's clock).
    pub async fn take_cluster_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let q = self.q(
            "INSERT INTO cluster_leases (name, holder, token, until_ms, since) VALUES ($1, $2, $3, {now_ms} + $4, $5)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, until_ms = excluded.until_ms,
               since = CASE WHEN cluster_leases.holder = excluded.holder AND cluster_leases.until_ms >= {now_ms} THEN cluster_leases.since ELSE excluded.since END
             WHERE cluster_leases.holder = excluded.holder OR cluster_leases.until_ms < {now_ms}",
        );
        let n = sqlx::query(&q)
            .bind(name)
            .bind(holder)
            .bind(crate::control::new_id("c"))
            .bind(ttl.as_millis() as i64)
            .bind(now())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives the cluster lease `name` up, if `holder` holds it.
    pub async fn release_cluster_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM cluster_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds the cluster lease `name`, if anyone ever took it.
    pub async fn cluster_lease(&self, name: &str) -> Result<Option<ClusterLease>> {
        let q = self.q("SELECT holder, since, CAST(CASE WHEN until_ms >= {now_ms} THEN 1 ELSE 0 END AS BIGINT) AS valid FROM cluster_leases WHERE name = $1");
        let row = sqlx::query(&q)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ClusterLease {
                holder: text(&r, "holder")?,
                valid: int(&r, "valid")? != 0,
                since: text(&r, "since")?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fresh, row};
    use super::*;

    #[tokio::test]
    async fn the_first_subnet_recorded_is_the_clusters_and_rows_store_their_addresses() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        // A row of an earlier version: no stored addresses until the network is settled.
        db.insert_runtime(&row("a", "alpha", 3)).await.unwrap();
        assert_eq!(db.runtime_by_id("a").await.unwrap().unwrap().addrs, None);
        let first: Ipv4Addr = "10.249.0.0".parse().unwrap();
        assert_eq!(db.settle_subnet(first).await.unwrap(), first);
        let a = db.runtime_by_id("a").await.unwrap().unwrap();
        assert_eq!(
            a.addrs,
            Some((
                "10.249.0.13".parse().unwrap(),
                "10.249.0.14".parse().unwrap()
            ))
        );
        // A second instance with another network hears which one the cluster uses.
        let other = Db::open(&tdb.url).await.unwrap();
        assert_eq!(
            other
                .settle_subnet("10.201.0.0".parse().unwrap())
                .await
                .unwrap(),
            first
        );
        let mut b = row("b", "beta", 0);
        db.insert_runtime_new_slot(&mut b, None).await.unwrap();
        let stored = db.runtime_by_id("b").await.unwrap().unwrap().addrs;
        assert_eq!(stored, b.addrs);
        assert_eq!(
            stored,
            Some(("10.249.0.1".parse().unwrap(), "10.249.0.2".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn one_holder_of_a_cluster_lease_until_it_expires() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        let ttl = Duration::from_millis(400);
        assert_eq!(db.cluster_lease("monitor").await.unwrap(), None);
        assert!(db.take_cluster_lease("monitor", "i-a", ttl).await.unwrap());
        assert!(!db.take_cluster_lease("monitor", "i-b", ttl).await.unwrap());
        assert!(
            db.take_cluster_lease("monitor", "i-a", ttl).await.unwrap(),
            "renewed"
        );
        let held = db.cluster_lease("monitor").await.unwrap().unwrap();
        assert_eq!((held.holder.as_str(), held.valid), ("i-a", true));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!db.cluster_lease("monitor").await.unwrap().unwrap().valid);
        assert!(
            db.take_cluster_lease("monitor", "i-b", ttl).await.unwrap(),
            "taken over once expired"
        );
        assert!(!db.take_cluster_lease("monitor", "i-a", ttl).await.unwrap());
        let now_b = db.cluster_lease("monitor").await.unwrap().unwrap();
        assert_eq!(now_b.holder, "i-b");
        assert_ne!(now_b.since, held.since, "a new term");
        db.release_cluster_lease("monitor", "i-a").await.unwrap();
        assert_eq!(
            db.cluster_lease("monitor").await.unwrap().unwrap().holder,
            "i-b",
            "only the holder gives it up"
        );
        db.release_cluster_lease("monitor", "i-b").await.unwrap();
        assert_eq!(db.cluster_lease("monitor").await.unwrap(), None);
    }
}
