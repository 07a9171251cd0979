//! The mixer over real token shards (the repo's en/zh/ko sample tokenized with the demo
//! tokenizer, several shards per language): budgets met to within one sequence, every sequence
//! a contiguous window of its own source's stream, stages continuing where the previous one
//! stopped (epochs wrap with a new shard order), resume from a single counter, and disjoint
//! rank slices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lehr_pipeline::mix::{available, realized_tokens, StageReader};
use lehr_pipeline::store;
use lehr_pipeline::tokens::tokenize::LoadedTokenizer;
use lehr_pipeline::tokens::tokenize::TokenBatcher;
use lehr_pipeline::tokens::{load_shards, TokenShard};
use lehr_schedules::mixer::SourceStream;
use lehr_schedules::{Plan, RunSpec};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Writes `shards` token shards per language under `root/<lang>/` from the first `docs`
/// documents of examples/data/<lang>.jsonl.
fn write_sources(root: &Path, docs: usize, shards: usize) {
    let tok_path = repo().join("examples/tokenizer/lehr-demo-8k.json");
    let tok = std::sync::Arc::new(
        LoadedTokenizer::from_bytes(&std::fs::read(&tok_path).unwrap(), tok_path.to_str().unwrap(), "<|endoftext|>")
            .unwrap(),
    );
    for lang in ["en", "zh", "ko"] {
        let text = std::fs::read_to_string(repo().join(format!("examples/data/{lang}.jsonl"))).unwrap();
        let texts: Vec<String> = text
            .lines()
            .take(docs)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
            .collect();
        let dir = root.join(lang);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = lehr_pipeline::spec::TokenizeSpec {
            tokenizer: tok_path.to_string_lossy().into(),
            eos: "<|endoftext|>".into(),
            source: Some(lang.into()),
            batch_docs: 64,
        };
        for (i, chunk) in texts.chunks(texts.len().div_ceil(shards)).enumerate() {
            let mut b = TokenBatcher::new(tok.clone(), &spec);
            for t in chunk {
                b.push(t.clone()).unwrap();
            }
            let (bin, idx, meta) = b.finish().unwrap();
            std::fs::write(dir.join(format!("part-{i:05}.bin")), bin.into_vec().unwrap()).unwrap();
            std::fs::write(dir.join(format!("part-{i:05}.idx")), idx).unwrap();
            std::fs::write(dir.join(format!("part-{i:05}.tokens.json")), meta).unwrap();
        }
    }
}

const SPEC: &str = r#"
version = 1
seed = 11
sequence-length = 64
global-batch-tokens = 512
[lr]
peak = 1e-3
[sources.en]
[sources.zh]
[sources.ko]
max-repetition = 3
[[stage]]
name = "stable"
lr = { phase = "stable" }
budgets = { en = 30_000, zh = 20_000, ko = 10_000 }
[[stage]]
name = "anneal"
tokens = 40_000
lr = { phase = "decay" }
ratios = { en = 0.25, zh = 0.25, ko = 0.5 }
"#;

/// The source's stream as the documentation defines it: shards in each epoch's order, epochs
/// back to back; enough of it to cover `len` tokens.
fn stream(shards: &[TokenShard], seed: u64, name: &str, len: u64) -> Vec<u32> {
    let s = SourceStream::new(seed, name, shards.iter().map(|s| s.meta.tokens).collect());
    let mut out = Vec::new();
    let mut epoch = 0;
    while (out.len() as u64) < len {
        for i in s.epoch_order(epoch) {
            shards[i].extend_range(0, shards[i].meta.tokens, &mut out);
        }
        epoch += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn mixer_reads_exact_budgets_as_contiguous_windows_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // ko: 40 documents only, so that the anneal stage wraps into a second epoch.
    write_sources(dir.path(), 200, 3);
    let ko_dir = dir.path().join("ko");
    for f in std::fs::read_dir(&ko_dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    {
        let tmp = tempfile::tempdir().unwrap();
        write_sources(tmp.path(), 40, 3);
        for f in std::fs::read_dir(tmp.path().join("ko")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), ko_dir.join(f.file_name())).unwrap();
        }
    }
    let root = store::resolve(dir.path().to_str().unwrap()).unwrap();
    let spec = RunSpec::from_toml(SPEC).unwrap();
    let avail = available(&root, &spec).await.unwrap();
    assert!(avail.tokens["ko"] < 35_000, "ko must wrap: {:?}", avail.tokens);
    let plan = Plan::new(&spec, Some(&avail.tokens)).unwrap();
    assert!(plan.stages[1].sources.iter().find(|s| s.name == "ko").unwrap().epochs_after.unwrap() > 1.0);

    let mut loaded: BTreeMap<String, Vec<TokenShard>> = BTreeMap::new();
    for name in ["en", "zh", "ko"] {
        let loc = store::resolve(dir.path().join(name).to_str().unwrap()).unwrap();
        loaded.insert(name.into(), load_shards(&loc).await.unwrap());
    }
    let total: BTreeMap<&str, u64> = ["en", "zh", "ko"]
        .iter()
        .map(|n| {
            (
                *n,
                plan.stages.iter().flat_map(|s| &s.sources).filter(|s| s.name == *n).map(|s| s.tokens).sum::<u64>() + 1,
            )
        })
        .collect();
    let streams: BTreeMap<&str, Vec<u32>> =
        total.iter().map(|(n, len)| (*n, stream(&loaded[*n], spec.seed, n, *len))).collect();

    let l = 64u64;
    for st in &plan.stages {
        let mut reader = StageReader::open(&root, &spec, st).await.unwrap();
        // Budgets to within one sequence per source.
        let realized = realized_tokens(&mut reader);
        for sp in &st.sources {
            assert!(realized[&sp.name].abs_diff(sp.planned_tokens) <= l / 2, "{} {}: {realized:?}", st.name, sp.name);
        }
        // Every sequence is the next window of its source's stream.
        let all: Vec<_> = reader.order.iter_from(0).collect();
        for &(_, slot) in &all {
            let sp = &st.sources[slot.source];
            let start = (sp.stream_start + slot.index * l) as usize;
            let seq = reader.sequence(slot);
            assert_eq!(seq.len() as u64, l + 1);
            assert_eq!(
                &seq[..],
                &streams[sp.name.as_str()][start..start + l as usize + 1],
                "{} {} #{}",
                st.name,
                sp.name,
                slot.index
            );
        }
        // Resume from a counter: the same slots from there on.
        for cut in [1u64, 7, all.len() as u64 / 2, all.len() as u64 - 1] {
            let resumed: Vec<_> = reader.order.iter_from(cut).collect();
            assert_eq!(&resumed[..], &all[cut as usize..]);
        }
        // Two ranks: disjoint halves of every global batch, together the whole stage.
        let steps = 0..st.steps;
        let r0 = reader.rank_slots(steps.clone(), st.batch_sequences, 0, 2).unwrap();
        let r1 = reader.rank_slots(steps, st.batch_sequences, 1, 2).unwrap();
        let mut both: Vec<_> = r0.iter().chain(&r1).copied().collect();
        both.sort_by_key(|x| x.0);
        assert_eq!(both, all, "ranks cover the stage once");
        assert!(r0.iter().all(|(p, _)| (p % st.batch_sequences) < st.batch_sequences / 2));
    }
    // The anneal stage's ko sequences continue after the stable stage's (no repeat, no skip).
    let ko_stable = &plan.stages[0].sources.iter().find(|s| s.name == "ko").unwrap();
    let ko_anneal = &plan.stages[1].sources.iter().find(|s| s.name == "ko").unwrap();
    assert_eq!(ko_anneal.stream_start, ko_stable.stream_start + ko_stable.tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_tokenized_differently_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_sources(dir.path(), 20, 1);
    let meta = dir.path().join("zh/part-00000.tokens.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sha = v["tokenizer"]["sha256"].as_str().unwrap().to_string();
    std::fs::write(&meta, text.replace(&sha, &"0".repeat(64))).unwrap();
    let root = store::resolve(dir.path().to_str().unwrap()).unwrap();
    let spec = RunSpec::from_toml(SPEC).unwrap();
    let err = available(&root, &spec).await.unwrap_err().to_string();
    assert!(err.contains("another tokenizer") && err.contains("zh/part-00000"), "{err}");
}
