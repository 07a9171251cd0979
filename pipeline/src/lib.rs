//! lehr's data library: pipeline specs, documents, readers and writers over object storage,
//! document stages, shard tasks and job manifests. No tch here, and polars only behind the
//! `parquet` feature.

pub mod attributes;
pub mod dedup;
pub mod document;
pub mod error;
pub mod lid_model;
pub mod manifest;
pub mod mix;
pub mod plan;
pub mod read;
#[cfg(feature = "parquet")]
pub mod report;
pub mod runner;
pub mod spec;
pub mod spool;
pub mod stages;
pub mod starter;
pub mod store;
pub mod synth;
pub mod task;
pub mod text;
pub mod tokens;
pub mod write;

pub use document::Document;
pub use error::{PipelineError, PipelineResult};
pub use spec::PipelineSpec;
