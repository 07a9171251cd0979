//! Per-document scores and decisions, kept apart from the documents (dolma's "attributes").
//!
//! One `attributes/part-NNNNN.parquet` per shard, one row per document read (kept or dropped),
//! in input order. Columns:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `id` | str | document id |
//! | `file` | str | input file |
//! | `row` | u64 | position of the document in its shard (0-based) |
//! | `lang` | str? | language after the stages ran |
//! | `bytes` | u64 | UTF-8 bytes of the input text |
//! | `kept` | bool | written to the output |
//! | `dropped_by` | str? | label of the stage that dropped it |
//! | `rule` | str? | the rule that dropped it (`gopher_short_doc`, ...) |
//! | `preview` | str? | first 300 characters of a dropped document's text, as the dropping stage saw it |
//! | `<stage>.rule` | str? | the rule this stage fired, also after an earlier drop |
//! | `<stage>.<score>` | f64? | the stage's scores; null where the stage did not look |
//!
//! With these a user can change a threshold and re-filter (`kept` = no rule fires under the new
//! thresholds), or ask why a document went, without running the stages again.

use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::stages::Ctx;

pub const PREVIEW_CHARS: usize = 300;

pub struct Attributes {
    input_file: String,
    id: Vec<String>,
    file: Vec<String>,
    row: Vec<u64>,
    lang: Vec<Option<String>>,
    bytes: Vec<u64>,
    kept: Vec<bool>,
    dropped_by: Vec<Option<String>>,
    rule: Vec<Option<String>>,
    preview: Vec<Option<String>>,
    /// per stage: its label, the rule column and one column per score
    stages: Vec<StageColumns>,
}

struct StageColumns {
    // Read by the parquet writer only.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    label: String,
    rule: Vec<Option<&'static str>>,
    scores: Vec<(String, Vec<Option<f64>>)>,
}

impl Attributes {
    pub fn new(input_file: &str, labels: &[String], score_names: &[Vec<String>]) -> Attributes {
        Attributes {
            input_file: input_file.to_string(),
            id: Vec::new(),
            file: Vec::new(),
            row: Vec::new(),
            lang: Vec::new(),
            bytes: Vec::new(),
            kept: Vec::new(),
            dropped_by: Vec::new(),
            rule: Vec::new(),
            preview: Vec::new(),
            stages: labels
                .iter()
                .zip(score_names)
                .map(|(l, names)| StageColumns {
                    label: l.clone(),
                    rule: Vec::new(),
                    scores: names.iter().map(|n| (n.clone(), Vec::new())).collect(),
                })
                .collect(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.id.len() as u64
    }

    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        doc: &Document,
        row: u64,
        input_bytes: u64,
        dropped: Option<(&str, &'static str)>,
        preview: Option<String>,
        fired: &[Option<&'static str>],
        applied: &[bool],
        ctxs: &[Ctx],
    ) {
        self.id.push(doc.id.clone());
        self.file.push(self.input_file.clone());
        self.row.push(row);
        self.lang.push(doc.lang.clone());
        self.bytes.push(input_bytes);
        self.kept.push(dropped.is_none());
        self.dropped_by.push(dropped.map(|d| d.0.to_string()));
        self.rule.push(dropped.map(|d| d.1.to_string()));
        self.preview.push(preview);
        for (i, st) in self.stages.iter_mut().enumerate() {
            st.rule.push(fired[i]);
            for (j, (_, col)) in st.scores.iter_mut().enumerate() {
                col.push(if applied[i] { ctxs[i].scores.get(j).copied().flatten() } else { None });
            }
        }
    }

    #[cfg(feature = "parquet")]
    pub fn finish(self) -> PipelineResult<Vec<u8>> {
        use polars::prelude::*;
        let err = |e: PolarsError| PipelineError::Parquet { location: "attributes".into(), message: e.to_string() };
        let height = self.id.len();
        let mut cols = vec![
            Column::new("id".into(), self.id),
            Column::new("file".into(), self.file),
            Column::new("row".into(), self.row),
            Column::new("lang".into(), self.lang),
            Column::new("bytes".into(), self.bytes),
            Column::new("kept".into(), self.kept),
            Column::new("dropped_by".into(), self.dropped_by),
            Column::new("rule".into(), self.rule),
            Column::new("preview".into(), self.preview),
        ];
        for st in self.stages {
            cols.push(Column::new(format!("{}.rule", st.label).into(), st.rule));
            for (name, values) in st.scores {
                cols.push(Column::new(format!("{}.{name}", st.label).into(), values));
            }
        }
        let mut df = DataFrame::new(height, cols).map_err(err)?;
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf).with_compression(ParquetCompression::Zstd(None)).finish(&mut df).map_err(err)?;
        Ok(buf)
    }

    #[cfg(not(feature = "parquet"))]
    pub fn finish(self) -> PipelineResult<Vec<u8>> {
        Err(PipelineError::Other("this build has no parquet support (feature `parquet`)".into()))
    }
}
