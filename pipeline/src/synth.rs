//! The `synth` stage in a shard: the documents that reach it go to the endpoints together
//! (lehr-synth's [`Generator`]), and what comes back becomes documents for the stages after it.
//!
//! A generated document has the id `<input id>#<template>-<sample>`, the answer as its text,
//! the template's `lang` (else the input's), and a `synth` field with its provenance (source
//! id, template name and hash, model, endpoint, sampling, seed, finish reason, tokens). A sample
//! that failed is counted by reason and listed in rejects.jsonl with the input's id.

use std::sync::atomic::AtomicBool;

use lehr_synth::{Generator, InputDoc, Progress, SynthConfig, SynthError};

use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::read::BadRecord;
use crate::spec::OutputSpec;
use crate::stages::{Ctx, Decision, Stage};
use crate::store;

/// Where a synth stage's cache lives when `cache-path` is not set, under the output.
pub const DEFAULT_CACHE_DIR: &str = "_lehr/synth-cache";

/// Holds the synth stage's place among the stages (the runner calls [`generate`] instead).
pub(crate) struct SynthSlot;

impl Stage for SynthSlot {
    fn name(&self) -> &'static str {
        "synth"
    }
    fn process(&self, _doc: &mut Document, _ctx: &mut Ctx) -> Decision {
        Decision::Keep
    }
}

/// The generator for a stage, with its cache under `cache-path` or the output directory.
pub fn generator(cfg: &SynthConfig, output: &OutputSpec) -> PipelineResult<Generator> {
    let cache = if cfg.cache {
        let url = match &cfg.cache_path {
            Some(p) => p.clone(),
            None => format!("{}/{DEFAULT_CACHE_DIR}", output.path.trim_end_matches('/')),
        };
        let loc = store::resolve(&url)?;
        Some(lehr_synth::Cache::new(loc.store.clone(), loc.prefix.clone(), loc.url.clone()))
    } else {
        None
    };
    Generator::new(cfg, cache).map_err(synth_error)
}

fn synth_error(e: SynthError) -> PipelineError {
    match e {
        SynthError::Cancelled => PipelineError::Other("cancelled".into()),
        SynthError::Config(m) => PipelineError::spec("synth", m),
        other => PipelineError::Other(other.to_string()),
    }
}

/// What came of one input document.
pub struct Expanded {
    pub row: u64,
    pub input: Document,
    /// The stage's `keep-input`: the input goes on too, before its generated documents.
    pub pass_input: bool,
    pub generated: Vec<Document>,
    /// Failed samples: (reason, detail).
    pub failed: Vec<(&'static str, String)>,
}

/// Sends the documents' requests (blocking the calling thread: the runner runs on tokio's
/// blocking pool) and builds the generated documents, in input order.
pub fn generate(
    gen: &Generator,
    docs: Vec<(u64, Document)>,
    cancelled: &AtomicBool,
    progress: &Progress,
) -> PipelineResult<Vec<Expanded>> {
    let inputs: Vec<InputDoc> = docs
        .iter()
        .map(|(_, d)| InputDoc {
            id: d.id.clone(),
            text: d.text.clone(),
            lang: d.lang.clone(),
            source: d.source.clone(),
            extra: d.extra.clone(),
        })
        .collect();
    let fut = gen.run(&inputs, cancelled, progress);
    let samples = match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(fut),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Other(format!("synth: no async runtime: {e}")))?
            .block_on(fut),
    }
    .map_err(synth_error)?;
    let cfg = gen.config();
    let mut out = Vec::with_capacity(docs.len());
    for ((row, doc), samples) in docs.into_iter().zip(samples) {
        let mut generated = Vec::new();
        let mut failed = Vec::new();
        for s in samples {
            let t = &gen.templates()[s.template];
            match &s.result {
                Ok(g) => {
                    let text = g.answer.text.trim();
                    if text.is_empty() {
                        failed.push((
                            "synth_empty",
                            format!("template `{}` sample {}: the endpoint answered with no text", t.name, s.sample),
                        ));
                        continue;
                    }
                    let mut extra = serde_json::Map::new();
                    extra.insert("synth".into(), lehr_synth::provenance(gen, t, &doc.id, &s, &g.answer));
                    generated.push(Document {
                        id: format!("{}#{}-{}", doc.id, t.name, s.sample),
                        text: text.to_string(),
                        source: cfg.source.clone().or_else(|| doc.source.clone()),
                        lang: t.lang.clone().or_else(|| doc.lang.clone()),
                        extra,
                    });
                }
                Err(f) => failed.push((f.reason, format!("template `{}` sample {}: {}", t.name, s.sample, f.detail))),
            }
        }
        out.push(Expanded { row, input: doc, pass_input: cfg.keep_input, generated, failed });
    }
    Ok(out)
}

/// The rejects.jsonl entries of an input's failed samples.
pub fn rejects(file: &str, e: &Expanded) -> Vec<BadRecord> {
    e.failed
        .iter()
        .map(|(reason, detail)| BadRecord {
            file: file.to_string(),
            line: 0,
            line_resolved: true,
            byte_offset: None,
            reason: format!("{reason}: {detail}"),
            stage: Some("synth".into()),
            id: Some(e.input.id.clone()),
        })
        .collect()
}
