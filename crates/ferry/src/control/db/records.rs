//! What happened: snapshots, the operations journal, events, webhooks and their deliveries.

use super::*;

impl Db {
    // ---- webhooks
    pub async fn add_webhook(&self, url: &str, secret: &str, kinds: &[String]) -> Result<i64> {
        let r = sqlx::query("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, $2, $3, $4) RETURNING id").bind(url).bind(secret).bind(kinds.join(",")).bind(now()).fetch_one(&self.pool).await?;
        Ok(int(&r, "id")?)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let rows =
            sqlx::query("SELECT id, url, secret, kinds, created_at FROM webhooks ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let kinds = text(r, "kinds")?;
                Ok(Webhook {
                    id: int(r, "id")?,
                    url: text(r, "url")?,
                    secret: text(r, "secret")?,
                    kinds: kinds
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(String::from)
                        .collect(),
                    created_at: text(r, "created_at")?,
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn remove_webhook(&self, id: i64) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn add_delivery(
        &self,
        webhook_id: i64,
        event_id: i64,
        attempt: i64,
        status: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO deliveries (webhook_id, event_id, attempt, status, error, at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(webhook_id).bind(event_id).bind(attempt).bind(status).bind(error).bind(now())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - $1")
            .bind(EVENT_RETENTION)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn deliveries(&self, webhook_id: i64, limit: u32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query("SELECT id, webhook_id, event_id, attempt, status, error, at FROM deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2").bind(webhook_id).bind(limit as i64).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    id: int(r, "id")?,
                    webhook_id: int(r, "webhook_id")?,
                    event_id: int(r, "event_id")?,
                    attempt: int(r, "attempt")?,
                    status: r.try_get("status")?,
                    error: opt(r, "error")?,
                    at: text(r, "at")?,
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }

    // ---- snapshots
    pub async fn insert_snapshot(&self, s: &Snapshot) -> Result<()> {
        sqlx::query("INSERT INTO snapshots (id, runtime_id, runtime_name, host, leave_running, size_bytes, image_bytes, created_at, timings, plan) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&s.id).bind(&s.runtime_id).bind(&s.runtime_name).bind(&s.host).bind(s.leave_running as i64).bind(s.size_bytes as i64).bind(s.image_bytes as i64)
            .bind(&s.created_at).bind(serde_json::to_string(&s.timings).unwrap()).bind(serde_json::to_string(&s.plan).unwrap())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        Ok(sqlx::query("SELECT * FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(snapshot_row)
            .transpose()?)
    }

    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(sqlx::query("SELECT * FROM snapshots ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(snapshot_row)
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- snapshot replicas (copies on a second host)
    /// Records that `host` holds a copy of `snapshot` that verified just now.
    pub async fn insert_replica(&self, snapshot: &str, host: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshot_replicas WHERE snapshot_id = $1 AND host = $2")
            .bind(snapshot)
            .bind(host)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO snapshot_replicas (snapshot_id, host, verified_at) VALUES ($1, $2, $3)",
        )
        .bind(snapshot)
        .bind(host)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every recorded replica: (snapshot id, host, verified at).
    pub async fn replicas(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT snapshot_id, host, verified_at FROM snapshot_replicas ORDER BY verified_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    text(r, "snapshot_id")?,
                    text(r, "host")?,
                    text(r, "verified_at")?,
                ))
            })
            .collect()
    }

    pub async fn delete_replica(&self, snapshot: &str, host: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshot_replicas WHERE snapshot_id = $1 AND host = $2")
            .bind(snapshot)
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- operations journal
    /// Records an operation as running, owned by instance `owner`.
    pub async fn begin_op(
        &self,
        kind: &str,
        runtime: Option<&str>,
        detail: &serde_json::Value,
        owner: Option<&str>,
    ) -> Result<i64> {
        let r = sqlx::query("INSERT INTO operations (kind, runtime, started_at, result, detail, owner) VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id")
            .bind(kind).bind(runtime).bind(now()).bind(detail.to_string()).bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(int(&r, "id")?)
    }

    pub async fn finish_op(
        &self,
        id: i64,
        error: Option<&str>,
        timings: &Timings,
        detail: Option<&serde_json::Value>,
    ) -> Result<()> {
        let result = if error.is_some() { "failed" } else { "ok" };
        sqlx::query("UPDATE operations SET finished_at = $2, result = $3, error = $4, timings = $5, detail = COALESCE($6, detail) WHERE id = $1")
            .bind(id).bind(now()).bind(result).bind(error).bind(serde_json::to_string(timings).unwrap()).bind(detail.map(|d| d.to_string()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes an operation still marked running as failed with `error`; false if it was no
    /// longer running (another instance closed it first).
    pub async fn close_interrupted_op(&self, id: i64, error: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE operations SET finished_at = $2, result = 'failed', error = $3 WHERE id = $1 AND result = 'running'").bind(id).bind(now()).bind(error).execute(&self.pool).await?.rows_affected();
        Ok(n == 1)
    }

    pub async fn operations(&self, runtime: Option<&str>, limit: u32) -> Result<Vec<Operation>> {
        let rows = sqlx::query(
            "SELECT * FROM operations WHERE ($1 IS NULL OR runtime = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(runtime)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(op_row).collect::<sqlx::Result<_>>()?)
    }

    // ---- events
    pub async fn add_event(
        &self,
        runtime: Option<&str>,
        kind: &str,
        reason: &str,
        data: &serde_json::Value,
    ) -> Result<i64> {
        let r = sqlx::query("INSERT INTO events (at, runtime, kind, reason, data) VALUES ($1, $2, $3, $4, $5) RETURNING id").bind(now()).bind(runtime).bind(kind).bind(reason).bind(data.to_string()).fetch_one(&self.pool).await?;
        let id = int(&r, "id")?;
        sqlx::query("DELETE FROM events WHERE id <= $1")
            .bind(id - EVENT_RETENTION)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    pub async fn events(&self, runtime: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE ($1 IS NULL OR runtime = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(runtime)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(Event {
                    id: int(r, "id")?,
                    at: text(r, "at")?,
                    runtime: opt(r, "runtime")?,
                    kind: text(r, "kind")?,
                    reason: text(r, "reason")?,
                    data: serde_json::from_str(&text(r, "data")?).unwrap_or_default(),
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }
}
