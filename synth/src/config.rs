//! The `[[stage]] type = "synth"` table: endpoints, templates, sampling, cache and limits.
//! Every table rejects unknown keys; [`SynthConfig::validate`] names the key at fault.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which OpenAI endpoint the requests go to.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// `POST {url}/chat/completions` with a system and a user message.
    #[default]
    Chat,
    /// `POST {url}/completions` with the rendered prompt (a system prompt is prepended).
    Completions,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SynthConfig {
    /// The model name sent in every request (and part of the cache key).
    pub model: String,
    #[serde(default)]
    pub api: Api,
    /// One or more OpenAI-compatible base URLs (`http://host:8000/v1`).
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<EndpointSpec>,
    /// Read the API key (sent as `Authorization: Bearer`) from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Or from this file (first line; relative to the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// The prompts; every input document gets `n` samples of each template that applies.
    #[serde(rename = "template")]
    pub templates: Vec<TemplateSpec>,
    /// Sampling defaults for templates that do not set their own.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default = "default_n")]
    pub n: u32,
    /// Extra request fields for servers that take more (`repetition_penalty`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra_body: Map<String, Value>,
    /// Base of every request's seed; each (document, template, sample) gets its own seed from it.
    #[serde(default)]
    pub seed: u64,
    /// Requests in flight per shard task.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds before a request that has not finished counts as a timeout (and is retried).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Retries of one request after 429, 5xx, timeouts, resets and malformed answers.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Exponential backoff: base · 2^retry seconds, full jitter, capped.
    #[serde(default = "default_backoff_base")]
    pub backoff_base_secs: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: f64,
    /// Consecutive failures that take an endpoint out of rotation ...
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// ... for this many seconds (then one probe request decides).
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_secs: f64,
    /// Keep every answer in the request cache and answer repeated requests from it.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// Where the cache lives (default `<output>/_lehr/synth-cache`): a path or object-store URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_path: Option<String>,
    /// Input text beyond this many characters is cut before it goes into `{text}`.
    #[serde(default = "default_max_input_chars")]
    pub max_input_chars: usize,
    /// Also pass the input document on (otherwise only the generated ones go to later stages).
    #[serde(default)]
    pub keep_input: bool,
    /// The `source` of generated documents (default: the input's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A shard whose failed requests exceed this fraction fails (and is retried later, from the
    /// cache) instead of committing a mostly empty output.
    #[serde(default = "default_max_failed_fraction")]
    pub max_failed_fraction: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointSpec {
    /// Base URL up to and including `/v1`.
    pub url: String,
    /// Share of requests, relative to the other endpoints.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Requests in flight to this endpoint from one worker process.
    #[serde(default = "default_endpoint_concurrency")]
    pub max_concurrency: usize,
    /// Requests per minute from one worker process (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute from one worker process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TemplateSpec {
    /// Recorded in every generated document and in its id.
    pub name: String,
    /// The user prompt with `{text}`, `{lang}`, `{id}`, `{source}` or any input field; `{{` and
    /// `}}` are literal braces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Or the prompt in a file (relative to the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_file: Option<String>,
    /// Only input documents of these languages (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// The language of the generated documents (default: the input's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

fn default_max_tokens() -> u32 {
    512
}
fn default_temperature() -> f64 {
    0.7
}
fn default_top_p() -> f64 {
    1.0
}
fn default_n() -> u32 {
    1
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> f64 {
    300.0
}
fn default_max_retries() -> u32 {
    8
}
fn default_backoff_base() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    60.0
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> f64 {
    30.0
}
fn default_true() -> bool {
    true
}
fn default_max_input_chars() -> usize {
    8000
}
fn default_weight() -> f64 {
    1.0
}
fn default_endpoint_concurrency() -> usize {
    64
}
fn default_max_failed_fraction() -> f64 {
    0.5
}

type Invalid = (String, String);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

impl SynthConfig {
    /// Checks values; on error returns the key (relative to the stage) and a message.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.model.trim().is_empty() {
            return Err(bad("model", "name the model the endpoints serve (sent in every request)"));
        }
        if self.endpoints.is_empty() {
            return Err(bad("endpoint", "list at least one [[stage.endpoint]] with a url"));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = |k: &str| format!("endpoint[{i}].{k}");
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(bad(
                    key("url"),
                    format!("`{}` is not an http(s) URL (write e.g. http://127.0.0.1:8000/v1)", e.url),
                ));
            }
            if !(e.weight.is_finite() && e.weight > 0.0) {
                return Err(bad(key("weight"), "must be a positive number"));
            }
            if e.max_concurrency == 0 {
                return Err(bad(key("max-concurrency"), "must be at least 1"));
            }
            if e.rpm == Some(0) {
                return Err(bad(key("rpm"), "must be at least 1 (leave it out for no limit)"));
            }
            if e.tpm == Some(0) {
                return Err(bad(key("tpm"), "must be at least 1 (leave it out for no limit)"));
            }
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Err(bad("api-key-file", "set api-key-env or api-key-file, not both"));
        }
        if self.templates.is_empty() {
            return Err(bad("template", "list at least one [[stage.template]] with a name and a prompt"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.templates.iter().enumerate() {
            let key = |k: &str| format!("template[{i}].{k}");
            if t.name.is_empty() || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad(key("name"), "use letters, digits, `-` and `_` (it goes into document ids)"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(bad(key("name"), format!("template `{}` is listed twice", t.name)));
            }
            match (&t.prompt, &t.prompt_file) {
                (None, None) => return Err(bad(key("prompt"), "give the prompt inline or in prompt-file")),
                (Some(_), Some(_)) => return Err(bad(key("prompt-file"), "set prompt or prompt-file, not both")),
                (Some(p), None) => crate::template::Template::parse(p).map_err(|e| bad(key("prompt"), e))?,
                (None, Some(_)) => crate::template::Template::parse("").expect("empty template parses"),
            };
            if t.system.is_some() && t.system_file.is_some() {
                return Err(bad(key("system-file"), "set system or system-file, not both"));
            }
            let s = self.sampling(t);
            check_sampling(&s).map_err(|(k, m)| bad(if t_sets(t, &k) { key(&k) } else { k }, m))?;
        }
        check_sampling(&self.sampling_defaults())?;
        if self.concurrency == 0 {
            return Err(bad("concurrency", "must be at least 1"));
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return Err(bad("timeout-secs", "must be a positive number of seconds"));
        }
        if !(self.backoff_base_secs.is_finite() && self.backoff_base_secs >= 0.0) {
            return Err(bad("backoff-base-secs", "must be zero or more seconds"));
        }
        if !(self.backoff_max_secs.is_finite() && self.backoff_max_secs >= self.backoff_base_secs) {
            return Err(bad("backoff-max-secs", "must be at least backoff-base-secs"));
        }
        if self.breaker_failures == 0 {
            return Err(bad("breaker-failures", "must be at least 1"));
        }
        if !(self.breaker_cooldown_secs.is_finite() && self.breaker_cooldown_secs >= 0.0) {
            return Err(bad("breaker-cooldown-secs", "must be zero or more seconds"));
        }
        if self.max_input_chars == 0 {
            return Err(bad("max-input-chars", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_failed_fraction) {
            return Err(bad("max-failed-fraction", "must be between 0 and 1"));
        }
        if let Some(p) = &self.cache_path {
            if p.trim().is_empty() {
                return Err(bad("cache-path", "must not be empty (leave it out for <output>/_lehr/synth-cache)"));
            }
        }
        for key in self.extra_body.keys() {
            if RESERVED.contains(&key.as_str()) {
                return Err(bad(format!("extra-body.{key}"), "lehr sets this field itself; use the stage's own key"));
            }
        }
        Ok(())
    }

    /// The stage-level sampling parameters.
    pub fn sampling_defaults(&self) -> Sampling {
        Sampling {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            stop: self.stop.clone(),
            n: self.n,
        }
    }

    /// A template's sampling parameters: its own where it sets them, else the stage's.
    pub fn sampling(&self, t: &TemplateSpec) -> Sampling {
        Sampling {
            max_tokens: t.max_tokens.unwrap_or(self.max_tokens),
            temperature: t.temperature.unwrap_or(self.temperature),
            top_p: t.top_p.unwrap_or(self.top_p),
            top_k: t.top_k.or(self.top_k),
            stop: t.stop.clone().unwrap_or_else(|| self.stop.clone()),
            n: t.n.unwrap_or(self.n),
        }
    }

    /// Makes the prompt, system and key files absolute against the spec's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let abs = |p: &mut Option<String>| {
            if let Some(s) = p {
                let path = std::path::Path::new(s.as_str());
                if path.is_relative() && !s.contains("://") {
                    *s = base.join(path).to_string_lossy().into_owned();
                }
            }
        };
        abs(&mut self.api_key_file);
        abs(&mut self.cache_path);
        for t in &mut self.templates {
            abs(&mut t.prompt_file);
            abs(&mut t.system_file);
        }
    }
}

/// Payload fields lehr writes; `extra-body` may not override them.
const RESERVED: &[&str] =
    &["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "stream"];

fn t_sets(t: &TemplateSpec, key: &str) -> bool {
    match key {
        "max-tokens" => t.max_tokens.is_some(),
        "temperature" => t.temperature.is_some(),
        "top-p" => t.top_p.is_some(),
        "top-k" => t.top_k.is_some(),
        "stop" => t.stop.is_some(),
        "n" => t.n.is_some(),
        _ => false,
    }
}

/// The sampling parameters of one template, as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sampling {
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    pub n: u32,
}

fn check_sampling(s: &Sampling) -> Result<(), Invalid> {
    if s.max_tokens == 0 {
        return Err(bad("max-tokens", "must be at least 1"));
    }
    if !(s.temperature.is_finite() && (0.0..=2.0).contains(&s.temperature)) {
        return Err(bad("temperature", "must be between 0 and 2"));
    }
    if !(s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(bad("top-p", "must be in (0, 1]"));
    }
    if s.top_k == Some(0) {
        return Err(bad("top-k", "must be at least 1 (leave it out for no limit)"));
    }
    if s.n == 0 || s.n > 128 {
        return Err(bad("n", "must be between 1 and 128"));
    }
    if s.stop.iter().any(|x| x.is_empty()) {
        return Err(bad("stop", "stop strings must not be empty"));
    }
    Ok(())
}
