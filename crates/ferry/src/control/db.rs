//! The control plane's state in SQL — SQLite (embedded, the default) or PostgreSQL (shared by
//! several `ferry serve` instances): hosts, runtimes, snapshots, the operations journal (with
//! timings), events, and who owns what. One set of queries serves both (sqlx's `Any` driver,
//! `$N` placeholders); schema migrations are applied in order and recorded in
//! `schema_migrations`, their DDL rendered for the backend where the dialects differ.
//!
//! Ownership: each instance has a row in `instances` (renewed heartbeat); a runtime under an
//! operation carries `owner`, `lease_token` and `lease_until` (milliseconds on the database's
//! clock), taken atomically and renewed while the operation runs (see `control/lease.rs`).

use crate::api::{Event, Operation, Snapshot, Timings};
use crate::plan::Plan;
use crate::{Error, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// Which SQL server the state lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Schema versions in order. `{id}`, `{int}` and `{real}` are rendered per backend.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE hosts (
  name TEXT PRIMARY KEY, url TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '',
  capacity_mb {int} NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE runtimes (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, host TEXT NOT NULL,
  plan TEXT NOT NULL, memory_mb {int} NOT NULL, cpus {real} NOT NULL, image TEXT NOT NULL,
  net_index {int} NOT NULL UNIQUE, state TEXT NOT NULL, state_reason TEXT,
  created_at TEXT NOT NULL, started_at TEXT, last_snapshot TEXT
);
CREATE TABLE snapshots (
  id TEXT PRIMARY KEY, runtime_id TEXT NOT NULL, runtime_name TEXT NOT NULL, host TEXT NOT NULL,
  leave_running {int} NOT NULL, size_bytes {int} NOT NULL, image_bytes {int} NOT NULL,
  created_at TEXT NOT NULL, timings TEXT NOT NULL DEFAULT '{}', plan TEXT NOT NULL
);
CREATE TABLE operations (
  id {id}, kind TEXT NOT NULL, runtime TEXT,
  started_at TEXT NOT NULL, finished_at TEXT, result TEXT NOT NULL, error TEXT,
  timings TEXT NOT NULL DEFAULT '{}', detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE events (
  id {id}, at TEXT NOT NULL, runtime TEXT,
  kind TEXT NOT NULL, reason TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
);
"#,
    r#"
ALTER TABLE runtimes ADD COLUMN auto {int} NOT NULL DEFAULT 1;
CREATE TABLE webhooks (
  id {id}, url TEXT NOT NULL, secret TEXT NOT NULL,
  kinds TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL
);
CREATE TABLE deliveries (
  id {id}, webhook_id {int} NOT NULL, event_id {int} NOT NULL,
  attempt {int} NOT NULL, status {int}, error TEXT, at TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE instances (
  id TEXT PRIMARY KEY, api_url TEXT NOT NULL DEFAULT '', proxy_url TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL, heartbeat_ms {int} NOT NULL, ttl_ms {int} NOT NULL
);
ALTER TABLE runtimes ADD COLUMN owner TEXT;
ALTER TABLE runtimes ADD COLUMN lease_token TEXT;
ALTER TABLE runtimes ADD COLUMN lease_until {int} NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN owner TEXT;
"#,
];

/// Events kept in the database (older ones are dropped as new ones arrive).
pub const EVENT_RETENTION: i64 = 10_000;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A runtime's row.
#[derive(Debug, Clone)]
pub struct RuntimeRow {
    pub id: String,
    pub name: String,
    pub host: String,
    pub plan: Plan,
    pub image: String,
    pub net_index: u32,
    pub state: String,
    pub state_reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub last_snapshot: Option<String>,
    /// The monitor may act on it (migrate, hibernate); without, it only reports.
    pub auto: bool,
    /// The instance whose lease on it has not expired, if any (read-only: leases change through
    /// [`Db::take_lease`] and [`Db::release_lease`]).
    pub leased_by: Option<String>,
}

/// A lease on a runtime: who holds it and the token that proves which claim it is.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub token: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    #[serde(skip_serializing)]
    pub secret: String,
    /// Event kinds (prefixes) it wants; empty = all.
    pub kinds: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: i64,
    pub attempt: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub at: String,
}

/// A control-plane instance as recorded in the database.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub id: String,
    pub api_url: String,
    pub proxy_url: String,
    pub started_at: String,
    /// Its heartbeat is recent (within its lease time).
    pub alive: bool,
}

pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

fn text(r: &AnyRow, col: &str) -> sqlx::Result<String> {
    r.try_get(col)
}

fn opt(r: &AnyRow, col: &str) -> sqlx::Result<Option<String>> {
    r.try_get(col)
}

fn int(r: &AnyRow, col: &str) -> sqlx::Result<i64> {
    r.try_get(col)
}

fn runtime_row(r: &AnyRow) -> sqlx::Result<RuntimeRow> {
    let leased: i64 = int(r, "leased")?;
    Ok(RuntimeRow {
        id: text(r, "id")?,
        name: text(r, "name")?,
        host: text(r, "host")?,
        plan: Plan { name: text(r, "plan")?, memory_mb: int(r, "memory_mb")? as u64, cpus: r.try_get("cpus")? },
        image: text(r, "image")?,
        net_index: int(r, "net_index")? as u32,
        state: text(r, "state")?,
        state_reason: opt(r, "state_reason")?,
        created_at: text(r, "created_at")?,
        started_at: opt(r, "started_at")?,
        last_snapshot: opt(r, "last_snapshot")?,
        auto: int(r, "auto")? != 0,
        leased_by: if leased != 0 { opt(r, "owner")? } else { None },
    })
}

fn snapshot_row(r: &AnyRow) -> sqlx::Result<Snapshot> {
    Ok(Snapshot {
        id: text(r, "id")?,
        plan: serde_json::from_str(&text(r, "plan")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        runtime_id: text(r, "runtime_id")?,
        runtime_name: text(r, "runtime_name")?,
        host: text(r, "host")?,
        leave_running: int(r, "leave_running")? != 0,
        size_bytes: int(r, "size_bytes")? as u64,
        image_bytes: int(r, "image_bytes")? as u64,
        created_at: text(r, "created_at")?,
        timings: serde_json::from_str(&text(r, "timings")?).unwrap_or_default(),
    })
}

fn op_row(r: &AnyRow) -> sqlx::Result<Operation> {
    Ok(Operation {
        id: int(r, "id")?,
        kind: text(r, "kind")?,
        runtime: opt(r, "runtime")?,
        started_at: text(r, "started_at")?,
        finished_at: opt(r, "finished_at")?,
        result: text(r, "result")?,
        error: opt(r, "error")?,
        timings: serde_json::from_str(&text(r, "timings")?).unwrap_or_default(),
        detail: serde_json::from_str(&text(r, "detail")?).unwrap_or_default(),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Where the state lives: `sqlite:///PATH`, `sqlite://PATH`, `postgres://...` (or `postgresql://`).
pub fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(Error::Invalid("--database must be sqlite:///PATH (the default: ferry.db in the state dir) or postgres://USER:PASSWORD@HOST/DB".into()))
    }
}

/// A database URL with any password replaced, for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let shown = redact(url);
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' }),
            _ => url.to_string(),
        };
        // One connection first, so that a wrong URL or a server that is down says why at once.
        let first = tokio::time::timeout(Duration::from_secs(15), <sqlx::AnyConnection as sqlx::Connection>::connect(&url)).await;
        match first {
            Ok(Ok(c)) => drop(c),
            Ok(Err(e)) => return Err(Error::Unavailable(format!("cannot open the database {shown}: {e}; check that its server runs and the URL's user, password, host and database"))),
            Err(_) => return Err(Error::Unavailable(format!("cannot open the database {shown}: no answer within 15 s; check that its server runs and is reachable"))),
        }
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let pool = match backend {
            Backend::Sqlite => {
                opts.max_connections(4)
                    .after_connect(|c, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            c.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
            }
            Backend::Postgres => opts.max_connections(8).connect(&url).await,
        }
        .map_err(|e| Error::Unavailable(format!("cannot open the database {shown}: {e}")))?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn render(&self, ddl: &str) -> String {
        let (id, int, real) = match self.backend {
            Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER", "REAL"),
            Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT", "DOUBLE PRECISION"),
        };
        ddl.replace("{id}", id).replace("{int}", int).replace("{real}", real)
    }

    /// The database clock in milliseconds since the epoch, as an SQL expression: leases compare
    /// against one clock, whatever the instances' clocks say.
    fn now_ms(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// `q` with `{now_ms}` replaced by the database clock.
    fn q(&self, q: &str) -> String {
        q.replace("{now_ms}", self.now_ms())
    }

    /// Applies the migrations not yet recorded, each in its own transaction. On PostgreSQL an
    /// advisory lock makes instances starting together apply them once.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_lock(7013370) AS TEXT)").execute(&mut *conn).await?;
        }
        let r = self.migrate_on(&mut conn).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_unlock(7013370) AS TEXT)").execute(&mut *conn).await?;
        }
        r
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        sqlx::raw_sql(&self.render("CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, applied_at TEXT NOT NULL)")).execute(&mut *conn).await?;
        let mut applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetch_one(&mut *conn).await?.try_get("v")?;
        if applied == 0 && self.backend == Backend::Sqlite {
            // Databases of earlier versions counted their schema in `user_version`.
            let legacy: i64 = sqlx::query("PRAGMA user_version").fetch_one(&mut *conn).await?.try_get(0)?;
            for v in 1..=legacy.min(MIGRATIONS.len() as i64) {
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)").bind(v).bind(now()).execute(&mut *conn).await?;
            }
            applied = legacy;
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            let version = (i + 1) as i64;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(&self.render(m)).execute(&mut *tx).await.map_err(|e| Error::Internal(format!("database: schema migration {version} failed: {e}")))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)").bind(version).bind(now()).execute(&mut *tx).await?;
            tx.commit().await?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    }

    /// The schema version recorded.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetch_one(&self.pool).await?.try_get("v")?)
    }

    // ---- hosts
    pub async fn upsert_host(&self, name: &str, url: &str, labels: &[String], capacity_mb: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (name, url, labels, capacity_mb, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(name) DO UPDATE SET url = excluded.url, labels = excluded.labels, capacity_mb = excluded.capacity_mb",
        )
        .bind(name).bind(url).bind(labels.join(",")).bind(capacity_mb as i64).bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn hosts(&self) -> Result<Vec<(String, String, Vec<String>, u64)>> {
        let rows = sqlx::query("SELECT name, url, labels, capacity_mb FROM hosts ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let labels = text(r, "labels")?;
                Ok((text(r, "name")?, text(r, "url")?, labels.split(',').filter(|s| !s.is_empty()).map(String::from).collect(), int(r, "capacity_mb")? as u64))
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Error::from)
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
            "INSERT INTO runtimes (id, name, host, plan, memory_mb, cpus, image, net_index, state, state_reason, created_at, started_at, last_snapshot, auto, owner, lease_token, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, CASE WHEN $15 IS NULL THEN 0 ELSE {now_ms} + $17 END)",
        );
        sqlx::query(&q)
            .bind(&r.id).bind(&r.name).bind(&r.host).bind(&r.plan.name).bind(r.plan.memory_mb as i64).bind(r.plan.cpus).bind(&r.image)
            .bind(r.net_index as i64).bind(&r.state).bind(&r.state_reason).bind(&r.created_at).bind(&r.started_at).bind(&r.last_snapshot)
            .bind(r.auto as i64).bind(lease.map(|l| l.owner.clone())).bind(lease.map(|l| l.token.clone())).bind(lease.map(|l| l.ttl.as_millis() as i64).unwrap_or(0))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts `r` with the smallest free network slot and sets `r.net_index`; with `lease`, the
    /// new row is leased to its holder from the start. Slots are unique in the table: when another
    /// insert (of this or another instance) took the same slot first, the next free one is tried.
    pub async fn insert_runtime_new_slot(&self, r: &mut RuntimeRow, lease: Option<&Lease>) -> Result<()> {
        for _ in 0..64 {
            r.net_index = self.free_net_index().await?;
            match self.insert_row(r, lease).await {
                Ok(()) => return Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    if self.runtime_by_name(&r.name).await?.is_some() || self.runtime_by_id(&r.id).await?.is_some() {
                        return Err(Error::Conflict(format!("a runtime named {:?} (or with id {}) already exists", r.name, r.id)));
                    }
                    // Another insert took this slot first: try the next free one.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable("could not find a free network slot after 64 attempts; retry".into()))
    }

    pub async fn runtime_by_name(&self, name: &str) -> Result<Option<RuntimeRow>> {
        let q = format!("{} WHERE name = $1", self.select_runtimes());
        Ok(sqlx::query(&q).bind(name).fetch_optional(&self.pool).await?.as_ref().map(runtime_row).transpose()?)
    }

    pub async fn runtime_by_id(&self, id: &str) -> Result<Option<RuntimeRow>> {
        let q = format!("{} WHERE id = $1", self.select_runtimes());
        Ok(sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?.as_ref().map(runtime_row).transpose()?)
    }

    pub async fn runtimes(&self) -> Result<Vec<RuntimeRow>> {
        let q = format!("{} ORDER BY created_at, name", self.select_runtimes());
        Ok(sqlx::query(&q).fetch_all(&self.pool).await?.iter().map(runtime_row).collect::<sqlx::Result<_>>()?)
    }

    pub async fn set_state(&self, id: &str, state: &str, reason: Option<&str>) -> Result<()> {
        let started = (state == "running").then(now);
        sqlx::query("UPDATE runtimes SET state = $2, state_reason = $3, started_at = CASE WHEN $4 IS NOT NULL AND state != 'running' THEN $4 ELSE started_at END WHERE id = $1")
            .bind(id).bind(state).bind(reason).bind(started)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_host(&self, id: &str, host: &str) -> Result<()> {
        sqlx::query("UPDATE runtimes SET host = $2 WHERE id = $1").bind(id).bind(host).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_auto(&self, id: &str, auto: bool) -> Result<()> {
        sqlx::query("UPDATE runtimes SET auto = $2 WHERE id = $1").bind(id).bind(auto as i64).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_plan(&self, id: &str, plan: &Plan) -> Result<()> {
        sqlx::query("UPDATE runtimes SET plan = $2, memory_mb = $3, cpus = $4 WHERE id = $1").bind(id).bind(&plan.name).bind(plan.memory_mb as i64).bind(plan.cpus).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_last_snapshot(&self, id: &str, snap: &str) -> Result<()> {
        sqlx::query("UPDATE runtimes SET last_snapshot = $2 WHERE id = $1").bind(id).bind(snap).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn delete_runtime(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM runtimes WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// The smallest network slot no runtime holds.
    pub async fn free_net_index(&self) -> Result<u32> {
        let used: Vec<i64> = sqlx::query("SELECT net_index FROM runtimes ORDER BY net_index").fetch_all(&self.pool).await?.iter().map(|r| int(r, "net_index")).collect::<sqlx::Result<_>>()?;
        let mut i = 0i64;
        for u in used {
            if u != i {
                break;
            }
            i += 1;
        }
        Ok(i as u32)
    }

    // ---- leases and instances
    /// Takes the lease on runtime `id` if nobody holds it, its holder's lease expired, or `lease`'s
    /// owner holds it already (a new claim of the same instance). Atomic: of several instances
    /// trying at once, exactly one gets it. Returns whether it was taken.
    pub async fn take_lease(&self, id: &str, lease: &Lease) -> Result<bool> {
        let q = self.q("UPDATE runtimes SET owner = $2, lease_token = $3, lease_until = {now_ms} + $4 WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until < {now_ms})");
        let n = sqlx::query(&q).bind(id).bind(&lease.owner).bind(&lease.token).bind(lease.ttl.as_millis() as i64).execute(&self.pool).await?.rows_affected();
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
        sqlx::query(&self.q("UPDATE instances SET heartbeat_ms = {now_ms}, ttl_ms = $2 WHERE id = $1")).bind(owner).bind(ms).execute(&self.pool).await?;
        let n = sqlx::query(&self.q("UPDATE runtimes SET lease_until = {now_ms} + $2 WHERE owner = $1")).bind(owner).bind(ms).execute(&self.pool).await?.rows_affected();
        Ok(n)
    }

    /// Records (or re-records, after a restart) an instance and its addresses.
    pub async fn register_instance(&self, id: &str, api_url: &str, proxy_url: &str, ttl: Duration) -> Result<()> {
        let q = self.q(
            "INSERT INTO instances (id, api_url, proxy_url, started_at, heartbeat_ms, ttl_ms) VALUES ($1, $2, $3, $4, {now_ms}, $5)
             ON CONFLICT(id) DO UPDATE SET api_url = excluded.api_url, proxy_url = excluded.proxy_url, started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms, ttl_ms = excluded.ttl_ms",
        );
        sqlx::query(&q).bind(id).bind(api_url).bind(proxy_url).bind(now()).bind(ttl.as_millis() as i64).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn instances(&self) -> Result<Vec<Instance>> {
        let q = self.q("SELECT id, api_url, proxy_url, started_at, CAST(CASE WHEN heartbeat_ms + ttl_ms >= {now_ms} THEN 1 ELSE 0 END AS BIGINT) AS alive FROM instances ORDER BY started_at, id");
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(Instance { id: text(r, "id")?, api_url: text(r, "api_url")?, proxy_url: text(r, "proxy_url")?, started_at: text(r, "started_at")?, alive: int(r, "alive")? != 0 }))
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
        Ok(sqlx::query(&q).bind(restarted).fetch_all(&self.pool).await?.iter().map(op_row).collect::<sqlx::Result<_>>()?)
    }

    // ---- webhooks
    pub async fn add_webhook(&self, url: &str, secret: &str, kinds: &[String]) -> Result<i64> {
        let r = sqlx::query("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, $2, $3, $4) RETURNING id").bind(url).bind(secret).bind(kinds.join(",")).bind(now()).fetch_one(&self.pool).await?;
        Ok(int(&r, "id")?)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let rows = sqlx::query("SELECT id, url, secret, kinds, created_at FROM webhooks ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let kinds = text(r, "kinds")?;
                Ok(Webhook { id: int(r, "id")?, url: text(r, "url")?, secret: text(r, "secret")?, kinds: kinds.split(',').filter(|k| !k.is_empty()).map(String::from).collect(), created_at: text(r, "created_at")? })
            })
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn remove_webhook(&self, id: i64) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn add_delivery(&self, webhook_id: i64, event_id: i64, attempt: i64, status: Option<i64>, error: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO deliveries (webhook_id, event_id, attempt, status, error, at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(webhook_id).bind(event_id).bind(attempt).bind(status).bind(error).bind(now())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - $1").bind(EVENT_RETENTION).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn deliveries(&self, webhook_id: i64, limit: u32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query("SELECT id, webhook_id, event_id, attempt, status, error, at FROM deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2").bind(webhook_id).bind(limit as i64).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(Delivery { id: int(r, "id")?, webhook_id: int(r, "webhook_id")?, event_id: int(r, "event_id")?, attempt: int(r, "attempt")?, status: r.try_get("status")?, error: opt(r, "error")?, at: text(r, "at")? }))
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
        Ok(sqlx::query("SELECT * FROM snapshots WHERE id = $1").bind(id).fetch_optional(&self.pool).await?.as_ref().map(snapshot_row).transpose()?)
    }

    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(sqlx::query("SELECT * FROM snapshots ORDER BY created_at").fetch_all(&self.pool).await?.iter().map(snapshot_row).collect::<sqlx::Result<_>>()?)
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    // ---- operations journal
    /// Records an operation as running, owned by instance `owner`.
    pub async fn begin_op(&self, kind: &str, runtime: Option<&str>, detail: &serde_json::Value, owner: Option<&str>) -> Result<i64> {
        let r = sqlx::query("INSERT INTO operations (kind, runtime, started_at, result, detail, owner) VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id")
            .bind(kind).bind(runtime).bind(now()).bind(detail.to_string()).bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(int(&r, "id")?)
    }

    pub async fn finish_op(&self, id: i64, error: Option<&str>, timings: &Timings, detail: Option<&serde_json::Value>) -> Result<()> {
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
        let rows = sqlx::query("SELECT * FROM operations WHERE ($1 IS NULL OR runtime = $1) ORDER BY id DESC LIMIT $2").bind(runtime).bind(limit as i64).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(op_row).collect::<sqlx::Result<_>>()?)
    }

    // ---- events
    pub async fn add_event(&self, runtime: Option<&str>, kind: &str, reason: &str, data: &serde_json::Value) -> Result<i64> {
        let r = sqlx::query("INSERT INTO events (at, runtime, kind, reason, data) VALUES ($1, $2, $3, $4, $5) RETURNING id").bind(now()).bind(runtime).bind(kind).bind(reason).bind(data.to_string()).fetch_one(&self.pool).await?;
        let id = int(&r, "id")?;
        sqlx::query("DELETE FROM events WHERE id <= $1").bind(id - EVENT_RETENTION).execute(&self.pool).await?;
        Ok(id)
    }

    pub async fn events(&self, runtime: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT * FROM events WHERE ($1 IS NULL OR runtime = $1) ORDER BY id DESC LIMIT $2").bind(runtime).bind(limit as i64).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(Event { id: int(r, "id")?, at: text(r, "at")?, runtime: opt(r, "runtime")?, kind: text(r, "kind")?, reason: text(r, "reason")?, data: serde_json::from_str(&text(r, "data")?).unwrap_or_default() }))
            .collect::<sqlx::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, idx: u32) -> RuntimeRow {
        RuntimeRow {
            id: id.into(), name: name.into(), host: "local".into(), plan: Plan::named("free").unwrap(), image: "mrmd-python".into(), net_index: idx,
            state: "running".into(), state_reason: None, created_at: now(), started_at: None, last_snapshot: None, auto: true, leased_by: None,
        }
    }

    /// The database a unit test uses: a fresh SQLite file in `t`, or, with
    /// `FERRY_TEST_DATABASE=postgres`, a fresh database on the PostgreSQL server of
    /// `FERRY_TEST_PG_URL` (default: the URL scripts/setup.sh wrote), dropped when the test ends.
    pub(crate) struct TestDb {
        pub url: String,
        pg: Option<(String, String)>,
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Some((server, name)) = self.pg.take() {
                let _ = std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async move {
                        sqlx::any::install_default_drivers();
                        let admin = AnyPool::connect(&format!("{server}/postgres")).await?;
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.map(|_| ())
                    })
                })
                .join();
            }
        }
    }

    pub(crate) async fn fresh(t: &tempfile::TempDir) -> TestDb {
        if std::env::var("FERRY_TEST_DATABASE").as_deref() != Ok("postgres") {
            return TestDb { url: format!("sqlite://{}", t.path().join("ferry.db").display()), pg: None };
        }
        let server = std::env::var("FERRY_TEST_PG_URL").ok().or_else(|| std::fs::read_to_string("/var/cache/ferry/pg-test-url").ok()).expect("FERRY_TEST_DATABASE=postgres needs FERRY_TEST_PG_URL (or scripts/setup.sh)");
        let server = server.trim().trim_end_matches('/').to_string();
        sqlx::any::install_default_drivers();
        let admin = AnyPool::connect(&format!("{server}/postgres")).await.unwrap();
        let name = format!("ferry_unit_{}", super::super::new_id(""));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
        admin.close().await;
        TestDb { url: format!("{server}/{name}"), pg: Some((server, name)) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_take_distinct_slots() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let url = tdb.url.clone();
        // Two handles on one database: as two control-plane instances would be.
        let dbs = [std::sync::Arc::new(Db::open(&url).await.unwrap()), std::sync::Arc::new(Db::open(&url).await.unwrap())];
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let db = dbs[i % 2].clone();
                tokio::spawn(async move {
                    let mut r = row(&format!("id{i}"), &format!("n{i}"), 0);
                    db.insert_runtime_new_slot(&mut r, None).await.unwrap();
                    r.net_index
                })
            })
            .collect();
        let mut slots = Vec::new();
        for h in handles {
            slots.push(h.await.unwrap());
        }
        slots.sort();
        assert_eq!(slots, (0..16).collect::<Vec<u32>>());
    }

    #[tokio::test]
    async fn state_survives_reopen_and_slots_are_reused() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let url = tdb.url.clone();
        {
            let db = Db::open(&url).await.unwrap();
            db.insert_runtime(&row("a", "alpha", 0)).await.unwrap();
            db.insert_runtime(&row("b", "beta", 1)).await.unwrap();
            assert_eq!(db.free_net_index().await.unwrap(), 2);
            db.delete_runtime("a").await.unwrap();
            assert_eq!(db.free_net_index().await.unwrap(), 0);
            let op = db.begin_op("create", Some("beta"), &serde_json::json!({}), None).await.unwrap();
            db.finish_op(op, None, &[("total_ms".to_string(), 12.5)].into_iter().collect(), None).await.unwrap();
            assert!(db.insert_runtime(&row("c", "beta", 5)).await.is_err(), "names are unique");
            let mut dup = row("d", "beta", 0);
            assert!(matches!(db.insert_runtime_new_slot(&mut dup, None).await, Err(Error::Conflict(_))), "a taken name is a conflict, not a retry");
        }
        let db = Db::open(&url).await.unwrap();
        assert_eq!(db.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(db.runtimes().await.unwrap().len(), 1);
        let ops = db.operations(Some("beta"), 10).await.unwrap();
        assert_eq!(ops[0].result, "ok");
        assert_eq!(ops[0].timings["total_ms"], 12.5);
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        db.insert_runtime(&row("a", "alpha", 0)).await.unwrap();
        let a = Lease { owner: "A".into(), token: "t1".into(), ttl: Duration::from_millis(300) };
        let b = Lease { owner: "B".into(), token: "t2".into(), ttl: Duration::from_secs(30) };
        assert!(db.take_lease("a", &a).await.unwrap());
        assert!(!db.take_lease("a", &b).await.unwrap(), "held by A");
        assert_eq!(db.runtime_by_id("a").await.unwrap().unwrap().leased_by.as_deref(), Some("A"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(db.runtime_by_id("a").await.unwrap().unwrap().leased_by, None, "expired");
        assert!(db.take_lease("a", &b).await.unwrap(), "A's lease expired");
        db.release_lease("a", "t1").await.unwrap();
        assert_eq!(db.runtime_by_id("a").await.unwrap().unwrap().leased_by.as_deref(), Some("B"), "A's stale release changes nothing");
        db.release_lease("a", "t2").await.unwrap();
        assert!(db.take_lease("a", &a).await.unwrap());
    }

    #[tokio::test]
    async fn operations_of_a_dead_instance_are_orphaned_and_closed_once() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        db.register_instance("A", "http://a", "http://a-proxy", Duration::from_millis(300)).await.unwrap();
        db.register_instance("B", "http://b", "http://b-proxy", Duration::from_secs(30)).await.unwrap();
        let a_op = db.begin_op("migrate", Some("rt"), &serde_json::json!({}), Some("A")).await.unwrap();
        let b_op = db.begin_op("migrate", Some("rt2"), &serde_json::json!({}), Some("B")).await.unwrap();
        assert!(db.orphaned_operations(None).await.unwrap().is_empty(), "both instances are alive");
        assert_eq!(db.orphaned_operations(Some("B")).await.unwrap().iter().map(|o| o.id).collect::<Vec<_>>(), vec![b_op], "B restarted: its own are orphaned");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let alive: Vec<(String, bool)> = db.instances().await.unwrap().into_iter().map(|i| (i.id, i.alive)).collect();
        assert_eq!(alive, vec![("A".to_string(), false), ("B".to_string(), true)]);
        assert_eq!(db.orphaned_operations(None).await.unwrap().iter().map(|o| o.id).collect::<Vec<_>>(), vec![a_op], "A's heartbeat expired");
        assert!(db.close_interrupted_op(a_op, "interrupted").await.unwrap());
        assert!(!db.close_interrupted_op(a_op, "interrupted").await.unwrap(), "closed once, by one instance");
        assert!(db.orphaned_operations(None).await.unwrap().is_empty());
        db.heartbeat("A", Duration::from_secs(30)).await.unwrap();
        assert!(db.instances().await.unwrap().iter().all(|i| i.alive), "A's heartbeat is back");
    }

    #[tokio::test]
    async fn a_database_of_the_previous_version_is_adopted() {
        let t = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", t.path().join("ferry.db").display()); // SQLite's user_version
        {
            // What earlier versions made: the first two schemas, counted in user_version.
            let db = Db::open(&url).await.unwrap();
            let mut c = db.pool.acquire().await.unwrap();
            sqlx::raw_sql("DROP TABLE instances; DROP TABLE schema_migrations; PRAGMA user_version = 2;").execute(&mut *c).await.unwrap();
            sqlx::raw_sql("CREATE TABLE runtimes2 AS SELECT id, name FROM runtimes; ALTER TABLE runtimes DROP COLUMN owner; ALTER TABLE runtimes DROP COLUMN lease_token; ALTER TABLE runtimes DROP COLUMN lease_until; ALTER TABLE operations DROP COLUMN owner; DROP TABLE runtimes2;").execute(&mut *c).await.unwrap();
        }
        let db = Db::open(&url).await.unwrap();
        assert_eq!(db.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        db.insert_runtime(&row("a", "alpha", 0)).await.unwrap();
        assert!(db.take_lease("a", &Lease { owner: "A".into(), token: "t".into(), ttl: Duration::from_secs(1) }).await.unwrap());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://ferry:s3cret@db:5432/ferry"), "postgres://ferry:***@db:5432/ferry");
        assert_eq!(redact("sqlite:///var/lib/ferry/ferry.db"), "sqlite:///var/lib/ferry/ferry.db");
        assert!(backend_of("mysql://x").is_err());
    }
}
