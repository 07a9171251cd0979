//! Depth surgery on a checkpoint: a new model whose block `k` is block `map[k]` of the source,
//! everything else (embeddings, final norm, head) kept. SOLAR's depth up-scaling is the map
//! `0..n-m` then `m..n` (two copies of the stack, the last `m` blocks of the first and the first
//! `m` of the second dropped: `2·(n − m)` blocks); Kiwi's "selected layers" and any other
//! stacking are explicit maps (`"0-15,8-23"`). The source may be one `model.safetensors` or
//! transformers' shards with their index; tensors are copied byte for byte in their stored
//! dtype into one `model.safetensors`; `config.json` gets the new `num_hidden_layers` (and per-layer lists such as
//! `layer_types` remapped); the tokenizer files come along. The result is a fresh checkpoint
//! (no optimizer or trainer state) that transformers and `lehr train run --init-from` load.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::safetensors::{write_raw, Safetensors, SafetensorsError};

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{0}")]
    Bad(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
}

/// SOLAR's map for `n` blocks, dropping `m` at the seam.
pub fn dus_map(n: usize, m: usize) -> Result<Vec<usize>, GrowError> {
    if m == 0 || m >= n {
        return Err(GrowError::Bad(format!("--drop {m}: give 1 to {} for a {n}-layer model", n.saturating_sub(1))));
    }
    Ok((0..n - m).chain(m..n).collect())
}

/// `"0-15,8-23"` (inclusive ranges and single blocks, in order) for an `n`-block source.
pub fn parse_map(spec: &str, n: usize) -> Result<Vec<usize>, GrowError> {
    let bad = |why: String| GrowError::Bad(format!("--map {spec:?}: {why}"));
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let num = |x: &str| x.parse::<usize>().map_err(|_| bad(format!("`{part}` is not a block or a range a-b")));
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(bad(format!("`{part}` runs backwards")));
        }
        if b >= n {
            return Err(bad(format!("block {b} is past the source's {n} blocks (0-{})", n - 1)));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad("no blocks".into()));
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct GrowReport {
    pub source: String,
    pub out: String,
    pub layers_before: usize,
    pub layers_after: usize,
    pub parameters_before: u64,
    pub parameters_after: u64,
    /// Block `k` of the result is block `map[k]` of the source.
    pub map: Vec<usize>,
}

const LAYER_PREFIX: &str = "model.layers.";

/// Block index and the rest of a per-block tensor name.
fn block_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix(LAYER_PREFIX)?;
    let (i, tail) = rest.split_once('.')?;
    Some((i.parse().ok()?, tail))
}

/// The tensors of a block that write into the residual stream: zeroed, the block adds nothing.
const OUTPUT_PROJECTIONS: [&str; 3] = ["self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight"];

/// The checkpoint's weight files: `model.safetensors`, or the shards its
/// `model.safetensors.index.json` names (transformers' layout for large models).
fn weight_files(src: &Path) -> Result<Vec<PathBuf>, GrowError> {
    let single = src.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = src.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        GrowError::Bad(format!("{}: neither model.safetensors nor model.safetensors.index.json", src.display()))
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| GrowError::Bad(format!("{}: {e}", index.display())))?;
    let map =
        v["weight_map"].as_object().ok_or_else(|| GrowError::Bad(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for f in map.values() {
        let f =
            f.as_str().ok_or_else(|| GrowError::Bad(format!("{}: a file name is not a string", index.display())))?;
        let p = src.join(f);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(GrowError::Bad(format!("{}: an empty weight_map", index.display())));
    }
    Ok(files)
}

/// Builds the checkpoint `out` from `src` with the block map. With `identity`, every repeat of a
/// source block (its second and later places) has its output projections zeroed, so it adds
/// nothing to the residual stream and the grown model computes what the source did (the
/// issue's `grow = "identity"`; the first place of each block keeps it as it was).
pub fn regrow(src: &Path, map: &[usize], out: &Path, identity: bool) -> Result<GrowReport, GrowError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GrowError::Io { path, source }
    };
    let cfg_path = src.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&cfg_path).map_err(io(&cfg_path))?)
        .map_err(|e| GrowError::Bad(format!("{}: {e}", cfg_path.display())))?;
    let n = config["num_hidden_layers"]
        .as_u64()
        .ok_or_else(|| GrowError::Bad(format!("{}: no num_hidden_layers", cfg_path.display())))? as usize;
    if let Some(&k) = map.iter().find(|&&k| k >= n) {
        return Err(GrowError::Bad(format!("block {k} is past the source's {n} blocks")));
    }
    let files = weight_files(src)?;
    let opened: Vec<Safetensors> = files.iter().map(|f| Safetensors::open(f)).collect::<Result<_, _>>()?;
    // places whose block appeared earlier in the map
    let repeat: Vec<bool> = map.iter().enumerate().map(|(k, m)| map[..k].contains(m)).collect();
    let all: Vec<(&Safetensors, &String, &crate::safetensors::TensorEntry)> =
        opened.iter().flat_map(|st| st.tensors.iter().map(move |(n, e)| (st, n, e))).collect();
    let zeros: Vec<u8> = vec![0; all.iter().map(|(_, _, e)| e.data_offsets.1 - e.data_offsets.0).max().unwrap_or(0)];
    let mut tensors: Vec<(String, String, Vec<usize>, &[u8])> = Vec::new();
    let (mut before, mut after) = (0u64, 0u64);
    let numel = |shape: &[usize]| shape.iter().product::<usize>() as u64;
    for (st, name, e) in all.iter().copied() {
        before += numel(&e.shape);
        let bytes = st.raw(name)?;
        match block_of(name) {
            None => {
                after += numel(&e.shape);
                tensors.push((name.clone(), e.dtype.clone(), e.shape.clone(), bytes));
            }
            Some((i, tail)) => {
                if i >= n {
                    return Err(GrowError::Bad(format!(
                        "{}: `{name}` is past num_hidden_layers {n}",
                        st.path.display()
                    )));
                }
                for (k, _) in map.iter().enumerate().filter(|(_, &m)| m == i) {
                    after += numel(&e.shape);
                    // zero is all-zero bytes in F32, F16 and BF16 alike
                    let data = if identity && repeat[k] && OUTPUT_PROJECTIONS.contains(&tail) {
                        &zeros[..bytes.len()]
                    } else {
                        bytes
                    };
                    tensors.push((format!("{LAYER_PREFIX}{k}.{tail}"), e.dtype.clone(), e.shape.clone(), data));
                }
            }
        }
    }
    // a stable order: non-block tensors, then blocks in order (as checkpoints list them)
    tensors.sort_by(|a, b| {
        let key = |n: &str| block_of(n).map(|(i, t)| (1, i, t.to_string())).unwrap_or((0, 0, n.to_string()));
        key(&a.0).cmp(&key(&b.0))
    });
    config["num_hidden_layers"] = Value::from(map.len());
    if let Some(obj) = config.as_object_mut() {
        for (_, v) in obj.iter_mut() {
            // per-layer lists (transformers' `layer_types`) follow the map
            if let Some(list) = v.as_array() {
                if list.len() == n && n > 1 {
                    *v = Value::Array(map.iter().map(|&k| list[k].clone()).collect());
                }
            }
        }
        if let Some(w) = obj.get("max_window_layers").and_then(Value::as_u64) {
            if w as usize >= n {
                obj.insert("max_window_layers".into(), Value::from(map.len()));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let tmp = out.join(".model.safetensors.partial");
    write_raw(&tmp, &tensors)?;
    let dest = out.join("model.safetensors");
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    let cfg_out = out.join("config.json");
    std::fs::write(&cfg_out, serde_json::to_vec_pretty(&config).expect("json")).map_err(io(&cfg_out))?;
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        let from = src.join(f);
        if from.exists() {
            std::fs::copy(&from, out.join(f)).map_err(io(&from))?;
        }
    }
    Ok(GrowReport {
        source: src.display().to_string(),
        out: out.display().to_string(),
        layers_before: n,
        layers_after: map.len(),
        parameters_before: before,
        parameters_after: after,
        map: map.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps() {
        assert_eq!(dus_map(6, 2).unwrap(), vec![0, 1, 2, 3, 2, 3, 4, 5]);
        // SOLAR: 32 layers, m = 8 → 48
        assert_eq!(dus_map(32, 8).unwrap().len(), 48);
        assert!(dus_map(4, 4).is_err());
        assert_eq!(parse_map("0-2, 1-3,0", 4).unwrap(), vec![0, 1, 2, 1, 2, 3, 0]);
        assert!(parse_map("0-4", 4).unwrap_err().to_string().contains("past the source's 4 blocks"));
        assert!(parse_map("3-1", 4).unwrap_err().to_string().contains("backwards"));
        assert!(parse_map("a", 4).is_err());
    }
}
