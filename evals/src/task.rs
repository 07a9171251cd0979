//! Task definitions: a TOML file mirroring lm-eval's task YAML fields (`doc_to_text`,
//! `doc_to_choice`, `doc_to_target`, `target_delimiter`, `description`, few-shot settings,
//! metrics) over JSONL files, with lm-eval's template expressions (`template.rs`); and the
//! built-in tasks, which are such files compiled in (`evals/tasks/*.toml`).
//!
//! As in lm-eval, the output type decides the requests: `multiple_choice` asks for each choice
//! after the question; when `doc_to_text` gives an index instead of text the task is "multiple
//! input" (Winogrande): `doc_to_choice` gives one context per choice, `doc_to_target` the shared
//! continuation, `doc_to_text` the gold index. `loglikelihood` (LAMBADA) scores
//! `doc_to_target` after `doc_to_text` and reports perplexity and greedy-match accuracy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fewshot::SamplerKind;
use crate::template;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{file}: {why}")]
    File { file: String, why: String },
    #[error("{file}:{line}: {why}")]
    Row { file: String, line: usize, why: String },
    #[error("unknown task `{0}`; built-in tasks: {1} (or pass a task file, NAME.toml)")]
    Unknown(String, String),
}

/// `doc_to_choice`: a list field or one `{{expression}}` giving a list, or a list of templates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Choices {
    Field(String),
    Literal(Vec<String>),
}

/// `doc_to_target`: an index, or a template giving the gold index or the gold choice's text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Target {
    Index(usize),
    Template(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    #[default]
    MultipleChoice,
    Loglikelihood,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    pub name: String,
    /// The JSONL file, relative to the data directory (default `NAME.jsonl`).
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub output_type: OutputType,
    pub doc_to_text: String,
    #[serde(default)]
    pub doc_to_choice: Option<Choices>,
    pub doc_to_target: Target,
    #[serde(default = "space")]
    pub target_delimiter: String,
    /// Text before the examples and the question (a template; lm-eval's `description`).
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "blank_line")]
    pub fewshot_delimiter: String,
    /// Where few-shot examples come from (lm-eval's `fewshot_split`), relative to the data
    /// directory; by default the evaluated file itself, never showing a row as its own example.
    #[serde(default)]
    pub fewshot_dataset: Option<String>,
    #[serde(default)]
    pub fewshot_sampler: SamplerKind,
    /// Few-shot examples unless `--num-fewshot` says otherwise.
    #[serde(default)]
    pub num_fewshot: usize,
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    /// lm-eval's task version, reported in `versions`.
    #[serde(default = "one")]
    pub version: f64,
}

fn space() -> String {
    " ".into()
}
fn blank_line() -> String {
    "\n\n".into()
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The highest log-likelihood is gold; for `loglikelihood` tasks, the continuation is the
    /// greedy one.
    Acc,
    /// The highest log-likelihood per character is gold.
    AccNorm,
    /// Macro F1 of predictions against gold (KoBEST's), as scikit-learn's `average="macro"`.
    F1,
    /// `exp(-mean log-likelihood)` over documents (`loglikelihood` tasks).
    Perplexity,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::F1 => "f1",
            Metric::Perplexity => "perplexity",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self != Metric::Perplexity
    }
}

/// What a row asks the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One context; each choice is a continuation (multiple choice).
    Choices { context: String, choices: Vec<String> },
    /// A context per choice and one continuation (lm-eval's multiple input: Winogrande).
    Contexts { contexts: Vec<String>, continuation: String },
    /// One context and its continuation (`loglikelihood`: LAMBADA).
    Target { context: String, continuation: String },
}

/// One dataset row as a task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// 1-based line in the dataset file.
    pub line: usize,
    /// The row itself (few-shot sampling compares rows, as lm-eval does).
    pub raw: Value,
    pub input: Input,
    pub gold: usize,
}

impl Doc {
    /// What lm-eval calls the choices: continuations, or contexts for multiple input.
    pub fn choices(&self) -> &[String] {
        match &self.input {
            Input::Choices { choices, .. } => choices,
            Input::Contexts { contexts, .. } => contexts,
            Input::Target { .. } => &[],
        }
    }

    /// The row as a few-shot example: (question, answer).
    pub fn example(&self) -> (&str, &str) {
        match &self.input {
            Input::Choices { context, choices } => (context, &choices[self.gold]),
            Input::Contexts { contexts, continuation } => (&contexts[self.gold], continuation),
            Input::Target { context, continuation } => (context, continuation),
        }
    }
}

const BUILTIN_FILES: &[(&str, &str)] = &[
    ("arc_easy", include_str!("../tasks/arc_easy.toml")),
    ("arc_challenge", include_str!("../tasks/arc_challenge.toml")),
    ("hellaswag", include_str!("../tasks/hellaswag.toml")),
    ("piqa", include_str!("../tasks/piqa.toml")),
    ("boolq", include_str!("../tasks/boolq.toml")),
    ("openbookqa", include_str!("../tasks/openbookqa.toml")),
    ("sciq", include_str!("../tasks/sciq.toml")),
    ("winogrande", include_str!("../tasks/winogrande.toml")),
    ("lambada_openai", include_str!("../tasks/lambada_openai.toml")),
    ("kobest_boolq", include_str!("../tasks/kobest_boolq.toml")),
    ("ceval", include_str!("../tasks/ceval.toml")),
    ("cmmlu", include_str!("../tasks/cmmlu.toml")),
];

/// The built-in task names.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_FILES.iter().map(|(n, _)| *n).collect()
}

impl TaskDef {
    pub fn builtin(name: &str) -> Option<TaskDef> {
        let text = BUILTIN_FILES.iter().find(|(n, _)| *n == name)?.1;
        Some(toml::from_str(text).unwrap_or_else(|e| panic!("built-in task {name}: {e}")))
    }

    /// A built-in name, or a task file (`*.toml`).
    pub fn resolve(spec: &str) -> Result<TaskDef, TaskError> {
        if spec.ends_with(".toml") {
            let text =
                std::fs::read_to_string(spec).map_err(|e| TaskError::File { file: spec.into(), why: e.to_string() })?;
            return toml::from_str(&text).map_err(|e| TaskError::File { file: spec.into(), why: e.to_string() });
        }
        TaskDef::builtin(spec).ok_or_else(|| TaskError::Unknown(spec.into(), builtin_names().join(", ")))
    }

    pub fn metrics(&self) -> Vec<Metric> {
        self.metrics.clone().unwrap_or_else(|| match self.output_type {
            OutputType::MultipleChoice => vec![Metric::Acc, Metric::AccNorm],
            OutputType::Loglikelihood => vec![Metric::Perplexity, Metric::Acc],
        })
    }

    pub fn dataset_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.dataset.clone().unwrap_or_else(|| format!("{}.jsonl", self.name)))
    }

    /// The separate few-shot file, if the task names one.
    pub fn fewshot_path(&self, data_dir: &Path) -> Option<PathBuf> {
        self.fewshot_dataset.as_ref().map(|f| data_dir.join(f))
    }

    /// Reads the evaluated rows; a bad row is an error naming the file, line and field.
    pub fn load(&self, data_dir: &Path) -> Result<Vec<Doc>, TaskError> {
        self.load_file(&self.dataset_path(data_dir))
    }

    pub fn load_file(&self, path: &Path) -> Result<Vec<Doc>, TaskError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TaskError::File {
            file: file.clone(),
            why: format!("{e} (--data-dir holds <task>.jsonl files)"),
        })?;
        let mut docs = Vec::new();
        let mut multiple_input = None;
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let row = |why: String| TaskError::Row { file: file.clone(), line: i + 1, why };
            let v: Value = serde_json::from_str(raw).map_err(|e| row(format!("not JSON: {e}")))?;
            if !v.is_object() {
                return Err(row("not a JSON object".into()));
            }
            // lm-eval decides from the first row: an index from doc_to_text means multiple input
            let mi = *multiple_input.get_or_insert_with(|| self.is_multiple_input(&v));
            docs.push(self.doc(v, i + 1, mi).map_err(row)?);
        }
        if docs.is_empty() {
            return Err(TaskError::File { file, why: "no rows".into() });
        }
        Ok(docs)
    }

    fn is_multiple_input(&self, v: &Value) -> bool {
        self.output_type == OutputType::MultipleChoice
            && self.doc_to_choice.is_some()
            && text_field(&self.doc_to_text, v).is_ok_and(|t| is_digits(&t))
    }

    fn choices(&self, v: &Value) -> Result<Vec<String>, String> {
        let list = match self.doc_to_choice.as_ref().ok_or("multiple choice needs doc_to_choice")? {
            Choices::Literal(c) => return c.iter().map(|t| template::render(t, v)).collect(),
            Choices::Field(t) => match v.get(t) {
                Some(x) => x.clone(),
                None => template::value(t, v)
                    .ok_or_else(|| format!("doc_to_choice `{t}` must be a list field or one {{{{expression}}}}"))??,
            },
        };
        let items = list.as_array().ok_or_else(|| format!("doc_to_choice gives {list}, not a list"))?;
        items.iter().map(template::to_text).collect()
    }

    fn doc(&self, raw: Value, line: usize, multiple_input: bool) -> Result<Doc, String> {
        let v = &raw;
        let target_text = || match &self.doc_to_target {
            Target::Index(i) => Ok(i.to_string()),
            Target::Template(t) => text_field(t, v),
        };
        let (input, gold) = match self.output_type {
            OutputType::Loglikelihood => {
                (Input::Target { context: text_field(&self.doc_to_text, v)?, continuation: target_text()? }, 0)
            }
            OutputType::MultipleChoice if multiple_input => {
                let contexts = self.choices(v)?;
                let text = text_field(&self.doc_to_text, v)?;
                let gold = text
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("doc_to_text gives `{text}`; this task's rows give the gold index there"))?;
                (Input::Contexts { contexts, continuation: target_text()? }, gold)
            }
            OutputType::MultipleChoice => {
                let choices = self.choices(v)?;
                let gold = match &self.doc_to_target {
                    Target::Index(i) => *i,
                    Target::Template(t) => {
                        let value = match v.get(t) {
                            Some(x) => Some(Ok(x.clone())),
                            None => template::value(t, v),
                        };
                        match value {
                            Some(Ok(Value::Number(n))) => {
                                n.as_u64().ok_or_else(|| format!("target {n} is not an index"))? as usize
                            }
                            Some(Err(e)) => return Err(e),
                            _ => {
                                let t = text_field(t, v)?;
                                match is_digits(&t) {
                                    true => t.parse().map_err(|_| format!("target {t} is not an index"))?,
                                    false => choices
                                        .iter()
                                        .position(|c| c == &t)
                                        .ok_or_else(|| format!("target `{t}` is none of the choices"))?,
                                }
                            }
                        }
                    }
                };
                (Input::Choices { context: text_field(&self.doc_to_text, v)?, choices }, gold)
            }
        };
        let doc = Doc { line, raw, input, gold };
        let n = doc.choices().len();
        if self.output_type == OutputType::MultipleChoice {
            if n < 2 {
                return Err(format!("{n} choice(s); multiple choice needs two or more"));
            }
            if gold >= n {
                return Err(format!("target {gold} is past the {n} choices"));
            }
        }
        Ok(doc)
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// lm-eval's rule for text fields: a bare column name is that column, anything else a template.
fn text_field(t: &str, v: &Value) -> Result<String, String> {
    match v.get(t) {
        Some(x) if !t.contains("{{") => template::to_text(x),
        _ => template::render(t, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_documents() {
        let v = json!({"q": "Why?", "choices": ["x", "y"], "gold": 1, "ans": "y"});
        let t = TaskDef::builtin("arc_easy").unwrap();
        let with = |text: &str, target: &str| TaskDef {
            doc_to_text: text.into(),
            doc_to_target: Target::Template(target.into()),
            ..t.clone()
        };
        let d = with("{{q}}", "{{gold}}").doc(v.clone(), 1, false).unwrap();
        assert_eq!((d.example(), d.gold), (("Why?", "y"), 1));
        assert_eq!(with("q", "ans").doc(v.clone(), 1, false).unwrap().gold, 1, "bare field names, text targets");
        assert!(with("{{q}}", "{{q}}").doc(v.clone(), 1, false).unwrap_err().contains("none of the choices"));
        let file: TaskDef = toml::from_str(
            "name = \"kobest\"\ndoc_to_text = \"{{p}} 질문: {{q}} 답변:\"\ndoc_to_choice = [\"아니오\", \"예\"]\ndoc_to_target = \"{{label}}\"\nmetrics = [\"acc\"]",
        )
        .unwrap();
        assert_eq!(file.doc_to_choice, Some(Choices::Literal(vec!["아니오".into(), "예".into()])));
        let err = toml::from_str::<TaskDef>("name = \"x\"\ndoc_to_text = \"\"\ndoc_to_target = \"\"\ntypo = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("typo"), "{err}");
    }

    #[test]
    fn every_builtin_parses() {
        for name in builtin_names() {
            let t = TaskDef::builtin(name).unwrap();
            assert_eq!(t.name, name);
        }
    }

    #[test]
    fn multiple_input_and_loglikelihood() {
        let w = TaskDef::builtin("winogrande").unwrap();
        let row = json!({"sentence": "Sam lent Alex a pen because _ had two.", "option1": "Sam", "option2": "Alex", "answer": "1"});
        assert!(w.is_multiple_input(&row));
        let d = w.doc(row, 1, true).unwrap();
        assert_eq!(d.gold, 0);
        assert_eq!(
            d.input,
            Input::Contexts {
                contexts: vec!["Sam lent Alex a pen because Sam".into(), "Sam lent Alex a pen because Alex".into()],
                continuation: "had two.".into()
            }
        );
        let l = TaskDef::builtin("lambada_openai").unwrap();
        let d = l.doc(json!({"text": "she opened the door"}), 1, false).unwrap();
        assert_eq!(d.example(), ("she opened the", " door"));
        assert_eq!(l.metrics(), vec![Metric::Perplexity, Metric::Acc]);
    }
}
