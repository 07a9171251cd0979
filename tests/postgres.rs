//! The coordinator's state on a real PostgreSQL server (a private one per test, see
//! tests/common/pg.rs): the store keeps what SQLite keeps, a second coordinator waits as a
//! standby and takes over when the leader is SIGKILLed mid-job, clients and workers given both
//! URLs follow it, the crash tests that run on SQLite pass here too, and a newer schema is
//! refused.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pg::{Postgres, PASSWORD};
use common::*;
use lehr_coordinator::scheduler::{NewJob, NewTask, Scheduler, SchedulerConfig, StageDef, State, TaskStats};
use lehr_coordinator::store::{PgStore, SqliteStore, StateStore, StoreError};
use tokio_util::sync::CancellationToken;

fn job(n: u32, output: &str) -> NewJob {
    NewJob {
        name: "n".into(),
        kind: "noop".into(),
        spec: "spec".into(),
        base_dir: "/".into(),
        output: output.into(),
        stages: vec![StageDef::new("shards", vec![])],
        tasks: (0..n)
            .map(|i| NewTask { stage: 0, index: i, kind: "k".into(), payload: format!("p{i}"), shard: "s".into() })
            .collect(),
    }
}

/// Runs a few decisions of every kind (register, submit, lease, commit, expire, a losing
/// attempt's discard, a prune) and saves each one's rows to every store.
fn decisions(stores: &mut [&mut dyn StateStore]) -> State {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut save = |s: &Scheduler, d| {
        for store in stores.iter_mut() {
            store.save(&s.state, &d).unwrap();
        }
    };
    let (w, d) = s.register_worker("host:1", 2, 5);
    save(&s, d);
    let d = s.submit("kept".into(), job(3, "/out/kept"), 10).unwrap();
    save(&s, d);
    let (g, d) = s.lease(&w, 2, 11).unwrap();
    save(&s, d);
    let (_, d) = s.report_success(&w, g[0].task_id, 1, &g[0].token, "{}".into(), TaskStats::default(), 12);
    save(&s, d);
    let later = i64::MAX / 2;
    let (_, d) = s.expire(later);
    save(&s, d);
    let (g2, d) = s.lease(&w, 2, later + 1).unwrap();
    save(&s, d);
    let late = &g[1];
    let (_, d) =
        s.report_success(&w, late.task_id, late.attempt, &late.token, "{}".into(), TaskStats::default(), later + 2);
    save(&s, d);
    let (_, d) =
        s.report_success(&w, g2[0].task_id, g2[0].attempt, &g2[0].token, "{}".into(), TaskStats::default(), later + 3);
    save(&s, d);
    let d = s.submit("gone".into(), job(2, "/out/gone"), later + 4).unwrap();
    save(&s, d);
    let d = s.cancel_job("gone", later + 4).unwrap();
    save(&s, d);
    let d = s.mark_swept("gone");
    save(&s, d);
    let (pruned, d) = s.prune(later + 10, 5);
    assert_eq!(pruned, vec!["gone".to_string()]);
    save(&s, d);
    s.state
}

/// The state less what is not durable by design (live progress; a worker's last-seen time,
/// which reports move without writing).
fn without_progress(mut s: State) -> State {
    for t in s.tasks.values_mut() {
        t.progress = Default::default();
    }
    for w in s.workers.values_mut() {
        w.last_seen_ms = 0;
    }
    s
}

/// Opens a PostgreSQL store on a blocking thread of its own (its client runs its own runtime).
fn open_pg(url: &str, who: &str, stop: &CancellationToken) -> Result<PgStore, StoreError> {
    let (url, who, stop) = (url.to_string(), who.to_string(), stop.clone());
    std::thread::spawn(move || PgStore::open(&url, &who, &stop)).join().unwrap()
}

#[test]
fn postgres_keeps_what_sqlite_keeps_and_a_standby_takes_over_when_the_leader_goes() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("roundtrip");
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(dir.path()).unwrap();
    let stop = CancellationToken::new();
    let mut leader = open_pg(&url, "first", &stop).unwrap();
    assert_eq!(leader.epoch(), 1);
    let state = decisions(&mut [&mut sqlite, &mut leader]);
    assert_eq!(state.discards.len(), 1, "one losing attempt's output is owed a delete");

    // A second coordinator on the same database waits while the first holds the lock.
    let (tx, rx) = std::sync::mpsc::channel();
    let (u, s) = (url.clone(), stop.clone());
    let standby = std::thread::spawn(move || {
        let store = PgStore::open(&u, "second", &s);
        tx.send(()).unwrap();
        store
    });
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err(), "the second coordinator must wait as a standby");
    let released = Instant::now();
    drop(leader);
    rx.recv_timeout(Duration::from_secs(5)).expect("the standby leads once the leader's session is gone");
    let took = released.elapsed();
    let mut second = standby.join().unwrap().unwrap();
    assert_eq!(second.epoch(), 2, "a takeover starts the next term");
    assert!(took < Duration::from_secs(2), "takeover took {took:?}");

    let from_pg = std::thread::spawn(move || second.load().map(|s| (s, second))).join().unwrap().unwrap();
    let from_sqlite = sqlite.load().unwrap();
    assert_eq!(without_progress(from_pg.0.clone()), without_progress(from_sqlite), "both stores hold the same state");
    assert_eq!(without_progress(from_pg.0), without_progress(state), "and it is the scheduler's");
    assert_eq!(pg.sql("roundtrip", "SELECT count(*) FROM lehr_tasks WHERE job_id = 'gone'"), "0", "pruned rows go");
    let leader_row = pg.sql("roundtrip", "SELECT name || ' ' || epoch FROM lehr_leader");
    assert_eq!(leader_row, "second 2");
    drop(from_pg.1);

    // A stop while waiting ends the wait.
    let _holder = open_pg(&url, "third", &stop).unwrap();
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    assert!(matches!(open_pg(&url, "fourth", &cancelled), Err(StoreError::Stopped(_))));
}

#[test]
fn an_older_coordinator_refuses_a_newer_schema_and_never_prints_the_password() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("versions");
    let stop = CancellationToken::new();
    drop(open_pg(&url, "first", &stop).unwrap());
    pg.sql("versions", "UPDATE lehr_meta SET value = 99 WHERE key = 'schema_version'");
    match open_pg(&url, "old", &stop) {
        Err(StoreError::Version(_, 99)) => {}
        Err(e) => panic!("expected a version refusal, got {e}"),
        Ok(_) => panic!("an older lehr opened a newer schema"),
    }
    let out = lehr()
        .args(["coordinator", "--state", &url, "--listen", &format!("127.0.0.1:{}", free_port()), "--http", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a newer schema is a usage error: {err}");
    assert!(err.contains("schema version 99") && err.contains("knows version 1"), "{err}");
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");

    // A wrong password is "unreachable" (3), named without the password either.
    let wrong = url.replace(PASSWORD, "not-the-password");
    let out = lehr()
        .args(["coordinator", "--state", &wrong, "--listen", &format!("127.0.0.1:{}", free_port()), "--http", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("password authentication failed") && !err.contains("not-the-password"), "{err}");

    // TLS to PostgreSQL is not built in: asking for it is refused with what to do instead.
    let out = lehr()
        .args(["coordinator", "--state", &format!("{url}?sslmode=require")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--http", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("without TLS") && !err.contains(PASSWORD), "{err}");
}

#[test]
fn worker_sigkilled_mid_shard_on_postgres_still_matches_one_worker_run() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("workerkill");
    let dir = tempfile::tempdir().unwrap();
    crash::worker_sigkilled_mid_shard(dir.path(), url.as_ref());
}

#[test]
fn coordinator_sigkilled_and_restarted_on_postgres_loses_and_repeats_nothing() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("restart");
    let dir = tempfile::tempdir().unwrap();
    crash::coordinator_sigkilled_and_restarted(dir.path(), url.as_ref());
}

/// Two coordinators on one database, workers and clients given both URLs; the leader is
/// SIGKILLed mid-job. The standby leads within a bounded time, nothing committed is redone, and
/// the output is a 1-worker run's.
#[test]
fn the_standby_takes_over_a_sigkilled_leader_mid_job_and_the_output_is_unchanged() {
    let Some(pg) = Postgres::start() else { return };
    let state = pg.database("failover");
    let dir = tempfile::tempdir().unwrap();
    let reference = crash::reference_run(dir.path());

    let (pa, pb, pb_http) = (free_port(), free_port(), free_port());
    let (a, b) = (format!("http://127.0.0.1:{pa}"), format!("http://127.0.0.1:{pb}"));
    let both = format!("{a},{b}");
    let mut leader = spawn_coordinator(&state, pa, "3s");
    let standby_log = dir.path().join("standby.log");
    let _standby = Proc(
        lehr()
            .args(["coordinator", "--state", &state, "--listen", &format!("127.0.0.1:{pb}")])
            .args(["--http", &format!("127.0.0.1:{pb_http}"), "--lease-ttl", "3s"])
            .env("LEHR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&standby_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the second coordinator to say it is a standby", Duration::from_secs(30), || {
        std::fs::read_to_string(&standby_log).ok().filter(|l| l.contains("standby")).map(|_| ())
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", pb)).is_err(), "a standby does not listen");
    // Its status page is alive but not ready (what a Kubernetes Service routes by).
    assert_eq!(http_get(pb_http, "/healthz").unwrap().0, 200, "a standby is alive");
    for path in ["/readyz", "/api/jobs"] {
        let (code, body) = http_get(pb_http, path).unwrap();
        assert!(code == 503 && body.contains("standby"), "{path} on a standby: {code} {body}");
    }

    let _workers: Vec<Proc> = (0..3).map(|i| spawn_worker(&both, &format!("w{i}"), crash_test_shape().1)).collect();
    let out = dir.path().join("failover");
    let spec = write_spec(dir.path(), "failover", &corpus_inputs(), &out, crash_test_shape().0, "");
    let job = submit(&both, &spec);
    let before = crash::wait_half_done(&both, &job);
    leader.sigkill();
    let killed = Instant::now();
    wait_until("the standby to answer", Duration::from_secs(30), || job_status(&b, &job));
    let takeover = killed.elapsed();
    eprintln!("takeover: the standby answered {takeover:?} after the leader was killed");
    assert!(takeover < Duration::from_secs(10), "takeover took {takeover:?}");
    assert_eq!(http_get(pb_http, "/readyz").unwrap(), (200, "ok".to_string()), "the new leader is ready");
    assert_eq!(http_get(pb_http, "/api/jobs").unwrap().0, 200);
    let log = std::fs::read_to_string(&standby_log).unwrap();
    assert!(log.contains("leading") && !log.contains(PASSWORD), "{log}");

    let status = wait_for_end(&both, &job);
    assert_eq!(job_state(&status), "succeeded", "{status:#}\n{}", pg.log());
    crash::assert_committed_kept(&before, &status, "the takeover");
    let alive: std::collections::BTreeSet<String> = workers(&b)
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["alive"] == true)
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    assert!(["w0", "w1", "w2"].iter().all(|w| alive.contains(*w)), "the workers followed the new leader: {alive:?}");
    assert_eq!(checksums(&out), reference, "a takeover must not change the output");
    assert_eq!(pg.sql("failover", "SELECT epoch FROM lehr_leader"), "2");
}

#[test]
fn a_leader_whose_session_is_cut_stops_on_its_own_and_the_next_one_leads() {
    let Some(pg) = Postgres::start() else { return };
    let state = pg.database("cut");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("leader.log");
    let mut leader = Proc(
        lehr()
            .args(["coordinator", "--state", &state, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http", "none", "--lease-ttl", "2s"])
            .env("LEHR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for_coordinator(&url);
    // Idle: no report wakes its maintenance, so only the tick's check can notice.
    let cut = pg.sql(
        "cut",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'cut' AND pid <> pg_backend_pid()",
    );
    assert_ne!(cut, "0", "the leader holds a session");
    let since = Instant::now();
    let status = wait_until("the cut leader to exit", Duration::from_secs(20), || leader.0.try_wait().unwrap());
    let took = since.elapsed();
    eprintln!("a leader whose session was cut exited after {took:?}");
    assert_eq!(status.code(), Some(70), "{}", std::fs::read_to_string(&log).unwrap());
    assert!(took < Duration::from_secs(5), "the tick (ttl/4) bounds how long a lost leader answers: {took:?}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("lost the state store"));

    let _next = spawn_coordinator(&state, free_port(), "2s");
    assert_eq!(pg.sql("cut", "SELECT epoch FROM lehr_leader"), "2", "the next coordinator starts the next term");
}
