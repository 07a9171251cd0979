//! Durable coordinator state in embedded SQLite (WAL mode). Each row holds one job, task or
//! worker as JSON, next to the columns queries need; every scheduler decision's dirty rows are
//! written in one transaction before the coordinator answers. A SIGKILLed coordinator restarted
//! on the same directory loads the same state and goes on.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::scheduler::{Dirty, Discard, Job, State, Task, Worker};

const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite error in {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("another coordinator is using the state directory {0}; stop it or pick another --state")]
    Locked(PathBuf),
    #[error("corrupt row in {0}: {1}")]
    Corrupt(String, String),
    #[error("state in {0} has schema version {1}; this lehr knows version {SCHEMA_VERSION}")]
    Version(PathBuf, i64),
}

pub type StoreResult<T> = Result<T, StoreError>;

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
            Some(v) => return Err(StoreError::Version(path, v)),
        }
        Ok(Store { conn, path, _lock: lock })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Sqlite { path: self.path.clone(), source: e }
    }

    pub fn load(&self) -> StoreResult<State> {
        let mut state = State::default();
        let counter = |key: &str| -> StoreResult<u64> {
            let v: Option<i64> = self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
                .optional()
                .map_err(self.sql())?;
            Ok(v.unwrap_or(0) as u64)
        };
        state.next_task_id = counter("next_task_id")?;
        state.next_job_seq = counter("next_job_seq")?;
        state.next_worker_seq = counter("next_worker_seq")?;
        for job in self.rows::<Job>("jobs")? {
            state.jobs.insert(job.id.clone(), job);
        }
        for task in self.rows::<Task>("tasks")? {
            state.tasks.insert(task.id, task);
        }
        for w in self.rows::<Worker>("workers")? {
            state.workers.insert(w.id.clone(), w);
        }
        let mut stmt = self.conn.prepare("SELECT job_id, task_id, attempt FROM discards").map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Discard {
                    job_id: r.get(0)?,
                    task_id: r.get::<_, i64>(1)? as u64,
                    attempt: r.get::<_, i64>(2)? as u32,
                })
            })
            .map_err(self.sql())?;
        for d in rows {
            state.discards.insert(d.map_err(self.sql())?);
        }
        Ok(state)
    }

    /// Every row of `table`, decoded from its JSON body.
    fn rows<T: serde::de::DeserializeOwned>(&self, table: &str) -> StoreResult<Vec<T>> {
        let mut stmt = self.conn.prepare(&format!("SELECT body FROM {table}")).map_err(self.sql())?;
        let bodies = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(self.sql())?;
        let mut out = Vec::new();
        for body in bodies {
            let body = body.map_err(self.sql())?;
            out.push(serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(table.to_string(), e.to_string()))?);
        }
        Ok(out)
    }

    /// Writes the dirty rows of `state` (and the id counters) in one transaction.
    pub fn save(&mut self, state: &State, dirty: &Dirty) -> StoreResult<()> {
        self.write(&Batch::of(state, dirty))
    }

    /// Writes a batch in one transaction.
    pub fn write(&mut self, batch: &Batch) -> StoreResult<()> {
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

/// The rows some decisions changed, read from the state and serialized, ready to be written
/// without the state at hand: the coordinator builds it under its lock and writes it outside.
#[derive(Debug, Default)]
pub struct Batch {
    meta: Vec<(&'static str, u64)>,
    /// `None`: the job was pruned (its row and its tasks' rows go).
    jobs: Vec<(String, Option<(&'static str, String)>)>,
    tasks: Vec<(u64, String, &'static str, String)>,
    workers: Vec<(String, String)>,
    discards: Vec<(Discard, bool)>,
}

impl Batch {
    /// The current rows of everything `dirty` names (a row named twice is written once).
    pub fn of(state: &State, dirty: &Dirty) -> Batch {
        if dirty.is_empty() {
            return Batch::default();
        }
        let mut b = Batch {
            meta: vec![
                ("next_task_id", state.next_task_id),
                ("next_job_seq", state.next_job_seq),
                ("next_worker_seq", state.next_worker_seq),
            ],
            ..Default::default()
        };
        let mut seen_jobs = std::collections::HashSet::new();
        for id in dirty.jobs.iter().filter(|id| seen_jobs.insert(id.as_str())) {
            let row =
                state.jobs.get(id).map(|job| (job.state.as_str(), serde_json::to_string(job).expect("job serializes")));
            b.jobs.push((id.clone(), row));
        }
        let mut seen_tasks = std::collections::HashSet::new();
        for id in dirty.tasks.iter().filter(|id| seen_tasks.insert(**id)) {
            if let Some(t) = state.tasks.get(id) {
                b.tasks.push((
                    *id,
                    t.job_id.clone(),
                    t.state.as_str(),
                    serde_json::to_string(t).expect("task serializes"),
                ));
            }
        }
        let mut seen_workers = std::collections::HashSet::new();
        for id in dirty.workers.iter().filter(|id| seen_workers.insert(id.as_str())) {
            if let Some(w) = state.workers.get(id) {
                b.workers.push((id.clone(), serde_json::to_string(w).expect("worker serializes")));
            }
        }
        for d in &dirty.discards {
            b.discards.push((d.clone(), state.discards.contains(d)));
        }
        b
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
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
        let store = Store::open(dir.path()).unwrap();
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
}
