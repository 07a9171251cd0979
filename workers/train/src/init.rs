//! A run that starts from another model (`[init]`, `lehr train run --init-from`): the model's
//! architecture is the source checkpoint's with as many blocks as `layers` takes, and its
//! weights are the source's — embeddings, final norm, head, and block k from source block
//! `map[k]` (Inheritune takes blocks 0..n of a larger model). Checked before the run starts:
//! the vocabulary must be the shards' tokenizer's, and every tensor must be there with its shape.

use std::path::PathBuf;

use lehr_schedules::spec::InitSpec;
use tch::nn;

use crate::model::{hf_config, Model, ModelConfig};
use crate::TrainError;

/// What a run inherits: the source, and block k's source block.
#[derive(Debug, Clone)]
pub struct Inherit {
    pub dir: PathBuf,
    pub map: Vec<usize>,
    /// Blocks the source has (growth by `inherit` takes the ones after `map`'s last).
    pub source_layers: usize,
}

/// The model config of a run that starts from `init`, and what to copy; `vocab` is the shards'.
pub fn student(init: &InitSpec, vocab: i64) -> Result<(ModelConfig, Inherit), TrainError> {
    let dir = PathBuf::from(&init.from);
    let (source, _) = hf_config(&dir)?;
    if source.vocab_size != vocab {
        return Err(TrainError::Config(format!(
            "[init] {}: its vocabulary has {} tokens, the shards' tokenizer {vocab}; start from a model of the \
             shards' tokenizer (or tokenize the data with the model's)",
            dir.display(),
            source.vocab_size
        )));
    }
    let n = source.num_hidden_layers as usize;
    let map = init.block_map(n).map_err(TrainError::Config)?;
    let config = ModelConfig { num_hidden_layers: map.len() as i64, ..source };
    Ok((config, Inherit { dir, map, source_layers: n }))
}

/// The source's name of a model variable under the block map.
fn source_name(name: &str, map: &[usize]) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.") {
        if let Some((k, tail)) = rest.split_once('.') {
            if let Ok(k) = k.parse::<usize>() {
                return format!("model.layers.{}.{tail}", map[k]);
            }
        }
    }
    name.to_string()
}

/// The source's variables (lehr's names, unfolded), on the CPU.
pub fn source_variables(dir: &std::path::Path) -> Result<std::collections::HashMap<String, tch::Tensor>, TrainError> {
    let (config, weights) = hf_config(dir)?;
    let mut src_vs = nn::VarStore::new(tch::Device::Cpu);
    let _model = Model::new(&src_vs, &config)?;
    crate::model::load_weights(&mut src_vs, &weights)?;
    Ok(src_vs.variables())
}

/// Copies the source's weights into the new model's variables (on their device).
pub fn copy_weights(vs: &nn::VarStore, inherit: &Inherit) -> Result<(), TrainError> {
    let src = source_variables(&inherit.dir)?;
    tch::no_grad(|| -> Result<(), TrainError> {
        for (name, mut var) in vs.variables() {
            let from = source_name(&name, &inherit.map);
            let t = src.get(&from).ok_or_else(|| {
                TrainError::Config(format!("[init] {}: no tensor `{from}` for `{name}`", inherit.dir.display()))
            })?;
            if t.size() != var.size() {
                return Err(TrainError::Config(format!(
                    "[init] {}: `{from}` is {:?}, the model's `{name}` {:?}",
                    inherit.dir.display(),
                    t.size(),
                    var.size()
                )));
            }
            var.copy_(t);
        }
        Ok(())
    })
}
