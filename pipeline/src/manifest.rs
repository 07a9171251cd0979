//! The job manifest (`manifest.json`) and the reject list (`rejects.jsonl`) of a finished corpus
//! job, built from its committed shard results in task order.
//!
//! The manifest holds only what the inputs and the spec determine (no job id, no times, no
//! worker names), so a job's output directory is identical, byte for byte, however many workers
//! ran it and however often they crashed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::InputFile;
use crate::read::BadRecord;
use crate::runner::{ShardResult, StageCounts};

impl From<StageCounts> for StageSummary {
    /// A stage's counts summed over the job, as the manifest names them.
    fn from(c: StageCounts) -> Self {
        StageSummary {
            // a synth stage may put out more documents than it took in: its drops are counted
            dropped: c.docs_in.saturating_sub(c.docs_out).max(c.dropped.values().sum()),
            name: c.name,
            label: c.label,
            docs_in: c.docs_in,
            kept: c.docs_out,
            dropped_by_rule: c.dropped,
            dropped_bytes_by_rule: c.dropped_bytes,
            would_drop_by_rule: c.would_drop,
            skipped_other_lang: c.skipped_lang,
            counters: c.counters,
        }
    }
}

pub const MANIFEST_NAME: &str = "manifest.json";
pub const REJECTS_NAME: &str = "rejects.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub name: Option<String>,
    pub inputs: Vec<InputFile>,
    pub files: Vec<ManifestFile>,
    pub totals: Totals,
    /// Per stage, in order: `read`, the spec's stages, `write`.
    pub stages: Vec<StageSummary>,
    pub skipped_files: Vec<SkippedFile>,
    /// Problems with files that did not stop reading them (truncated streams).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub docs: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub shards: u64,
    pub input_lines: u64,
    pub blank_lines: u64,
    pub bad_records: u64,
    pub docs_read: u64,
    pub docs_written: u64,
    pub text_bytes_read: u64,
    pub files: u64,
    pub file_bytes: u64,
    pub ids_generated: u64,
    pub ids_coerced: u64,
    pub utf8_repaired: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageSummary {
    pub name: String,
    /// Column label in the attributes files (differs from `name` for per-language stages).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub docs_in: u64,
    pub kept: u64,
    pub dropped: u64,
    pub dropped_by_rule: BTreeMap<String, u64>,
    /// Input text bytes of the dropped documents, by rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped_bytes_by_rule: BTreeMap<String, u64>,
    /// Documents already dropped by an earlier stage that this stage would have dropped too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub would_drop_by_rule: BTreeMap<String, u64>,
    /// Documents passed through because the stage is limited to other languages.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_other_lang: u64,
    /// The stage's own counts (e.g. `pii.email`), when it keeps any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedFile {
    pub file: String,
    pub reason: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub const MANIFEST_FORMAT: &str = "lehr.corpus.manifest/v1";

/// Rewrites range-relative line numbers of split files into file line numbers. `results` must
/// hold every shard of the job (any order).
pub fn resolve_lines(results: &mut [ShardResult]) {
    results.sort_by_key(|r| r.task_index);
    let mut lines_before: BTreeMap<String, u64> = BTreeMap::new();
    for r in results.iter_mut() {
        let before = lines_before.entry(r.shard.file.url.clone()).or_default();
        for bad in r.read.bad.iter_mut().filter(|b| !b.line_resolved) {
            bad.line += *before;
            bad.line_resolved = true;
        }
        *before += r.read.lines;
    }
}

/// Builds the manifest and the reject list from all committed shard results.
pub fn build(
    name: Option<String>,
    inputs: Vec<InputFile>,
    mut results: Vec<ShardResult>,
) -> (Manifest, Vec<BadRecord>) {
    resolve_lines(&mut results);
    let mut t = Totals::default();
    let mut files = Vec::new();
    let mut rejects = Vec::new();
    let mut skipped_files = Vec::new();
    let mut warnings = Vec::new();
    let mut read = StageSummary { name: "read".into(), ..Default::default() };
    let mut stages: Vec<StageCounts> = Vec::new();
    for r in &results {
        t.shards += 1;
        t.input_lines += r.read.lines;
        t.blank_lines += r.read.blank_lines;
        t.bad_records += r.read.bad_records;
        t.docs_read += r.read.docs;
        t.docs_written += r.docs_written;
        t.text_bytes_read += r.read.bytes;
        t.ids_generated += r.read.ids_generated;
        t.ids_coerced += r.read.ids_coerced;
        t.utf8_repaired += r.read.utf8_repaired;
        read.docs_in += r.read.lines - r.read.blank_lines;
        read.kept += r.read.docs;
        read.dropped += r.read.bad_records;
        if r.read.bad_records > 0 {
            *read.dropped_by_rule.entry("bad-record".into()).or_default() += r.read.bad_records;
        }
        if stages.is_empty() {
            stages = r
                .stages
                .iter()
                .map(|s| StageCounts { name: s.name.clone(), label: s.label.clone(), ..Default::default() })
                .collect();
        }
        for (sum, c) in stages.iter_mut().zip(&r.stages) {
            sum.merge(c);
        }
        for f in &r.outputs {
            t.files += 1;
            t.file_bytes += f.bytes;
            files.push(ManifestFile { name: f.name.clone(), docs: f.docs, bytes: f.bytes, sha256: f.sha256.clone() });
        }
        if let Some(reason) = &r.skipped_file {
            // every range of a split file says so: list the file once
            if skipped_files.last().is_none_or(|s: &SkippedFile| s.file != r.shard.file.url) {
                skipped_files.push(SkippedFile { file: r.shard.file.url.clone(), reason: reason.clone() });
            }
        }
        warnings.extend(r.read.warnings.iter().cloned());
        rejects.extend(r.read.bad.iter().cloned());
    }
    let write =
        StageSummary { name: "write".into(), docs_in: t.docs_written, kept: t.docs_written, ..Default::default() };
    let mut all_stages = vec![read];
    all_stages.extend(stages.into_iter().map(StageSummary::from));
    all_stages.push(write);
    files.sort_by(|a, b| a.name.cmp(&b.name));
    (
        Manifest {
            format: MANIFEST_FORMAT.into(),
            name,
            inputs,
            files,
            totals: t,
            stages: all_stages,
            skipped_files,
            warnings,
        },
        rejects,
    )
}

/// The manifest as written to disk (pretty JSON, trailing newline).
pub fn to_bytes(manifest: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    v.push(b'\n');
    v
}

pub fn rejects_to_bytes(rejects: &[BadRecord]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in rejects {
        serde_json::to_writer(&mut v, r).expect("reject serializes");
        v.push(b'\n');
    }
    v
}
