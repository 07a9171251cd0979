//! `lehr schedule import-yulan DIR`: YuLan-Mini's per-phase recipe JSON files
//! (`pretrain/datasets/data_mix/NN_DATE_TIME.json` upstream) → a run spec. One stage per file,
//! in phase order; every source keeps its name and gets as budget the tokens YuLan-Mini
//! actually selected (`Number of Selected Tokens(B)` × 10⁹, which recovers their integer token
//! counts exactly). Phases whose manual budgets carry an SFT flag (the annealing recipes) become
//! 1-sqrt decay stages that share one decay; the others are stable stages. Categories come from
//! source names (rules below, approximating the paper's figure legend); edit them freely.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::spec::{LrPhase, LrSpec, RunSpec, SourceSpec, StageLr, StageSpec, TokenCount, RUN_SPEC_VERSION};

/// YuLan-Mini's sequence length in phases 1–25 and on the 4K path.
pub const SEQUENCE_LENGTH: u32 = 4096;
/// 1008 sequences × 4096 tokens per step (README: "batch size of 1008").
pub const GLOBAL_BATCH_TOKENS: u64 = 1008 * 4096;
/// `--learning_rate 1e-2` with µP scaling (the hidden matrices see ≈1.33e-3).
pub const PEAK_LR: f64 = 1e-2;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// One recipe file.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub file: PathBuf,
    /// The file name without `.json` (`26_20241127_205447`): the stage name.
    pub stem: String,
    /// The leading number of the file name.
    pub phase: Option<u64>,
    /// `Total Tokens(B)`.
    pub total_b: f64,
    /// `Number of Selected Tokens(B)`, in the file's order.
    pub selected: Vec<(String, f64)>,
    /// Sources whose manual budget is flagged as SFT data (`[B, "1"]`).
    pub sft: Vec<String>,
    /// Whether the manual budgets carry flags at all (the annealing recipes).
    pub flagged: bool,
}

impl Recipe {
    pub fn read(path: &Path) -> Result<Recipe, ImportError> {
        let p = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ImportError::Read { path: p.clone(), message: e.to_string() })?;
        // serde_json keeps the file's key order only with `preserve_order`; read the order
        // of the selected sources ourselves is not needed: stages key budgets by name.
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ImportError::Format { path: p.clone(), message: format!("not JSON: {e}") })?;
        let fmt = |m: &str| ImportError::Format { path: p.clone(), message: m.to_string() };
        let total_b = v
            .get("Total Tokens(B)")
            .and_then(Value::as_f64)
            .ok_or_else(|| fmt("no number `Total Tokens(B)` (is this a YuLan-Mini data_mix recipe?)"))?;
        let sel = v
            .get("Number of Selected Tokens(B)")
            .and_then(Value::as_object)
            .ok_or_else(|| fmt("no object `Number of Selected Tokens(B)`"))?;
        let mut selected = Vec::with_capacity(sel.len());
        for (name, b) in sel {
            let b = b
                .as_f64()
                .filter(|b| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| fmt(&format!("`Number of Selected Tokens(B)`.{name:?} is not a non-negative number")))?;
            selected.push((name.clone(), b));
        }
        let mut sft = Vec::new();
        let mut flagged = false;
        if let Some(manual) = v.get("Manual Selected Tokens(B)").and_then(Value::as_object) {
            for (name, m) in manual {
                if let Some(arr) = m.as_array() {
                    flagged = true;
                    if arr.get(1).and_then(Value::as_str) == Some("1") {
                        sft.push(name.clone());
                    }
                }
            }
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let phase = stem.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok());
        Ok(Recipe { file: path.to_path_buf(), stem, phase, total_b, selected, sft, flagged })
    }

    /// Budgets in tokens: `round(B × 10⁹)`.
    pub fn budgets(&self) -> BTreeMap<String, u64> {
        self.selected.iter().map(|(n, b)| (n.clone(), (b * 1e9).round() as u64)).collect()
    }

    /// `round(Total Tokens(B) × 10⁹)`.
    pub fn total_tokens(&self) -> u64 {
        (self.total_b * 1e9).round() as u64
    }
}

/// Every `*.json` recipe under `dir` whose name contains none of `exclude`, in phase order
/// (leading number, then name). Two recipes of the same phase are an error naming both (they
/// are alternative paths, like YuLan-Mini's two phase-26 files): exclude one.
pub fn read_dir(dir: &Path, exclude: &[String]) -> Result<Vec<Recipe>, ImportError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ImportError::Read { path: dir.display().to_string(), message: e.to_string() })?;
    let mut recipes = Vec::new();
    for e in entries {
        let path = e.map_err(|e| ImportError::Read { path: dir.display().to_string(), message: e.to_string() })?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if path.extension().is_some_and(|x| x == "json") && !exclude.iter().any(|x| name.contains(x.as_str())) {
            recipes.push(Recipe::read(&path)?);
        }
    }
    if recipes.is_empty() {
        return Err(ImportError::Other(format!("no recipe files (*.json) in {}", dir.display())));
    }
    recipes.sort_by(|a, b| a.phase.cmp(&b.phase).then_with(|| a.stem.cmp(&b.stem)));
    for w in recipes.windows(2) {
        if w[0].phase.is_some() && w[0].phase == w[1].phase {
            return Err(ImportError::Other(format!(
                "{} and {} are both phase {}: they are alternative paths; leave one out with --exclude",
                w[0].stem,
                w[1].stem,
                w[0].phase.unwrap_or_default()
            )));
        }
    }
    Ok(recipes)
}

/// The category of a source by its name (first rule that matches); `sft` appends `-sft`.
pub fn category(name: &str, sft: bool) -> String {
    let n = name.to_ascii_lowercase();
    let has = |parts: &[&str]| parts.iter().any(|p| n.contains(p));
    let base = if has(&["-cn", "chinese", "wiki-zh"]) || (n.starts_with("mnbvc/") && !n.contains("/code/")) {
        "chinese"
    } else if has(&["math", "gsm8k", "proof-pile", "scalequest", "numina"]) {
        "math"
    } else if has(&["fineweb-code"]) {
        // OpenCoder's code-related web pages: web text, counted with the general data.
        "general"
    } else if has(&["the_stack", "the-stack", "code", "starcoder", "opencoder", "jupyter", "smollm_dedup"]) {
        "code"
    } else if has(&["stackexchange", "reddit", "tulu-flan", "book", "paper", "wiki-", "cosmopedia-v2"]) {
        "general"
    } else if has(&["fineweb", "dclm", "news", "common"]) {
        "web"
    } else {
        "general"
    };
    if sft {
        format!("{base}-sft")
    } else {
        base.to_string()
    }
}

/// Names that mark instruction/SFT-formatted data in recipes without flags.
fn sft_by_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["sft", "tulu-flan", "code_gen_qwen", "scalequest", "gsm8k", "dm_math", "synthetic_qa"]
        .iter()
        .any(|p| n.contains(p))
}

/// The spec and the notes worth writing at its top (recipe totals that differ from the sum of
/// their sources, and where the numbers come from).
pub fn to_spec(recipes: &[Recipe], name: &str) -> (RunSpec, Vec<String>) {
    let mut sources: BTreeMap<String, SourceSpec> = BTreeMap::new();
    let mut notes = vec![
        format!(
            "Imported from {} YuLan-Mini recipe file(s) (RUC-GSAI/YuLan-Mini, pretrain/datasets/data_mix, MIT).",
            recipes.len()
        ),
        "Budgets are `Number of Selected Tokens(B)` x 1e9; stages are the files in phase order.".into(),
        "Sequence length 4096, global batch 1008 x 4096 tokens and peak LR 1e-2 (muP base) are YuLan-Mini's.".into(),
        "Recipes with SFT-flagged manual budgets are annealing phases: one shared 1-sqrt decay to 0.".into(),
        "The phase-1 warmup of the original run is not released; add `warmup-steps` to the first stage.".into(),
    ];
    // A source named in a flagged (annealing) recipe takes its flag from there; others are
    // classified by name.
    let sft_flagged: std::collections::HashSet<&str> =
        recipes.iter().flat_map(|r| r.sft.iter().map(String::as_str)).collect();
    let in_flagged: std::collections::HashSet<&str> =
        recipes.iter().filter(|r| r.flagged).flat_map(|r| r.selected.iter().map(|s| s.0.as_str())).collect();
    let mut stages = Vec::with_capacity(recipes.len());
    for r in recipes {
        for (n, _) in &r.selected {
            let sft = if in_flagged.contains(n.as_str()) { sft_flagged.contains(n.as_str()) } else { sft_by_name(n) };
            sources.entry(n.clone()).or_insert_with(|| SourceSpec {
                path: None,
                category: Some(category(n, sft)),
                max_repetition: 1.0,
            });
        }
        let budgets = r.budgets();
        let sum: u64 = budgets.values().sum();
        if sum != r.total_tokens() {
            notes.push(format!(
                "{}: `Total Tokens(B)` says {} tokens but its sources sum to {sum} ({:+}); the stage uses the sum.",
                r.stem,
                r.total_tokens(),
                sum as i64 - r.total_tokens() as i64
            ));
        }
        let lr = if r.flagged {
            StageLr {
                phase: LrPhase::Decay,
                shape: Some(crate::lr::DecayShape::OneSqrt),
                from: Some(1.0),
                to: Some(0.0),
                warmup_steps: None,
            }
        } else {
            StageLr::stable()
        };
        stages.push(StageSpec {
            name: r.stem.clone(),
            tokens: None,
            sequence_length: None,
            global_batch_tokens: None,
            lr,
            budgets: budgets.into_iter().map(|(k, v)| (k, TokenCount(v))).collect(),
            ratios: BTreeMap::new(),
            layers: None,
            grow: None,
        });
    }
    let spec = RunSpec {
        version: RUN_SPEC_VERSION,
        name: Some(name.to_string()),
        seed: 0,
        sequence_length: SEQUENCE_LENGTH,
        global_batch_tokens: GLOBAL_BATCH_TOKENS,
        lr: LrSpec { peak: PEAK_LR },
        sources,
        stages,
        eval: None,
        init: None,
        distill: None,
    };
    (spec, notes)
}

/// The spec as TOML with the notes as a comment header.
pub fn render(spec: &RunSpec, notes: &[String]) -> String {
    let mut out = String::from("# lehr run spec (docs/schedules.md)\n");
    for n in notes {
        out.push_str(&format!("# {n}\n"));
    }
    out.push('\n');
    out.push_str(&spec.to_toml());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_rules() {
        assert_eq!(category("chinese-fineweb-edu_use/cci2_use", false), "chinese");
        assert_eq!(category("wiki-baike-en/v3", false), "general");
        assert_eq!(category("MNBVC/code/googlecode/filter_copyright/go", false), "code");
        assert_eq!(category("the-stack-v2/Jupyter_Notebook/md_scored_classified/score_3", false), "code");
        assert_eq!(category("the_stack_v2_python_cleaned_scored_dedup/score_3", false), "code");
        assert_eq!(category("OpenCoder-LLM/fineweb-math-corpus-dedup/split_1", false), "math");
        assert_eq!(category("dolma-unzip/stackexchange", false), "general");
        assert_eq!(category("fineweb-edu", false), "web");
        assert_eq!(category("dclm_baseline", false), "web");
        assert_eq!(category("code_gen_qwen/filter/o1/score3", true), "code-sft");
    }
}
