//! `lehr export gguf` (one file, or a ladder of file types in one pass with a size/perplexity
//! table) and `lehr import gguf`.

use std::path::{Path, PathBuf};

use lehr_formats::export::{export_gguf, ExportError, ExportReport};
use lehr_formats::import::{import_gguf, ImportError};
use lehr_formats::FileType;
use serde::Serialize;

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::{ExportCommand, ExportGgufArgs, ImportCommand};

fn import_failure(e: ImportError) -> Failure {
    match e {
        ImportError::Io { .. } => Failure::from(anyhow::anyhow!(e)),
        other => Failure::usage(anyhow::anyhow!(other)),
    }
}

pub fn import(cmd: ImportCommand) -> CmdResult {
    let ImportCommand::Gguf(a) = cmd;
    let bar = crate::progress::counting_bar(a.json, "tensors");
    let report = import_gguf(&a.file, &a.output, |i, n, name| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .map_err(import_failure)?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"output": a.output, "report": report})).expect("json")
        );
    } else {
        println!(
            "{} ({}): {} tensors, {:.1}M parameters, vocabulary {}",
            a.output.display(),
            report.architecture,
            report.tensors,
            report.parameters as f64 / 1e6,
            report.vocab_size
        );
    }
    Ok(EXIT_OK)
}

/// `--type`: one file type, `all` (the ladder), or a comma list.
fn file_types(spec: &str) -> Result<Vec<FileType>, Failure> {
    if spec.eq_ignore_ascii_case("all") {
        return Ok(FileType::LADDER.to_vec());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ft = FileType::parse(part).ok_or_else(|| {
            let names: Vec<String> = FileType::ALL.iter().map(|t| t.name().to_lowercase()).collect();
            Failure::usage(anyhow::anyhow!("--type {part}: use {}, or all", names.join(", ")))
        })?;
        if !out.contains(&ft) {
            out.push(ft);
        }
    }
    if out.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!("--type is empty")));
    }
    Ok(out)
}

/// One row of the ladder table.
#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    report: ExportReport,
    perplexity: Option<f64>,
    /// Perplexity over F16's (or the checkpoint's, without an F16 file).
    perplexity_ratio: Option<f64>,
}

pub async fn export(cmd: ExportCommand) -> CmdResult {
    let ExportCommand::Gguf(a) = cmd;
    let types = file_types(&a.ty)?;
    let several = types.len() > 1 || a.ty.eq_ignore_ascii_case("all");
    let outputs: Vec<(FileType, PathBuf)> = if several {
        std::fs::create_dir_all(&a.output).map_err(|e| {
            Failure::usage(anyhow::anyhow!("{}: {e} (with several types, -o is a directory)", a.output.display()))
        })?;
        let name = a.name.clone().unwrap_or_else(|| {
            a.checkpoint
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "model".into())
        });
        types.iter().map(|t| (*t, a.output.join(format!("{name}-{}.gguf", t.name())))).collect()
    } else {
        vec![(types[0], a.output.clone())]
    };
    // the held-out shards first: a bad --eval-data fails before minutes of quantization
    let eval = match &a.eval_data {
        Some(data) => Some(Eval::load(data, &a).await?),
        None => None,
    };
    let bar = crate::progress::counting_bar(a.json, "tensors");
    let (checkpoint, tokenizer, outs, b) = (a.checkpoint.clone(), a.tokenizer.clone(), outputs.clone(), bar.clone());
    let reports = tokio::task::spawn_blocking(move || {
        export_gguf(&checkpoint, &outs, tokenizer.as_deref(), |i, n, name| {
            b.set_length(n as u64);
            b.set_position(i as u64);
            b.set_message(name.to_string());
        })
    })
    .await
    .map_err(|e| anyhow::anyhow!("export panicked: {e}"))?
    .map_err(|e| match e {
        ExportError::Gguf(_) => Failure::from(anyhow::anyhow!(e)),
        other => Failure::usage(anyhow::anyhow!(other)),
    })?;
    bar.finish_and_clear();

    let (source_ppl, ppls) = match eval {
        Some(e) => {
            let (s, p) = e.run(&a.checkpoint, &reports, a.json).await?;
            (Some(s), p)
        }
        None => (None, vec![None; reports.len()]),
    };
    let base =
        reports.iter().zip(&ppls).find(|(r, _)| r.file_type == FileType::F16).and_then(|(_, p)| *p).or(source_ppl);
    let rows: Vec<Row> = reports
        .into_iter()
        .zip(ppls)
        .map(|(report, perplexity)| Row {
            report,
            perplexity,
            perplexity_ratio: perplexity.zip(base).map(|(p, b)| p / b),
        })
        .collect();
    if a.json {
        let v = serde_json::json!({"checkpoint": a.checkpoint, "checkpoint_perplexity": source_ppl, "files": rows});
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(EXIT_OK);
    }
    print_table(&rows, source_ppl);
    Ok(EXIT_OK)
}

fn print_table(rows: &[Row], source_ppl: Option<f64>) {
    let with_ppl = rows.iter().any(|r| r.perplexity.is_some());
    println!(
        "{:<8} {:>10} {:>6}{}  file",
        "type",
        "MiB",
        "bpw",
        if with_ppl { format!(" {:>11} {:>7}", "perplexity", "×F16") } else { String::new() }
    );
    for r in rows {
        let ppl = match (r.perplexity, r.perplexity_ratio) {
            (Some(p), Some(x)) => format!(" {p:>11.4} {x:>7.4}"),
            (Some(p), None) => format!(" {p:>11.4} {:>7}", "-"),
            _ if with_ppl => format!(" {:>11} {:>7}", "-", "-"),
            _ => String::new(),
        };
        println!(
            "{:<8} {:>10.2} {:>6.2}{ppl}  {}",
            r.report.file_type.name(),
            r.report.file_bytes as f64 / (1 << 20) as f64,
            r.report.bits_per_weight,
            r.report.path.display()
        );
    }
    if let Some(p) = source_ppl {
        println!("checkpoint perplexity (unquantized): {p:.4}");
    }
    let first = &rows[0].report;
    println!("{}: {} tensors, {:.1}M parameters", first.architecture, first.tensors, first.parameters as f64 / 1e6);
    for r in rows {
        if !r.report.fallbacks.is_empty() {
            let list: Vec<String> = r
                .report
                .fallbacks
                .iter()
                .map(|f| format!("{} {}→{}", f.tensor, f.wanted.name(), f.used.name()))
                .collect();
            let shown = list.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
            let more = if list.len() > 4 { format!(" and {} more", list.len() - 4) } else { String::new() };
            println!(
                "  {}: {} tensors fell back (rows not whole blocks): {shown}{more}",
                r.report.file_type.name(),
                list.len()
            );
        }
    }
}

/// The perplexity pass of `--eval-data`: each GGUF file is imported back (dequantized) into a
/// temporary checkpoint and evaluated by lehr's model on the held-out shards.
#[cfg(feature = "train")]
struct Eval {
    shards: Vec<lehr_pipeline::tokens::TokenShard>,
    device: lehr_train::tch::Device,
    tokens: u64,
    seq_len: i64,
}

#[cfg(feature = "train")]
impl Eval {
    async fn load(data: &str, a: &ExportGgufArgs) -> Result<Self, Failure> {
        Ok(Eval {
            shards: super::train::load_eval_shards(data).await?,
            device: super::train::device(a.device.as_deref())?,
            tokens: a.eval_tokens,
            seq_len: a.eval_seq_len,
        })
    }

    async fn run(
        self,
        checkpoint: &Path,
        reports: &[ExportReport],
        quiet: bool,
    ) -> Result<(f64, Vec<Option<f64>>), Failure> {
        let files: Vec<PathBuf> = reports.iter().map(|r| r.path.clone()).collect();
        let checkpoint = checkpoint.to_path_buf();
        let bar = crate::progress::counting_bar(quiet, "perplexities");
        bar.set_length(files.len() as u64 + 1);
        let b = bar.clone();
        let out = tokio::task::spawn_blocking(move || -> Result<(f64, Vec<Option<f64>>), Failure> {
            let ppl = |dir: &Path| -> Result<f64, Failure> {
                Ok(super::train::perplexity(dir, &self.shards, self.seq_len, self.tokens, 4, self.device)?.perplexity)
            };
            b.set_message("checkpoint");
            let source = ppl(&checkpoint)?;
            let mut out = Vec::new();
            for f in &files {
                b.inc(1);
                b.set_message(f.display().to_string());
                let tmp = tempfile::Builder::new().prefix("lehr-ppl-").tempdir().map_err(|e| anyhow::anyhow!(e))?;
                import_gguf(f, tmp.path(), |_, _, _| {}).map_err(import_failure)?;
                out.push(Some(ppl(tmp.path())?));
            }
            Ok((source, out))
        })
        .await
        .map_err(|e| anyhow::anyhow!("evaluation panicked: {e}"))??;
        bar.finish_and_clear();
        Ok(out)
    }
}

#[cfg(not(feature = "train"))]
struct Eval;

#[cfg(not(feature = "train"))]
impl Eval {
    async fn load(_data: &str, _a: &ExportGgufArgs) -> Result<Self, Failure> {
        super::train::run_without_train().map(|_| Eval)
    }

    async fn run(self, _: &Path, _: &[ExportReport], _: bool) -> Result<(f64, Vec<Option<f64>>), Failure> {
        unreachable!("Eval::load refuses without the train feature")
    }
}
