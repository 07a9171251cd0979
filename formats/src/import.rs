//! A GGUF file → a Hugging Face checkpoint directory (`config.json`, `model.safetensors` in F32,
//! `tokenizer.json` rebuilt from `tokenizer.ggml.*`, `tokenizer_config.json`), so models that
//! exist only as GGUF load in transformers and in every lehr command.

use std::path::Path;

use crate::export::QWEN2_PRE;
use crate::gguf::{GgufFile, MetaValue};
use crate::quants::dequantize;
use crate::safetensors::write_f32;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Safetensors(#[from] crate::safetensors::SafetensorsError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub architecture: String,
    pub tensors: usize,
    pub parameters: u64,
    pub vocab_size: usize,
}

fn unsupported(why: impl Into<String>) -> ImportError {
    ImportError::Unsupported(why.into())
}

pub fn import_gguf(file: &Path, out: &Path) -> Result<ImportReport, ImportError> {
    let f = GgufFile::open(file)?;
    let arch = f.meta.get("general.architecture").and_then(MetaValue::as_str).unwrap_or_default().to_string();
    if arch != "qwen2" {
        return Err(unsupported(format!(
            "{}: architecture `{arch}`; this version imports qwen2 (Llama's rotary permutation comes next)",
            file.display()
        )));
    }
    let u = |k: &str| -> Result<u64, ImportError> {
        f.meta
            .get(&format!("{arch}.{k}"))
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| unsupported(format!("{}: no `{arch}.{k}`", file.display())))
    };
    let fl = |k: &str, default: f64| -> f64 {
        match f.meta.get(&format!("{arch}.{k}")) {
            Some(MetaValue::F32(v)) => *v as f64,
            Some(MetaValue::F64(v)) => *v,
            _ => default,
        }
    };
    let tokens: Vec<String> = match f.meta.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(v)) => v.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect(),
        _ => return Err(unsupported(format!("{}: no tokenizer.ggml.tokens", file.display()))),
    };
    let types: Vec<i64> = match f.meta.get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(v)) => v
            .iter()
            .map(|t| match t {
                MetaValue::I32(x) => *x as i64,
                other => other.as_u64().unwrap_or(1) as i64,
            })
            .collect(),
        _ => vec![1; tokens.len()],
    };
    let merges: Vec<String> = match f.meta.get("tokenizer.ggml.merges") {
        Some(MetaValue::Array(v)) => v.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect(),
        _ => {
            return Err(unsupported(format!(
                "{}: no tokenizer.ggml.merges (a BPE tokenizer is needed)",
                file.display()
            )))
        }
    };
    let model = f.meta.get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or_default();
    let pre = f.meta.get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or_default();
    if model != "gpt2" || pre != "qwen2" {
        return Err(unsupported(format!(
            "{}: tokenizer `{model}`/`{pre}`; this version rebuilds gpt2/qwen2",
            file.display()
        )));
    }
    let eos = f.meta.get("tokenizer.ggml.eos_token_id").and_then(MetaValue::as_u64);

    let layers = u("block_count")?;
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    let tied = f.tensor("output.weight").is_none();
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": u("feed_forward_length")?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": u("attention.head_count_kv")?,
        "head_dim": head_dim,
        "max_position_embeddings": u("context_length")?,
        "rms_norm_eps": fl("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": fl("rope.freq_base", 10_000.0),
        "vocab_size": tokens.len(),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": f.tensor("blk.0.attn_q.bias").is_some(),
        "use_sliding_window": false,
        "torch_dtype": "float32",
        "eos_token_id": eos,
    });

    let map = crate::export::qwen2_tensor_names(layers);
    let mut tensors = Vec::new();
    let mut parameters = 0u64;
    for t in &f.tensors {
        let hf =
            map.iter().find(|(_, g)| *g == t.name).map(|(h, _)| h.clone()).ok_or_else(|| {
                unsupported(format!("tensor `{}` has no Hugging Face name in a qwen2 import", t.name))
            })?;
        let values = dequantize(t.ty, f.data(t)?).map_err(|e| unsupported(format!("{}: {e}", t.name)))?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        parameters += values.len() as u64;
        tensors.push((hf, shape, values));
    }
    std::fs::create_dir_all(out).map_err(|source| ImportError::Io { path: out.display().to_string(), source })?;
    let write = |name: &str, bytes: Vec<u8>| -> Result<(), ImportError> {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(|source| ImportError::Io { path: p.display().to_string(), source })
    };
    write("config.json", serde_json::to_vec_pretty(&config).expect("json"))?;
    write_f32(&out.join("model.safetensors"), &tensors)?;

    // tokenizer.json: byte-level BPE with Qwen2's split; control and user-defined tokens added
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    let mut eos_name = None;
    for (id, (tok, ty)) in tokens.iter().zip(types.iter().chain(std::iter::repeat(&1))).enumerate() {
        match ty {
            3 | 4 => added.push(serde_json::json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": *ty == 4, "special": *ty == 3,
            })),
            5 => {}
            _ => {
                vocab.insert(tok.clone(), serde_json::json!(id));
            }
        }
        if Some(id as u64) == eos {
            eos_name = Some(tok.clone());
        }
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PRE}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    write("tokenizer.json", serde_json::to_vec(&tokenizer).expect("json"))?;
    let tok_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_name, "pad_token": eos_name,
        "bos_token": null, "add_bos_token": false, "clean_up_tokenization_spaces": false,
    });
    write("tokenizer_config.json", serde_json::to_vec_pretty(&tok_config).expect("json"))?;
    Ok(ImportReport { architecture: arch, tensors: tensors.len(), parameters, vocab_size: tokens.len() })
}
