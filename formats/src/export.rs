//! A Hugging Face checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`:
//! what lehr writes into every checkpoint) → a GGUF file llama.cpp loads: architecture metadata,
//! the tokenizer as `tokenizer.ggml.*`, tensors under llama.cpp's names with dims in ggml order,
//! and one quantization type for the matrices (norms and biases stay F32; a matrix whose rows
//! are not whole blocks falls back to F16, and says so).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::gguf::{GgufError, GgufWriter, MetaValue};
use crate::quants::{quantize, GgmlType};
use crate::safetensors::{Safetensors, SafetensorsError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {why}")]
    Input { path: PathBuf, why: String },
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Unsupported(String),
}

/// The export's target types (`--type`).
pub fn parse_type(name: &str) -> Option<GgmlType> {
    Some(match name.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q5_0" => GgmlType::Q5_0,
        "q5_1" => GgmlType::Q5_1,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        _ => return None,
    })
}

/// llama.cpp's `llama_ftype` of a file whose matrices are mostly `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// The pre-tokenizer regex of Qwen2's tokenizer (and of tokenizers lehr trains), which
/// llama.cpp knows as `qwen2`.
pub(crate) const QWEN2_PRE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Every tensor of a Qwen2 model with `layers` blocks: (Hugging Face name, llama.cpp name), in
/// file order; `lm_head.weight`/`output.weight` last (absent from tied models). Export and
/// import both map through this one table.
pub(crate) fn qwen2_tensor_names(layers: u64) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = vec![("model.embed_tokens.weight".into(), "token_embd.weight".into())];
    for i in 0..layers {
        for (hf, gg) in [
            ("input_layernorm.weight", "attn_norm.weight"),
            ("self_attn.q_proj.weight", "attn_q.weight"),
            ("self_attn.q_proj.bias", "attn_q.bias"),
            ("self_attn.k_proj.weight", "attn_k.weight"),
            ("self_attn.k_proj.bias", "attn_k.bias"),
            ("self_attn.v_proj.weight", "attn_v.weight"),
            ("self_attn.v_proj.bias", "attn_v.bias"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
            ("mlp.gate_proj.weight", "ffn_gate.weight"),
            ("mlp.up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
        ] {
            names.push((format!("model.layers.{i}.{hf}"), format!("blk.{i}.{gg}")));
        }
    }
    names.push(("model.norm.weight".into(), "output_norm.weight".into()));
    names.push(("lm_head.weight".into(), "output.weight".into()));
    names
}

/// What one export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub architecture: String,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
    pub by_type: BTreeMap<String, usize>,
    /// Matrices kept at F16 because their rows are not whole blocks of the requested type.
    pub fallbacks: Vec<String>,
}

fn input_err(path: &Path, why: impl Into<String>) -> ExportError {
    ExportError::Input { path: path.to_path_buf(), why: why.into() }
}

/// The tokenizer as GGUF metadata (`tokenizer.ggml.*`), from a `tokenizer.json` of a byte-level
/// BPE with Qwen2's pre-tokenizer.
fn tokenizer_meta(path: &Path, vocab_size: usize, w: &mut GgufWriter) -> Result<(), ExportError> {
    let text = std::fs::read_to_string(path).map_err(|e| input_err(path, e.to_string()))?;
    let t: serde_json::Value = serde_json::from_str(&text).map_err(|e| input_err(path, format!("not JSON: {e}")))?;
    let model = &t["model"];
    if model["type"] != "BPE" {
        return Err(input_err(path, format!("a {} tokenizer; the GGUF export handles byte-level BPE", model["type"])));
    }
    let pattern = t["pre_tokenizer"]["pretokenizers"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["type"] == "Split"))
        .and_then(|s| s["pattern"]["Regex"].as_str());
    if pattern != Some(QWEN2_PRE) {
        return Err(input_err(
            path,
            "its pre-tokenizer is not Qwen2's, and llama.cpp must know the pre-tokenizer by name (`tokenizer.ggml.pre`); \
             export a tokenizer with Qwen2's split pattern (as `lehr tokenizer train` makes)",
        ));
    }
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let vocab = model["vocab"].as_object().ok_or_else(|| input_err(path, "no model.vocab"))?;
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| input_err(path, format!("token {tok:?} has no integer id")))? as usize;
        if id >= vocab_size {
            return Err(input_err(path, format!("token id {id} is past the model's vocabulary of {vocab_size}")));
        }
        tokens[id] = Some((tok.clone(), 1));
    }
    let mut eos = None;
    for a in t["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else { continue };
        let special = a["special"].as_bool().unwrap_or(false);
        if (id as usize) < vocab_size {
            tokens[id as usize] = Some((content.to_string(), if special { 3 } else { 4 }));
        }
        if content == "<|endoftext|>" || (eos.is_none() && special) {
            eos = Some(id);
        }
    }
    // ids the tokenizer does not use (the model's vocabulary is padded): unused tokens
    let (names, types): (Vec<MetaValue>, Vec<MetaValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (s, ty) = t.unwrap_or_else(|| (format!("[PAD{i}]"), 5));
            (MetaValue::String(s), MetaValue::I32(ty))
        })
        .unzip();
    let merges: Vec<MetaValue> = model["merges"]
        .as_array()
        .ok_or_else(|| input_err(path, "no model.merges"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(MetaValue::String(s.clone())),
            serde_json::Value::Array(p) if p.len() == 2 => Ok(MetaValue::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => Err(input_err(path, format!("a merge that is neither \"a b\" nor [a, b]: {other}"))),
        })
        .collect::<Result<_, _>>()?;
    w.meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", MetaValue::String("qwen2".into()))
        .meta("tokenizer.ggml.tokens", MetaValue::Array(names))
        .meta("tokenizer.ggml.token_type", MetaValue::Array(types))
        .meta("tokenizer.ggml.merges", MetaValue::Array(merges))
        .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));
    if let Some(eos) = eos {
        w.meta("tokenizer.ggml.eos_token_id", MetaValue::U32(eos as u32))
            .meta("tokenizer.ggml.padding_token_id", MetaValue::U32(eos as u32));
    }
    Ok(())
}

/// Exports the checkpoint in `dir` to `out` with matrices of type `ty`. `tokenizer`: a
/// `tokenizer.json` to use instead of the checkpoint's.
pub fn export_gguf(
    dir: &Path,
    out: &Path,
    ty: GgmlType,
    tokenizer: Option<&Path>,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<ExportReport, ExportError> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .map_err(|e| input_err(&config_path, format!("{e} (is this a checkpoint directory?)")))?,
    )
    .map_err(|e| input_err(&config_path, format!("not JSON: {e}")))?;
    let arch_name = config["architectures"][0].as_str().unwrap_or_default();
    let arch = match arch_name {
        "Qwen2ForCausalLM" => "qwen2",
        other => {
            return Err(ExportError::Unsupported(format!(
                "{}: architecture `{other}`; this version exports Qwen2ForCausalLM (lehr's own checkpoints)",
                config_path.display()
            )))
        }
    };
    let num = |k: &str| -> Result<u64, ExportError> {
        config[k].as_u64().ok_or_else(|| input_err(&config_path, format!("no integer `{k}`")))
    };
    let layers = num("num_hidden_layers")?;
    let vocab = num("vocab_size")? as usize;
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let head_dim = match config["head_dim"].as_u64() {
        Some(d) => d,
        None => num("hidden_size")? / num("num_attention_heads")?.max(1),
    };
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String(arch.into()))
        .meta(
            "general.name",
            MetaValue::String(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        )
        .meta("general.file_type", MetaValue::U32(file_type(ty)))
        .meta("general.quantization_version", MetaValue::U32(2))
        .meta(&format!("{arch}.context_length"), MetaValue::U32(num("max_position_embeddings")? as u32))
        .meta(&format!("{arch}.embedding_length"), MetaValue::U32(num("hidden_size")? as u32))
        .meta(&format!("{arch}.block_count"), MetaValue::U32(layers as u32))
        .meta(&format!("{arch}.feed_forward_length"), MetaValue::U32(num("intermediate_size")? as u32))
        .meta(&format!("{arch}.attention.head_count"), MetaValue::U32(num("num_attention_heads")? as u32))
        .meta(&format!("{arch}.attention.head_count_kv"), MetaValue::U32(num("num_key_value_heads")? as u32))
        .meta(&format!("{arch}.attention.key_length"), MetaValue::U32(head_dim as u32))
        .meta(&format!("{arch}.attention.value_length"), MetaValue::U32(head_dim as u32))
        .meta(
            &format!("{arch}.rope.freq_base"),
            MetaValue::F32(config["rope_theta"].as_f64().unwrap_or(10_000.0) as f32),
        )
        .meta(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            MetaValue::F32(config["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32),
        );
    let tok_path = tokenizer.map(Path::to_path_buf).unwrap_or_else(|| dir.join("tokenizer.json"));
    if !tok_path.exists() {
        return Err(input_err(
            &tok_path,
            "no tokenizer: pass --tokenizer tokenizer.json (lehr's checkpoints hold theirs)",
        ));
    }
    tokenizer_meta(&tok_path, vocab, &mut w)?;

    let st = Safetensors::open(&dir.join("model.safetensors"))?;
    let names: Vec<(String, String)> =
        qwen2_tensor_names(layers).into_iter().filter(|(hf, _)| !(tied && hf == "lm_head.weight")).collect();
    let known: std::collections::BTreeSet<&str> = names.iter().map(|(h, _)| h.as_str()).collect();
    if let Some(extra) = st.tensors.keys().find(|k| !(known.contains(k.as_str()) || tied && *k == "lm_head.weight")) {
        return Err(ExportError::Unsupported(format!("tensor `{extra}` has no GGUF name in a {arch} export")));
    }
    let present: Vec<(String, String)> = names.into_iter().filter(|(h, _)| st.tensors.contains_key(h)).collect();
    let mut report = ExportReport {
        architecture: arch.into(),
        tensors: 0,
        parameters: 0,
        bytes: 0,
        by_type: BTreeMap::new(),
        fallbacks: vec![],
    };
    let total = present.len();
    for (i, (hf, gg)) in present.iter().enumerate() {
        progress(i, total, gg);
        let shape = st.tensors[hf].shape.clone();
        let values = st.f32(hf)?;
        let matrix = shape.len() == 2;
        let mut t = if matrix { ty } else { GgmlType::F32 };
        if t.bytes_for(shape[shape.len() - 1]).is_none() {
            report.fallbacks.push(gg.clone());
            t = GgmlType::F16;
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = quantize(t, &values).map_err(|e| ExportError::Unsupported(format!("{gg}: {e}")))?;
        report.tensors += 1;
        report.parameters += values.len() as u64;
        report.bytes += bytes.len() as u64;
        *report.by_type.entry(t.name().to_string()).or_default() += 1;
        w.tensor(gg, &dims, t, bytes)?;
    }
    progress(total, total, "");
    w.write_file(out)?;
    Ok(report)
}
