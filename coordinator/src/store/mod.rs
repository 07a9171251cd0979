//! Durable coordinator state behind one trait, [`StateStore`], with two implementations:
//! embedded SQLite in a directory ([`sqlite`], the default) and PostgreSQL ([`postgres`]), where
//! several coordinators share one database and one of them leads. Rows hold one job, task or
//! worker as JSON next to the columns queries need; every scheduler decision's rows are written
//! in one transaction ([`Batch`]) before the coordinator answers it.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;

use crate::scheduler::{Dirty, Discard, Job, State, Task, Worker};

pub use self::postgres::PgStore;
pub use self::sqlite::Store as SqliteStore;

/// The schema version both stores write. A store holding a newer one is refused: an older lehr
/// cannot know what the newer one's rows mean.
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite error in {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("postgres error at {at}: {source}")]
    Postgres {
        at: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("bad --state `{0}`: {1}")]
    Url(String, String),
    #[error("state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("another coordinator is using the state directory {0}; stop it or pick another --state")]
    Locked(PathBuf),
    #[error("corrupt row in {0}: {1}")]
    Corrupt(String, String),
    #[error(
        "the state at {0} has schema version {1}; this lehr knows version {SCHEMA_VERSION} and will not \
         touch it: run the lehr that wrote it (or a newer one)"
    )]
    Version(String, i64),
    #[error("stopped while waiting to lead (the state at {0})")]
    Stopped(String),
}

impl StoreError {
    /// Whether the operator must change something (a bad URL, a newer schema, a locked
    /// directory) rather than wait for the storage to come back.
    pub fn is_usage(&self) -> bool {
        matches!(self, StoreError::Url(..) | StoreError::Locked(_) | StoreError::Version(..) | StoreError::Corrupt(..))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where the coordinator's state lives: `--state DIR` (SQLite) or `--state postgres://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    Dir(PathBuf),
    Postgres(String),
}

impl StateLocation {
    pub fn parse(s: &str) -> StateLocation {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StateLocation::Postgres(s.to_string())
        } else {
            StateLocation::Dir(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for StateLocation {
    /// For people and logs: a PostgreSQL URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::Dir(p) => write!(f, "{}", p.display()),
            StateLocation::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

impl From<PathBuf> for StateLocation {
    fn from(p: PathBuf) -> Self {
        StateLocation::Dir(p)
    }
}

impl From<&std::path::Path> for StateLocation {
    fn from(p: &std::path::Path) -> Self {
        StateLocation::Dir(p.to_path_buf())
    }
}

/// A durable home for the coordinator's state. Calls block (PostgreSQL's client runs its own
/// runtime): the coordinator makes them on blocking threads.
pub trait StateStore: Send {
    /// The whole state, as the last committed transaction left it.
    fn load(&mut self) -> StoreResult<State>;
    /// Writes a batch in one transaction; returns once it is durable.
    fn write(&mut self, batch: &Batch) -> StoreResult<()>;
    /// Fails once this store can no longer be written (a PostgreSQL session lost, and with it
    /// the leadership): the coordinator then stops instead of answering from a stale state.
    fn check(&mut self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether [`check`](Self::check) can ever fail, so that the coordinator calls it (once a
    /// maintenance tick). A file store cannot be lost this way.
    fn can_be_lost(&self) -> bool {
        false
    }
    /// Writes the dirty rows of `state` (and the id counters) in one transaction.
    fn save(&mut self, state: &State, dirty: &Dirty) -> StoreResult<()> {
        self.write(&Batch::of(state, dirty))
    }
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Who this coordinator is, for the other coordinators sharing a database (its address).
    pub identity: String,
}

/// Opens the store at `location`. A PostgreSQL store returns once this coordinator leads:
/// while another one holds the leader lock it waits (a standby), until `stop` is cancelled.
pub fn open(
    location: &StateLocation,
    options: &OpenOptions,
    stop: &tokio_util::sync::CancellationToken,
) -> StoreResult<Box<dyn StateStore>> {
    Ok(match location {
        StateLocation::Dir(dir) => Box::new(SqliteStore::open(dir)?),
        StateLocation::Postgres(url) => Box::new(PgStore::open(url, &options.identity, stop)?),
    })
}

/// The id counters, as the meta table keeps them (by key).
fn counters(state: &State) -> [(&'static str, u64); 3] {
    [
        ("next_task_id", state.next_task_id),
        ("next_job_seq", state.next_job_seq),
        ("next_worker_seq", state.next_worker_seq),
    ]
}

/// A row's JSON body, decoded (a bad one is `Corrupt`, naming its table).
fn decode<T: serde::de::DeserializeOwned>(table: &str, body: &str) -> StoreResult<T> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(table.to_string(), e.to_string()))
}

/// Everything a store read, before it is a [`State`]: meta rows (keys other than the counters,
/// such as `schema_version`, are ignored), the decoded rows, and discards.
struct Rows {
    meta: Vec<(String, u64)>,
    jobs: Vec<Job>,
    tasks: Vec<Task>,
    workers: Vec<Worker>,
    discards: Vec<Discard>,
}

impl Rows {
    fn into_state(self) -> State {
        let mut state = State::default();
        for (key, value) in self.meta {
            match key.as_str() {
                "next_task_id" => state.next_task_id = value,
                "next_job_seq" => state.next_job_seq = value,
                "next_worker_seq" => state.next_worker_seq = value,
                _ => {}
            }
        }
        state.jobs.extend(self.jobs.into_iter().map(|j| (j.id.clone(), j)));
        state.tasks.extend(self.tasks.into_iter().map(|t| (t.id, t)));
        state.workers.extend(self.workers.into_iter().map(|w| (w.id.clone(), w)));
        state.discards.extend(self.discards);
        state
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
        let mut b = Batch { meta: counters(state).to_vec(), ..Default::default() };
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
        let mut seen_discards = std::collections::BTreeSet::new();
        for d in dirty.discards.iter().filter(|d| seen_discards.insert(*d)) {
            b.discards.push((d.clone(), state.discards.contains(d)));
        }
        b
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
}
