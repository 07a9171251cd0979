//! `lehr tokenizer train`: byte-level BPE on a language-balanced sample, with a compression
//! report against a reference tokenizer (pipeline/src/tokens/train.rs does the work).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use lehr_pipeline::plan;
use lehr_pipeline::read::{read_shard, ReadStats};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, UnreadableFile};
use lehr_pipeline::stages::LangIdConfig;
use lehr_pipeline::tokens::train::{balanced_sample, compression, train, ByLanguage, Compression, TrainConfig};
use serde::Serialize;

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::{TokenizerCommand, TokenizerTrainArgs};

pub async fn run(cmd: TokenizerCommand) -> CmdResult {
    match cmd {
        TokenizerCommand::Train(a) => train_cmd(a).await,
    }
}

/// Every good document of `inputs`, by language; bad records are counted, not fatal.
pub async fn read_by_language(inputs: &[String]) -> Result<(ByLanguage, ReadStats), Failure> {
    let cwd = std::env::current_dir().context("no current directory")?;
    let paths: Vec<String> = inputs.iter().map(|p| lehr_pipeline::store::absolutize(p, &cwd)).collect();
    let files = plan::list_inputs(&paths).await.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let input = InputSpec {
        paths: paths.clone(),
        text_field: "text".into(),
        id_field: "id".into(),
        split_size: ByteSize(u64::MAX),
        invalid_utf8: InvalidUtf8::Reject,
        unreadable_file: UnreadableFile::Fail,
        max_line_bytes: ByteSize(lehr_pipeline::spec::DEFAULT_MAX_LINE_BYTES),
    };
    tokio::task::spawn_blocking(move || {
        let detector = LangIdConfig::default().build().map_err(|e| anyhow::anyhow!(e))?;
        let mut by_lang = ByLanguage::new();
        let mut stats = ReadStats::default();
        for shard in plan::split(&files, u64::MAX) {
            read_shard(&shard, &input, &mut stats, &mut |doc| {
                let lang = doc.lang.clone().or_else(|| detector.detect(&doc.text).map(|(l, _)| l));
                by_lang.entry(lang.unwrap_or_else(|| "unknown".into())).or_default().push(doc.text);
                Ok(())
            })
            .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
        }
        Ok((by_lang, stats))
    })
    .await
    .context("reader panicked")?
}

#[derive(Serialize)]
struct LangReport {
    lang: String,
    ratio: f64,
    train_bytes: u64,
    train_docs: usize,
    held_out: Compression,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<Compression>,
    /// held_out.bytes_per_token / reference.bytes_per_token (above 1: ours compresses better)
    #[serde(skip_serializing_if = "Option::is_none")]
    relative: Option<f64>,
}

#[derive(Serialize)]
struct TrainReport {
    output: String,
    vocab_size: u32,
    special_tokens: Vec<String>,
    train_bytes: u64,
    seconds: f64,
    bad_records: u64,
    reference: Option<String>,
    languages: Vec<LangReport>,
}

fn parse_ratios(specs: &[String], found: &ByLanguage) -> Result<BTreeMap<String, f64>, Failure> {
    if specs.is_empty() {
        let langs: Vec<&String> = found.keys().filter(|l| l.as_str() != "unknown").collect();
        if langs.is_empty() {
            return Err(Failure::usage(anyhow::anyhow!("no documents with a known language in the input")));
        }
        return Ok(langs.iter().map(|l| ((*l).clone(), 1.0 / langs.len() as f64)).collect());
    }
    specs
        .iter()
        .map(|s| {
            let (l, r) = s
                .split_once('=')
                .ok_or_else(|| Failure::usage(anyhow::anyhow!("--ratio `{s}`: write LANG=SHARE, e.g. zh=0.5")))?;
            let r: f64 =
                r.trim().parse().map_err(|_| Failure::usage(anyhow::anyhow!("--ratio `{s}`: not a number")))?;
            Ok((l.trim().to_string(), r))
        })
        .collect()
}

async fn train_cmd(args: TokenizerTrainArgs) -> CmdResult {
    let size = |s: &str, flag: &str| {
        s.parse::<ByteSize>().map(|b| b.0).map_err(|e| Failure::usage(anyhow::anyhow!("{flag}: {e}")))
    };
    let sample_bytes = size(&args.sample_size, "--sample-size")?;
    let eval_bytes = size(&args.eval_size, "--eval-size")?;
    if args.vocab_size < 257 + args.special_tokens.len() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--vocab-size must exceed the 256 byte tokens plus the special tokens"
        )));
    }
    let reference = match &args.reference {
        Some(p) => Some(
            tokenizers::Tokenizer::from_file(p)
                .map_err(|e| Failure::usage(anyhow::anyhow!("--reference {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let (docs, stats) = read_by_language(&args.inputs).await?;
    if stats.bad_records > 0 {
        let first = stats.bad.first().map(|b| format!(" (first: {b:?})")).unwrap_or_default();
        eprintln!("warning: skipped {} bad input records{first}", stats.bad_records);
    }
    let ratios = parse_ratios(&args.ratios, &docs)?;
    let special_tokens =
        if args.special_tokens.is_empty() { vec!["<|endoftext|>".to_string()] } else { args.special_tokens.clone() };
    let cfg = TrainConfig {
        vocab_size: args.vocab_size,
        min_frequency: args.min_frequency,
        special_tokens: special_tokens.clone(),
        ratios: ratios.clone(),
        sample_bytes,
        eval_bytes,
        seed: args.seed,
    };
    let split = balanced_sample(docs, &cfg).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let texts: Vec<String> = split.train.values().flatten().cloned().collect();
    let train_bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    if !args.json {
        eprintln!(
            "training a {}-token byte-level BPE on {:.1} MB ({} languages) ...",
            args.vocab_size,
            train_bytes as f64 / 1e6,
            ratios.len()
        );
    }
    let start = Instant::now();
    let cfg2 = cfg.clone();
    let tokenizer = tokio::task::spawn_blocking(move || train(&texts, &cfg2))
        .await
        .context("training panicked")?
        .map_err(|e| anyhow::anyhow!(e))?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    tokenizer.save(&args.output, true).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.output.display()))?;
    let mut languages = Vec::new();
    for (lang, held) in &split.held_out {
        let ours = compression(&tokenizer, held).map_err(|e| anyhow::anyhow!(e))?;
        let theirs = match &reference {
            Some(r) => Some(compression(r, held).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        };
        let relative =
            theirs.as_ref().filter(|t| t.bytes_per_token > 0.0).map(|t| ours.bytes_per_token / t.bytes_per_token);
        let train = &split.train[lang];
        languages.push(LangReport {
            lang: lang.clone(),
            ratio: ratios[lang],
            train_bytes: train.iter().map(|t| t.len() as u64).sum(),
            train_docs: train.len(),
            held_out: ours,
            reference: theirs,
            relative,
        });
    }
    let report = TrainReport {
        output: args.output.display().to_string(),
        vocab_size: tokenizer.get_vocab_size(true) as u32,
        special_tokens,
        train_bytes,
        seconds,
        bad_records: stats.bad_records,
        reference: args.reference.as_ref().map(|p| p.display().to_string()),
        languages,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("json")?);
    } else {
        println!(
            "wrote {} ({} tokens) in {:.1} s from {:.1} MB",
            report.output,
            report.vocab_size,
            seconds,
            train_bytes as f64 / 1e6
        );
        println!("compression on held-out text (UTF-8 bytes per token, higher is better):");
        println!("{:<8} {:>6} {:>12} {:>10} {:>12} {:>9}", "lang", "share", "train MB", "lehr", "reference", "ratio");
        for l in &report.languages {
            let (r, rel) = match (&l.reference, l.relative) {
                (Some(r), Some(x)) => (format!("{:.3}", r.bytes_per_token), format!("{x:.3}")),
                _ => ("-".into(), "-".into()),
            };
            println!(
                "{:<8} {:>6.2} {:>12.2} {:>10.3} {:>12} {:>9}",
                l.lang,
                l.ratio,
                l.train_bytes as f64 / 1e6,
                l.held_out.bytes_per_token,
                r,
                rel
            );
        }
    }
    Ok(EXIT_OK)
}
