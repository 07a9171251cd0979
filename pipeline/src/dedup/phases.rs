//! The task runners of dedup phases 1–3 (phase 4 is the ordinary shard task with
//! [`super::DedupFilter`]). Each writes under its attempt's prefix and reports the files with
//! their final names; the coordinator promotes one attempt per task, so the next phase reads
//! exactly one copy of everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::records::{decode_into, encode, ClusterRecord, EdgeRecord, SigRecord};
use super::{DedupMethod, DedupSpec, Hasher, KeepRule};
use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::plan::Shard;
use crate::read::ReadStats;
use crate::runner::{
    put_attempt_files, run_stages, EncodedFile, KeptSink, RunOptions, ShardInput, StageCounts, TaskProgress,
};
use crate::spec::{InputSpec, OutputSpec};
use crate::spool::Body;
use crate::stages::StageSpec;
use crate::store;
use crate::write::OutputFile;

pub use lehr_schedules::kinds::{BUCKETS_TASK_KIND, CLUSTERS_TASK_KIND, SIGNATURES_TASK_KIND};

/// Phase 1: one input shard → band-hash files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignatureTask {
    pub task_index: u32,
    pub shard: Shard,
    pub input: InputSpec,
    pub stages: Vec<StageSpec>,
    pub output: OutputSpec,
    pub dedup: DedupSpec,
    pub partitions: u32,
    /// Where the job's intermediate files live, relative to the output directory.
    pub work: String,
}

/// Phase 2: one (band, partition) of every shard → the links between its documents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BucketTask {
    pub task_index: u32,
    pub band: u32,
    pub partition: u32,
    pub shards: u32,
    pub output_path: String,
    pub work: String,
}

/// Phase 3: every link → clusters, survivors, one cluster file per shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterTask {
    pub task_index: u32,
    pub bands: u32,
    pub partitions: u32,
    pub shards: u32,
    pub keep: KeepRule,
    pub method: DedupMethod,
    pub output_path: String,
    pub work: String,
}

/// What a phase 1–3 task reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseResult {
    pub task_index: u32,
    pub outputs: Vec<OutputFile>,
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_in: u64,
    pub bad_records: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// Unset in phase 1: the filter phase reports the shard's read counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadStats>,
    /// Phase 1: the synth stage's counts, if any. The filter phase repeats the other stages'
    /// counts, but its synth requests are answered by the request cache, so the spend is here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageCounts>,
    /// Phase 3: the job's dedup report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DedupReport>,
}

/// `dedup.json`: what the clustering found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DedupReport {
    pub method: String,
    pub keep: String,
    /// Links read (pairs sharing a band, stars within each bucket).
    pub links: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Documents in those clusters.
    pub docs_in_clusters: u64,
    /// Documents that are not their cluster's survivor (the filter phase drops them).
    pub duplicates: u64,
    /// Cluster size → number of clusters.
    pub size_histogram: BTreeMap<u32, u64>,
    /// The largest clusters: id (`shard:row` of the first document) and size.
    pub largest: Vec<(String, u32)>,
}

/// The bucket partition of a band hash: its top bits scaled to `partitions`.
pub fn bucket_partition(hash: u128, partitions: u32) -> u32 {
    (((hash >> 64) as u64 as u128 * partitions as u128) >> 64) as u32
}

fn sig_file(work: &str, band: u32, partition: u32, shard: u32) -> String {
    format!("{work}/sig/b{band:03}/p{partition:04}/s{shard:05}.bin")
}
fn edge_file(work: &str, band: u32, partition: u32) -> String {
    format!("{work}/edges/b{band:03}-p{partition:04}.bin")
}
/// A shard's cluster file, relative to the output directory.
pub fn cluster_file(work: &str, shard: u32) -> String {
    format!("{work}/clusters/s{shard:05}.bin")
}

/// The prefix (relative to the output directory) where an attempt of a task of `kind` writes:
/// shard tasks use [`crate::runner::attempt_prefix`]; the dedup phases add their phase name, as
/// their task indices start at 0 in every stage.
pub fn task_attempt_prefix(kind: &str, job_id: &str, task_index: u32, attempt: u32) -> String {
    let phase = match kind {
        SIGNATURES_TASK_KIND => "sig",
        BUCKETS_TASK_KIND => "bucket",
        CLUSTERS_TASK_KIND => "cluster",
        _ => return crate::runner::attempt_prefix(job_id, task_index, attempt),
    };
    format!("_lehr/attempts/{job_id}/{phase}-t{task_index:05}-a{attempt}")
}

/// What a missing intermediate file means.
const MISSING: &str = "an earlier dedup phase's output; was the output directory changed during the job?";

/// Band records of one shard, grouped per (band, partition).
struct SigSink {
    hasher: Hasher,
    shard: u32,
    bands: u32,
    partitions: u32,
    files: Vec<Vec<SigRecord>>,
    hashed: u64,
    unhashable: u64,
}

impl KeptSink for SigSink {
    fn keep(&mut self, row: u64, doc: Document) -> PipelineResult<()> {
        let row = u32::try_from(row).map_err(|_| {
            PipelineError::Other("a shard holds more than 2^32 documents; lower input.split-size".into())
        })?;
        let Some(hashes) = self.hasher.band_hashes(&doc.text, doc.lang.as_deref()) else {
            self.unhashable += 1;
            return Ok(());
        };
        self.hashed += 1;
        let key = (self.shard as u64) << 32 | row as u64;
        let len = u32::try_from(doc.text.len()).unwrap_or(u32::MAX);
        for (band, hash) in hashes.into_iter().enumerate() {
            let p = bucket_partition(hash, self.partitions);
            self.files[band * self.partitions as usize + p as usize].push(SigRecord { hash, key, len });
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.files.iter_mut().for_each(Vec::clear);
        self.hashed = 0;
        self.unhashable = 0;
    }
}

/// Phase 1.
pub async fn run_signatures(
    task: SignatureTask,
    job_id: &str,
    attempt: u32,
    progress: Arc<TaskProgress>,
    options: RunOptions,
) -> PipelineResult<PhaseResult> {
    let t = task.clone();
    let (result, files) = tokio::task::spawn_blocking(move || -> PipelineResult<_> {
        let output = OutputSpec { attributes: false, ..t.output.clone() };
        let shard_task = ShardInput {
            task_index: t.task_index,
            shard: &t.shard,
            input: &t.input,
            stages: &t.stages,
            output: &output,
        };
        let bands = t.dedup.band_count();
        let mut sink = SigSink {
            hasher: Hasher::new(&t.dedup),
            shard: t.task_index,
            bands,
            partitions: t.partitions,
            files: vec![Vec::new(); (bands * t.partitions) as usize],
            hashed: 0,
            unhashable: 0,
        };
        let (shard_result, _) = run_stages(shard_task, &progress, &options, None, &mut sink)?;
        let mut files = Vec::with_capacity(sink.files.len());
        for (i, mut recs) in std::mem::take(&mut sink.files).into_iter().enumerate() {
            recs.sort_unstable();
            let (band, partition) = (i as u32 / sink.partitions, i as u32 % sink.partitions);
            let name = sig_file(&t.work, band, partition, t.task_index);
            files.push(EncodedFile { name, docs: recs.len() as u64, body: Body::from_vec(encode(&recs)) });
        }
        debug_assert_eq!(files.len() as u32, sink.bands * sink.partitions);
        let mut counters = BTreeMap::new();
        counters.insert("hashed".to_string(), sink.hashed);
        counters.insert("too_short".to_string(), sink.unhashable);
        let r = PhaseResult {
            task_index: t.task_index,
            outputs: Vec::new(),
            docs_in: shard_result.read.docs,
            docs_out: sink.hashed,
            bytes_in: shard_result.read.bytes,
            bad_records: shard_result.read.bad_records,
            counters,
            read: None,
            stages: shard_result.stages.into_iter().filter(|s| s.name == "synth").collect(),
            report: None,
        };
        Ok((r, files))
    })
    .await
    .map_err(|e| PipelineError::Other(format!("signature task panicked: {e}")))??;
    let out = store::resolve(&task.output.path)?;
    let prefix = task_attempt_prefix(SIGNATURES_TASK_KIND, job_id, task.task_index, attempt);
    let outputs = put_attempt_files(&out, &prefix, files).await?;
    Ok(PhaseResult { outputs, ..result })
}

/// The links of one sorted run of records sharing a band hash: a star from the smallest key.
fn link_runs(recs: &[SigRecord], edges: &mut Vec<EdgeRecord>) -> u64 {
    let mut buckets = 0;
    let mut i = 0;
    while i < recs.len() {
        let mut j = i + 1;
        while j < recs.len() && recs[j].hash == recs[i].hash {
            j += 1;
        }
        if j - i > 1 {
            buckets += 1;
            let first = recs[i]; // sorted by (hash, key): the smallest key
            for r in &recs[i + 1..j] {
                if r.key != first.key {
                    edges.push(EdgeRecord { a: first.key, a_len: first.len, b: r.key, b_len: r.len });
                }
            }
        }
        i = j;
    }
    buckets
}

/// Phase 2.
pub async fn run_buckets(task: BucketTask, job_id: &str, attempt: u32) -> PipelineResult<PhaseResult> {
    let out = store::resolve(&task.output_path)?;
    let mut recs: Vec<SigRecord> = Vec::new();
    for s in 0..task.shards {
        let rel = sig_file(&task.work, task.band, task.partition, s);
        let bytes = out.get_required(&rel, MISSING).await?;
        decode_into(&bytes, &out.child_url(&rel), &mut recs)?;
    }
    let docs = recs.len() as u64;
    let (edges, buckets) = tokio::task::spawn_blocking(move || {
        recs.sort_unstable();
        let mut edges = Vec::new();
        let buckets = link_runs(&recs, &mut edges);
        edges.sort_unstable();
        edges.dedup();
        (edges, buckets)
    })
    .await
    .map_err(|e| PipelineError::Other(format!("bucket task panicked: {e}")))?;
    let mut counters = BTreeMap::new();
    counters.insert("shared_buckets".to_string(), buckets);
    counters.insert("links".to_string(), edges.len() as u64);
    counters.insert("records".to_string(), docs);
    let name = edge_file(&task.work, task.band, task.partition);
    let prefix = task_attempt_prefix(BUCKETS_TASK_KIND, job_id, task.task_index, attempt);
    let file = EncodedFile { name, docs: edges.len() as u64, body: Body::from_vec(encode(&edges)) };
    let outputs = put_attempt_files(&out, &prefix, vec![file]).await?;
    Ok(PhaseResult {
        task_index: task.task_index,
        outputs,
        docs_in: docs,
        docs_out: docs,
        counters,
        ..Default::default()
    })
}

/// Union-find over dense node indices, with path halving and union by size.
#[derive(Default)]
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
    }
}

/// Union-find over the documents that have links, fed one edge file at a time so that only
/// the nodes stay in memory (about 50 bytes per linked document), never all the links.
#[derive(Default)]
pub struct ClusterBuilder {
    index: FxHashMap<u64, u32>,
    keys: Vec<u64>,
    lens: Vec<u32>,
    uf: UnionFind,
    links: u64,
}

impl ClusterBuilder {
    fn node(&mut self, key: u64, len: u32) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.index.insert(key, i);
        self.keys.push(key);
        self.lens.push(len);
        self.uf.parent.push(i);
        self.uf.size.push(1);
        i
    }

    pub fn add(&mut self, edges: &[EdgeRecord]) {
        for e in edges {
            let a = self.node(e.a, e.a_len);
            let b = self.node(e.b, e.b_len);
            self.uf.union(a, b);
        }
        self.links += edges.len() as u64;
    }

    /// Per shard, its documents' (row, cluster, size, survivor) sorted by row, and the report.
    /// The same links in any order and any batching give the same result.
    pub fn finish(self, shards: u32, keep: KeepRule) -> (Vec<Vec<ClusterRecord>>, DedupReport) {
        let ClusterBuilder { index, keys, lens, mut uf, links } = self;
        drop(index);
        let n = keys.len();
        // Per root: the cluster id (smallest key), its size and the survivor.
        let mut best: FxHashMap<u32, (u64, u32, u64, u32)> = FxHashMap::default(); // root → (min key, size, survivor key, survivor len)
        let roots: Vec<u32> = (0..n as u32).map(|i| uf.find(i)).collect();
        for (i, &root) in roots.iter().enumerate() {
            let (key, len) = (keys[i], lens[i]);
            let e = best.entry(root).or_insert((key, 0, key, len));
            e.0 = e.0.min(key);
            e.1 += 1;
            let better = match keep {
                KeepRule::First => key < e.2,
                KeepRule::Longest => len > e.3 || (len == e.3 && key < e.2),
            };
            if better {
                e.2 = key;
                e.3 = len;
            }
        }
        let mut per_shard: Vec<Vec<ClusterRecord>> = vec![Vec::new(); shards as usize];
        for (i, &root) in roots.iter().enumerate() {
            let (cluster, size, survivor, _) = best[&root];
            let key = keys[i];
            let shard = (key >> 32) as usize;
            if let Some(v) = per_shard.get_mut(shard) {
                v.push(ClusterRecord { row: key as u32, cluster, size, survivor: key == survivor });
            }
        }
        per_shard.iter_mut().for_each(|v| v.sort_unstable());
        let mut report = DedupReport {
            keep: match keep {
                KeepRule::First => "first".into(),
                KeepRule::Longest => "longest".into(),
            },
            links,
            clusters: best.len() as u64,
            docs_in_clusters: n as u64,
            duplicates: (n - best.len()) as u64,
            ..Default::default()
        };
        let mut sizes: Vec<(u32, u64)> = best.values().map(|&(id, size, _, _)| (size, id)).collect();
        for &(size, _) in &sizes {
            *report.size_histogram.entry(size).or_default() += 1;
        }
        sizes.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        report.largest = sizes.iter().take(20).map(|&(size, id)| (super::filter::cluster_name(id), size)).collect();
        (per_shard, report)
    }
}

/// Clusters from links in one batch (see [`ClusterBuilder`]).
pub fn cluster_links(edges: &[EdgeRecord], shards: u32, keep: KeepRule) -> (Vec<Vec<ClusterRecord>>, DedupReport) {
    let mut b = ClusterBuilder::default();
    b.add(edges);
    b.finish(shards, keep)
}

/// Phase 3.
pub async fn run_clusters(task: ClusterTask, job_id: &str, attempt: u32) -> PipelineResult<PhaseResult> {
    let out = store::resolve(&task.output_path)?;
    let mut builder = ClusterBuilder::default();
    let mut edges: Vec<EdgeRecord> = Vec::new();
    for band in 0..task.bands {
        for p in 0..task.partitions {
            let rel = edge_file(&task.work, band, p);
            let bytes = out.get_required(&rel, MISSING).await?;
            edges.clear();
            decode_into(&bytes, &out.child_url(&rel), &mut edges)?;
            builder.add(&edges);
        }
    }
    drop(edges);
    let (t, m) = (task.clone(), task.method.as_str().to_string());
    let (files, report) = tokio::task::spawn_blocking(move || {
        let (per_shard, mut report) = builder.finish(t.shards, t.keep);
        report.method = m;
        let files: Vec<EncodedFile> = per_shard
            .iter()
            .enumerate()
            .map(|(s, recs)| EncodedFile {
                name: cluster_file(&t.work, s as u32),
                docs: recs.len() as u64,
                body: Body::from_vec(encode(recs)),
            })
            .collect();
        (files, report)
    })
    .await
    .map_err(|e| PipelineError::Other(format!("cluster task panicked: {e}")))?;
    let prefix = task_attempt_prefix(CLUSTERS_TASK_KIND, job_id, task.task_index, attempt);
    let outputs = put_attempt_files(&out, &prefix, files).await?;
    let mut counters = BTreeMap::new();
    counters.insert("clusters".to_string(), report.clusters);
    counters.insert("duplicates".to_string(), report.duplicates);
    Ok(PhaseResult { task_index: task.task_index, outputs, counters, report: Some(report), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: u64, b: u64) -> EdgeRecord {
        EdgeRecord { a, a_len: (a % 7) as u32, b, b_len: (b % 7) as u32 }
    }

    #[test]
    fn clusters_do_not_depend_on_link_order() {
        let k = |s: u64, r: u64| s << 32 | r;
        let mut edges = vec![e(k(0, 1), k(1, 2)), e(k(1, 2), k(2, 0)), e(k(0, 5), k(0, 6)), e(k(2, 3), k(2, 4))];
        let (a, ra) = cluster_links(&edges, 3, KeepRule::First);
        edges.reverse();
        let (b, rb) = cluster_links(&edges, 3, KeepRule::First);
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        let mut batched = ClusterBuilder::default();
        batched.add(&edges[..1]);
        batched.add(&edges[1..]);
        assert_eq!(batched.finish(3, KeepRule::First), (b.clone(), rb.clone()));
        assert_eq!(ra.clusters, 3);
        assert_eq!(ra.docs_in_clusters, 7);
        assert_eq!(ra.duplicates, 4);
        // Shard 0 row 1 is the first of {0:1, 1:2, 2:0}: it survives, the others do not.
        assert!(a[0].iter().any(|c| c.row == 1 && c.survivor && c.size == 3));
        assert!(a[2].iter().any(|c| c.row == 0 && !c.survivor && c.cluster == k(0, 1)));
        let (l, _) = cluster_links(&edges, 3, KeepRule::Longest);
        // Longest of {0:1 (len 1), 1:2 (len 6), 2:0 (len 1)}: 1:2.
        assert!(l[1].iter().any(|c| c.row == 2 && c.survivor));
    }

    #[test]
    fn partitions_cover_the_hash_range() {
        assert_eq!(bucket_partition(0, 7), 0);
        assert_eq!(bucket_partition(u128::MAX, 7), 6);
        assert_eq!(bucket_partition(u128::MAX, 1), 0);
    }
}
