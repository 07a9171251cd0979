//! Task definitions: a TOML file mirroring lm-eval's task YAML fields (`doc_to_text`,
//! `doc_to_choice`, `doc_to_target`, `target_delimiter`, metrics) over a JSONL dataset, with
//! `{{field}}` templates; and the built-in tasks for the fixture schema (`context`, `choices`,
//! `gold`: ARC, HellaSwag, PIQA, BoolQ in lm-eval's prompt format).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{file}: {why}")]
    File { file: String, why: String },
    #[error("{file}:{line}: {why}")]
    Row { file: String, line: usize, why: String },
    #[error("unknown task `{0}`; built-in tasks: {1} (or pass a task file, NAME.toml)")]
    Unknown(String, String),
}

/// `doc_to_choice`: a template naming a list field, or literal choices.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Choices {
    Field(String),
    Literal(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    pub name: String,
    /// The JSONL file, relative to the data directory (default `NAME.jsonl`).
    #[serde(default)]
    pub dataset: Option<String>,
    pub doc_to_text: String,
    pub doc_to_choice: Choices,
    /// A template giving the gold choice's index, or its text.
    pub doc_to_target: String,
    #[serde(default = "space")]
    pub target_delimiter: String,
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    /// lm-eval's task version, reported in `versions`.
    #[serde(default = "one")]
    pub version: f64,
}

fn space() -> String {
    " ".into()
}
fn one() -> f64 {
    1.0
}
fn default_metrics() -> Vec<Metric> {
    vec![Metric::Acc, Metric::AccNorm]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Acc,
    AccNorm,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
        }
    }
}

/// One dataset row as a task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// 1-based line in the dataset file.
    pub line: usize,
    pub context: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

/// The built-in tasks (fixture schema: the context is already lm-eval's prompt).
pub const BUILTIN: &[&str] = &["arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq"];

impl TaskDef {
    pub fn builtin(name: &str) -> Option<TaskDef> {
        if !BUILTIN.contains(&name) {
            return None;
        }
        Some(TaskDef {
            name: name.into(),
            dataset: None,
            doc_to_text: "{{context}}".into(),
            doc_to_choice: Choices::Field("{{choices}}".into()),
            doc_to_target: "{{gold}}".into(),
            target_delimiter: space(),
            // lm-eval's boolq reports acc only
            metrics: if name == "boolq" { vec![Metric::Acc] } else { default_metrics() },
            version: 1.0,
        })
    }

    /// A built-in name, or a task file (`*.toml`).
    pub fn resolve(spec: &str) -> Result<TaskDef, TaskError> {
        if spec.ends_with(".toml") {
            let text =
                std::fs::read_to_string(spec).map_err(|e| TaskError::File { file: spec.into(), why: e.to_string() })?;
            return toml::from_str(&text).map_err(|e| TaskError::File { file: spec.into(), why: e.to_string() });
        }
        TaskDef::builtin(spec).ok_or_else(|| TaskError::Unknown(spec.into(), BUILTIN.join(", ")))
    }

    pub fn dataset_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.dataset.clone().unwrap_or_else(|| format!("{}.jsonl", self.name)))
    }

    /// Reads the dataset; a bad row is an error naming the file, line and field.
    pub fn load(&self, data_dir: &Path) -> Result<Vec<Doc>, TaskError> {
        let path = self.dataset_path(data_dir);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| TaskError::File {
            file: file.clone(),
            why: format!("{e} (--data-dir holds <task>.jsonl files)"),
        })?;
        let mut docs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let row = |why: String| TaskError::Row { file: file.clone(), line: i + 1, why };
            let v: Value = serde_json::from_str(raw).map_err(|e| row(format!("not JSON: {e}")))?;
            docs.push(self.doc(&v, i + 1).map_err(row)?);
        }
        if docs.is_empty() {
            return Err(TaskError::File { file, why: "no rows".into() });
        }
        Ok(docs)
    }

    fn doc(&self, v: &Value, line: usize) -> Result<Doc, String> {
        let context = render(&self.doc_to_text, v)?;
        let choices = match &self.doc_to_choice {
            Choices::Literal(c) => c.clone(),
            Choices::Field(t) => {
                let field = single_field(t).ok_or_else(|| format!("doc_to_choice `{t}` must be one {{{{field}}}}"))?;
                let list = lookup(v, field)?.as_array().ok_or_else(|| format!("`{field}` is not a list"))?;
                list.iter()
                    .map(|c| c.as_str().map(str::to_string).ok_or_else(|| format!("`{field}` holds a non-string")))
                    .collect::<Result<_, _>>()?
            }
        };
        if choices.len() < 2 {
            return Err(format!("{} choice(s); multiple choice needs two or more", choices.len()));
        }
        let target = match single_field(&self.doc_to_target).map(|f| lookup(v, f)) {
            Some(Ok(Value::Number(n))) => {
                n.as_u64().map(|x| x as usize).ok_or_else(|| format!("target {n} is not an index"))?
            }
            _ => {
                let t = render(&self.doc_to_target, v)?;
                match t.trim().parse::<usize>() {
                    Ok(i) => i,
                    Err(_) => choices
                        .iter()
                        .position(|c| c == &t)
                        .ok_or_else(|| format!("target `{t}` is none of the choices"))?,
                }
            }
        };
        if target >= choices.len() {
            return Err(format!("target {target} is past the {} choices", choices.len()));
        }
        Ok(Doc { line, context, choices, gold: target })
    }
}

fn single_field(t: &str) -> Option<&str> {
    let inner = t.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.contains("{{")).then_some(inner)
}

fn lookup<'a>(v: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part).ok_or_else(|| format!("no field `{path}`"))?;
    }
    Ok(cur)
}

/// `{{field}}` (dotted paths allowed) replaced by the field's text; anything else is literal.
pub fn render(template: &str, v: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or_else(|| format!("unclosed {{{{ in `{template}`"))? + start;
        let field = rest[start + 2..end].trim();
        match lookup(v, field)? {
            Value::String(s) => out.push_str(s),
            Value::Null => return Err(format!("field `{field}` is null")),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_rows() {
        let v: Value = serde_json::json!({"q": "Why?", "a": {"b": 3}, "choices": ["x", "y"], "gold": 1, "ans": "y"});
        assert_eq!(render("Question: {{ q }}\nAnswer:", &v).unwrap(), "Question: Why?\nAnswer:");
        assert_eq!(render("{{a.b}}", &v).unwrap(), "3");
        assert!(render("{{missing}}", &v).unwrap_err().contains("missing"));
        let t = TaskDef::builtin("arc_easy").unwrap();
        let d = TaskDef { doc_to_text: "{{q}}".into(), ..t.clone() }.doc(&v, 1).unwrap();
        assert_eq!((d.context.as_str(), d.gold), ("Why?", 1));
        let by_text = TaskDef { doc_to_text: "{{q}}".into(), doc_to_target: "{{ans}}".into(), ..t.clone() };
        assert_eq!(by_text.doc(&v, 1).unwrap().gold, 1);
        let bad = TaskDef { doc_to_text: "{{q}}".into(), doc_to_target: "{{q}}".into(), ..t };
        assert!(bad.doc(&v, 1).unwrap_err().contains("none of the choices"));
        let file: TaskDef = toml::from_str(
            "name = \"kobest\"\ndoc_to_text = \"{{p}} 질문: {{q}} 답변:\"\ndoc_to_choice = [\"아니오\", \"예\"]\ndoc_to_target = \"{{label}}\"\nmetrics = [\"acc\"]",
        )
        .unwrap();
        assert_eq!(file.doc_to_choice, Choices::Literal(vec!["아니오".into(), "예".into()]));
        assert!(toml::from_str::<TaskDef>(
            "name = \"x\"\ndoc_to_text = \"\"\ndoc_to_choice = []\ndoc_to_target = \"\"\ntypo = 1"
        )
        .unwrap_err()
        .to_string()
        .contains("typo"));
    }
}
