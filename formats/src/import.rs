//! A GGUF file → a Hugging Face checkpoint directory (`config.json`, `model.safetensors` in F32,
//! `tokenizer.json` rebuilt from `tokenizer.ggml.*`, `tokenizer_config.json`), so models that
//! exist only as GGUF load in transformers and in every lehr command.

use std::path::Path;

use crate::arch::{permute_qk, tensor_names, Arch, Hyper};
use crate::gguf::{GgufFile, MetaValue};
use crate::quants::dequantize;
use crate::safetensors::write_f32;
use crate::vocab;

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

/// Imports `file` into the checkpoint directory `out`. `progress(done, total, tensor)` is
/// called before each tensor.
pub fn import_gguf(
    file: &Path,
    out: &Path,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<ImportReport, ImportError> {
    let f = GgufFile::open(file)?;
    let name = f.meta.get("general.architecture").and_then(MetaValue::as_str).unwrap_or_default().to_string();
    let arch = Arch::from_gguf(&name).ok_or_else(|| {
        unsupported(format!("{}: architecture `{name}`; lehr imports qwen2, qwen3 and llama", file.display()))
    })?;
    let tok = vocab::from_gguf(|k| f.meta.get(k)).map_err(|why| unsupported(format!("{}: {why}", file.display())))?;
    let tied = f.tensor("output.weight").is_none();
    let hyper = Hyper::from_gguf(arch, |k| f.meta.get(k).cloned(), tok.vocab_size as u64, tied)
        .map_err(|why| unsupported(format!("{}: {why}", file.display())))?;
    let config = hyper.hf_config(f.tensor("blk.0.attn_q.bias").is_some(), tok.bos, tok.eos);

    let map = tensor_names(hyper.layers);
    let mut tensors = Vec::new();
    let mut parameters = 0u64;
    let total = f.tensors.len();
    for (i, t) in f.tensors.iter().enumerate() {
        progress(i, total, &t.name);
        let hf =
            map.iter().find(|(_, g)| *g == t.name).map(|(h, _)| h.clone()).ok_or_else(|| {
                unsupported(format!("tensor `{}` has no Hugging Face name in a {name} import", t.name))
            })?;
        let values = dequantize(t.ty, f.data(t)?).map_err(|e| unsupported(format!("{}: {e}", t.name)))?;
        let values = permute_qk(&hyper, &t.name, &t.dims, values, true);
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        parameters += values.len() as u64;
        tensors.push((hf, shape, values));
    }
    progress(total, total, "");
    std::fs::create_dir_all(out).map_err(|source| ImportError::Io { path: out.display().to_string(), source })?;
    let write = |name: &str, bytes: Vec<u8>| -> Result<(), ImportError> {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(|source| ImportError::Io { path: p.display().to_string(), source })
    };
    write("config.json", serde_json::to_vec_pretty(&config).expect("json"))?;
    write_f32(&out.join("model.safetensors"), &tensors)?;
    write("tokenizer.json", serde_json::to_vec(&tok.tokenizer_json).expect("json"))?;
    write("tokenizer_config.json", serde_json::to_vec_pretty(&tok.tokenizer_config).expect("json"))?;
    Ok(ImportReport { architecture: name, tensors: tensors.len(), parameters, vocab_size: tok.vocab_size })
}
