//! Opening the database and bringing its schema up to date: the migrations, in order, rendered for
//! the backend where the dialects differ, each recorded in `schema_migrations`.

use super::*;

/// Schema versions in order. `{id}`, `{int}` and `{real}` are rendered per backend.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // A runtime's own egress policy (JSON of `egress::EgressChoice`); NULL = its plan's.
    r#"
ALTER TABLE runtimes ADD COLUMN egress TEXT;
"#,
    // Runtime access tokens for the proxy, and cluster settings (the signing key of signed tokens).
    r#"
ALTER TABLE runtimes ADD COLUMN access_token TEXT;
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL, created_at TEXT NOT NULL);
"#,
    // A runtime's addresses stored with it (host end, runtime end of its /30), and cluster-wide
    // leases held by one instance at a time (the monitor's decider): holder, token, expiry on the
    // database's clock. A route epoch per runtime (grows at every state change) and each
    // instance's acknowledgement of the epoch its proxy applied, so that a move waits until every
    // instance holds before it freezes.
    r#"
ALTER TABLE runtimes ADD COLUMN host_ip TEXT;
ALTER TABLE runtimes ADD COLUMN ip TEXT;
ALTER TABLE runtimes ADD COLUMN route_epoch {int} NOT NULL DEFAULT 0;
CREATE TABLE route_acks (
  runtime_id TEXT NOT NULL, instance TEXT NOT NULL, epoch {int} NOT NULL,
  PRIMARY KEY (runtime_id, instance)
);
CREATE TABLE cluster_leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, token TEXT NOT NULL,
  until_ms {int} NOT NULL, since TEXT NOT NULL
);
"#,
    // A host's lifecycle state: `ready`, `cordoned` (nothing new placed there) or `draining`.
    r#"
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
"#,
    // Copies of snapshots kept on a second host (host loss), verified by sha256 on arrival.
    r#"
CREATE TABLE snapshot_replicas (
  snapshot_id TEXT NOT NULL, host TEXT NOT NULL, verified_at TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, host)
);
"#,
];

impl Db {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let shown = redact(url);
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        // One connection first, so that a wrong URL or a server that is down says why at once.
        let first = tokio::time::timeout(
            Duration::from_secs(15),
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
        )
        .await;
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
        let db = Db {
            pool,
            backend,
            subnet: std::sync::OnceLock::new(),
        };
        db.migrate().await?;
        db.fill_access_tokens().await?;
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
        ddl.replace("{id}", id)
            .replace("{int}", int)
            .replace("{real}", real)
    }

    /// Applies the migrations not yet recorded, each in its own transaction. On PostgreSQL an
    /// advisory lock makes instances starting together apply them once.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_lock(7013370) AS TEXT)")
                .execute(&mut *conn)
                .await?;
        }
        let r = self.migrate_on(&mut conn).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_unlock(7013370) AS TEXT)")
                .execute(&mut *conn)
                .await?;
        }
        r
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        sqlx::raw_sql(&self.render("CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, applied_at TEXT NOT NULL)")).execute(&mut *conn).await?;
        let mut applied: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await?
                .try_get("v")?;
        if applied == 0 && self.backend == Backend::Sqlite {
            // Databases of earlier versions counted their schema in `user_version`.
            let legacy: i64 = sqlx::query("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            for v in 1..=legacy.min(MIGRATIONS.len() as i64) {
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(v)
                    .bind(now())
                    .execute(&mut *conn)
                    .await?;
            }
            applied = legacy;
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            let version = (i + 1) as i64;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(&self.render(m))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    Error::Internal(format!("database: schema migration {version} failed: {e}"))
                })?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    }

    /// The schema version recorded.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
                .fetch_one(&self.pool)
                .await?
                .try_get("v")?,
        )
    }
}
