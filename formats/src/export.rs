//! A Hugging Face checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`:
//! what lehr writes into every checkpoint, and what Qwen2/Qwen3/Llama checkpoints hold) → GGUF
//! files llama.cpp loads: architecture metadata, the tokenizer as `tokenizer.ggml.*`, tensors
//! under llama.cpp's names with dims in ggml order (Llama's q/k permuted to llama.cpp's rotary
//! layout), each tensor at the type the file type's mix gives it (`mix.rs`).
//!
//! One pass writes any number of files (`--type all`): each tensor is read once, quantized for
//! every file on every core, and streamed out, so memory holds one tensor and its encodings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::arch::{permute_qk, tensor_names, Hyper};
use crate::gguf::{GgufError, GgufWriter, MetaValue};
use crate::mix::{ranks, tensor_type, FileType, TensorSpec};
use crate::quants::{quantize_rows, GgmlType};
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

/// A matrix that could not take the type the mix wanted, because its rows are not whole blocks.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fallback {
    pub tensor: String,
    pub wanted: GgmlType,
    pub used: GgmlType,
}

/// What one exported file holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub file_type: FileType,
    pub architecture: String,
    pub tensors: usize,
    pub parameters: u64,
    /// Bytes of tensor data, and of the whole file.
    pub tensor_bytes: u64,
    pub file_bytes: u64,
    /// Tensor bits per parameter, as llama.cpp reports it.
    pub bits_per_weight: f64,
    pub by_type: BTreeMap<String, usize>,
    pub fallbacks: Vec<Fallback>,
}

fn input_err(path: &Path, why: impl Into<String>) -> ExportError {
    ExportError::Input { path: path.to_path_buf(), why: why.into() }
}

/// Exports the checkpoint in `dir` to each `(file type, path)` of `outputs` in one pass over
/// its tensors. `tokenizer`: a `tokenizer.json` to use instead of the checkpoint's.
/// `progress(done, total, tensor)` is called before each tensor.
pub fn export_gguf(
    dir: &Path,
    outputs: &[(FileType, PathBuf)],
    tokenizer: Option<&Path>,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<ExportReport>, ExportError> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .map_err(|e| input_err(&config_path, format!("{e} (is this a checkpoint directory?)")))?,
    )
    .map_err(|e| input_err(&config_path, format!("not JSON: {e}")))?;
    let hyper =
        Hyper::from_hf(&config).map_err(|why| ExportError::Unsupported(format!("{}: {why}", config_path.display())))?;
    let arch = hyper.arch.name();

    let tok_path = tokenizer.map(Path::to_path_buf).unwrap_or_else(|| dir.join("tokenizer.json"));
    if !tok_path.exists() {
        return Err(input_err(
            &tok_path,
            "no tokenizer: pass --tokenizer tokenizer.json (lehr's checkpoints hold theirs)",
        ));
    }
    let tokenizer_meta =
        crate::vocab::gguf_meta(&tok_path, hyper.vocab as usize).map_err(|why| input_err(&tok_path, why))?;

    let st = Safetensors::open(&dir.join("model.safetensors"))?;
    let names: Vec<(String, String)> =
        tensor_names(hyper.layers).into_iter().filter(|(hf, _)| !(hyper.tied && hf == "lm_head.weight")).collect();
    let known: std::collections::BTreeSet<&str> = names.iter().map(|(h, _)| h.as_str()).collect();
    if let Some(extra) =
        st.tensors.keys().find(|k| !(known.contains(k.as_str()) || hyper.tied && *k == "lm_head.weight"))
    {
        return Err(ExportError::Unsupported(format!(
            "{}: tensor `{extra}` has no GGUF name in a {arch} export",
            st.path.display()
        )));
    }
    let present: Vec<(String, String, Vec<u64>)> = names
        .into_iter()
        .filter_map(|(h, g)| {
            let dims = st.tensors.get(&h)?.shape.iter().rev().map(|&d| d as u64).collect();
            Some((h, g, dims))
        })
        .collect();

    // the blocks go out in order, so a tensor's rank among its kind is its layer
    let rank = ranks(&present.iter().map(|(_, g, _)| g.as_str()).collect::<Vec<_>>());
    let mut streams = Vec::new();
    let mut reports = Vec::new();
    for (ft, path) in outputs {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::String(arch.into()))
            .meta(
                "general.name",
                MetaValue::String(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
            )
            .meta("general.file_type", MetaValue::U32(ft.id()))
            .meta("general.quantization_version", MetaValue::U32(2));
        for (k, v) in hyper.gguf_meta().into_iter().chain(tokenizer_meta.iter().cloned()) {
            w.meta(&k, v);
        }
        let mut report = ExportReport {
            path: path.clone(),
            file_type: *ft,
            architecture: arch.into(),
            tensors: present.len(),
            parameters: 0,
            tensor_bytes: 0,
            file_bytes: 0,
            bits_per_weight: 0.0,
            by_type: BTreeMap::new(),
            fallbacks: vec![],
        };
        let mut plan = Vec::new();
        for ((_, g, dims), &rank) in present.iter().zip(&rank) {
            let spec = TensorSpec { name: g, dims, rank, tied: hyper.tied };
            let choice = tensor_type(*ft, &spec);
            if let Some(wanted) = choice.wanted {
                report.fallbacks.push(Fallback { tensor: g.clone(), wanted, used: choice.ty });
            }
            *report.by_type.entry(choice.ty.name().to_string()).or_default() += 1;
            plan.push((g.clone(), dims.clone(), choice.ty));
        }
        let types: Vec<GgmlType> = plan.iter().map(|(_, _, t)| *t).collect();
        streams.push((w.stream(path, plan)?, types));
        reports.push(report);
    }

    let total = present.len();
    for (i, (hf, gg, dims)) in present.iter().enumerate() {
        progress(i, total, gg);
        let values = permute_qk(&hyper, gg, dims, st.f32(hf)?, false);
        let row = dims[0] as usize;
        for ((stream, types), report) in streams.iter_mut().zip(reports.iter_mut()) {
            let bytes =
                quantize_rows(types[i], &values, row).map_err(|e| ExportError::Unsupported(format!("{gg}: {e}")))?;
            report.parameters += values.len() as u64;
            report.tensor_bytes += bytes.len() as u64;
            stream.write(gg, &bytes)?;
        }
    }
    progress(total, total, "");
    for ((stream, _), report) in streams.into_iter().zip(reports.iter_mut()) {
        stream.finish()?;
        report.file_bytes = std::fs::metadata(&report.path).map(|m| m.len()).unwrap_or(0);
        report.bits_per_weight = report.tensor_bytes as f64 * 8.0 / report.parameters.max(1) as f64;
    }
    Ok(reports)
}
