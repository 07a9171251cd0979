//! lehr's run specs: stages with per-source token budgets, sequence length, global batch and
//! learning-rate phases ([`spec`]); their resolved plan with steps, epochs and warnings
//! ([`plan`]); the learning rate of any step ([`lr`]); the deterministic, resumable,
//! rank-aware order of training sequences in a stage ([`mixer`]); and the YuLan-Mini recipe
//! importer ([`yulan`]). Pure: no I/O except reading recipe files in the importer.

pub mod job;
pub mod kinds;
pub mod lr;
pub mod mixer;
pub mod plan;
pub mod presets;
pub mod rank;
pub mod spec;
pub mod yulan;

pub use lr::{DecayShape, WsdConfig};
pub use plan::{Plan, SourcePlan, StagePlan};
pub use spec::{RunSpec, SpecError};
