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

pub use cluster::{ClusterLease, ROUTES_CHANNEL};

mod access;
mod cluster;
mod records;
mod runtimes;
mod schema;

/// Which SQL server the state lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    /// Its own egress policy; `None` = its plan's.
    pub egress: Option<crate::egress::EgressChoice>,
    /// Its addresses (host end, runtime end of its `/30`) as stored with it; `None` until the row
    /// is inserted (the slot's addresses in the cluster's network are stored then).
    pub addrs: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Grows at every change of its state: what an instance acknowledges once its proxy applied it.
    pub route_epoch: i64,
}

/// A lease on a runtime: who holds it and the token that proves which claim it is.
/// A registered host, as the database keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub name: String,
    /// Its agent's URL.
    pub url: String,
    pub labels: Vec<String>,
    pub capacity_mb: u64,
    /// `ready`, `cordoned` or `draining`.
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub token: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    #[serde(skip_serializing)]
    pub secret: String,
    /// Event kinds (prefixes) it wants; empty = all.
    pub kinds: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: String,
    pub api_url: String,
    pub proxy_url: String,
    pub started_at: String,
    /// Its heartbeat is recent (within its lease time).
    pub alive: bool,
    /// It holds the monitor's lease: it samples runtimes and acts on thresholds and idleness.
    #[serde(default)]
    pub decider: bool,
}

pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The cluster's runtime network, once settled ([`Db::settle_subnet`]): new rows store their
    /// slot's addresses in it.
    subnet: std::sync::OnceLock<std::net::Ipv4Addr>,
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
        plan: Plan {
            name: text(r, "plan")?,
            memory_mb: int(r, "memory_mb")? as u64,
            cpus: r.try_get("cpus")?,
        },
        image: text(r, "image")?,
        net_index: int(r, "net_index")? as u32,
        state: text(r, "state")?,
        state_reason: opt(r, "state_reason")?,
        created_at: text(r, "created_at")?,
        started_at: opt(r, "started_at")?,
        last_snapshot: opt(r, "last_snapshot")?,
        auto: int(r, "auto")? != 0,
        leased_by: if leased != 0 { opt(r, "owner")? } else { None },
        egress: opt(r, "egress")?
            .map(|s: String| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        route_epoch: int(r, "route_epoch")?,
        addrs: match (opt(r, "host_ip")?, opt(r, "ip")?) {
            (Some(h), Some(i)) => Some((
                h.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                i.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            )),
            _ => None,
        },
    })
}

fn snapshot_row(r: &AnyRow) -> sqlx::Result<Snapshot> {
    Ok(Snapshot {
        id: text(r, "id")?,
        plan: serde_json::from_str(&text(r, "plan")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
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

/// Query helpers shared by every part of [`Db`].
impl Db {
    /// The database clock in milliseconds since the epoch, as an SQL expression: leases compare
    /// against one clock, whatever the instances' clocks say.
    pub(super) fn now_ms(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// `q` with `{now_ms}` replaced by the database clock.
    pub(super) fn q(&self, q: &str) -> String {
        q.replace("{now_ms}", self.now_ms())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn row(id: &str, name: &str, idx: u32) -> RuntimeRow {
        RuntimeRow {
            id: id.into(),
            name: name.into(),
            host: "local".into(),
            plan: Plan::named("free").unwrap(),
            image: "mrmd-python".into(),
            net_index: idx,
            state: "running".into(),
            state_reason: None,
            created_at: now(),
            started_at: None,
            last_snapshot: None,
            auto: true,
            leased_by: None,
            egress: None,
            addrs: None,
            route_epoch: 0,
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
                    tokio::runtime::Runtime::new()
                        .unwrap()
                        .block_on(async move {
                            sqlx::any::install_default_drivers();
                            let admin = AnyPool::connect(&format!("{server}/postgres")).await?;
                            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&admin)
                                .await
                                .map(|_| ())
                        })
                })
                .join();
            }
        }
    }

    pub(crate) async fn fresh(t: &tempfile::TempDir) -> TestDb {
        if std::env::var("FERRY_TEST_DATABASE").as_deref() != Ok("postgres") {
            return TestDb {
                url: format!("sqlite://{}", t.path().join("ferry.db").display()),
                pg: None,
            };
        }
        let server = std::env::var("FERRY_TEST_PG_URL")
            .ok()
            .or_else(|| std::fs::read_to_string("/var/cache/ferry/pg-test-url").ok())
            .expect("FERRY_TEST_DATABASE=postgres needs FERRY_TEST_PG_URL (or scripts/setup.sh)");
        let server = server.trim().trim_end_matches('/').to_string();
        sqlx::any::install_default_drivers();
        let admin = AnyPool::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        let name = format!("ferry_unit_{}", super::super::new_id(""));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        TestDb {
            url: format!("{server}/{name}"),
            pg: Some((server, name)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_take_distinct_slots() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let url = tdb.url.clone();
        // Two handles on one database: as two control-plane instances would be.
        let dbs = [
            std::sync::Arc::new(Db::open(&url).await.unwrap()),
            std::sync::Arc::new(Db::open(&url).await.unwrap()),
        ];
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
    async fn a_runtime_keeps_its_own_egress_policy_and_none_means_its_plans() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        let mut own = row("a", "alpha", 0);
        own.egress = Some(crate::egress::EgressChoice {
            egress: crate::egress::Egress::Deny,
            allow: vec!["192.168.77.0/24".into()],
        });
        db.insert_runtime(&own).await.unwrap();
        db.insert_runtime(&row("b", "beta", 1)).await.unwrap();
        assert_eq!(
            db.runtime_by_id("a").await.unwrap().unwrap().egress,
            own.egress
        );
        assert_eq!(db.runtime_by_id("b").await.unwrap().unwrap().egress, None);
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
            let op = db
                .begin_op("create", Some("beta"), &serde_json::json!({}), None)
                .await
                .unwrap();
            db.finish_op(
                op,
                None,
                &[("total_ms".to_string(), 12.5)].into_iter().collect(),
                None,
            )
            .await
            .unwrap();
            assert!(
                db.insert_runtime(&row("c", "beta", 5)).await.is_err(),
                "names are unique"
            );
            let mut dup = row("d", "beta", 0);
            assert!(
                matches!(
                    db.insert_runtime_new_slot(&mut dup, None).await,
                    Err(Error::Conflict(_))
                ),
                "a taken name is a conflict, not a retry"
            );
        }
        let db = Db::open(&url).await.unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            schema::MIGRATIONS.len() as i64
        );
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
        let a = Lease {
            owner: "A".into(),
            token: "t1".into(),
            ttl: Duration::from_millis(300),
        };
        let b = Lease {
            owner: "B".into(),
            token: "t2".into(),
            ttl: Duration::from_secs(30),
        };
        assert!(db.take_lease("a", &a).await.unwrap());
        assert!(!db.take_lease("a", &b).await.unwrap(), "held by A");
        assert_eq!(
            db.runtime_by_id("a")
                .await
                .unwrap()
                .unwrap()
                .leased_by
                .as_deref(),
            Some("A")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            db.runtime_by_id("a").await.unwrap().unwrap().leased_by,
            None,
            "expired"
        );
        assert!(db.take_lease("a", &b).await.unwrap(), "A's lease expired");
        db.release_lease("a", "t1").await.unwrap();
        assert_eq!(
            db.runtime_by_id("a")
                .await
                .unwrap()
                .unwrap()
                .leased_by
                .as_deref(),
            Some("B"),
            "A's stale release changes nothing"
        );
        db.release_lease("a", "t2").await.unwrap();
        assert!(db.take_lease("a", &a).await.unwrap());
    }

    #[tokio::test]
    async fn operations_of_a_dead_instance_are_orphaned_and_closed_once() {
        let t = tempfile::tempdir().unwrap();
        let tdb = fresh(&t).await;
        let db = Db::open(&tdb.url).await.unwrap();
        db.register_instance(
            "A",
            "http://a",
            "http://a-proxy",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        db.register_instance("B", "http://b", "http://b-proxy", Duration::from_secs(30))
            .await
            .unwrap();
        let a_op = db
            .begin_op("migrate", Some("rt"), &serde_json::json!({}), Some("A"))
            .await
            .unwrap();
        let b_op = db
            .begin_op("migrate", Some("rt2"), &serde_json::json!({}), Some("B"))
            .await
            .unwrap();
        assert!(
            db.orphaned_operations(None).await.unwrap().is_empty(),
            "both instances are alive"
        );
        assert_eq!(
            db.orphaned_operations(Some("B"))
                .await
                .unwrap()
                .iter()
                .map(|o| o.id)
                .collect::<Vec<_>>(),
            vec![b_op],
            "B restarted: its own are orphaned"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let alive: Vec<(String, bool)> = db
            .instances()
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.alive))
            .collect();
        assert_eq!(
            alive,
            vec![("A".to_string(), false), ("B".to_string(), true)]
        );
        assert_eq!(
            db.orphaned_operations(None)
                .await
                .unwrap()
                .iter()
                .map(|o| o.id)
                .collect::<Vec<_>>(),
            vec![a_op],
            "A's heartbeat expired"
        );
        assert!(db.close_interrupted_op(a_op, "interrupted").await.unwrap());
        assert!(
            !db.close_interrupted_op(a_op, "interrupted").await.unwrap(),
            "closed once, by one instance"
        );
        assert!(db.orphaned_operations(None).await.unwrap().is_empty());
        db.heartbeat("A", Duration::from_secs(30)).await.unwrap();
        assert!(
            db.instances().await.unwrap().iter().all(|i| i.alive),
            "A's heartbeat is back"
        );
    }

    #[tokio::test]
    async fn a_database_of_the_previous_version_is_adopted() {
        let t = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", t.path().join("ferry.db").display()); // SQLite's user_version
        {
            // What earlier versions made: the first two schemas, counted in user_version.
            let db = Db::open(&url).await.unwrap();
            let mut c = db.pool.acquire().await.unwrap();
            sqlx::raw_sql(
                "DROP TABLE instances; DROP TABLE schema_migrations; PRAGMA user_version = 2;",
            )
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::raw_sql("CREATE TABLE runtimes2 AS SELECT id, name FROM runtimes; ALTER TABLE runtimes DROP COLUMN owner; ALTER TABLE runtimes DROP COLUMN lease_token; ALTER TABLE runtimes DROP COLUMN lease_until; ALTER TABLE operations DROP COLUMN owner; ALTER TABLE runtimes DROP COLUMN egress; ALTER TABLE runtimes DROP COLUMN access_token; ALTER TABLE runtimes DROP COLUMN host_ip; ALTER TABLE runtimes DROP COLUMN ip; ALTER TABLE runtimes DROP COLUMN route_epoch; DROP TABLE route_acks; DROP TABLE cluster_leases; DROP TABLE settings; DROP TABLE snapshot_replicas; ALTER TABLE hosts DROP COLUMN state; DROP TABLE runtimes2;").execute(&mut *c).await.unwrap();
        }
        let db = Db::open(&url).await.unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            schema::MIGRATIONS.len() as i64
        );
        db.insert_runtime(&row("a", "alpha", 0)).await.unwrap();
        assert!(db
            .take_lease(
                "a",
                &Lease {
                    owner: "A".into(),
                    token: "t".into(),
                    ttl: Duration::from_secs(1)
                }
            )
            .await
            .unwrap());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ferry:s3cret@db:5432/ferry"),
            "postgres://ferry:***@db:5432/ferry"
        );
        assert_eq!(
            redact("sqlite:///var/lib/ferry/ferry.db"),
            "sqlite:///var/lib/ferry/ferry.db"
        );
        assert!(backend_of("mysql://x").is_err());
    }
}
