//! `lehr schedule init --preset NAME`: starter run specs. Every preset parses and validates
//! (tested); docs/schedules.md says where each number comes from.

/// `(name, one-line description)`.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "yulan-mini-like",
        "YuLan-Mini's curriculum in 4 stages: two stable stages with its phase-1 and phase-20 category shares, two 1-sqrt annealing stages with its phase-26 (28K path) and phase-27 shares",
    ),
    (
        "gumini-like",
        "Gumini's Inheritune recipe: the first 10 blocks of a Qwen2.5-3B-shaped reference, one block more per stage to 16 over 7 stages of 393M tokens, distilling from the reference",
    ),
    ("demo", "the repo's demo: en/zh/ko token shards of examples/data, warmup → stable → anneal shifting toward Korean"),
];

/// Category shares in percent (web, general, general-sft, chinese, code, code-sft, math,
/// math-sft) from pretraining_anchors §1.6 (derived from YuLan-Mini's recipe files).
const CATEGORIES: [&str; 8] = ["web", "general", "general-sft", "chinese", "code", "code-sft", "math", "math-sft"];
const PHASE_1: [f64; 8] = [46.7, 13.0, 0.1, 10.1, 20.2, 0.0, 10.0, 0.0];
const PHASE_20: [f64; 8] = [46.7, 13.0, 0.1, 10.0, 18.7, 1.3, 8.4, 1.8];
const PHASE_26_28K: [f64; 8] = [41.9, 11.7, 2.7, 10.0, 12.5, 10.6, 5.7, 5.0];
const PHASE_27: [f64; 8] = [37.5, 15.6, 3.7, 10.0, 9.2, 11.8, 6.8, 5.4];

/// Shares normalized to sum to exactly 1 as written (the last non-zero absorbs rounding).
fn ratios(percent: &[f64; 8]) -> String {
    let sum: f64 = percent.iter().sum();
    let nonzero: Vec<usize> = (0..8).filter(|&i| percent[i] > 0.0).collect();
    let mut parts = Vec::new();
    let mut acc = 0.0;
    for (k, &i) in nonzero.iter().enumerate() {
        let r = if k + 1 == nonzero.len() { 1.0 - acc } else { (percent[i] / sum * 1e6).round() / 1e6 };
        acc += r;
        parts.push(format!("{:?} = {:.6}", CATEGORIES[i], r));
    }
    format!("{{ {} }}", parts.join(", "))
}

pub fn preset(name: &str) -> Result<String, String> {
    match name {
        "yulan-mini-like" => Ok(format!(
            r#"# lehr run spec, preset "yulan-mini-like" (docs/schedules.md). YuLan-Mini (arXiv 2412.17743)
# trained 1.08T tokens in 27 phases: 25 stable phases of ~40B at a constant LR, then ~80B of 1-sqrt
# annealing toward 0 whose mix shifts to instruction (SFT-formatted), math and code data. This
# preset keeps that shape in 4 stages; the shares are YuLan-Mini's per category (phase 1, 20, 26
# on the 28K path, 27). Point each source at its token shards (`path`, relative to --data).
# Check it: lehr schedule validate THIS_FILE --data DIR ; look at it: lehr mix inspect THIS_FILE --by category
version = 1
name = "yulan-mini-like"
seed = 0
# YuLan-Mini: 4096-token sequences, 1008 sequences per step
sequence-length = 4096
global-batch-tokens = 4128768

[lr]
# 1e-2 with muP-style scaling in YuLan-Mini (hidden matrices effectively ~1.33e-3)
peak = 1e-2

[sources.web]
category = "web"
[sources.general]
category = "general"
[sources.general-sft]
category = "sft"
[sources.chinese]
category = "chinese"
[sources.code]
category = "code"
[sources.code-sft]
category = "sft"
[sources.math]
category = "math"
[sources.math-sft]
category = "sft"

[[stage]]
name = "stable-early"
tokens = "500B"
# YuLan-Mini's phase-1 warmup is not released; 2,000 steps (~8B tokens) is a common choice
lr = {{ phase = "stable", warmup-steps = 2000 }}
ratios = {p1}

[[stage]]
name = "stable-late"
tokens = "500B"
lr = {{ phase = "stable" }}
ratios = {p20}

# The two annealing stages share one 1-sqrt decay from the peak to 0 (YuLan-Mini: 19,000 steps).
[[stage]]
name = "anneal-1"
tokens = "40B"
lr = {{ phase = "decay", shape = "1-sqrt", from = 1.0, to = 0.0 }}
ratios = {p26}

[[stage]]
name = "anneal-2"
tokens = "40B"
lr = {{ phase = "decay", shape = "1-sqrt", from = 1.0, to = 0.0 }}
ratios = {p27}
"#,
            p1 = ratios(&PHASE_1),
            p20 = ratios(&PHASE_20),
            p26 = ratios(&PHASE_26_28K),
            p27 = ratios(&PHASE_27)
        )),
        "demo" => Ok(DEMO.to_string()),
        "gumini-like" => Ok(gumini_like()),
        other => Err(format!(
            "unknown preset `{other}`; presets: {}",
            PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Gumini (pretraining_anchors §2.2): Inheritune's recipe on a Qwen2.5-3B reference (hidden
/// 2048, 36 blocks), 10 → 16 blocks over 7 stages of 393M tokens.
fn gumini_like() -> String {
    let mut out = String::from(
        r#"# lehr run spec, preset "gumini-like" (docs/schedules.md). Gumini (1.54B, 3.14B tokens; Korean
# perplexity 8.49 vs Qwen2.5-1.5B's 8.84) follows Inheritune (arXiv 2404.08634): inherit the
# first blocks of a larger trained reference, train, and grow block by block. 16 blocks at
# Qwen2.5-3B's width give Gumini's 1.54B; 10 blocks 1.08B. Stages: 10 -> 16 blocks, one block
# per stage after the first, 393M tokens each (2.75B in all; the report's 3.14B total is 8 x 393M,
# so it may hold one stage more). Each new block is the reference's next one (`grow = "inherit"`).
# Not in the report, so ours: the KD form (Hinton: alpha*CE + (1-alpha)*T^2*KL, alpha 0.5, T 1),
# the 50/50 Korean/English mix, the batch, and the LR (Inheritune's code: 3e-4, 1,000 warmup
# steps), here a WSD plan with a 1-sqrt decay in the last stage.
# Point [init].from and [distill].teacher at the reference (e.g. Qwen2.5-3B from the hub,
# tokenize the data with its tokenizer) and the sources at their token shards.
# Check it: lehr schedule validate THIS_FILE --data DIR
version = 1
name = "gumini-like"
seed = 0
sequence-length = 2048
# 128 sequences per step
global-batch-tokens = 262144

[lr]
peak = 3e-4

[sources.korean]
path = "lang=ko"
category = "korean"
[sources.english]
path = "lang=en"
category = "english"

[init]
from = "reference/Qwen2.5-3B"
layers = "0..10"

[distill]
teacher = "reference/Qwen2.5-3B"
alpha = 0.5
temperature = 1.0
kind = "forward-kl"
"#,
    );
    for (i, layers) in (10..=16).enumerate() {
        let lr = match i {
            0 => r#"{ phase = "stable", warmup-steps = 1000 }"#,
            6 => r#"{ phase = "decay", shape = "1-sqrt" }"#,
            _ => r#"{ phase = "stable" }"#,
        };
        out.push_str(&format!(
            "\n[[stage]]\nname = \"layers-{layers}\"\ntokens = \"393M\"\nlr = {lr}\nratios = {{ korean = 0.5, english = 0.5 }}\nlayers = {layers}\n"
        ));
        if i > 0 {
            out.push_str("grow = \"inherit\"\n");
        }
    }
    out
}

/// `text` (a preset) with every stage's token counts (`tokens`, `budgets`) multiplied by `scale`.
pub fn scaled(text: &str, scale: f64) -> Result<String, String> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(format!("--scale {scale}: must be a positive number"));
    }
    if scale == 1.0 {
        return Ok(text.to_string());
    }
    let count = |v: &str| -> Result<String, String> {
        let t: crate::spec::TokenCount = v.trim().trim_matches('"').parse()?;
        Ok(((t.0 as f64 * scale).round() as u64).to_string())
    };
    let mut out = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("tokens = ") {
            out.push_str(&format!("tokens = {}", count(v)?));
        } else if let Some(v) = line.strip_prefix("budgets = {") {
            let inner = v.trim_end().strip_suffix('}').ok_or_else(|| format!("cannot scale `{line}`"))?;
            let mut parts = Vec::new();
            for kv in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| format!("cannot scale `{line}`"))?;
                parts.push(format!("{} = {}", k.trim(), count(v)?));
            }
            out.push_str(&format!("budgets = {{ {} }}", parts.join(", ")));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

const DEMO: &str = r#"# lehr run spec, preset "demo": the token shards `make demo` writes from examples/data
# (en ~414K, zh ~322K, ko ~92K tokens with examples/tokenizer/lehr-demo-8k.json).
# lehr mix inspect THIS_FILE --data DEMO_TOKENS_DIR --measure
version = 1
name = "demo"
seed = 0
sequence-length = 256
global-batch-tokens = 2048

[lr]
peak = 3e-3

[sources.en]
path = "lang=en"
category = "english"
[sources.zh]
path = "lang=zh"
category = "chinese"
[sources.ko]
path = "lang=ko"
category = "korean"
# Korean is scarce: the anneal stage may take it up to twice
max-repetition = 2

[[stage]]
name = "warmup"
lr = { phase = "warmup" }
budgets = { en = "20K", zh = "20K", ko = "5K" }

[[stage]]
name = "stable"
tokens = "500K"
lr = { phase = "stable" }
ratios = { en = 0.45, zh = 0.4, ko = 0.15 }

[[stage]]
name = "anneal"
tokens = "150K"
lr = { phase = "decay", shape = "1-sqrt" }
ratios = { en = 0.3, zh = 0.3, ko = 0.4 }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plan, RunSpec};

    #[test]
    fn every_preset_parses_validates_and_plans() {
        for (name, _) in PRESETS {
            let text = preset(name).unwrap();
            let spec = RunSpec::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            let plan = Plan::new(&spec, None).unwrap();
            assert!(plan.total_steps() > 0);
        }
        let spec = RunSpec::from_toml(&preset("yulan-mini-like").unwrap()).unwrap();
        let plan = Plan::new(&spec, None).unwrap();
        // Shares reproduce the anchors' table to rounding.
        let web = plan.stages[3].sources.iter().find(|s| s.name == "web").unwrap();
        assert!((plan.stages[3].share(web) - 0.375).abs() < 1e-4);
        assert_eq!(plan.stages[2].decay_run, plan.stages[3].decay_run, "one shared decay");
        assert!(preset("nope").unwrap_err().contains("yulan-mini-like"));
        let g = RunSpec::from_toml(&preset("gumini-like").unwrap()).unwrap();
        assert_eq!(g.stages.len(), 7);
        let d = g.depths(10, Some((36, 9))).unwrap();
        assert_eq!(d.iter().map(|d| d.layers).collect::<Vec<_>>(), (10..=16).collect::<Vec<_>>());
        assert_eq!(d[6].source, Some(15), "block 15 comes from the reference's block 15");
        let plan = Plan::new(&g, None).unwrap();
        assert_eq!(plan.stages.iter().map(|s| s.tokens).sum::<u64>() / 1_000_000, 2750, "whole steps of 262,144");
        let small = RunSpec::from_toml(&scaled(&preset("gumini-like").unwrap(), 1e-3).unwrap()).unwrap();
        assert_eq!(small.stages[0].tokens.unwrap().0, 393_000);
        let demo = RunSpec::from_toml(&scaled(&preset("demo").unwrap(), 0.5).unwrap()).unwrap();
        assert_eq!(demo.stages[0].budgets["ko"].0, 2500);
        assert!(scaled("x", 0.0).is_err());
    }
}
