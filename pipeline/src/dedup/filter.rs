//! Phase 4's stage: drops the documents of a shard that lost in their cluster and annotates the
//! survivors with the cluster's id and size. It runs after the spec's stages, in the ordinary
//! shard task, so outputs, attributes and the manifest work as without dedup.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::ClusterRecord;
use super::DedupMethod;
use crate::document::Document;
use crate::stages::{Ctx, Decision, Stage};

/// The stage's name in counts, reports and attribute columns.
pub const DEDUP_STAGE_NAME: &str = "dedup";

/// What a filter-phase shard task needs to apply the clusters: set by the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DedupApply {
    pub method: DedupMethod,
    /// The shard's cluster file, relative to the output directory.
    pub clusters: String,
    pub annotate: bool,
}

/// The cluster membership of one shard's documents, by row.
pub struct DedupFilter {
    rule: &'static str,
    members: Vec<ClusterRecord>,
    annotate: bool,
}

impl DedupFilter {
    pub fn new(apply: &DedupApply, mut members: Vec<ClusterRecord>) -> Self {
        members.sort_by_key(|m| m.row);
        let rule = match apply.method {
            DedupMethod::Exact => "exact_duplicate",
            DedupMethod::Minhash => "near_duplicate",
        };
        DedupFilter { rule, members, annotate: apply.annotate }
    }
}

/// A cluster id people can read: the shard and row of its first document.
pub fn cluster_name(key: u64) -> String {
    format!("{}:{}", key >> 32, key & 0xFFFF_FFFF)
}

impl Stage for DedupFilter {
    fn name(&self) -> &'static str {
        DEDUP_STAGE_NAME
    }

    fn score_names(&self) -> Vec<String> {
        vec!["cluster_size".into()]
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let Ok(i) = self.members.binary_search_by_key(&ctx.row, |m| m.row as u64) else {
            ctx.set(0, 1.0);
            return Decision::Keep;
        };
        let m = self.members[i];
        ctx.set(0, m.size as f64);
        if !m.survivor {
            return Decision::Drop(self.rule);
        }
        ctx.counters.add("clusters", 1);
        if self.annotate {
            doc.extra.insert("dedup_cluster".into(), Value::String(cluster_name(m.cluster)));
            doc.extra.insert("dedup_cluster_size".into(), Value::from(m.size));
        }
        Decision::Keep
    }
}
