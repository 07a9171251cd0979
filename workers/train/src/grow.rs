//! Growth at a stage boundary (`layers = K` on a stage): the model gains blocks after its last,
//! each started by the stage's rule (`inherit`: the next blocks of the `[init]` reference;
//! `copy-last`: the current last block; `identity`: that copy with zero output projections, so
//! the function is unchanged). New parameters get fresh AdamW moments (their own bias
//! correction); the others keep theirs. Deterministic (no random draws), so a run resumed on
//! either side of a boundary grows exactly as an uninterrupted one.

use lehr_schedules::spec::{GrowRule, StageDepth};
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::init::Inherit;
use crate::model::Model;
use crate::optim::AdamW;
use crate::TrainError;

/// A line of growth.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrowthEvent {
    /// The first step at the new depth.
    pub step: u64,
    pub stage: String,
    pub from_layers: usize,
    pub to_layers: usize,
    pub rule: String,
    /// Reference blocks copied (`inherit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_blocks: Option<(usize, usize)>,
    pub parameters_before: i64,
    pub parameters_after: i64,
}

fn parameters(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

/// Grows `model` (variables in `vs`, optimizer `opt`) to `depth.layers` blocks by `depth.grow`.
pub fn grow(
    vs: &nn::VarStore,
    model: &mut Model,
    opt: &mut AdamW,
    depth: &StageDepth,
    reference: Option<&Inherit>,
    step: u64,
    stage: &str,
) -> Result<GrowthEvent, TrainError> {
    let from = model.config.num_hidden_layers as usize;
    let rule = depth.grow.ok_or_else(|| TrainError::Config(format!("stage {stage:?}: no grow rule")))?;
    let before = parameters(vs);
    let reference_vars = match rule {
        GrowRule::Inherit => {
            let r = reference.ok_or_else(|| TrainError::Config("grow = \"inherit\" needs [init]".into()))?;
            Some(crate::init::source_variables(&r.dir)?)
        }
        _ => None,
    };
    let last = from.checked_sub(1).ok_or_else(|| TrainError::Config("a model without blocks cannot grow".into()))?;
    let added = model.add_layers(vs, depth.layers - from)?;
    let vars = vs.variables();
    tch::no_grad(|| -> Result<(), TrainError> {
        for name in &added {
            let rest = name.strip_prefix("model.layers.").expect("block variable");
            let (k, tail) = rest.split_once('.').expect("block variable");
            let k: usize = k.parse().expect("block number");
            let mut var = vars[name].shallow_clone();
            let value = match &reference_vars {
                Some(src) => {
                    let j = depth.source.unwrap_or(0) + (k - from);
                    let key = format!("model.layers.{j}.{tail}");
                    src.get(&key)
                        .ok_or_else(|| TrainError::Config(format!("[init] reference has no `{key}` to inherit")))?
                        .shallow_clone()
                }
                None => vars[&format!("model.layers.{last}.{tail}")].detach(),
            };
            if value.size() != var.size() {
                return Err(TrainError::Config(format!(
                    "growing block {k}: `{tail}` is {:?} in the source, {:?} in the model",
                    value.size(),
                    var.size()
                )));
            }
            var.copy_(&value);
            if rule == GrowRule::Identity && (tail == "self_attn.o_proj.weight" || tail == "mlp.down_proj.weight") {
                let _ = var.zero_();
            }
        }
        Ok(())
    })?;
    opt.add_params(added.iter().map(|n| (n.clone(), vars[n].shallow_clone())).collect());
    let source_blocks = depth.source.map(|s| (s, s + depth.layers - from));
    Ok(GrowthEvent {
        step,
        stage: stage.to_string(),
        from_layers: from,
        to_layers: depth.layers,
        rule: rule.name().into(),
        source_blocks,
        parameters_before: before,
        parameters_after: parameters(vs),
    })
}
