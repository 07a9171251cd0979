use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn job(tasks_per_stage: &[u32]) -> NewJob {
    let stages = tasks_per_stage
        .iter()
        .enumerate()
        .map(|(i, _)| StageDef::new(&format!("s{i}"), if i == 0 { vec![] } else { vec![i - 1] }))
        .collect();
    let tasks = tasks_per_stage
        .iter()
        .enumerate()
        .flat_map(|(s, &n)| {
            (0..n).map(move |i| NewTask {
                stage: s,
                index: i,
                kind: "test".into(),
                payload: format!("{s}/{i}"),
                shard: format!("shard {s}/{i}"),
            })
        })
        .collect();
    NewJob {
        name: "t".into(),
        kind: "test".into(),
        spec: String::new(),
        base_dir: String::new(),
        output: String::new(),
        stages,
        tasks,
    }
}

/// The calls a worker makes, with the lease token it was granted (looked up by attempt), so the
/// scenarios below read as before; [`forged_reports_change_nothing`] and the property tests
/// check the tokens themselves.
impl Scheduler {
    fn token_of(&self, task: TaskId, attempt: u32) -> String {
        attempt_record(&self.state.tasks[&task], attempt).map(|r| r.token.clone()).unwrap_or_default()
    }
    fn succeed(
        &mut self,
        w: &str,
        task: TaskId,
        attempt: u32,
        result: String,
        stats: TaskStats,
        now: i64,
    ) -> (Disposition, Dirty) {
        let token = self.token_of(task, attempt);
        self.report_success(w, task, attempt, &token, result, stats, now)
    }
    fn fail(
        &mut self,
        w: &str,
        task: TaskId,
        attempt: u32,
        error: &str,
        retryable: bool,
        now: i64,
    ) -> (Disposition, Dirty) {
        let token = self.token_of(task, attempt);
        self.report_failure(w, task, attempt, &token, error, retryable, now)
    }
    fn beat(
        &mut self,
        w: &str,
        running: &[(TaskId, u32, u64, u64)],
        now: i64,
    ) -> Result<Vec<(TaskId, u32)>, SchedulerError> {
        let beats: Vec<Beat> = running
            .iter()
            .map(|&(task_id, attempt, docs, bytes)| Beat {
                task_id,
                attempt,
                token: self.token_of(task_id, attempt),
                progress: Live { docs, bytes, ..Default::default() },
            })
            .collect();
        self.heartbeat(w, &beats, now)
    }
    fn join(
        &mut self,
        w: &str,
        task: TaskId,
        attempt: u32,
        addr: &str,
        nccl: &[u8],
        now: i64,
    ) -> Result<RendezvousView, SchedulerError> {
        let token = self.token_of(task, attempt);
        self.join_rendezvous(w, task, attempt, &token, addr, nccl, now)
    }
    fn holds(&self, task: TaskId, w: &str, attempt: u32) -> bool {
        self.holds_lease(task, w, attempt, &self.token_of(task, attempt))
    }
}

fn sched(ttl: i64, max_attempts: u32) -> Scheduler {
    Scheduler::new(SchedulerConfig { lease_ttl_ms: ttl, max_attempts })
}

#[test]
fn stages_wait_for_their_dependencies() {
    let mut s = sched(1000, 3);
    s.submit("j".into(), job(&[2, 1]), 0).unwrap();
    let (w, _) = s.register_worker("w", 4, 0);
    let (g, _) = s.lease(&w, 10, 0).unwrap();
    assert_eq!(g.len(), 2, "only stage 0 is runnable");
    assert_eq!(s.succeed(&w, g[0].task_id, 1, "r".into(), TaskStats::default(), 1).0, Disposition::Committed);
    assert!(s.lease(&w, 10, 1).unwrap().0.is_empty(), "stage 1 waits for all of stage 0");
    s.succeed(&w, g[1].task_id, 1, "r".into(), TaskStats::default(), 2);
    assert!(s.lease(&w, 10, 2).unwrap().0.is_empty(), "stage 1 also waits for stage 0's outputs to be promoted");
    s.mark_promoted(g[0].task_id);
    assert!(s.lease(&w, 10, 2).unwrap().0.is_empty(), "one of two promoted is not enough");
    s.mark_promoted(g[1].task_id);
    let (g2, _) = s.lease(&w, 10, 2).unwrap();
    assert_eq!(g2.len(), 1);
    s.succeed(&w, g2[0].task_id, 1, "r".into(), TaskStats::default(), 3);
    assert_eq!(s.state.jobs["j"].state, JobState::Finalizing);
    for id in s.pending_promotions() {
        s.mark_promoted(id);
    }
    assert_eq!(s.jobs_to_finalize(), vec!["j".to_string()]);
    s.finish_job("j", Ok(()), 4);
    assert_eq!(s.state.jobs["j"].state, JobState::Succeeded);
}

#[test]
fn expired_lease_requeues_then_fails_the_job_after_max_attempts() {
    let mut s = sched(100, 2);
    s.submit("j".into(), job(&[1]), 0).unwrap();
    let (w, _) = s.register_worker("w", 1, 0);
    let (g, _) = s.lease(&w, 1, 0).unwrap();
    let (e, _) = s.expire(101);
    assert_eq!(e, vec![Expired { task_id: g[0].task_id, attempt: 1, worker_id: w.clone(), requeued: true }]);
    let (g, _) = s.lease(&w, 1, 102).unwrap();
    assert_eq!(g[0].attempt, 2);
    let (e, _) = s.expire(300);
    assert!(!e[0].requeued);
    assert_eq!(s.state.jobs["j"].state, JobState::Failed);
    assert!(s.state.jobs["j"].error.contains("lost its lease 2 times"), "{}", s.state.jobs["j"].error);
}

#[test]
fn non_retryable_failure_fails_the_job_with_the_workers_error() {
    let mut s = sched(100, 5);
    s.submit("j".into(), job(&[3]), 0).unwrap();
    let (w, _) = s.register_worker("w", 3, 0);
    let (g, _) = s.lease(&w, 3, 0).unwrap();
    let (d, _) = s.fail(&w, g[1].task_id, 1, "unreadable input x: no `text` column", false, 1);
    assert_eq!(d, Disposition::FailureRecorded { job_failed: true });
    let job = &s.state.jobs["j"];
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.contains("no `text` column"));
    // the other leases are cancelled by the next heartbeat
    let cancel = s.beat(&w, &[(g[0].task_id, 1, 0, 0)], 2).unwrap();
    assert_eq!(cancel, vec![(g[0].task_id, 1)]);
}

#[test]
fn retryable_failure_requeues_until_max_attempts() {
    let mut s = sched(100, 3);
    s.submit("j".into(), job(&[1]), 0).unwrap();
    let (w, _) = s.register_worker("w", 1, 0);
    for attempt in 1..=3 {
        let (g, _) = s.lease(&w, 1, attempt as i64).unwrap();
        assert_eq!(g[0].attempt, attempt);
        let (d, _) = s.fail(&w, g[0].task_id, attempt, "s3 timeout", true, attempt as i64);
        assert_eq!(d, Disposition::FailureRecorded { job_failed: attempt == 3 });
    }
    assert!(s.state.jobs["j"].error.contains("after 3 attempts: s3 timeout"));
}

#[test]
fn forged_reports_change_nothing() {
    let mut s = sched(100, 3);
    s.submit("j".into(), job(&[1]), 0).unwrap();
    let (w, _) = s.register_worker("w", 1, 0);
    let (mallory, _) = s.register_worker("m", 1, 0);
    let g = s.lease(&w, 1, 0).unwrap().0.remove(0);
    assert_eq!(g.token.len(), 32);
    let before = s.state.tasks.clone();
    for (who, token) in
        [(&w, ""), (&w, "w2-guess"), (&mallory, g.token.as_str()), (&"w9".to_string(), g.token.as_str())]
    {
        let (d, _) = s.report_success(who, g.task_id, g.attempt, token, "x".into(), TaskStats::default(), 1);
        assert_eq!(d, Disposition::Refused, "{who} {token}");
        let (d, _) = s.report_failure(who, g.task_id, g.attempt, token, "x", false, 1);
        assert_eq!(d, Disposition::Refused);
    }
    assert_eq!(s.state.tasks, before);
    // the stale token of an earlier attempt does not claim the next one
    s.expire(200);
    let g2 = s.lease(&w, 1, 201).unwrap().0.remove(0);
    assert_eq!(g2.attempt, 2);
    let (d, _) = s.report_success(&w, g2.task_id, 2, &g.token, "x".into(), TaskStats::default(), 202);
    assert_eq!(d, Disposition::Refused);
    let (d, _) = s.report_success(&w, g2.task_id, 2, &g2.token, "ok".into(), TaskStats::default(), 202);
    assert_eq!(d, Disposition::Committed);
}

#[test]
fn unknown_worker_must_register_again() {
    let mut s = sched(100, 3);
    assert_eq!(s.lease("w9", 1, 0).unwrap_err(), SchedulerError::UnknownWorker("w9".into()));
}

#[test]
fn indexes_survive_a_reload() {
    let mut s = sched(100, 3);
    s.submit("j".into(), job(&[3, 2]), 0).unwrap();
    let (w, _) = s.register_worker("w", 1, 0);
    let (g, _) = s.lease(&w, 1, 0).unwrap();
    s.succeed(&w, g[0].task_id, 1, "r".into(), TaskStats::default(), 1);
    s.lease(&w, 1, 1).unwrap();
    let reloaded = Scheduler::from_state(s.state.clone(), s.config);
    assert_eq!(reloaded.queued, s.queued);
    assert_eq!(reloaded.leased, s.leased);
    assert_eq!(reloaded.stage_counts, s.stage_counts);
    assert_eq!(reloaded.unpromoted, s.unpromoted);
    let sorted = |m: &BTreeMap<String, Vec<TaskId>>| -> BTreeMap<String, Vec<TaskId>> {
        m.iter()
            .map(|(k, v)| {
                (k.clone(), {
                    let mut v = v.clone();
                    v.sort();
                    v
                })
            })
            .collect()
    };
    assert_eq!(sorted(&reloaded.job_index), sorted(&s.job_index));
}

#[derive(Debug, Clone)]
enum Op {
    Lease {
        worker: usize,
        max: u32,
    },
    Heartbeat {
        worker: usize,
    },
    Advance {
        ms: i64,
    },
    Succeed {
        grant: usize,
    },
    Fail {
        grant: usize,
        retryable: bool,
    },
    /// A report or heartbeat about a real attempt without its token: a guess, another
    /// attempt's token (stale or of another task), or the right token from another worker.
    Forge {
        grant: usize,
        how: u8,
    },
    Promote,
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 1u32..4).prop_map(|(worker, max)| Op::Lease { worker, max }),
        (0usize..3).prop_map(|worker| Op::Heartbeat { worker }),
        (1i64..80).prop_map(|ms| Op::Advance { ms }),
        (0usize..40).prop_map(|grant| Op::Succeed { grant }),
        (0usize..40, any::<bool>()).prop_map(|(grant, retryable)| Op::Fail { grant, retryable }),
        (0usize..40, 0u8..3).prop_map(|(grant, how)| Op::Forge { grant, how }),
        Just(Op::Promote),
        Just(Op::Reload),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random interleavings of leases, heartbeats, clock steps, reports and reloads keep the
    /// invariants: no task is leased to two holders at once, expired leases come back, a commit
    /// never changes once made, and every committed task commits exactly one attempt.
    #[test]
    fn lease_invariants(ops in proptest::collection::vec(op(), 1..120), stages in proptest::collection::vec(1u32..5, 1..3)) {
        let mut s = sched(50, 4);
        s.submit("j".into(), job(&stages), 0).unwrap();
        let workers: Vec<String> = (0..3).map(|i| s.register_worker(&format!("w{i}"), 2, 0).0).collect();
        let mut now = 0i64;
        let mut grants: Vec<(String, Grant)> = Vec::new();
        let mut committed: BTreeMap<TaskId, (u32, String)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Lease { worker, max } => {
                    let (g, _) = s.lease(&workers[worker], max, now).unwrap();
                    for grant in g {
                        // a task runs only once every task of the stages before it (the
                        // dependency chain of `job`) is committed and its outputs promoted
                        let stage = s.state.tasks[&grant.task_id].stage;
                        prop_assert!(s.state.tasks.values().filter(|t| t.stage < stage).all(|t| t.state == TaskState::Committed && t.promoted));
                        // a task is never handed out while another holder's lease is live
                        for (w, other) in &grants {
                            if other.task_id == grant.task_id {
                                prop_assert!(!s.holds(other.task_id, w, other.attempt) || (w == &workers[worker] && other.attempt == grant.attempt));
                            }
                        }
                        grants.push((workers[worker].clone(), grant));
                    }
                }
                Op::Heartbeat { worker } => {
                    let mine: Vec<_> = grants.iter().filter(|(w, _)| w == &workers[worker]).map(|(_, g)| (g.task_id, g.attempt, 0, 0)).collect();
                    s.beat(&workers[worker], &mine, now).unwrap();
                }
                Op::Advance { ms } => {
                    now += ms;
                    let (expired, _) = s.expire(now);
                    for e in expired {
                        let t = &s.state.tasks[&e.task_id];
                        prop_assert!(t.lease.is_none());
                        let job_failed = s.state.jobs["j"].state == JobState::Failed;
                        if e.requeued {
                            // requeued, unless another task of the job failed it in the same sweep
                            prop_assert!(t.state == TaskState::Queued || (job_failed && t.state == TaskState::Cancelled));
                        } else {
                            prop_assert_eq!(t.state, TaskState::Failed);
                            prop_assert!(job_failed);
                        }
                    }
                }
                Op::Succeed { grant } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        let result = format!("{}-{}", g.task_id, g.attempt);
                        // stats that differ by task and attempt, so the stage tallies' sums are checked
                        let stats = TaskStats { docs_in: g.task_id + 1, docs_out: g.attempt.into(), bad_records: 1, ..Default::default() };
                        let (d, _) = s.succeed(&w, g.task_id, g.attempt, result.clone(), stats, now);
                        match committed.get(&g.task_id) {
                            Some((att, _)) if *att == g.attempt => prop_assert_eq!(d, Disposition::Committed),
                            Some(_) => prop_assert_eq!(d, Disposition::Duplicate),
                            None => if d == Disposition::Committed { committed.insert(g.task_id, (g.attempt, result)); },
                        }
                    }
                }
                Op::Fail { grant, retryable } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        s.fail(&w, g.task_id, g.attempt, "boom", retryable, now);
                    }
                }
                Op::Forge { grant, how } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        let (worker, token) = match how {
                            0 => (w.clone(), "0123456789abcdef0123456789abcdef".to_string()),
                            1 => (w.clone(), grants.iter().find(|(_, o)| (o.task_id, o.attempt) != (g.task_id, g.attempt)).map(|(_, o)| o.token.clone()).unwrap_or_default()),
                            _ => (workers.iter().find(|x| **x != w).unwrap().clone(), g.token.clone()),
                        };
                        let before = s.state.tasks.clone();
                        let (d, dirty) = s.report_success(&worker, g.task_id, g.attempt, &token, "forged".into(), TaskStats::default(), now);
                        prop_assert_eq!(d, Disposition::Refused);
                        prop_assert!(dirty.is_empty());
                        let (d, dirty) = s.report_failure(&worker, g.task_id, g.attempt, &token, "forged", false, now);
                        prop_assert_eq!(d, Disposition::Refused);
                        prop_assert!(dirty.is_empty());
                        let beat = Beat { task_id: g.task_id, attempt: g.attempt, token: token.clone(), progress: Live { docs: 7, bytes: 7, ..Default::default() } };
                        let cancel = s.heartbeat(&worker, &[beat], now).unwrap();
                        prop_assert_eq!(cancel, vec![(g.task_id, g.attempt)], "a forged heartbeat renews nothing");
                        prop_assert!(s.join_rendezvous(&worker, g.task_id, g.attempt, &token, "evil:1", b"", now).is_err());
                        prop_assert_eq!(&s.state.tasks, &before, "a forged call never commits, fails or renews a task");
                    }
                }
                Op::Promote => {
                    if let Some(&id) = s.pending_promotions().first() {
                        s.mark_promoted(id);
                        prop_assert!(!s.pending_promotions().contains(&id));
                    }
                    for j in s.jobs_to_finalize() {
                        prop_assert!(s.job_tasks(&j).iter().all(|t| t.state == TaskState::Committed && t.promoted));
                    }
                }
                Op::Reload => {
                    s = Scheduler::from_state(s.state.clone(), s.config);
                }
            }
            // every commit stays as it was made
            for (id, (att, result)) in &committed {
                let t = &s.state.tasks[id];
                prop_assert_eq!(t.state, TaskState::Committed);
                prop_assert_eq!(t.committed_attempt, Some(*att));
                prop_assert_eq!(&t.result, result);
            }
            // the derived indexes agree with the state, and the stage tallies with a rebuild
            let rebuilt = Scheduler::from_state(s.state.clone(), s.config);
            prop_assert_eq!(&rebuilt.stage_counts, &s.stage_counts);
            for stage in 0..stages.len() {
                let mut want = Tally::default();
                for t in s.state.tasks.values().filter(|t| t.stage == stage) {
                    want.total += 1;
                    match t.state {
                        TaskState::Committed => {
                            want.committed += 1;
                            want.promoted += u32::from(t.promoted);
                            want.stats.add(&t.stats);
                        }
                        TaskState::Leased => want.leased += 1,
                        TaskState::Failed => want.failed += 1,
                        _ => {}
                    }
                }
                prop_assert_eq!(s.stage_tally("j", stage), want, "stage {}", stage);
            }
            let unpromoted: BTreeSet<TaskId> = s.state.tasks.values().filter(|t| t.state == TaskState::Committed && !t.promoted).map(|t| t.id).collect();
            prop_assert_eq!(&unpromoted, &s.unpromoted);
            // at most one live holder per task
            for t in s.state.tasks.values() {
                let holders = grants.iter().filter(|(w, g)| g.task_id == t.id && s.holds(t.id, w, g.attempt)).count();
                prop_assert!(holders <= 1);
                prop_assert_eq!(t.state == TaskState::Leased, t.lease.is_some());
            }
        }
        // Expired leases come back: after a long pause every leased task is queued again
        // (or failed for good), and a running job can lease them anew.
        now += 1_000;
        s.expire(now);
        prop_assert!(s.state.tasks.values().all(|t| t.state != TaskState::Leased));
        // (stages wait for their dependencies' promotion, which the shell does after commits)
        for id in s.pending_promotions() {
            s.mark_promoted(id);
        }
        if s.state.jobs["j"].state == JobState::Running {
            let (g, _) = s.lease(&workers[0], 100, now).unwrap();
            prop_assert!(!g.is_empty());
        }
    }
}

fn gang_job(world: u32) -> NewJob {
    NewJob {
        name: "train".into(),
        kind: "train".into(),
        spec: String::new(),
        base_dir: String::new(),
        output: String::new(),
        stages: vec![StageDef::gang("ranks")],
        tasks: (0..world)
            .map(|r| NewTask {
                stage: 0,
                index: r,
                kind: "train.rank".into(),
                payload: String::new(),
                shard: format!("rank {r}"),
            })
            .collect(),
    }
}

#[test]
fn gang_tasks_go_only_to_workers_that_name_their_kind() {
    let mut s = sched(1000, 3);
    s.submit("j".into(), gang_job(2), 0).unwrap();
    let (w, _) = s.register_worker("data", 4, 0);
    assert!(s.lease(&w, 4, 0).unwrap().0.is_empty(), "a data worker never gets a training rank");
    assert!(s.lease_kinds(&w, 4, &["corpus.shard".into()], 0).unwrap().0.is_empty());
    let (g, _) = s.lease_kinds(&w, 4, &["train.rank".into()], 0).unwrap();
    assert_eq!(g.len(), 2);
}

#[test]
fn named_only_tasks_go_only_to_workers_that_name_their_kind() {
    let mut s = sched(1000, 3);
    let mut job = gang_job(3);
    job.stages = vec![StageDef::named_only("items")];
    for t in &mut job.tasks {
        t.kind = "eval.items".into();
    }
    s.submit("j".into(), job, 0).unwrap();
    let (w, _) = s.register_worker("data", 4, 0);
    assert!(s.lease(&w, 4, 0).unwrap().0.is_empty(), "a data worker never gets a benchmark shard");
    let (g, _) = s.lease_kinds(&w, 2, &["train.rank".into(), "eval.items".into()], 0).unwrap();
    assert_eq!(g.len(), 2, "not a gang: leased one by one, up to the slots asked for");
}

#[test]
fn rendezvous_is_ready_when_every_rank_joined_its_current_attempt() {
    let mut s = sched(1000, 3);
    s.submit("j".into(), gang_job(2), 0).unwrap();
    let (a, _) = s.register_worker("a", 1, 0);
    let (b, _) = s.register_worker("b", 1, 0);
    let kinds = ["train.rank".to_string()];
    let r0 = s.lease_kinds(&a, 1, &kinds, 0).unwrap().0.remove(0);
    let v = s.join(&a, r0.task_id, r0.attempt, "10.0.0.1:5000", b"id", 1).unwrap();
    assert!(!v.ready && v.joined == 1 && v.world == 2 && v.rank == 0 && v.master_addr.is_empty());
    let r1 = s.lease_kinds(&b, 1, &kinds, 2).unwrap().0.remove(0);
    assert_eq!(s.join(&a, r1.task_id, r1.attempt, "x", b"", 3), Err(SchedulerError::LeaseLost(r1.task_id, 1)));
    let v = s.join(&b, r1.task_id, r1.attempt, "10.0.0.2:5000", b"", 3).unwrap();
    assert!(v.ready, "{v:?}");
    assert_eq!((v.rank, v.master_addr.as_str(), v.nccl_id.as_slice()), (1, "10.0.0.1:5000", &b"id"[..]));
    let g1 = v.generation;
    // every rank of the generation gets one collective secret, which is not a lease token
    let secret1 = v.secret.clone();
    assert_eq!(secret1.len(), 64);
    assert_eq!(s.join(&a, r0.task_id, r0.attempt, "10.0.0.1:5000", b"id", 3).unwrap().secret, secret1);
    assert!(secret1 != r0.token && secret1 != r1.token);

    // Rank 1 fails: rank 0 is aborted (not charged), both are requeued, rank 0's worker is told
    // to stop, and a stale join is refused.
    let (d, _) = s.fail(&b, r1.task_id, r1.attempt, "CUDA error", true, 4);
    assert_eq!(d, Disposition::FailureRecorded { job_failed: false });
    assert_eq!(s.beat(&a, &[(r0.task_id, r0.attempt, 0, 0)], 5).unwrap(), vec![(r0.task_id, r0.attempt)]);
    assert!(s.join(&a, r0.task_id, r0.attempt, "a", b"", 5).is_err());
    let t0 = &s.state.tasks[&r0.task_id];
    assert_eq!((t0.state, t0.attempt_log[0].outcome.as_str(), charged_attempts(t0)), (TaskState::Queued, "aborted", 0));

    // The gang meets again with new attempts and a new generation.
    let g = s.lease_kinds(&a, 2, &kinds, 6).unwrap().0;
    assert_eq!(g.len(), 2);
    let mut v = RendezvousView::default();
    for x in &g {
        v = s.join(&a, x.task_id, x.attempt, &format!("h:{}", x.task_id), b"", 7).unwrap();
    }
    assert!(v.ready && v.generation > g1);
    assert!(v.secret.len() == 64 && v.secret != secret1, "a new generation, a new secret");
}

#[test]
fn a_gang_rank_that_keeps_failing_fails_the_job_and_its_peers_are_not_charged() {
    let mut s = sched(1000, 3);
    s.submit("j".into(), gang_job(3), 0).unwrap();
    let (w, _) = s.register_worker("w", 3, 0);
    let kinds = ["train.rank".to_string()];
    for round in 0..3 {
        let g = s.lease_kinds(&w, 3, &kinds, round).unwrap().0;
        assert_eq!(g.len(), 3, "round {round}: the whole gang is queued again");
        let bad = g.iter().find(|x| s.state.tasks[&x.task_id].index == 2).unwrap();
        s.fail(&w, bad.task_id, bad.attempt, "boom", true, round);
    }
    assert_eq!(s.state.jobs["j"].state, JobState::Failed);
    assert!(s.state.jobs["j"].error.contains("after 3 attempts"), "{}", s.state.jobs["j"].error);
    for t in s.state.tasks.values().filter(|t| t.index != 2) {
        let outcomes: Vec<&str> = t.attempt_log.iter().map(|r| r.outcome.as_str()).collect();
        assert_eq!(outcomes, ["aborted", "aborted", "cancelled"], "rank {} was only aborted, then cancelled", t.index);
    }
}

#[test]
fn an_expired_rank_restarts_its_gang_and_finished_ranks_count_as_present() {
    let mut s = sched(100, 3);
    s.submit("j".into(), gang_job(2), 0).unwrap();
    let (a, _) = s.register_worker("a", 1, 0);
    let (b, _) = s.register_worker("b", 1, 0);
    let kinds = ["train.rank".to_string()];
    let r0 = s.lease_kinds(&a, 1, &kinds, 0).unwrap().0.remove(0);
    let r1 = s.lease_kinds(&b, 1, &kinds, 0).unwrap().0.remove(0);
    // Rank 1 finished; rank 0's worker goes silent.
    s.succeed(&b, r1.task_id, r1.attempt, "{}".into(), TaskStats::default(), 50);
    s.beat(&b, &[], 150).unwrap();
    let (e, _) = s.expire(150);
    assert_eq!(e.len(), 1);
    assert!(e[0].requeued);
    let again = s.lease_kinds(&b, 1, &kinds, 160).unwrap().0.remove(0);
    assert_eq!(again.task_id, r0.task_id);
    let v = s.join(&b, again.task_id, again.attempt, "h:1", b"", 161).unwrap();
    assert!(v.ready && v.finished == 1 && v.joined == 1, "{v:?}");
}

#[derive(Debug, Clone)]
enum GangOp {
    Lease { worker: usize, max: u32, named: bool },
    Heartbeat { worker: usize },
    Advance { ms: i64 },
    Join { grant: usize },
    Succeed { grant: usize },
    Fail { grant: usize, retryable: bool },
}

fn gang_op() -> impl Strategy<Value = GangOp> {
    prop_oneof![
        (0usize..3, 1u32..4, any::<bool>()).prop_map(|(worker, max, named)| GangOp::Lease { worker, max, named }),
        (0usize..3).prop_map(|worker| GangOp::Heartbeat { worker }),
        (1i64..80).prop_map(|ms| GangOp::Advance { ms }),
        (0usize..40).prop_map(|grant| GangOp::Join { grant }),
        (0usize..40).prop_map(|grant| GangOp::Succeed { grant }),
        (0usize..40, any::<bool>()).prop_map(|(grant, retryable)| GangOp::Fail { grant, retryable }),
    ]
}

/// The live (task, attempt) leases of the job.
fn live(s: &Scheduler) -> Vec<(TaskId, u32)> {
    s.state.tasks.values().filter_map(|t| t.lease.map(|l| (t.id, l.attempt))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Gang stages under random interleavings: workers that do not name the kind never get a
    /// rank; when a rank fails or loses its lease, no other rank keeps the lease it held
    /// (the whole gang restarts); aborted attempts are never charged, so no task is charged more
    /// than `max_attempts` and the job fails only through a charged failure; a ready rendezvous
    /// means every rank is running or finished.
    #[test]
    fn gang_invariants(ops in proptest::collection::vec(gang_op(), 1..150), world in 1u32..5) {
        let max_attempts = 3;
        let mut s = sched(50, max_attempts);
        s.submit("j".into(), gang_job(world), 0).unwrap();
        let workers: Vec<String> = (0..3).map(|i| s.register_worker(&format!("w{i}"), 2, 0).0).collect();
        let kinds = ["train.rank".to_string()];
        let mut now = 0i64;
        let mut grants: Vec<(String, Grant)> = Vec::new();
        for op in ops {
            let before = live(&s);
            let mut restarted = None;
            match op {
                GangOp::Lease { worker, max, named } => {
                    let k: &[String] = if named { &kinds } else { &[] };
                    let (g, _) = s.lease_kinds(&workers[worker], max, k, now).unwrap();
                    prop_assert!(named || g.is_empty(), "a worker that did not name train.rank got {g:?}");
                    grants.extend(g.into_iter().map(|g| (workers[worker].clone(), g)));
                }
                GangOp::Heartbeat { worker } => {
                    let mine: Vec<_> = grants.iter().filter(|(w, _)| w == &workers[worker]).map(|(_, g)| (g.task_id, g.attempt, 0, 0)).collect();
                    s.beat(&workers[worker], &mine, now).unwrap();
                }
                GangOp::Advance { ms } => {
                    now += ms;
                    let (expired, _) = s.expire(now);
                    if let Some(e) = expired.first() {
                        restarted = Some(e.task_id);
                    }
                }
                GangOp::Join { grant } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        if let Ok(v) = s.join(&w, g.task_id, g.attempt, "h:1", b"", now) {
                            prop_assert_eq!(v.world, world);
                            if v.ready {
                                prop_assert!(s.state.tasks.values().all(|t| matches!(t.state, TaskState::Leased | TaskState::Committed)));
                            }
                        } else {
                            prop_assert!(!s.holds(g.task_id, &w, g.attempt));
                        }
                    }
                }
                GangOp::Succeed { grant } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        s.succeed(&w, g.task_id, g.attempt, "{}".into(), TaskStats::default(), now);
                    }
                }
                GangOp::Fail { grant, retryable } => {
                    if let Some((w, g)) = grants.get(grant).cloned() {
                        let (d, _) = s.fail(&w, g.task_id, g.attempt, "boom", retryable, now);
                        if matches!(d, Disposition::FailureRecorded { .. }) {
                            restarted = Some(g.task_id);
                        }
                    }
                }
            }
            if let Some(cause) = restarted {
                // every lease that was live before the failure is gone (or is the one just granted)
                for (id, attempt) in before {
                    let t = &s.state.tasks[&id];
                    prop_assert!(t.lease.is_none_or(|l| l.attempt != attempt) || t.state == TaskState::Committed,
                        "task {id} kept attempt {attempt} after task {cause} restarted the gang");
                }
            }
            for t in s.state.tasks.values() {
                // (a committed task is done; its committed attempt may have been an aborted one)
                prop_assert!(t.state == TaskState::Committed || charged_attempts(t) <= max_attempts);
                prop_assert_eq!(t.state == TaskState::Leased, t.lease.is_some());
            }
            let failed = s.state.tasks.values().any(|t| t.state == TaskState::Failed);
            prop_assert_eq!(s.state.jobs["j"].state == JobState::Failed, failed);
        }
    }
}

#[test]
fn outputs_overlap_by_path_segments() {
    assert!(outputs_overlap("/data/out", "/data/out/"));
    assert!(outputs_overlap("/data/out", "/data/out/lang=en"));
    assert!(outputs_overlap("s3://b/run", "s3://b"));
    assert!(outputs_overlap("file:///data/out", "/data/out"));
    assert!(!outputs_overlap("/data/out", "/data/out2"));
    assert!(!outputs_overlap("s3://b/run-1", "s3://b/run-10"));
}

#[test]
fn a_reserved_output_is_refused_until_released_or_its_job_ends() {
    let mut s = sched(100, 3);
    let a = s.reserve_job("/out/a", "0000").unwrap();
    let e = s.reserve_job("/out/a/x", "0001").unwrap_err();
    assert!(matches!(&e, SchedulerError::OutputBusy { holder, .. } if *holder == a), "{e}");
    s.release(&a);
    let b = s.reserve_job("/out/a", "0002").unwrap();
    assert_ne!(a, b, "a released id is not reused");
    let mut j = job(&[1]);
    j.output = "/out/a".into();
    s.submit(b.clone(), j.clone(), 0).unwrap();
    assert!(s.reserve_job("/out", "0003").is_err(), "a running job holds its output");
    assert_eq!(s.submit(b.clone(), j, 0).unwrap_err(), SchedulerError::JobExists(b.clone()));
    s.cancel_job(&b, 1).unwrap();
    s.reserve_job("/out", "0004").unwrap();
}

proptest! {
    /// Overlap is symmetric and reflexive, and a path never overlaps a sibling with a longer name.
    #[test]
    fn overlap_is_symmetric(a in "[ab]{1,3}(/[ab]{1,3}){0,3}", b in "[ab]{1,3}(/[ab]{1,3}){0,3}") {
        let (a, b) = (format!("/{a}"), format!("/{b}"));
        prop_assert_eq!(outputs_overlap(&a, &b), outputs_overlap(&b, &a));
        prop_assert!(outputs_overlap(&a, &a));
        let longer = format!("{}x", a);
        prop_assert!(!outputs_overlap(&a, &longer));
    }
}

#[test]
fn ended_jobs_are_swept_once_after_a_lease_ttl_and_discards_are_recorded() {
    let mut s = sched(100, 3);
    s.submit("ok".into(), job(&[1]), 0).unwrap();
    s.submit("bad".into(), job(&[2]), 0).unwrap();
    let (w, _) = s.register_worker("w", 4, 0);
    let g = s.lease(&w, 4, 0).unwrap().0;
    let ok = g.iter().find(|x| x.job_id == "ok").unwrap().clone();
    s.succeed(&w, ok.task_id, 1, "r".into(), TaskStats::default(), 1);
    s.mark_promoted(ok.task_id);
    s.finish_job("ok", Ok(()), 2);
    s.cancel_job("bad", 10).unwrap();
    assert!(s.jobs_to_sweep(50, 100).is_empty(), "workers get a lease TTL to stop first");
    assert_eq!(s.jobs_to_sweep(110, 100), vec!["bad".to_string()], "succeeded jobs are finalized, not swept");
    assert!(!s.mark_swept("bad").is_empty());
    assert!(s.jobs_to_sweep(1_000, 100).is_empty());
    // a late report of the cancelled job's attempt: its outputs are owed a discard, durably
    let late = g.iter().find(|x| x.job_id == "bad").unwrap();
    let (d, dirty) = s.succeed(&w, late.task_id, late.attempt, "r".into(), TaskStats::default(), 11);
    assert_eq!(d, Disposition::Stale);
    assert_eq!(dirty.discards, vec![Discard { job_id: "bad".into(), task_id: late.task_id, attempt: late.attempt }]);
    assert_eq!(s.pending_discards().len(), 1);
    let done = s.discard_done(&s.pending_discards()[0].clone());
    assert_eq!(done.discards.len(), 1);
    assert!(s.pending_discards().is_empty());
}

#[test]
fn prune_forgets_only_ended_jobs_that_owe_nothing() {
    let mut s = sched(100, 3);
    for id in ["old-ok", "old-bad", "new-ok", "running", "owes"] {
        s.submit(id.into(), job(&[2, 1]), 0).unwrap();
    }
    let (w, _) = s.register_worker("w", 16, 0);
    // finish "old-ok" at 10, "new-ok" at 900; cancel "old-bad" at 10 (swept) and "owes" at 10
    // with a late report that leaves a discard pending
    let mut late = None;
    for _ in 0..2 {
        let g = s.lease(&w, 16, 5).unwrap().0;
        for x in g {
            match x.job_id.as_str() {
                "old-ok" | "new-ok" => {
                    s.succeed(&w, x.task_id, x.attempt, "r".into(), TaskStats::default(), 6);
                    s.mark_promoted(x.task_id);
                }
                "owes" if late.is_none() => late = Some(x),
                _ => {}
            }
        }
    }
    s.finish_job("old-ok", Ok(()), 10);
    s.finish_job("new-ok", Ok(()), 900);
    s.cancel_job("old-bad", 10).unwrap();
    s.mark_swept("old-bad");
    s.cancel_job("owes", 10).unwrap();
    s.mark_swept("owes");
    let late = late.unwrap();
    s.succeed(&w, late.task_id, late.attempt, "r".into(), TaskStats::default(), 11);
    assert_eq!(s.pending_discards().len(), 1);
    let all_tasks = s.state.tasks.len();

    let (pruned, dirty) = s.prune(1_000, 500);
    assert_eq!(pruned, vec!["old-bad".to_string(), "old-ok".to_string()]);
    assert_eq!(dirty.jobs, pruned);
    for id in &pruned {
        assert!(!s.state.jobs.contains_key(id));
        assert!(s.job_tasks(id).is_empty());
        assert!(s.state.tasks.values().all(|t| &t.job_id != id));
    }
    assert_eq!(s.state.tasks.len(), all_tasks - 6);
    // the rest stays, and the indexes agree with a reload of the pruned state
    for id in ["new-ok", "running", "owes"] {
        assert!(s.state.jobs.contains_key(id), "{id}");
    }
    let reloaded = Scheduler::from_state(s.state.clone(), s.config);
    assert_eq!(reloaded.job_index, s.job_index);
    assert_eq!(reloaded.stage_counts, s.stage_counts);
    assert_eq!(reloaded.queued, s.queued);
    assert_eq!(reloaded.unpromoted, s.unpromoted);
    // a job with a discard pending is kept until the discard is done
    let d = s.pending_discards()[0].clone();
    s.discard_done(&d);
    assert_eq!(s.prune(1_000, 500).0, vec!["owes".to_string()]);
    // a report for a pruned job's task is stale and changes nothing (no token left to check it
    // against, so no discard on its say-so)
    let (disposition, dirty) =
        s.report_success(&w, late.task_id, late.attempt, &late.token, "r".into(), TaskStats::default(), 1_001);
    assert_eq!(disposition, Disposition::Stale);
    assert!(dirty.is_empty());
    assert!(s.prune(1_000, 0).0.contains(&"new-ok".to_string()));
    assert!(s.state.jobs.contains_key("running"), "running jobs are never pruned");
}

#[test]
fn leases_are_re_based_on_load() {
    let mut s = sched(100, 3);
    s.submit("j".into(), job(&[2]), 0).unwrap();
    let (w, _) = s.register_worker("w", 2, 0);
    // persisted under a wall clock far ahead of the one the coordinator restarts with
    let g = s.lease(&w, 2, 1_000_000).unwrap().0;
    let mut s = Scheduler::from_state(s.state.clone(), s.config);
    s.grant_grace(500);
    for x in &g {
        assert_eq!(s.state.tasks[&x.task_id].lease.as_ref().unwrap().expires_ms, 600, "one TTL from load");
    }
    // a worker that never comes back loses its leases one TTL after the restart, not a
    // thousand seconds later
    assert_eq!(s.expire(601).0.len(), 2);
}
