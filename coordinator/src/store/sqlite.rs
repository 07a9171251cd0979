//! The embedded store: SQLite (WAL mode) in a state directory, locked by one coordinator at a
//! time. A SIGKILLed coordinator restarted on the same directory loads the same state and goes
//! on.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::{decode, Batch, Rows, StateStore, StoreError, StoreResult, SCHEMA_VERSION};
use crate::scheduler::{Discard, State};

pub struct Store {
    conn: Connection,
    path: PathBuf,
    // Held for the life of the store: an exclusive lock on `LOCK` in the state directory.
    _lock: File,
}

impl Store {
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        let lock = File::create(dir.join("LOCK")).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }
        let path = dir.join("state.db");
        let sql = |e| StoreError::Sqlite { path: path.clone(), source: e };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        // NORMAL in WAL mode survives process crashes (SIGKILL); only an OS crash may lose the
        // last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks (job_id);
             CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS discards (job_id TEXT NOT NULL, task_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
                                                  PRIMARY KEY (job_id, task_id, attempt));",
        )
        .map_err(sql)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        match version {
            None => {
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", params![SCHEMA_VERSION])
                    .map_err(sql)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => return Err(StoreError::Version(path.display().to_string(), v)),
        }
        Ok(Store { conn, path, _lock: lock })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Sqlite { path: self.path.clone(), source: e }
    }

    fn load_state(&self) -> StoreResult<State> {
        let mut meta = self.conn.prepare("SELECT key, value FROM meta").map_err(self.sql())?;
        let meta = meta
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        let mut discards = self.conn.prepare("SELECT job_id, task_id, attempt FROM discards").map_err(self.sql())?;
        let discards = discards
            .query_map([], |r| {
                Ok(Discard {
                    job_id: r.get(0)?,
                    task_id: r.get::<_, i64>(1)? as u64,
                    attempt: r.get::<_, i64>(2)? as u32,
                })
            })
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        Ok(Rows {
            meta,
            jobs: self.rows("jobs")?,
            tasks: self.rows("tasks")?,
            workers: self.rows("workers")?,
            discards,
        }
        .into_state())
    }

    /// Every row of `table`, decoded from its JSON body.
    fn rows<T: serde::de::DeserializeOwned>(&self, table: &str) -> StoreResult<Vec<T>> {
        let mut stmt = self.conn.prepare(&format!("SELECT body FROM {table}")).map_err(self.sql())?;
        let bodies = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(self.sql())?;
        bodies.map(|body| decode(table, &body.map_err(self.sql())?)).collect()
    }

    fn write_batch(&mut self, batch: &Batch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sql = |e| StoreError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction().map_err(sql)?;
        for (key, value) in &batch.meta {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, *value as i64],
            )
            .map_err(sql)?;
        }
        // A dirty job is written when the state holds it; one it no longer holds was pruned, and
        // its row goes with its tasks' rows.
        for (id, row) in &batch.jobs {
            match row {
                Some((state, body)) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO jobs (id, state, body) VALUES (?1, ?2, ?3)",
                        params![id, state, body],
                    )
                    .map_err(sql)?;
                }
                None => {
                    tx.execute("DELETE FROM tasks WHERE job_id = ?1", params![id]).map_err(sql)?;
                    tx.execute("DELETE FROM jobs WHERE id = ?1", params![id]).map_err(sql)?;
                }
            }
        }
        for (id, job_id, state, body) in &batch.tasks {
            tx.execute(
                "INSERT OR REPLACE INTO tasks (id, job_id, state, body) VALUES (?1, ?2, ?3, ?4)",
                params![*id as i64, job_id, state, body],
            )
            .map_err(sql)?;
        }
        for (id, body) in &batch.workers {
            tx.execute("INSERT OR REPLACE INTO workers (id, body) VALUES (?1, ?2)", params![id, body]).map_err(sql)?;
        }
        // A dirty discard is written when the state holds it and deleted when it does not.
        for (d, present) in &batch.discards {
            let key = params![d.job_id, d.task_id as i64, d.attempt as i64];
            if *present {
                tx.execute("INSERT OR IGNORE INTO discards (job_id, task_id, attempt) VALUES (?1, ?2, ?3)", key)
                    .map_err(sql)?;
            } else {
                tx.execute("DELETE FROM discards WHERE job_id = ?1 AND task_id = ?2 AND attempt = ?3", key)
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }
}

impl StateStore for Store {
    fn load(&mut self) -> StoreResult<State> {
        self.load_state()
    }
    fn write(&mut self, batch: &Batch) -> StoreResult<()> {
        self.write_batch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{NewJob, NewTask, Scheduler, SchedulerConfig, StageDef, TaskStats};

    #[test]
    fn state_round_trips_and_the_directory_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked(_))));
        let mut s = Scheduler::new(SchedulerConfig::default());
        let (w, d1) = s.register_worker("host:1", 2, 5);
        let job = NewJob {
            name: "n".into(),
            kind: "corpus".into(),
            spec: "spec".into(),
            base_dir: "/".into(),
            output: "/out".into(),
            stages: vec![StageDef::new("shards", vec![])],
            tasks: (0..3)
                .map(|i| NewTask { stage: 0, index: i, kind: "k".into(), payload: format!("p{i}"), shard: "s".into() })
                .collect(),
        };
        let d2 = s.submit("j1".into(), job, 10).unwrap();
        let (g, d3) = s.lease(&w, 2, 11).unwrap();
        let (_, d4) = s.report_success(&w, g[0].task_id, 1, &g[0].token, "{}".into(), TaskStats::default(), 12);
        // a losing attempt's discard is durable; a done one is gone
        s.expire(i64::MAX / 2);
        let (g2, d5) = s.lease(&w, 2, i64::MAX / 2 + 1).unwrap();
        let late = &g[1];
        let (_, d6) = s.report_success(
            &w,
            late.task_id,
            late.attempt,
            &late.token,
            "{}".into(),
            TaskStats::default(),
            i64::MAX / 2 + 2,
        );
        let (_, d7) = s.report_success(
            &w,
            g2[0].task_id,
            g2[0].attempt,
            &g2[0].token,
            "{}".into(),
            TaskStats::default(),
            i64::MAX / 2 + 3,
        );
        assert!(!d6.discards.is_empty() || !d7.discards.is_empty(), "the loser of the two attempts is discarded");
        for d in [d1, d2, d3, d4, d5, d6, d7] {
            store.save(&s.state, &d).unwrap();
        }
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        let mut loaded = store.load().unwrap();
        // progress is not durable by design
        for t in loaded.tasks.values_mut() {
            t.progress = Default::default();
        }
        let mut expected = s.state.clone();
        for t in expected.tasks.values_mut() {
            t.progress = Default::default();
        }
        assert_eq!(loaded, expected);
        assert_eq!(loaded.discards.len(), 1);
        let mut s = Scheduler::from_state(loaded, SchedulerConfig::default());
        let d = s.pending_discards().remove(0);
        let done = s.discard_done(&d);
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        store.save(&s.state, &done).unwrap();
        assert!(store.load().unwrap().discards.is_empty());
    }

    #[test]
    fn pruned_jobs_leave_the_database_with_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut s = Scheduler::new(SchedulerConfig::default());
        let job = |n: u32| NewJob {
            name: "n".into(),
            kind: "noop".into(),
            spec: String::new(),
            base_dir: String::new(),
            output: String::new(),
            stages: vec![StageDef::new("shards", vec![])],
            tasks: (0..n)
                .map(|i| NewTask { stage: 0, index: i, kind: "k".into(), payload: String::new(), shard: String::new() })
                .collect(),
        };
        let d = s.submit("gone".into(), job(3), 0).unwrap();
        store.save(&s.state, &d).unwrap();
        let d = s.submit("kept".into(), job(2), 0).unwrap();
        store.save(&s.state, &d).unwrap();
        let d = s.cancel_job("gone", 1).unwrap();
        store.save(&s.state, &d).unwrap();
        let d = s.mark_swept("gone");
        store.save(&s.state, &d).unwrap();
        let (pruned, d) = s.prune(10, 5);
        assert_eq!(pruned, vec!["gone".to_string()]);
        store.save(&s.state, &d).unwrap();
        drop(store);
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.jobs.keys().collect::<Vec<_>>(), vec!["kept"]);
        assert_eq!(loaded.tasks.len(), 2);
        assert!(loaded.tasks.values().all(|t| t.job_id == "kept"));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.conn.execute("UPDATE meta SET value = 7 WHERE key = 'schema_version'", []).unwrap();
        drop(store);
        match Store::open(dir.path()) {
            Err(e @ StoreError::Version(_, 7)) => assert!(e.is_usage() && e.to_string().contains("knows version 1")),
            Err(e) => panic!("expected a version refusal, got {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
}
