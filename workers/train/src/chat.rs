//! Chat templates as transformers applies them: the checkpoint's Jinja template
//! (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`) rendered with
//! minijinja (Python string methods through minijinja-contrib's pycompat), given `messages`,
//! `add_generation_prompt = true`, `bos_token`, `eos_token` and `raise_exception`.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, Value};

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

/// A special token as tokenizer_config.json writes it: a string or `{"content": ...}`.
pub(crate) fn special_token(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.get("content").and_then(|c| c.as_str()).map(str::to_string))
}

impl ChatTemplate {
    /// The checkpoint's template, if it has one.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, String> {
        let config: serde_json::Value = match std::fs::read(dir.join("tokenizer_config.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}/tokenizer_config.json: {e}", dir.display()))?,
            Err(_) => serde_json::Value::Null,
        };
        let source = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(t) => Some(t),
            Err(_) => match &config["chat_template"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(list) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .or(list.first())
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string),
                _ => None,
            },
        };
        let Some(source) = source else { return Ok(None) };
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source).map_err(|e| format!("{}: chat template: {e}", dir.display()))?;
        Ok(Some(ChatTemplate {
            env,
            bos: special_token(&config["bos_token"]).unwrap_or_default(),
            eos: special_token(&config["eos_token"]).unwrap_or_default(),
        }))
    }

    /// The prompt for `messages` (OpenAI's `[{role, content}]`), ending where the assistant's
    /// turn begins.
    pub fn render(&self, messages: &serde_json::Value) -> Result<String, String> {
        let t = self.env.get_template("chat").map_err(|e| e.to_string())?;
        t.render(minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => true,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
            tools => Value::from(()),
        })
        .map_err(|e| format!("chat template: {e}"))
    }
}
