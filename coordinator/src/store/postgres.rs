//! The shared store: PostgreSQL. Several coordinators may point at one database (and schema);
//! the one holding a session-level advisory lock leads, the others wait for it (standbys). The
//! leader writes over the very session that holds the lock, so a leader whose session is gone
//! can write nothing: its next write fails and it stops, and a standby that takes the lock loads
//! the last committed state and goes on. Tables are prefixed `lehr_`; pick a schema with the
//! URL's `options=-csearch_path=NAME` to keep several clusters in one database.

use std::time::Duration;

use ::postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::{decode, Batch, Rows, StateStore, StoreError, StoreResult, SCHEMA_VERSION};
use crate::scheduler::{Discard, State};

/// The advisory lock's first key ("lehr"); the second is the hash of the current schema.
const LOCK_CLASS: i32 = 0x6c65_6872;
/// How often a standby tries the leader lock: the bound on takeover time after the leader's
/// session ends (plus the time to load the state).
const STANDBY_POLL: Duration = Duration::from_millis(250);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lehr_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS lehr_jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lehr_tasks (id BIGINT PRIMARY KEY, job_id TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS lehr_tasks_by_job ON lehr_tasks (job_id);
CREATE TABLE IF NOT EXISTS lehr_workers (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lehr_discards (job_id TEXT NOT NULL, task_id BIGINT NOT NULL, attempt INTEGER NOT NULL,
                                          PRIMARY KEY (job_id, task_id, attempt));
CREATE TABLE IF NOT EXISTS lehr_leader (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL,
                                        epoch BIGINT NOT NULL, since_ms BIGINT NOT NULL);
";

pub struct PgStore {
    /// `None` only while dropping (see `Drop`).
    client: Option<Client>,
    /// The URL without its password, for messages.
    at: String,
    /// How many times leadership changed hands, this coordinator's term included.
    epoch: i64,
}

/// `url` without the password (`postgres://user:secret@host/db` → `postgres://user:***@host/db`,
/// and `password=` in the query).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| if p.starts_with("password=") { "password=***".to_string() } else { p.to_string() })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PgStore {
    /// Connects, refuses a schema newer than this lehr's, waits until this coordinator holds
    /// the leader lock (logging who leads meanwhile), then creates the tables if they are new
    /// and records this coordinator as the leader.
    pub fn open(url: &str, identity: &str, stop: &CancellationToken) -> StoreResult<PgStore> {
        let at = redact(url);
        let mut config: ::postgres::Config =
            url.parse().map_err(|e: ::postgres::Error| StoreError::Url(at.clone(), e.to_string()))?;
        if matches!(config.get_ssl_mode(), ::postgres::config::SslMode::Require) {
            return Err(StoreError::Url(
                at,
                "sslmode=require: this lehr speaks to PostgreSQL without TLS; use it over a private network \
                 or through a local TLS proxy, with sslmode=disable (or prefer)"
                    .into(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("lehr-coordinator");
        }
        // A dead peer is noticed by TCP keepalives; the server drops a dead leader's session
        // (and its lock) the same way.
        config.connect_timeout(Duration::from_secs(5)).keepalives(true).keepalives_idle(Duration::from_secs(10));
        let pg = |e| StoreError::Postgres { at: at.clone(), source: e };
        let client = config.connect(NoTls).map_err(pg)?;
        let mut store = PgStore { client: Some(client), at: at.clone(), epoch: 0 };
        store.check_version()?;
        let mut announced = false;
        loop {
            let got: bool = store
                .client()
                .query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", &[&LOCK_CLASS])
                .map_err(pg)?
                .get(0);
            if got {
                break;
            }
            if !announced {
                let leader = store.leader().unwrap_or_default();
                tracing::warn!(state = %at, leader = %leader, "standby: another coordinator leads; waiting for its lock");
                announced = true;
            }
            if stop.is_cancelled() {
                return Err(StoreError::Stopped(at));
            }
            std::thread::sleep(STANDBY_POLL);
            // A leader may have upgraded the schema meanwhile.
            store.check_version()?;
        }
        store.check_version()?;
        let c = store.client();
        c.batch_execute(SCHEMA).map_err(pg)?;
        c.execute(
            "INSERT INTO lehr_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING",
            &[&SCHEMA_VERSION],
        )
        .map_err(pg)?;
        let epoch: i64 = c
            .query_one(
                "INSERT INTO lehr_leader (id, name, epoch, since_ms) VALUES (1, $1, 1, $2)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, epoch = lehr_leader.epoch + 1,
                 since_ms = EXCLUDED.since_ms RETURNING epoch",
                &[&identity, &crate::service::now_ms()],
            )
            .map_err(pg)?
            .get(0);
        store.epoch = epoch;
        tracing::info!(state = %at, epoch, "leading: this coordinator holds the leader lock");
        Ok(store)
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }

    fn pg(&self) -> impl Fn(::postgres::Error) -> StoreError + '_ {
        move |e| StoreError::Postgres { at: self.at.clone(), source: e }
    }

    /// This coordinator's term: 1 for the first leader of a database, then one more per takeover.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Who leads (or led last), as it named itself, and since when.
    fn leader(&mut self) -> StoreResult<String> {
        let exists: bool =
            self.client().query_one("SELECT to_regclass('lehr_leader') IS NOT NULL", &[]).map_err(self.pg())?.get(0);
        if !exists {
            return Ok(String::new());
        }
        let row =
            self.client().query_opt("SELECT name, epoch FROM lehr_leader WHERE id = 1", &[]).map_err(self.pg())?;
        Ok(row.map(|r| format!("{} (term {})", r.get::<_, String>(0), r.get::<_, i64>(1))).unwrap_or_default())
    }

    fn check_version(&mut self) -> StoreResult<()> {
        let exists: bool =
            self.client().query_one("SELECT to_regclass('lehr_meta') IS NOT NULL", &[]).map_err(self.pg())?.get(0);
        if !exists {
            return Ok(());
        }
        let v: Option<i64> = self
            .client()
            .query_opt("SELECT value FROM lehr_meta WHERE key = 'schema_version'", &[])
            .map_err(self.pg())?
            .map(|r| r.get(0));
        match v {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::Version(self.at.clone(), v)),
            _ => Ok(()),
        }
    }

    /// Every row of `table`, decoded from its JSON body.
    fn rows<T: serde::de::DeserializeOwned>(&mut self, table: &str) -> StoreResult<Vec<T>> {
        let rows = self.client().query(&format!("SELECT body FROM {table}"), &[]).map_err(self.pg())?;
        rows.iter().map(|r| decode(table, r.get(0))).collect()
    }
}

impl StateStore for PgStore {
    fn load(&mut self) -> StoreResult<State> {
        let meta = self.client().query("SELECT key, value FROM lehr_meta", &[]).map_err(self.pg())?;
        let meta = meta.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect();
        let discards =
            self.client().query("SELECT job_id, task_id, attempt FROM lehr_discards", &[]).map_err(self.pg())?;
        let discards = discards
            .iter()
            .map(|r| Discard {
                job_id: r.get(0),
                task_id: r.get::<_, i64>(1) as u64,
                attempt: r.get::<_, i32>(2) as u32,
            })
            .collect();
        Ok(Rows {
            meta,
            jobs: self.rows("lehr_jobs")?,
            tasks: self.rows("lehr_tasks")?,
            workers: self.rows("lehr_workers")?,
            discards,
        }
        .into_state())
    }

    /// One transaction of a few statements, each table's rows passed as arrays (one round trip
    /// per table, however many rows).
    fn write(&mut self, batch: &Batch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let at = self.at.clone();
        let pg = |e| StoreError::Postgres { at: at.clone(), source: e };
        let mut tx = self.client().transaction().map_err(pg)?;
        let (keys, values): (Vec<&str>, Vec<i64>) = batch.meta.iter().map(|(k, v)| (*k, *v as i64)).unzip();
        tx.execute(
            "INSERT INTO lehr_meta (key, value) SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&keys, &values],
        )
        .map_err(pg)?;
        let (mut ids, mut states, mut bodies, mut pruned) = (vec![], vec![], vec![], vec![]);
        for (id, row) in &batch.jobs {
            match row {
                Some((state, body)) => {
                    ids.push(id.as_str());
                    states.push(*state);
                    bodies.push(body.as_str());
                }
                None => pruned.push(id.as_str()),
            }
        }
        if !pruned.is_empty() {
            tx.execute("DELETE FROM lehr_tasks WHERE job_id = ANY($1)", &[&pruned]).map_err(pg)?;
            tx.execute("DELETE FROM lehr_jobs WHERE id = ANY($1)", &[&pruned]).map_err(pg)?;
        }
        if !ids.is_empty() {
            tx.execute(
                "INSERT INTO lehr_jobs (id, state, body) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, body = EXCLUDED.body",
                &[&ids, &states, &bodies],
            )
            .map_err(pg)?;
        }
        if !batch.tasks.is_empty() {
            let ids: Vec<i64> = batch.tasks.iter().map(|t| t.0 as i64).collect();
            let jobs: Vec<&str> = batch.tasks.iter().map(|t| t.1.as_str()).collect();
            let states: Vec<&str> = batch.tasks.iter().map(|t| t.2).collect();
            let bodies: Vec<&str> = batch.tasks.iter().map(|t| t.3.as_str()).collect();
            tx.execute(
                "INSERT INTO lehr_tasks (id, job_id, state, body)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
                 ON CONFLICT (id) DO UPDATE SET job_id = EXCLUDED.job_id, state = EXCLUDED.state, body = EXCLUDED.body",
                &[&ids, &jobs, &states, &bodies],
            )
            .map_err(pg)?;
        }
        if !batch.workers.is_empty() {
            let (ids, bodies): (Vec<&str>, Vec<&str>) =
                batch.workers.iter().map(|(id, body)| (id.as_str(), body.as_str())).unzip();
            tx.execute(
                "INSERT INTO lehr_workers (id, body) SELECT * FROM UNNEST($1::text[], $2::text[])
                 ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
                &[&ids, &bodies],
            )
            .map_err(pg)?;
        }
        for present in [true, false] {
            let rows: Vec<&Discard> = batch.discards.iter().filter(|(_, p)| *p == present).map(|(d, _)| d).collect();
            if rows.is_empty() {
                continue;
            }
            let jobs: Vec<&str> = rows.iter().map(|d| d.job_id.as_str()).collect();
            let tasks: Vec<i64> = rows.iter().map(|d| d.task_id as i64).collect();
            let attempts: Vec<i32> = rows.iter().map(|d| d.attempt as i32).collect();
            let sql = if present {
                "INSERT INTO lehr_discards (job_id, task_id, attempt)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::int[]) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM lehr_discards d USING UNNEST($1::text[], $2::bigint[], $3::int[]) AS x(job_id, task_id, attempt)
                 WHERE d.job_id = x.job_id AND d.task_id = x.task_id AND d.attempt = x.attempt"
            };
            tx.execute(sql, &[&jobs, &tasks, &attempts]).map_err(pg)?;
        }
        tx.commit().map_err(pg)
    }

    fn can_be_lost(&self) -> bool {
        true
    }

    fn check(&mut self) -> StoreResult<()> {
        let at = self.at.clone();
        self.client().simple_query("SELECT 1").map(|_| ()).map_err(|source| StoreError::Postgres { at, source })
    }
}

impl Drop for PgStore {
    /// The client closes its session on its own runtime, which must not be dropped on an
    /// async thread: close it on a plain one.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://lehr:s3cret@db:5432/lehr"), "postgres://lehr:***@db:5432/lehr");
        assert_eq!(redact("postgres://lehr@db/lehr?sslmode=disable"), "postgres://lehr@db/lehr?sslmode=disable");
        assert_eq!(redact("postgresql://u:p:q@h"), "postgresql://u:***@h");
        assert_eq!(redact("postgres:///lehr?host=/tmp"), "postgres:///lehr?host=/tmp");
        assert_eq!(redact("postgres://h/db?user=u&password=p&x=1"), "postgres://h/db?user=u&password=***&x=1");
    }
}
