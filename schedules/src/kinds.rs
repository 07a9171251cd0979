//! Every job-kind and task-kind name on the wire, in one place: the CLI submits jobs by these
//! names, the coordinator's job kinds plan tasks under them, and workers dispatch on them.
//! Adding a kind starts here.

/// Job kinds (`SubmitJobRequest.kind`).
pub const CORPUS_JOB: &str = "corpus";
pub const TRAIN_JOB: &str = "train";
/// Benchmark tasks over a checkpoint, as item shards (`lehr_evals::job::EvalJob`).
pub const EVAL_JOB: &str = "eval";
/// Does nothing per task; for tests and the coordinator benchmark.
pub const NOOP_JOB: &str = "noop";

/// A corpus shard: read, run the stages, write the kept documents.
pub const SHARD_TASK_KIND: &str = "corpus.shard";
/// Dedup phase 1: MinHash signatures of a shard.
pub const SIGNATURES_TASK_KIND: &str = "dedup.signatures";
/// Dedup phase 2: one band × partition of the signatures, as duplicate links.
pub const BUCKETS_TASK_KIND: &str = "dedup.buckets";
/// Dedup phase 3: the links as clusters, one file per shard.
pub const CLUSTERS_TASK_KIND: &str = "dedup.clusters";
/// A noop job's task.
pub const NOOP_TASK_KIND: &str = "noop.task";
/// Rows of one benchmark task, scored by a train worker's child `lehr eval shard`.
pub const EVAL_SHARD_TASK_KIND: &str = "eval.items";
/// A training rank (a gang task).
pub const TRAIN_RANK_TASK_KIND: &str = "train.rank";
