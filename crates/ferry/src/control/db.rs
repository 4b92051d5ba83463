//! The control plane's state in SQLite: hosts, runtimes, snapshots, the operations journal (with
//! timings) and events. Schema changes are applied in order by `user_version`.

use crate::api::{Event, Operation, Snapshot, Timings};
use crate::plan::Plan;
use crate::Result;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE hosts (
  name TEXT PRIMARY KEY, url TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '',
  capacity_mb INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE runtimes (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, host TEXT NOT NULL,
  plan TEXT NOT NULL, memory_mb INTEGER NOT NULL, cpus REAL NOT NULL, image TEXT NOT NULL,
  net_index INTEGER NOT NULL UNIQUE, state TEXT NOT NULL, state_reason TEXT,
  created_at TEXT NOT NULL, started_at TEXT, last_snapshot TEXT
);
CREATE TABLE snapshots (
  id TEXT PRIMARY KEY, runtime_id TEXT NOT NULL, runtime_name TEXT NOT NULL, host TEXT NOT NULL,
  leave_running INTEGER NOT NULL, size_bytes INTEGER NOT NULL, image_bytes INTEGER NOT NULL,
  created_at TEXT NOT NULL, timings TEXT NOT NULL DEFAULT '{}', plan TEXT NOT NULL
);
CREATE TABLE operations (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, runtime TEXT,
  started_at TEXT NOT NULL, finished_at TEXT, result TEXT NOT NULL, error TEXT,
  timings TEXT NOT NULL DEFAULT '{}', detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, runtime TEXT,
  kind TEXT NOT NULL, reason TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
);
"#, r#"
ALTER TABLE runtimes ADD COLUMN auto INTEGER NOT NULL DEFAULT 1;
CREATE TABLE webhooks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, secret TEXT NOT NULL,
  kinds TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL
);
CREATE TABLE deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id INTEGER NOT NULL, event_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL, status INTEGER, error TEXT, at TEXT NOT NULL
);
"#];

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

pub struct Db {
    conn: Mutex<Connection>,
}

fn runtime_row(r: &Row) -> rusqlite::Result<RuntimeRow> {
    Ok(RuntimeRow {
        id: r.get("id")?,
        name: r.get("name")?,
        host: r.get("host")?,
        plan: Plan { name: r.get("plan")?, memory_mb: r.get::<_, i64>("memory_mb")? as u64, cpus: r.get("cpus")? },
        image: r.get("image")?,
        net_index: r.get::<_, i64>("net_index")? as u32,
        state: r.get("state")?,
        state_reason: r.get("state_reason")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        last_snapshot: r.get("last_snapshot")?,
        auto: r.get::<_, i64>("auto")? != 0,
    })
}

fn insert(c: &Connection, r: &RuntimeRow) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO runtimes (id, name, host, plan, memory_mb, cpus, image, net_index, state, state_reason, created_at, started_at, last_snapshot, auto)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![r.id, r.name, r.host, r.plan.name, r.plan.memory_mb as i64, r.plan.cpus, r.image, r.net_index as i64, r.state, r.state_reason, r.created_at, r.started_at, r.last_snapshot, r.auto as i64],
    )
    .map(|_| ())
}

fn free_slot(c: &Connection) -> rusqlite::Result<u32> {
    let mut st = c.prepare("SELECT net_index FROM runtimes ORDER BY net_index")?;
    let used: Vec<i64> = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let mut i = 0i64;
    for u in used {
        if u != i {
            break;
        }
        i += 1;
    }
    Ok(i as u32)
}

fn snapshot_row(r: &Row) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        id: r.get("id")?,
        plan: serde_json::from_str(&r.get::<_, String>("plan")?).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?,
        runtime_id: r.get("runtime_id")?,
        runtime_name: r.get("runtime_name")?,
        host: r.get("host")?,
        leave_running: r.get::<_, i64>("leave_running")? != 0,
        size_bytes: r.get::<_, i64>("size_bytes")? as u64,
        image_bytes: r.get::<_, i64>("image_bytes")? as u64,
        created_at: r.get("created_at")?,
        timings: serde_json::from_str(&r.get::<_, String>("timings")?).unwrap_or_default(),
    })
}

fn op_row(r: &Row) -> rusqlite::Result<Operation> {
    Ok(Operation {
        id: r.get("id")?,
        kind: r.get("kind")?,
        runtime: r.get("runtime")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        result: r.get("result")?,
        error: r.get("error")?,
        timings: serde_json::from_str(&r.get::<_, String>("timings")?).unwrap_or_default(),
        detail: serde_json::from_str(&r.get::<_, String>("detail")?).unwrap_or_default(),
    })
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(m)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        Ok(Db { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        Ok(f(&self.conn.lock().unwrap())?)
    }

    // ---- hosts
    pub fn upsert_host(&self, name: &str, url: &str, labels: &[String], capacity_mb: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO hosts (name, url, labels, capacity_mb, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET url = excluded.url, labels = excluded.labels, capacity_mb = excluded.capacity_mb",
                params![name, url, labels.join(","), capacity_mb as i64, now()],
            )
            .map(|_| ())
        })
    }

    pub fn hosts(&self) -> Result<Vec<(String, String, Vec<String>, u64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, url, labels, capacity_mb FROM hosts ORDER BY name")?;
            let rows = st.query_map([], |r| {
                let labels: String = r.get(2)?;
                Ok((r.get(0)?, r.get(1)?, labels.split(',').filter(|s| !s.is_empty()).map(String::from).collect(), r.get::<_, i64>(3)? as u64))
            })?;
            rows.collect()
        })
    }

    // ---- runtimes
    pub fn insert_runtime(&self, r: &RuntimeRow) -> Result<()> {
        self.with(|c| insert(c, r))
    }

    /// Inserts `r` with the smallest free network slot, chosen and taken under one lock (so that
    /// concurrent creates never share a slot); sets `r.net_index`.
    pub fn insert_runtime_new_slot(&self, r: &mut RuntimeRow) -> Result<()> {
        self.with(|c| {
            r.net_index = free_slot(c)?;
            insert(c, r)
        })
    }

    pub fn runtime_by_name(&self, name: &str) -> Result<Option<RuntimeRow>> {
        self.with(|c| c.query_row("SELECT * FROM runtimes WHERE name = ?1", [name], runtime_row).optional())
    }

    pub fn runtimes(&self) -> Result<Vec<RuntimeRow>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM runtimes ORDER BY created_at, name")?;
            let rows = st.query_map([], runtime_row)?;
            rows.collect()
        })
    }

    pub fn set_state(&self, id: &str, state: &str, reason: Option<&str>) -> Result<()> {
        let started = (state == "running").then(now);
        self.with(|c| {
            c.execute(
                "UPDATE runtimes SET state = ?2, state_reason = ?3, started_at = CASE WHEN ?4 IS NOT NULL AND state != 'running' THEN ?4 ELSE started_at END WHERE id = ?1",
                params![id, state, reason, started],
            )
            .map(|_| ())
        })
    }

    pub fn set_host(&self, id: &str, host: &str) -> Result<()> {
        self.with(|c| c.execute("UPDATE runtimes SET host = ?2 WHERE id = ?1", params![id, host]).map(|_| ()))
    }

    pub fn set_auto(&self, id: &str, auto: bool) -> Result<()> {
        self.with(|c| c.execute("UPDATE runtimes SET auto = ?2 WHERE id = ?1", params![id, auto as i64]).map(|_| ()))
    }

    // ---- webhooks
    pub fn add_webhook(&self, url: &str, secret: &str, kinds: &[String]) -> Result<i64> {
        self.with(|c| {
            c.execute("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES (?1, ?2, ?3, ?4)", params![url, secret, kinds.join(","), now()])?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, url, secret, kinds, created_at FROM webhooks ORDER BY id")?;
            let rows = st.query_map([], |r| {
                let kinds: String = r.get(3)?;
                Ok(Webhook { id: r.get(0)?, url: r.get(1)?, secret: r.get(2)?, kinds: kinds.split(',').filter(|k| !k.is_empty()).map(String::from).collect(), created_at: r.get(4)? })
            })?;
            rows.collect()
        })
    }

    pub fn remove_webhook(&self, id: i64) -> Result<bool> {
        self.with(|c| c.execute("DELETE FROM webhooks WHERE id = ?1", [id]).map(|n| n > 0))
    }

    pub fn add_delivery(&self, webhook_id: i64, event_id: i64, attempt: i64, status: Option<i64>, error: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute("INSERT INTO deliveries (webhook_id, event_id, attempt, status, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)", params![webhook_id, event_id, attempt, status, error, now()])?;
            c.execute("DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - ?1", [EVENT_RETENTION]).map(|_| ())
        })
    }

    pub fn deliveries(&self, webhook_id: i64, limit: u32) -> Result<Vec<Delivery>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, webhook_id, event_id, attempt, status, error, at FROM deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2")?;
            let rows = st.query_map(params![webhook_id, limit], |r| {
                Ok(Delivery { id: r.get(0)?, webhook_id: r.get(1)?, event_id: r.get(2)?, attempt: r.get(3)?, status: r.get(4)?, error: r.get(5)?, at: r.get(6)? })
            })?;
            rows.collect()
        })
    }

    pub fn set_plan(&self, id: &str, plan: &Plan) -> Result<()> {
        self.with(|c| c.execute("UPDATE runtimes SET plan = ?2, memory_mb = ?3, cpus = ?4 WHERE id = ?1", params![id, plan.name, plan.memory_mb as i64, plan.cpus]).map(|_| ()))
    }

    pub fn set_last_snapshot(&self, id: &str, snap: &str) -> Result<()> {
        self.with(|c| c.execute("UPDATE runtimes SET last_snapshot = ?2 WHERE id = ?1", params![id, snap]).map(|_| ()))
    }

    pub fn delete_runtime(&self, id: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM runtimes WHERE id = ?1", [id]).map(|_| ()))
    }

    /// The smallest network slot no runtime holds.
    pub fn free_net_index(&self) -> Result<u32> {
        self.with(free_slot)
    }

    // ---- snapshots
    pub fn insert_snapshot(&self, s: &Snapshot) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO snapshots (id, runtime_id, runtime_name, host, leave_running, size_bytes, image_bytes, created_at, timings, plan) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![s.id, s.runtime_id, s.runtime_name, s.host, s.leave_running as i64, s.size_bytes as i64, s.image_bytes as i64, s.created_at, serde_json::to_string(&s.timings).unwrap(), serde_json::to_string(&s.plan).unwrap()],
            )
            .map(|_| ())
        })
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        self.with(|c| c.query_row("SELECT * FROM snapshots WHERE id = ?1", [id], snapshot_row).optional())
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM snapshots ORDER BY created_at")?;
            let rows = st.query_map([], snapshot_row)?;
            rows.collect()
        })
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM snapshots WHERE id = ?1", [id]).map(|_| ()))
    }

    // ---- operations journal
    pub fn begin_op(&self, kind: &str, runtime: Option<&str>, detail: &serde_json::Value) -> Result<i64> {
        self.with(|c| {
            c.execute("INSERT INTO operations (kind, runtime, started_at, result, detail) VALUES (?1, ?2, ?3, 'running', ?4)", params![kind, runtime, now(), detail.to_string()])?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn finish_op(&self, id: i64, error: Option<&str>, timings: &Timings, detail: Option<&serde_json::Value>) -> Result<()> {
        let result = if error.is_some() { "failed" } else { "ok" };
        self.with(|c| {
            c.execute(
                "UPDATE operations SET finished_at = ?2, result = ?3, error = ?4, timings = ?5, detail = COALESCE(?6, detail) WHERE id = ?1",
                params![id, now(), result, error, serde_json::to_string(timings).unwrap(), detail.map(|d| d.to_string())],
            )
            .map(|_| ())
        })
    }

    pub fn operations(&self, runtime: Option<&str>, limit: u32) -> Result<Vec<Operation>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM operations WHERE (?1 IS NULL OR runtime = ?1) ORDER BY id DESC LIMIT ?2")?;
            let rows = st.query_map(params![runtime, limit], op_row)?;
            rows.collect()
        })
    }

    // ---- events
    pub fn add_event(&self, runtime: Option<&str>, kind: &str, reason: &str, data: &serde_json::Value) -> Result<i64> {
        self.with(|c| {
            c.execute("INSERT INTO events (at, runtime, kind, reason, data) VALUES (?1, ?2, ?3, ?4, ?5)", params![now(), runtime, kind, reason, data.to_string()])?;
            let id = c.last_insert_rowid();
            c.execute("DELETE FROM events WHERE id <= ?1", [id - EVENT_RETENTION])?;
            Ok(id)
        })
    }

    pub fn events(&self, runtime: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM events WHERE (?1 IS NULL OR runtime = ?1) ORDER BY id DESC LIMIT ?2")?;
            let rows = st.query_map(params![runtime, limit], |r| {
                Ok(Event {
                    id: r.get("id")?,
                    at: r.get("at")?,
                    runtime: r.get("runtime")?,
                    kind: r.get("kind")?,
                    reason: r.get("reason")?,
                    data: serde_json::from_str(&r.get::<_, String>("data")?).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, idx: u32) -> RuntimeRow {
        RuntimeRow {
            id: id.into(), name: name.into(), host: "local".into(), plan: Plan::named("free").unwrap(), image: "mrmd-python".into(),
            net_index: idx, state: "running".into(), state_reason: None, created_at: now(), started_at: None, last_snapshot: None, auto: true,
        }
    }

    #[test]
    fn concurrent_inserts_take_distinct_slots() {
        let t = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(Db::open(&t.path().join("ferry.db")).unwrap());
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut r = row(&format!("id{i}"), &format!("n{i}"), 0);
                    db.insert_runtime_new_slot(&mut r).unwrap();
                    r.net_index
                })
            })
            .collect();
        let mut slots: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        slots.sort();
        assert_eq!(slots, (0..16).collect::<Vec<u32>>());
    }

    #[test]
    fn state_survives_reopen_and_slots_are_reused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ferry.db");
        {
            let db = Db::open(&p).unwrap();
            db.insert_runtime(&row("a", "alpha", 0)).unwrap();
            db.insert_runtime(&row("b", "beta", 1)).unwrap();
            assert_eq!(db.free_net_index().unwrap(), 2);
            db.delete_runtime("a").unwrap();
            assert_eq!(db.free_net_index().unwrap(), 0);
            let op = db.begin_op("create", Some("beta"), &serde_json::json!({})).unwrap();
            db.finish_op(op, None, &[("total_ms".to_string(), 12.5)].into_iter().collect(), None).unwrap();
            assert!(db.insert_runtime(&row("c", "beta", 5)).is_err(), "names are unique");
        }
        let db = Db::open(&p).unwrap();
        assert_eq!(db.runtimes().unwrap().len(), 1);
        let ops = db.operations(Some("beta"), 10).unwrap();
        assert_eq!(ops[0].result, "ok");
        assert_eq!(ops[0].timings["total_ms"], 12.5);
    }
}
