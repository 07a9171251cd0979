//! `lehr corpus init [--preset NAME]`: a commented starter spec for the given inputs. Every
//! preset parses back into a valid [`PipelineSpec`](crate::PipelineSpec) (tested), so scripts
//! can start from it. docs/presets.md says where each preset's numbers come from.

/// Renders a TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `(name, one-line description)` of every preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("basic", "normalize, PII masking, minimum length (any language)"),
    ("fineweb", "English FineWeb recipe: language id (en ≥ 0.65), Gopher repetition + quality, C4 (no terminal-punctuation rule), FineWeb filters, datatrove's default parameters"),
    ("fineweb-zh", "Chinese FineWeb-2 recipe: language id (zh), jieba words, FineWeb-2 cmn_Hani thresholds and stop words, no C4"),
    ("fineweb-ko", "Korean FineWeb-2 recipe: language id (ko), eojeol words, FineWeb-2 kor_Hang thresholds, particle stop words"),
    ("bilingual", "zh/en/ko corpus: cleanup, language routing to lang=xx/ outputs, per-language filters (FineWeb / FineWeb-2 values), PII masking"),
    ("dedup-exact", "exact dedup across the whole job on a normalized content hash (NFKC, lowercase, whitespace)"),
    ("dedup-minhash", "MinHash-LSH near dedup, FineWeb-style: word 5-grams for en/ko, character 5-grams for zh/ja, 14 bands x 8 rows (threshold ~0.72)"),
    ("decontaminate", "drop documents sharing a 13-gram with evaluation items (--eval-set FILE.jsonl, repeatable)"),
    ("tokenize", "token shards for training (Megatron .bin/.idx + metadata) with a tokenizer.json (--tokenizer FILE [--eos TOKEN])"),
    ("synth-qa", "YuLan-Mini-style problem/solution pairs inspired by each document, through OpenAI-compatible endpoints (--endpoint URL [--model NAME]); stop marker <END>, temperature 0.7, 2,048 tokens"),
    ("synth-rewrite", "each document rewritten as a clear, textbook-style passage (WRAP-style rephrasing) through --endpoint URL"),
    ("synth-reasoning", "a question from each document answered step by step with a final answer (reasoning traces) through --endpoint URL"),
];

/// Preset inputs beyond paths and name.
#[derive(Debug, Clone, Default)]
pub struct PresetExtras {
    /// Evaluation sets for `decontaminate`.
    pub eval_sets: Vec<String>,
    /// `tokenizer.json` for `tokenize`.
    pub tokenizer: Option<String>,
    /// End-of-document token for `tokenize` (default `<|endoftext|>`, Qwen2.5's).
    pub eos: Option<String>,
    /// OpenAI-compatible base URLs for the `synth-*` presets.
    pub endpoints: Vec<String>,
    /// The model name the endpoints serve (default `lehr`, what `lehr serve` answers to).
    pub model: Option<String>,
}

/// The spec of a preset, or an error listing the presets. `lid_model` switches language id to
/// fastText (e.g. lid.176.ftz); without it the built-in detector is used.
pub fn preset_spec(
    preset: &str,
    inputs: &[String],
    output: &str,
    name: Option<&str>,
    lid_model: Option<&str>,
    extras: &PresetExtras,
) -> Result<String, String> {
    let eval_sets = &extras.eval_sets;
    if preset == "basic" {
        return Ok(starter_spec(inputs, output, name));
    }
    let head = |default_name: &str, stages: String, partition: bool| {
        let paths = inputs.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
        let name = quote(name.unwrap_or(default_name));
        let partition = if partition {
            "# kept documents go to lang=zh/, lang=en/, lang=ko/ by the detected language\npartition-by = \"lang\"\n"
        } else {
            ""
        };
        format!(
            r#"# lehr corpus pipeline, preset "{preset}" (docs/presets.md: where every number comes from;
# docs/pipeline.md: every key). Run it:  lehr corpus build THIS_FILE
# Then look at what each rule did:     lehr corpus report OUTPUT_DIR
version = 1
name = {name}

[input]
paths = [{paths}]
text-field = "text"
id-field = "id"
split-size = "64MiB"
invalid-utf8 = "reject"
unreadable-file = "fail"

{stages}
[output]
path = {output}
formats = ["jsonl.zst"]
zstd-level = 3
overwrite = false
# per-document scores and decisions in attributes/part-NNNNN.parquet (re-filter without recomputing)
attributes = true
# keep scoring after a document is dropped, so every rule's score exists for every document
score-dropped = true
{partition}"#,
            output = quote(output)
        )
    };
    let lid = |keep: &[&str], min: f64, by_lang: &str| {
        let keep = keep.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let backend = match lid_model {
            Some(m) => format!("backend = \"fasttext\"\nmodel = {}\n", quote(m)),
            None => "# \"builtin\" needs no model file; for FineWeb-compatible scores use\n# backend = \"fasttext\" and model = \"path/to/lid.176.ftz\" (or: lehr corpus init --lid-model PATH)\nbackend = \"builtin\"\n".to_string(),
        };
        format!("[[stage]]\ntype = \"lang-id\"\n{backend}keep = [{keep}]\nmin-score = {min}\n{by_lang}\n")
    };
    let normalize = "[[stage]]\ntype = \"normalize\"\nunicode = \"nfc\"\nstrip-control = true\nwhitespace = false\n\n";
    let boilerplate = "# cookie/share/login/breadcrumb lines (en, zh, ko), HTML leftovers, repeated blank lines\n[[stage]]\ntype = \"boilerplate\"\n\n";
    let pii = "[[stage]]\ntype = \"pii\"\nemail = \"<EMAIL>\"\nphone = \"<PHONE>\"\nip = \"<IP>\"\n\n";
    let en = |langs: &str| {
        format!(
            r#"# Gopher repetition, datatrove defaults (Gopher paper, table A1)
[[stage]]
type = "gopher-repetition"
{langs}dup-line-frac = 0.3
dup-para-frac = 0.3
dup-line-char-frac = 0.2
dup-para-char-frac = 0.2
top-n-grams = [[2, 0.2], [3, 0.18], [4, 0.16]]
dup-n-grams = [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]]

# Gopher quality, datatrove defaults
[[stage]]
type = "gopher-quality"
{langs}min-doc-words = 50
max-doc-words = 100000
min-avg-word-length = 3
max-avg-word-length = 10
max-symbol-word-ratio = 0.1
max-bullet-lines-ratio = 0.9
max-ellipsis-lines-ratio = 0.3
max-non-alpha-words-ratio = 0.8
min-stop-words = 2
stop-words = ["the", "be", "to", "of", "and", "that", "have", "with"]

# C4 rules as FineWeb ran them (examples/fineweb.py: filter_no_terminal_punct=False)
[[stage]]
type = "c4"
{langs}filter-no-terminal-punct = false
min-num-sentences = 5
min-words-per-line = 3
max-word-length = 1000

# FineWeb quality, datatrove defaults
[[stage]]
type = "fineweb"
{langs}line-punct-thr = 0.12
short-line-thr = 0.67
short-line-length = 30
char-duplicates-ratio = 0.01
new-line-ratio = 0.3

"#
        )
    };
    let zh = |langs: &str| {
        format!(
            r#"# FineWeb-2 cmn_Hani values (huggingface/fineweb-2 configs/cmn_Hani.yml); words by jieba
[[stage]]
type = "gopher-repetition"
{langs}dup-line-frac = 0.287
# FineWeb-2 turns the paragraph and line-character rules off for every language
# (fineweb-2-pipeline.py: dup_para_frac = dup_line_char_frac = dup_para_char_frac = 0)
top-n-grams = [[2, 0.256], [3, 0.201], [4, 0.171]]
dup-n-grams = [[5, 0.198], [6, 0.182], [7, 0.167], [8, 0.154], [9, 0.14], [10, 0.127]]

[[stage]]
type = "fineweb"
{langs}line-punct-thr = 0.106
# FineWeb-2 disables the short-line rule (short_line_thr = 999); 1 can never be exceeded
short-line-thr = 1
short-line-length = 30
# FineWeb-2 raised char_dup_ratio from 0.01 to 0.1 for all languages
char-duplicates-ratio = 0.1
new-line-ratio = 0.178

[[stage]]
type = "gopher-quality"
{langs}min-doc-words = 50
max-doc-words = 100000
min-avg-word-length = 1
max-avg-word-length = 5
max-symbol-word-ratio = 0.1
max-bullet-lines-ratio = 0.9
max-ellipsis-lines-ratio = 0.3
max-non-alpha-words-ratio = 0.735
min-stop-words = 2
stop-words = ["的", "年", "在", "月", "是", "和", "日", "了", "於", "·", "為", "有", "被", "人", "中", "为", "他", "與", "後", "也", "而", "由"]

"#
        )
    };
    let ko = |langs: &str| {
        format!(
            r#"# FineWeb-2 kor_Hang values (huggingface/fineweb-2 configs/kor_Hang.yml); words are eojeol
[[stage]]
type = "gopher-repetition"
{langs}dup-line-frac = 0.374
# off, as in FineWeb-2 (fineweb-2-pipeline.py)
top-n-grams = [[2, 0.282], [3, 0.228], [4, 0.185]]
dup-n-grams = [[5, 0.201], [6, 0.184], [7, 0.168], [8, 0.154], [9, 0.14], [10, 0.127]]

[[stage]]
type = "fineweb"
{langs}line-punct-thr = 0.062
# disabled, as in FineWeb-2
short-line-thr = 1
short-line-length = 30
char-duplicates-ratio = 0.1
new-line-ratio = 0.196

# FineWeb-2 counts Kiwi morphemes; lehr counts eojeol, so the mean word length bound is wider
# (max 10 instead of 6) and the particle stop words match as word endings.
[[stage]]
type = "gopher-quality"
{langs}min-doc-words = 50
max-doc-words = 100000
min-avg-word-length = 1
max-avg-word-length = 10
max-symbol-word-ratio = 0.1
max-bullet-lines-ratio = 0.9
max-ellipsis-lines-ratio = 0.3
max-non-alpha-words-ratio = 0.791
min-stop-words = 2
stop-words = ["의", "다", "이", "는", "에", "을", "한", "년", "하", "은", "를", "했", "고", "에서", "가", "있", "으로", "인", "월", "로", "되"]
stop-word-match = "suffix"

"#
        )
    };
    Ok(match preset {
        "fineweb" => head("fineweb-en", format!("{}{}", lid(&["en"], 0.65, ""), en("")), false),
        "fineweb-zh" => head(
            "fineweb-zh",
            format!("{}{}", lid(&["zh"], if lid_model.is_some() { 0.692 } else { 0.5 }, ""), zh("")),
            false,
        ),
        "fineweb-ko" => head(
            "fineweb-ko",
            format!("{}{}", lid(&["ko"], if lid_model.is_some() { 0.842 } else { 0.5 }, ""), ko("")),
            false,
        ),
        "bilingual" => head(
            "bilingual",
            format!(
                "{normalize}{boilerplate}{}{}{}{}{pii}",
                if lid_model.is_some() {
                    lid(&["zh", "en", "ko"], 0.65, "# FineWeb-2's per-language thresholds (language_score in its configs, calibrated on GlotLID)\nmin-score-by-lang = { zh = 0.692, ko = 0.842 }\n")
                } else {
                    lid(
                        &["zh", "en", "ko"],
                        0.5,
                        "# the built-in detector's score is script purity (CJK) or whatlang's confidence\n",
                    )
                },
                en("languages = [\"en\"]\n"),
                // beyond FineWeb-2: score full-width digits and Latin as ASCII (docs/presets.md)
                zh("languages = [\"zh\"]\nscore-view = \"width-normalized\"\n"),
                ko("languages = [\"ko\"]\nscore-view = \"width-normalized\"\n"),
            ),
            true,
        ),
        "dedup-exact" => head("dedup-exact", DEDUP_EXACT.to_string(), false),
        "dedup-minhash" => head("dedup-minhash", DEDUP_MINHASH.to_string(), false),
        "decontaminate" => {
            if eval_sets.is_empty() {
                return Err("the decontaminate preset needs --eval-set FILE.jsonl (evaluation items with `text`, or `context` + `choices` + `gold`)".into());
            }
            let sets = eval_sets.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
            head(
                "decontaminate",
                format!(
                    r#"# Drop documents that share any 13-gram (GPT-3's and DCLM's n) with an evaluation item.
# Units: lowercase words split at whitespace and punctuation; CJK ideographs and kana count
# one unit each. manifest.json counts the hits per item (`item:<id>`); `action = "flag"` keeps
# the documents with `contaminated_by = [ids]` instead.
[[stage]]
type = "decontaminate"
eval-sets = [{sets}]
ngram = 13
action = "drop"

"#
                ),
                false,
            )
        }
        "tokenize" => {
            let Some(tokenizer) = &extras.tokenizer else {
                return Err(
                    "the tokenize preset needs --tokenizer FILE (a Hugging Face tokenizer.json, e.g. Qwen2.5's)".into(),
                );
            };
            let eos = extras.eos.as_deref().unwrap_or("<|endoftext|>");
            let mut text = head("tokenize", String::new(), false)
                .replace(
                    "formats = [\"jsonl.zst\"]",
                    "# token shards only; add \"jsonl.zst\" to keep the text too\nformats = [\"tokens\"]",
                )
                .replace("attributes = true", "attributes = false");
            text.push_str(&format!(
                r#"
# Every kept document is encoded (no special tokens added) and followed by `eos`; each output
# file becomes part-NNNNN.bin/.idx (Megatron-LM indexed dataset, uint16 ids when the vocabulary
# is under 65,500, int32 otherwise) and part-NNNNN.tokens.json (docs/formats.md).
[output.tokenize]
tokenizer = {tokenizer}
eos = {eos}
# the mixer's name for these tokens (default: the spec's name)
# source = "web-en"
batch-docs = 512
"#,
                tokenizer = quote(tokenizer),
                eos = quote(eos)
            ));
            text
        }
        "synth-qa" | "synth-rewrite" | "synth-reasoning" => {
            if extras.endpoints.is_empty() {
                return Err(format!(
                    "the {preset} preset needs --endpoint URL (an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1; `lehr serve --checkpoint DIR` starts one)"
                ));
            }
            let endpoints: String = extras
                .endpoints
                .iter()
                .map(|u| format!("[[stage.endpoint]]\nurl = {}\nweight = 1\nmax-concurrency = 64\n# rpm = 600\n# tpm = 200000\n\n", quote(u)))
                .collect();
            let model = quote(extras.model.as_deref().unwrap_or("lehr"));
            let (template, post) = match preset {
                "synth-qa" => (SYNTH_QA, 100),
                "synth-rewrite" => (SYNTH_REWRITE, 200),
                _ => (SYNTH_REASONING, 100),
            };
            let decontam = if eval_sets.is_empty() {
                "# decontaminate the generated text against your eval sets (lehr corpus init --eval-set FILE):\n# [[stage]]\n# type = \"decontaminate\"\n# eval-sets = [\"arc.jsonl\"]\n# ngram = 13\n".to_string()
            } else {
                let sets = eval_sets.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
                format!("# generated text must not leak evaluation items (13-grams, as in the decontaminate preset)\n[[stage]]\ntype = \"decontaminate\"\neval-sets = [{sets}]\nngram = 13\naction = \"drop\"\n")
            };
            head(
                preset,
                format!(
                    r#"# Synthetic data (docs/synthetic.md). Every input document gets `n` samples of each
# template, one request each with its own seed; answers are cached under
# <output>/_lehr/synth-cache (a rerun sends only what was never answered).
[[stage]]
type = "synth"
# the name the endpoints serve (part of every cache key)
model = {model}
# "chat" (the server applies its chat template) or "completions"
api = "chat"
# api-key-env = "OPENAI_API_KEY"
# requests in flight per shard task; each endpoint also caps its own
concurrency = 16
timeout-secs = 300
max-retries = 8
backoff-base-secs = 1
backoff-max-secs = 60
# an endpoint failing this many times in a row leaves the rotation for the cool-down
breaker-failures = 5
breaker-cooldown-secs = 30
seed = 0
cache = true
# cache-path = "s3://bucket/synth-cache"
max-input-chars = 6000
keep-input = false

{endpoints}{template}
# The generated documents go through the stages below like any other source.
[[stage]]
type = "normalize"
unicode = "nfc"
strip-control = true
whitespace = false

[[stage]]
type = "min-length"
min-chars = {post}

# catches degenerate, looping generations (Gopher repetition, datatrove defaults)
[[stage]]
type = "gopher-repetition"
dup-line-frac = 0.3
dup-para-frac = 0.3
dup-line-char-frac = 0.2
dup-para-char-frac = 0.2
top-n-grams = [[2, 0.2], [3, 0.18], [4, 0.16]]
dup-n-grams = [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]]

{decontam}
[dedup]
method = "exact"
"#
                ),
                false,
            )
        }
        other => {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            return Err(format!("unknown preset `{other}`; presets: {}", names.join(", ")));
        }
    })
}

/// YuLan-Mini's synthetic math/science data: a problem inspired by a web document and its
/// worked solution, one stop marker, temperature 0.7, up to 2,048 tokens (gen_vllm.py). The
/// wording of the prompt is lehr's.
const SYNTH_QA: &str = r#"# YuLan-Mini's problem/solution recipe: its stop marker <END>, temperature 0.7 and 2,048
# tokens (the prompt wording is lehr's; docs/presets.md)
[[stage.template]]
name = "qa"
system = "You are a teacher who writes exam problems with complete, correct worked solutions."
prompt = '''Here is a document:

{text}

Inspired by the document, write one self-contained problem that a student could solve, then its
detailed step-by-step solution. Use this format:

Problem: <the problem>
Solution: <the solution>

Write <END> when you are done.'''
stop = ["<END>"]
temperature = 0.7
max-tokens = 2048
n = 1
"#;

const SYNTH_REWRITE: &str = r#"# rephrase web text as clean reference prose (WRAP, Maini et al. 2024, "Wikipedia style")
[[stage.template]]
name = "rewrite"
prompt = '''Rewrite the following text as a clear, well-organized passage in the style of a textbook or
encyclopedia, in the same language as the text. Keep every fact; drop navigation, ads and
chatter. Answer with the passage only.

{text}'''
temperature = 0.7
max-tokens = 1024
n = 1
"#;

const SYNTH_REASONING: &str = r#"# a question grounded in the document, answered step by step (reasoning traces)
[[stage.template]]
name = "reasoning"
prompt = '''Read the text below, ask one question that needs several steps of reasoning to answer from
it, then answer it step by step. End with a line "Final answer: ...".

{text}

Question:'''
temperature = 0.7
max-tokens = 1536
n = 1
"#;

const DEDUP_EXACT: &str = r#"# Exact dedup across every shard of the job: documents whose text is the same after
# normalization form one cluster; the first in input order survives (keep = "longest" keeps the
# longest). dedup.json reports the clusters.
[dedup]
method = "exact"
normalize = ["nfkc", "lowercase", "whitespace"]
keep = "first"
# add dedup_cluster and dedup_cluster_size to surviving documents of clusters (for upsampling)
annotate = true

"#;

const DEDUP_MINHASH: &str = r#"# MinHash-LSH near dedup across the whole job (docs/dedup.md). FineWeb's settings
# (datatrove's MinhashConfig defaults): word 5-grams, 14 bands x 8 rows = 112 hashes, so a pair
# with Jaccard 0.72 is caught half of the time and one with 0.8 92% of the time:
#   lehr dedup curve --bands 14 --rows 8
# Chinese and Japanese have no spaces: character 5-grams instead (`unit = "jieba"` for jieba words).
[dedup]
method = "minhash"
keep = "first"
# datatrove's TextNormConfig: lowercase, punctuation and digits normalized, whitespace collapsed
normalize = ["nfkc", "lowercase", "punctuation", "digits", "whitespace"]
bands = 14
rows = 8
seed = 1
shingle = { unit = "words", size = 5 }
# 0: one bucket task per band per 32 GiB of input
bucket-partitions = 0
annotate = true

[dedup.languages]
zh = { unit = "chars", size = 5 }
ja = { unit = "chars", size = 5 }

"#;

pub fn starter_spec(inputs: &[String], output: &str, name: Option<&str>) -> String {
    let paths = inputs.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
    let name = name.map(quote).unwrap_or_else(|| quote("corpus"));
    format!(
        r#"# lehr corpus pipeline (docs/pipeline.md documents every key).
# Run it:   lehr corpus build THIS_FILE            (embedded coordinator + local workers)
#           lehr corpus build THIS_FILE --coordinator http://HOST:7070
version = 1
name = {name}

[input]
# Local paths, directories, globs (`*`, `**`, `?`, `[..]`, `{{a,b}}`) or object-store URLs
# (s3://bucket/prefix/*.jsonl.zst). Formats by extension: .jsonl .jsonl.gz .jsonl.zst .parquet
paths = [{paths}]
# JSON keys / parquet columns of the text and the id (a missing id gets FILE@OFFSET).
text-field = "text"
id-field = "id"
# JSONL and parquet files bigger than this are split into byte-range shards (parquet by row group).
split-size = "64MiB"
# A line that is not valid UTF-8: "reject" (skip it, report file:line) or "replace" (U+FFFD).
invalid-utf8 = "reject"
# A file that cannot be read at all (wrong schema, not JSONL): "fail" the job, or "skip" it
# and list it in the manifest.
unreadable-file = "fail"

# Stages run in this order, fused in one pass over each shard.
[[stage]]
type = "normalize"
# "nfc" (default), "nfkc" (also folds full-width forms) or "none"
unicode = "nfc"
# drop control characters (except \n, \t), BOM and zero-width spaces; unify line ends
strip-control = true
# one space between words, trimmed lines, at most one blank line in a row
whitespace = true

# mask e-mails, phone numbers (international, zh, ko, US formats) and IP addresses
[[stage]]
type = "pii"
email = "<EMAIL>"
phone = "<PHONE>"
ip = "<IP>"

[[stage]]
type = "min-length"
# characters (not bytes) after normalization, so CJK and Latin text are measured alike
min-chars = 50
# max-chars = 1000000

[output]
path = {output}
# "jsonl.zst" and/or "parquet"; one part-NNNNN file per shard, plus manifest.json and rejects.jsonl
formats = ["jsonl.zst", "parquet"]
zstd-level = 3
# refuse to write into a directory that already holds a finished job unless true
overwrite = false
"#,
        output = quote(output),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

    #[test]
    fn starter_parses_and_validates() {
        let text = starter_spec(&["data/*.jsonl".into(), "s3://b/x.parquet".into()], "out dir", Some("demo \"x\""));
        let spec = PipelineSpec::from_toml(&text).unwrap();
        assert_eq!(spec.input.paths, vec!["data/*.jsonl", "s3://b/x.parquet"]);
        assert_eq!(spec.output.path, "out dir");
        assert_eq!(spec.name.as_deref(), Some("demo \"x\""));
        assert_eq!(spec.stages.len(), 3);
    }

    #[test]
    fn every_preset_parses_and_validates() {
        let extras = PresetExtras {
            eval_sets: vec!["eval.jsonl".into()],
            tokenizer: Some("tokenizer.json".into()),
            eos: None,
            endpoints: vec!["http://127.0.0.1:8000/v1".into()],
            model: None,
        };
        for (preset, _) in PRESETS {
            for model in [None, Some("lid.176.ftz")] {
                let text = preset_spec(preset, &["in/*.jsonl".into()], "out", None, model, &extras).unwrap();
                let spec = PipelineSpec::from_toml(&text).unwrap_or_else(|e| panic!("{preset}: {e}\n{text}"));
                assert!(!spec.stages.is_empty() || spec.dedup.is_some() || spec.output.tokenize.is_some(), "{preset}");
            }
        }
        let text = preset_spec("bilingual", &["x".into()], "o", None, None, &PresetExtras::default()).unwrap();
        let spec = PipelineSpec::from_toml(&text).unwrap();
        assert_eq!(spec.output.partition_by, Some(crate::spec::PartitionBy::Lang));
        let labels = crate::task::stage_labels(&spec.stages);
        assert!(
            labels.contains(&"gopher-quality-zh".to_string()) && labels.contains(&"c4-en".to_string()),
            "{labels:?}"
        );
        assert!(preset_spec("nope", &[], "o", None, None, &PresetExtras::default())
            .unwrap_err()
            .contains("fineweb-zh"));
        assert!(preset_spec("decontaminate", &[], "o", None, None, &PresetExtras::default())
            .unwrap_err()
            .contains("--eval-set"));
        assert!(preset_spec("tokenize", &[], "o", None, None, &PresetExtras::default())
            .unwrap_err()
            .contains("--tokenizer"));
        let mh = PipelineSpec::from_toml(
            &preset_spec("dedup-minhash", &["x".into()], "o", None, None, &PresetExtras::default()).unwrap(),
        )
        .unwrap()
        .dedup
        .unwrap();
        assert_eq!((mh.bands, mh.rows), (14, 8));
        assert_eq!(mh.shingle_for(Some("zh")).unit, crate::dedup::ShingleUnit::Chars);
        assert_eq!(mh.shingle_for(Some("en")).unit, crate::dedup::ShingleUnit::Words);
    }
}
