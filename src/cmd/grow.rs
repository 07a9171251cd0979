//! `lehr grow dus|layers`: a new checkpoint from a checkpoint's blocks (lehr-formats'
//! `grow.rs`: byte-for-byte tensor copies, the config's depth), with a report — layers and
//! parameters before and after, and with `--eval-data` the held-out loss of both (the loss
//! recovery training starts from).

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::{GrowCommand, GrowOutArgs};

pub async fn run(cmd: GrowCommand) -> CmdResult {
    let (src, out, map, identity) = match &cmd {
        GrowCommand::Dus(a) => (&a.checkpoint, &a.common, Map::Dus(a.drop), false),
        GrowCommand::Layers(a) => (&a.checkpoint, &a.common, Map::Explicit(a.map.clone()), a.identity),
    };
    let layers = source_layers(src)?;
    let map = match map {
        Map::Dus(m) => lehr_formats::grow::dus_map(layers, m),
        Map::Explicit(spec) => lehr_formats::grow::parse_map(&spec, layers),
    }
    .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    if out.output.exists() && std::fs::read_dir(&out.output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} exists and is not empty; give a new directory",
            out.output.display()
        )));
    }
    let (s, o, m) = (src.clone(), out.output.clone(), map.clone());
    let report = tokio::task::spawn_blocking(move || lehr_formats::grow::regrow(&s, &m, &o, identity))
        .await
        .map_err(|e| anyhow::anyhow!("growing panicked: {e}"))?
        .map_err(|e| match e {
            lehr_formats::grow::GrowError::Bad(_) => Failure::usage(anyhow::anyhow!(e)),
            other => anyhow::anyhow!(other).into(),
        })?;
    let losses = held_out(src, out).await?;
    if out.json {
        let mut v = serde_json::to_value(&report).expect("json");
        if let Some((before, after)) = losses {
            v["held_out"] = serde_json::json!({"before": before, "after": after});
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(EXIT_OK);
    }
    println!(
        "{}: {} → {} layers, {:.1}M → {:.1}M parameters",
        report.out,
        report.layers_before,
        report.layers_after,
        report.parameters_before as f64 / 1e6,
        report.parameters_after as f64 / 1e6
    );
    println!("blocks: {:?}", report.map);
    if let Some((before, after)) = losses {
        println!(
            "held-out loss {:.4} (ppl {:.2}) before, {:.4} (ppl {:.2}) right after",
            before.0, before.1, after.0, after.1
        );
    }
    Ok(EXIT_OK)
}

enum Map {
    Dus(usize),
    Explicit(String),
}

fn source_layers(src: &std::path::Path) -> Result<usize, Failure> {
    let path = src.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::usage(anyhow::anyhow!("{}: {e} (a checkpoint directory holds config.json)", path.display()))
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))?;
    v["num_hidden_layers"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| Failure::usage(anyhow::anyhow!("{}: no num_hidden_layers", path.display())))
}

/// ((loss, ppl) before, (loss, ppl) after) on `--eval-data`.
#[cfg(feature = "train")]
async fn held_out(src: &std::path::Path, o: &GrowOutArgs) -> Result<Option<((f64, f64), (f64, f64))>, Failure> {
    let Some(data) = &o.eval_data else { return Ok(None) };
    let shards = std::sync::Arc::new(super::train::load_eval_shards(data).await?);
    let dev = super::train::device(o.device.as_deref())?;
    let (a, b, tokens, seq) = (src.to_path_buf(), o.output.clone(), o.eval_tokens, o.eval_seq_len);
    let r = tokio::task::spawn_blocking(move || -> Result<_, anyhow::Error> {
        let before = super::train::perplexity(&a, &shards, seq, tokens, 8, dev)?;
        let after = super::train::perplexity(&b, &shards, seq, tokens, 8, dev)?;
        Ok(((before.loss, before.perplexity), (after.loss, after.perplexity)))
    })
    .await
    .map_err(|e| anyhow::anyhow!("evaluation panicked: {e}"))??;
    Ok(Some(r))
}

#[cfg(not(feature = "train"))]
async fn held_out(_src: &std::path::Path, o: &GrowOutArgs) -> Result<Option<((f64, f64), (f64, f64))>, Failure> {
    match o.eval_data {
        None => Ok(None),
        Some(_) => super::train::run_without_train().map(|_| None),
    }
}
