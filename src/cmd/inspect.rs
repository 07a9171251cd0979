//! `lehr inspect gguf`.

use std::collections::BTreeMap;

use lehr_formats::{GgufError, GgufFile, MetaValue};

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::InspectCommand;

pub fn run(cmd: InspectCommand) -> CmdResult {
    let InspectCommand::Gguf(a) = cmd;
    let f = GgufFile::open(&a.file).map_err(|e| match e {
        GgufError::Io { .. } => Failure::usage(anyhow::anyhow!(e)),
        other => Failure::usage(anyhow::anyhow!("{other} (is it a GGUF file? llama.cpp's own files are)")),
    })?;
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for t in &f.tensors {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.elements();
        e.2 += t.bytes().unwrap_or(0);
    }
    let params: u64 = f.tensors.iter().map(|t| t.elements()).sum();
    let bytes: u64 = f.tensors.iter().filter_map(|t| t.bytes()).sum();
    let bpw = if params == 0 { 0.0 } else { bytes as f64 * 8.0 / params as f64 };
    if a.json {
        let meta: serde_json::Map<String, serde_json::Value> = f
            .meta_order
            .iter()
            .map(|k| {
                let v = &f.meta[k];
                let shown = match v {
                    MetaValue::Array(items) if !a.full && items.len() > 64 => {
                        serde_json::json!({"array_len": items.len(), "head": items.iter().take(8).collect::<Vec<_>>()})
                    }
                    v => serde_json::to_value(v).expect("json"),
                };
                (k.clone(), shown)
            })
            .collect();
        let out = serde_json::json!({
            "file": a.file, "version": f.version, "alignment": f.alignment, "metadata": meta,
            "tensors": f.tensors, "parameters": params, "tensor_bytes": bytes, "bits_per_weight": bpw,
            "by_type": by_type.iter().map(|(k, v)| (k.to_string(), serde_json::json!({"tensors": v.0, "parameters": v.1, "bytes": v.2}))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(EXIT_OK);
    }
    println!("{}: GGUF v{}, {} metadata keys, {} tensors", a.file.display(), f.version, f.meta.len(), f.tensors.len());
    println!(
        "{:.1}M parameters, {:.1} MiB of tensors, {bpw:.2} bits per weight",
        params as f64 / 1e6,
        bytes as f64 / (1 << 20) as f64
    );
    println!("\nmetadata:");
    for k in &f.meta_order {
        let v = &f.meta[k];
        let shown = if a.full { format!("{v:?}") } else { v.summary() };
        println!("  {k:<44} {shown}");
    }
    println!("\n{:<6} {:>7} {:>14} {:>12}", "type", "tensors", "parameters", "MiB");
    for (ty, (n, p, b)) in &by_type {
        println!("{ty:<6} {n:>7} {p:>14} {:>12.2}", *b as f64 / (1 << 20) as f64);
    }
    println!("\n{:<40} {:<6} {:>20} {:>12}", "tensor", "type", "dims (ggml order)", "bytes");
    for t in &f.tensors {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        println!("{:<40} {:<6} {:>20} {:>12}", t.name, t.ty.name(), dims.join(" × "), t.bytes().unwrap_or(0));
    }
    Ok(EXIT_OK)
}
