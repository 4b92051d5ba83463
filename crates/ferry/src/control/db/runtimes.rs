//! Hosts, runtimes, and who owns what: leases on runtimes and the instances' heartbeats.

use super::*;

impl Db {
    // ---- hosts
    pub async fn upsert_host(
        &self,
        name: &str,
        url: &str,
        labels: &[String],
        capacity_mb: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (name, url, labels, capacity_mb, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(name) DO UPDATE SET url = excluded.url, labels = excluded.labels, capacity_mb = excluded.capacity_mb",
        )
        .bind(name).bind(url).bind(labels.join(",")).bind(capacity_mb as i64).bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        let rows =
            sqlx::query("SELECT name, url, labels, capacity_mb, state FROM hosts ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let labels = text(r, "labels")?;
                Ok(HostRow {
                    name: text(r, "name")?,
                    url: text(r, "url")?,
                    labels: labels
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    capacity_mb: int(r, "capacity_mb")? as u64,
                    state: text(r, "state")?,
                })
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Error::from)
    }

    /// Sets a host's lifecycle state; false if there is no such host.
    pub async fn set_host_state(&self, name: &str, state: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE hosts SET state = $1 WHERE name = $2")
            .bind(state)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_host(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM hosts WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- runtimes
    fn select_runtimes(&self) -> String {
        self.q("SELECT *, CAST(CASE WHEN owner IS NOT NULL AND lease_until > {now_ms} THEN 1 ELSE 0 END AS BIGINT) AS leased FROM runtimes")
    }

    /// Inserts `r` as it is (its network slot included). With `lease`, the new row is leased.
    pub async fn insert_runtime(&self, r: &RuntimeRow) -> Result<()> {
        self.insert_leased(r, None).await
    }

    async fn insert_leased(&self, r: &RuntimeRow, lease: Option<&Lease>) -> Result<()> {
        Ok(self.insert_row(r, lease).await?)
    }

    async fn insert_row(&self, r: &RuntimeRow, lease: Option<&Lease>) -> sqlx::Result<()> {
        let q = self.q(
            "INSERT INTO runtimes (id, name, host, plan, memory_mb, cpus, image, net_index, state, state_reason, created_at, started_at, last_snapshot, auto, owner, lease_token, lease_until, egress, access_token, host_ip, ip)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, CASE WHEN $15 IS NULL THEN 0 ELSE {now_ms} + $17 END, $18, $19, $20, $21)",
        );
        let addrs = self.addresses_for(r, r.net_index);
        sqlx::query(&q)
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.host)
            .bind(&r.plan.name)
            .bind(r.plan.memory_mb as i64)
            .bind(r.plan.cpus)
            .bind(&r.image)
            .bind(r.net_index as i64)
            .bind(&r.state)
            .bind(&r.state_reason)
            .bind(&r.created_at)
            .bind(&r.started_at)
            .bind(&r.last_snapshot)
            .bind(r.auto as i64)
            .bind(lease.map(|l| l.owner.clone()))
            .bind(lease.map(|l| l.token.clone()))
            .bind(lease.map(|l| l.ttl.as_millis() as i64).unwrap_or(0))
            .bind(
                r.egress
                    .as_ref()
                    .map(|e| serde_json::to_string(e).expect("egress serializes")),
            )
            // Every new row is a new tenant's runtime (a create, a fork, a restore under a new
            // name): it gets an access token of its own.
            .bind(crate::control::auth::new_token())
            .bind(addrs.map(|a| a.0.to_string()))
            .bind(addrs.map(|a| a.1.to_string()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts `r` with the smallest free network slot and sets `r.net_index`; with `lease`, the
    /// new row is leased to its holder from the start. Slots are unique in the table: when another
    /// insert (of this or another instance) took the same slot first, the next free one is tried.
    pub async fn insert_runtime_new_slot(
        &self,
        r: &mut RuntimeRow,
        lease: Option<&Lease>,
    ) -> Result<()> {
        for _ in 0..64 {
            r.net_index = self.free_net_index().await?;
            match self.insert_row(r, lease).await {
                Ok(()) => {
                    r.addrs = self.addresses_for(r, r.net_index);
                    return Ok(());
                }
                Err(e) if is_unique_violation(&e) => {
                    if self.runtime_by_name(&r.name).await?.is_some()
                        || self.runtime_by_id(&r.id).await?.is_some()
                    {
                        return Err(Error::Conflict(format!(
                            "a runtime named {:?} (or with id {}) already exists",
                            r.name, r.id
                        )));
                    }
                    // Another insert took this slot first: try the next free one.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(
            "could not find a free network slot after 64 attempts; retry".into(),
        ))
    }

    pub async fn runtime_by_name(&self, name: &str) -> Result<Option<RuntimeRow>> {
        let q = format!("{} WHERE name = $1", self.select_runtimes());
        Ok(sqlx::query(&q)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(runtime_row)
            .transpose()?)
    }

    pub async fn runtime_by_id(&self, id: &str) -> Result<Option<RuntimeRow>> {
        let q = format!("{} WHERE id = $1", self.select_runtimes());
        Ok(sqlx::query(&q)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(runtime_row)
            .transpose()?)
    }

    pub async fn runtimes(&self) -> Result<Vec<RuntimeRow>> {
        let q = format!("{} ORDER BY created_at, name", self.select_runtimes());
        Ok(sqlx::query(&q)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(runtime_row)
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn set_state(&self, id: &str, state: &str, reason: Option<&str>) -> Result<()> {
        let started = (state == "running").then(now);
        sqlx::query("UPDATE runtimes SET route_epoch = route_epoch + 1, state = $2, state_reason = $3, started_at = CASE WHEN $4 IS NOT NULL AND state != 'running' THEN $4 ELSE started_at END WHERE id = $1")
            .bind(id).bind(state).bind(reason).bind(started)
            .execute(&self.pool)
            .await?;
        self.notify_route_of(id).await;
        Ok(())
    }

    pub async fn set_host(&self, id: &str, host: &str) -> Result<()> {
        sqlx::query("UPDATE runtimes SET host = $2 WHERE id = $1")
            .bind(id)
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_auto(&self, id: &str, auto: bool) -> Result<()> {
        sqlx::query("UPDATE runtimes SET auto = $2 WHERE id = $1")
            .bind(id)
            .bind(auto as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_plan(&self, id: &str, plan: &Plan) -> Result<()> {
        sqlx::query("UPDATE runtimes SET plan = $2, memory_mb = $3, cpus = $4 WHERE id = $1")
            .bind(id)
            .bind(&plan.name)
            .bind(plan.memory_mb as i64)
            .bind(plan.cpus)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_last_snapshot(&self, id: &str, snap: &str) -> Result<()> {
        sqlx::query("UPDATE runtimes SET last_snapshot = $2 WHERE id = $1")
            .bind(id)
            .bind(snap)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_runtime(&self, id: &str) -> Result<()> {
        let name = self.runtime_by_id(id).await?.map(|r| r.name);
        sqlx::query("DELETE FROM runtimes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM route_acks WHERE runtime_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if let Some(n) = name {
            self.notify_route(&n).await;
        }
        Ok(())
    }

    /// As [`Db::notify_route`], for the runtime with id `id`.
    async fn notify_route_of(&self, id: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        let r = sqlx::query("SELECT CAST(pg_notify($1, name) AS TEXT) FROM runtimes WHERE id = $2")
            .bind(super::ROUTES_CHANNEL)
            .bind(id)
            .execute(&self.pool)
            .await;
        if let Err(e) = r {
            tracing::warn!(runtime = id, error = %e, "could not notify the other instances of a route change; they see it at their next pass");
        }
    }

    /// The smallest network slot no runtime holds.
    pub async fn free_net_index(&self) -> Result<u32> {
        let used: Vec<i64> = sqlx::query("SELECT net_index FROM runtimes ORDER BY net_index")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| int(r, "net_index"))
            .collect::<sqlx::Result<_>>()?;
        let mut i = 0i64;
        for u in used {
            if u != i {
                break;
            }
            i += 1;
        }
        if i >= crate::dest::SLOTS as i64 {
            return Err(Error::Conflict(format!(
                "all {} runtime network slots are taken: remove runtimes you no longer need",
                crate::dest::SLOTS
            )));
        }
        Ok(i as u32)
    }

    // ---- leases and instances
    /// Takes the lease on runtime `id` if nobody holds it, its holder's lease expired, or `lease`'s
    /// owner holds it already (a new claim of the same instance). Atomic: of several instances
    /// trying at once, exactly one gets it. Returns whether it was taken.
    pub async fn take_lease(&self, id: &str, lease: &Lease) -> Result<bool> {
        let q = self.q("UPDATE runtimes SET owner = $2, lease_token = $3, lease_until = {now_ms} + $4 WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until < {now_ms})");
        let n = sqlx::query(&q)
            .bind(id)
            .bind(&lease.owner)
            .bind(&lease.token)
            .bind(lease.ttl.as_millis() as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives the lease up, if it is still this claim's (`token`).
    pub async fn release_lease(&self, id: &str, token: &str) -> Result<()> {
        sqlx::query("UPDATE runtimes SET owner = NULL, lease_token = NULL, lease_until = 0 WHERE id = $1 AND lease_token = $2").bind(id).bind(token).execute(&self.pool).await?;
        Ok(())
    }

    /// Extends every lease `owner` holds and its own heartbeat; returns how many leases it holds.
    pub async fn heartbeat(&self, owner: &str, ttl: Duration) -> Result<u64> {
        let ms = ttl.as_millis() as i64;
        sqlx::query(
            &self.q("UPDATE instances SET heartbeat_ms = {now_ms}, ttl_ms = $2 WHERE id = $1"),
        )
        .bind(owner)
        .bind(ms)
        .execute(&self.pool)
        .await?;
        let n = sqlx::query(
            &self.q("UPDATE runtimes SET lease_until = {now_ms} + $2 WHERE owner = $1"),
        )
        .bind(owner)
        .bind(ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Records (or re-records, after a restart) an instance and its addresses.
    pub async fn register_instance(
        &self,
        id: &str,
        api_url: &str,
        proxy_url: &str,
        ttl: Duration,
    ) -> Result<()> {
        let q = self.q(
            "INSERT INTO instances (id, api_url, proxy_url, started_at, heartbeat_ms, ttl_ms) VALUES ($1, $2, $3, $4, {now_ms}, $5)
             ON CONFLICT(id) DO UPDATE SET api_url = excluded.api_url, proxy_url = excluded.proxy_url, started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms, ttl_ms = excluded.ttl_ms",
        );
        sqlx::query(&q)
            .bind(id)
            .bind(api_url)
            .bind(proxy_url)
            .bind(now())
            .bind(ttl.as_millis() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn instances(&self) -> Result<Vec<Instance>> {
        let q = self.q("SELECT id, api_url, proxy_url, started_at, CAST(CASE WHEN heartbeat_ms + ttl_ms >= {now_ms} THEN 1 ELSE 0 END AS BIGINT) AS alive,
            CAST(CASE WHEN EXISTS (SELECT 1 FROM cluster_leases l WHERE l.name = $1 AND l.holder = instances.id AND l.until_ms >= {now_ms}) THEN 1 ELSE 0 END AS BIGINT) AS decider
            FROM instances ORDER BY started_at, id");
        let rows = sqlx::query(&q)
            .bind(crate::control::decider::MONITOR_LEASE)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(Instance {
                    decider: int(r, "decider")? != 0,
                    id: text(r, "id")?,
                    api_url: text(r, "api_url")?,
                    proxy_url: text(r, "proxy_url")?,
                    started_at: text(r, "started_at")?,
                    alive: int(r, "alive")? != 0,
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }

    /// Operations still marked running whose instance is gone: `restarted` (this instance's own id,
    /// from before it restarted) or any instance whose heartbeat stopped; also those recorded
    /// before instances had ids.
    pub async fn orphaned_operations(&self, restarted: Option<&str>) -> Result<Vec<Operation>> {
        let q = self.q(
            "SELECT * FROM operations WHERE result = 'running' AND (owner IS NULL OR owner = $1
               OR owner NOT IN (SELECT id FROM instances WHERE heartbeat_ms + ttl_ms >= {now_ms})) ORDER BY id",
        );
        Ok(sqlx::query(&q)
            .bind(restarted)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(op_row)
            .collect::<sqlx::Result<_>>()?)
    }
}
