//! Synthetic data through OpenAI-compatible endpoints (lehr serve, vLLM, SGLang, llama.cpp's
//! server, hosted APIs): the `synth` pipeline stage's client.
//!
//! - `config`: the stage's table (endpoints, templates, sampling, cache, limits).
//! - `template`: `{field}` prompt templates.
//! - `limits`: the pure decisions (rate buckets, backoff, breaker, endpoint choice).
//! - `client`: one HTTP attempt, classified; each endpoint's shared state.
//! - `cache`: answered requests in the object store, keyed by SHA-256(model, payload).
//!
//! [`Generator::run`] turns documents into samples: for each document, each template that
//! applies and each of its `n` samples one request with its own seed, answered from the cache
//! or sent (bounded concurrency, rate limits, retries with backoff, breaker), the answer written
//! to the cache as it arrives. Results come back in input order whatever the arrival order.

pub mod cache;
pub mod client;
pub mod config;
pub mod limits;
pub mod template;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use cache::{Answer, Cache};
pub use config::{Api, EndpointSpec, Sampling, SynthConfig, TemplateSpec};

use client::{Attempt, Endpoint, Secret};
use limits::Admit;
use template::{Fields, Template};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synth stage: {0}")]
    Config(String),
    #[error("synth request cache: {0}")]
    Cache(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{failed} of {total} synth requests failed (more than max-failed-fraction = {fraction}); most common: {reason} ({detail}). The answered ones are cached: fix the endpoint and run again")]
    TooManyFailures { failed: u64, total: u64, fraction: f64, reason: String, detail: String },
}

/// An input document as the templates see it.
#[derive(Debug, Clone)]
pub struct InputDoc {
    pub id: String,
    pub text: String,
    pub lang: Option<String>,
    pub source: Option<String>,
    pub extra: Map<String, Value>,
}

/// A template ready to render.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    /// First 16 hex digits of SHA-256(system, prompt).
    pub hash: String,
    prompt: Template,
    system: Option<String>,
    pub sampling: Sampling,
    languages: Vec<String>,
    pub lang: Option<String>,
}

/// One requested sample of one document.
#[derive(Debug, Clone)]
pub struct Sample {
    pub template: usize,
    pub sample: u32,
    pub seed: u64,
    pub result: Result<Generated, Failure>,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub answer: Answer,
    pub cached: bool,
}

/// Why a sample has no text: a short reason (counted, and the rule in the attributes) and the
/// detail that goes to rejects.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: &'static str,
    pub detail: String,
}

/// Live counts for progress bars.
#[derive(Debug, Default)]
pub struct Progress {
    pub requests_done: AtomicU64,
    pub completion_tokens: AtomicU64,
}

pub struct Generator {
    cfg: SynthConfig,
    templates: Vec<Prepared>,
    endpoints: Vec<Arc<Endpoint>>,
    http: reqwest::Client,
    key: Option<Secret>,
    cache: Option<Cache>,
    counters: Mutex<BTreeMap<String, u64>>,
}

fn read_text(path: &str, what: &str) -> Result<String, SynthError> {
    std::fs::read_to_string(path).map_err(|e| SynthError::Config(format!("cannot read {what} {path}: {e}")))
}

impl Generator {
    /// Reads the template and key files and sets up the endpoints; `cache` is `None` when the
    /// stage runs without one.
    pub fn new(cfg: &SynthConfig, cache: Option<Cache>) -> Result<Generator, SynthError> {
        cfg.validate().map_err(|(k, m)| SynthError::Config(format!("`{k}`: {m}")))?;
        let mut templates = Vec::new();
        for (i, t) in cfg.templates.iter().enumerate() {
            let prompt_text = match (&t.prompt, &t.prompt_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_text(f, &format!("template[{i}].prompt-file"))?,
                (None, None) => unreachable!("validated"),
            };
            let system = match (&t.system, &t.system_file) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(f)) => Some(read_text(f, &format!("template[{i}].system-file"))?),
                (None, None) => None,
            };
            let prompt = Template::parse(&prompt_text)
                .map_err(|e| SynthError::Config(format!("template[{i}] `{}`: {e}", t.name)))?;
            let mut h = Sha256::new();
            h.update(system.as_deref().unwrap_or("").as_bytes());
            h.update([0u8]);
            h.update(prompt_text.as_bytes());
            templates.push(Prepared {
                name: t.name.clone(),
                hash: hex::encode(h.finalize())[..16].to_string(),
                prompt,
                system,
                sampling: cfg.sampling(t),
                languages: t.languages.clone(),
                lang: t.lang.clone(),
            });
        }
        let key = match (&cfg.api_key_env, &cfg.api_key_file) {
            (Some(var), _) => Some(Secret(std::env::var(var).map_err(|_| {
                SynthError::Config(format!("api-key-env: the environment variable {var} is not set on this worker"))
            })?)),
            (None, Some(f)) => {
                let text = read_text(f, "api-key-file")?;
                let k = text.lines().next().unwrap_or("").trim().to_string();
                if k.is_empty() {
                    return Err(SynthError::Config(format!("api-key-file {f} is empty")));
                }
                Some(Secret(k))
            }
            (None, None) => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| SynthError::Config(format!("HTTP client: {e}")))?;
        Ok(Generator {
            endpoints: cfg.endpoints.iter().map(Endpoint::shared).collect(),
            cfg: cfg.clone(),
            templates,
            http,
            key,
            cache,
            counters: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn templates(&self) -> &[Prepared] {
        &self.templates
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    fn count(&self, key: &str, n: u64) {
        if n > 0 {
            *self.counters.lock().expect("counters").entry(key.to_string()).or_default() += n;
        }
    }

    /// The counts so far (cache hits, requests sent, retries by kind, tokens, failures).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().expect("counters").clone()
    }

    /// The seed of one sample: a hash of the stage's seed, the document, template and sample.
    pub fn seed_of(&self, doc_id: &str, template: &str, sample: u32) -> u64 {
        let mut h = Sha256::new();
        h.update(self.cfg.seed.to_le_bytes());
        h.update(doc_id.as_bytes());
        h.update([0u8]);
        h.update(template.as_bytes());
        h.update(sample.to_le_bytes());
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) & 0x7fff_ffff
    }

    /// The request body of one sample.
    pub fn payload(&self, t: &Prepared, prompt: &str, seed: u64) -> String {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.cfg.model));
        match self.cfg.api {
            Api::Chat => {
                let mut messages = Vec::new();
                if let Some(s) = &t.system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                messages.push(json!({"role": "user", "content": prompt}));
                body.insert("messages".into(), Value::Array(messages));
            }
            Api::Completions => {
                let p = match &t.system {
                    Some(s) => format!("{s}\n\n{prompt}"),
                    None => prompt.to_string(),
                };
                body.insert("prompt".into(), json!(p));
            }
        }
        let s = &t.sampling;
        body.insert("max_tokens".into(), json!(s.max_tokens));
        body.insert("temperature".into(), json!(s.temperature));
        body.insert("top_p".into(), json!(s.top_p));
        if let Some(k) = s.top_k {
            body.insert("top_k".into(), json!(k));
        }
        if !s.stop.is_empty() {
            body.insert("stop".into(), json!(s.stop));
        }
        body.insert("seed".into(), json!(seed));
        body.insert("n".into(), json!(1));
        for (k, v) in &self.cfg.extra_body {
            body.insert(k.clone(), v.clone());
        }
        serde_json::to_string(&Value::Object(body)).expect("payload serializes")
    }

    /// Samples for every document, in input order (documents no template applies to get none).
    pub async fn run(
        &self,
        docs: &[InputDoc],
        cancelled: &AtomicBool,
        progress: &Progress,
    ) -> Result<Vec<Vec<Sample>>, SynthError> {
        struct Req {
            doc: usize,
            template: usize,
            sample: u32,
            seed: u64,
            prompt: Result<String, Failure>,
        }
        let mut reqs = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            let (text, cut) = template::truncate(&doc.text, self.cfg.max_input_chars);
            let fields = Fields {
                id: &doc.id,
                text,
                lang: doc.lang.as_deref(),
                source: doc.source.as_deref(),
                extra: &doc.extra,
            };
            let mut applied = false;
            for (ti, t) in self.templates.iter().enumerate() {
                if !lang_matches(&t.languages, doc.lang.as_deref()) {
                    continue;
                }
                applied = true;
                let prompt = t.prompt.render(&fields).map_err(|name| Failure {
                    reason: "synth_missing_field",
                    detail: format!("template `{}` uses {{{name}}}, which document {} does not have", t.name, doc.id),
                });
                for k in 0..t.sampling.n {
                    reqs.push(Req {
                        doc: d,
                        template: ti,
                        sample: k,
                        seed: self.seed_of(&doc.id, &t.name, k),
                        prompt: prompt.clone(),
                    });
                }
            }
            if applied && cut {
                self.count("input-truncated", 1);
            }
            if !applied {
                self.count("docs-no-template", 1);
            }
        }
        self.count("requests", reqs.len() as u64);
        let results: Vec<Result<(usize, Sample), SynthError>> = futures::stream::iter(reqs)
            .map(|r| async move {
                let result = match r.prompt {
                    Err(f) => Err(f),
                    Ok(prompt) => {
                        let t = &self.templates[r.template];
                        self.one(t, self.payload(t, &prompt, r.seed), prompt.len(), cancelled).await?
                    }
                };
                progress.requests_done.fetch_add(1, Ordering::Relaxed);
                if let Ok(g) = &result {
                    progress.completion_tokens.fetch_add(g.answer.completion_tokens, Ordering::Relaxed);
                }
                Ok((r.doc, Sample { template: r.template, sample: r.sample, seed: r.seed, result }))
            })
            .buffered(self.cfg.concurrency)
            .collect()
            .await;
        let mut out: Vec<Vec<Sample>> = (0..docs.len()).map(|_| Vec::new()).collect();
        let (mut failed, mut total) = (0u64, 0u64);
        let mut reasons: BTreeMap<&'static str, (u64, String)> = BTreeMap::new();
        for r in results {
            let (d, s) = r?;
            total += 1;
            match &s.result {
                Ok(g) => {
                    let fr = g.answer.finish_reason.as_deref().unwrap_or("unknown");
                    self.count(&format!("finish.{fr}"), 1);
                }
                Err(f) => {
                    failed += 1;
                    self.count(&format!("failed.{}", f.reason), 1);
                    let e = reasons.entry(f.reason).or_insert((0, f.detail.clone()));
                    e.0 += 1;
                }
            }
            out[d].push(s);
        }
        if total > 0 && failed as f64 > self.cfg.max_failed_fraction * total as f64 {
            let (reason, (_, detail)) = reasons.into_iter().max_by_key(|(_, (n, _))| *n).expect("a failure");
            return Err(SynthError::TooManyFailures {
                failed,
                total,
                fraction: self.cfg.max_failed_fraction,
                reason: reason.to_string(),
                detail,
            });
        }
        Ok(out)
    }

    /// One request: from the cache, or sent until answered, refused or out of retries.
    async fn one(
        &self,
        t: &Prepared,
        payload: String,
        prompt_chars: usize,
        cancelled: &AtomicBool,
    ) -> Result<Result<Generated, Failure>, SynthError> {
        let key = cache::request_key(&self.cfg.model, &payload);
        if let Some(c) = &self.cache {
            match c.get(&key).await? {
                cache::Lookup::Hit(answer) => {
                    self.count("cache.hits", 1);
                    self.count("tokens.cached-prompt", answer.prompt_tokens);
                    self.count("tokens.cached-completion", answer.completion_tokens);
                    return Ok(Ok(Generated { answer, cached: true }));
                }
                cache::Lookup::Miss => self.count("cache.misses", 1),
                cache::Lookup::Corrupt => self.count("cache.corrupt", 1),
            }
        }
        // A rough token estimate for the tokens-per-minute bucket, corrected after the answer.
        let estimate = (prompt_chars / 4 + t.sampling.max_tokens as usize) as f64;
        let timeout = Duration::from_secs_f64(self.cfg.timeout_secs);
        let mut last = String::new();
        for retry in 0..=self.cfg.max_retries {
            let ep = self.choose(cancelled).await?;
            let permit = ep.permits.clone().acquire_owned().await.expect("semaphore never closes");
            loop {
                if cancelled.load(Ordering::Relaxed) {
                    return Err(SynthError::Cancelled);
                }
                match ep.take(estimate) {
                    Ok(()) => break,
                    Err(wait) => {
                        self.count("rate-limit-waits", 1);
                        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    }
                }
            }
            self.count("requests.sent", 1);
            let attempt =
                client::send(&self.http, &ep.spec.url, self.cfg.api, self.key.as_ref(), payload.clone(), timeout).await;
            drop(permit);
            match attempt {
                Attempt::Answered(answer) => {
                    ep.success();
                    ep.charge((answer.prompt_tokens + answer.completion_tokens) as f64 - estimate);
                    self.count("answered", 1);
                    self.count("tokens.prompt", answer.prompt_tokens);
                    self.count("tokens.completion", answer.completion_tokens);
                    if !answer.usage_reported {
                        self.count("usage-missing", 1);
                    }
                    if let Some(c) = &self.cache {
                        c.put(&key, &self.cfg.model, &answer).await?;
                        self.count("cache.written", 1);
                    }
                    return Ok(Ok(Generated { answer, cached: false }));
                }
                Attempt::Refused { detail } => {
                    ep.success();
                    return Ok(Err(Failure { reason: "synth_refused", detail: format!("{}: {detail}", ep.spec.url) }));
                }
                Attempt::Retry { kind, retry_after, detail, endpoint_fault } => {
                    self.count(&format!("retries.{kind}"), 1);
                    if endpoint_fault {
                        ep.failure(self.cfg.breaker_failures, self.cfg.breaker_cooldown_secs);
                    }
                    tracing::debug!(endpoint = %ep.spec.url, kind, %detail, retry, "synth request will be retried");
                    last = format!("{}: {kind}: {detail}", ep.spec.url);
                    if retry < self.cfg.max_retries {
                        let wait = limits::backoff(
                            retry,
                            self.cfg.backoff_base_secs,
                            self.cfg.backoff_max_secs,
                            retry_after,
                            rand::random::<f64>(),
                        );
                        sleep_unless_cancelled(wait, cancelled).await?;
                    }
                }
            }
        }
        Ok(Err(Failure {
            reason: "synth_retries_exhausted",
            detail: format!("no answer after {} tries; last: {last}", self.cfg.max_retries + 1),
        }))
    }

    /// An endpoint in rotation, by weight; waits while every breaker is open.
    async fn choose(&self, cancelled: &AtomicBool) -> Result<Arc<Endpoint>, SynthError> {
        let weights: Vec<f64> = self.endpoints.iter().map(|e| e.spec.weight).collect();
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return Err(SynthError::Cancelled);
            }
            let t = client::now();
            let avail: Vec<bool> = self.endpoints.iter().map(|e| e.available(t)).collect();
            if let Some(i) = limits::pick(&weights, &avail, rand::random::<f64>()) {
                match self.endpoints[i].admit(t) {
                    Admit::Yes => return Ok(self.endpoints[i].clone()),
                    Admit::Probe => {
                        self.count("breaker-probes", 1);
                        return Ok(self.endpoints[i].clone());
                    }
                    Admit::No(_) => {}
                }
            }
            self.count("breaker-waits", 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn sleep_unless_cancelled(d: Duration, cancelled: &AtomicBool) -> Result<(), SynthError> {
    let end = tokio::time::Instant::now() + d;
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(SynthError::Cancelled);
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(200))).await;
    }
}

/// A `languages` list (a stage's or a template's): empty is every document; otherwise the
/// document's language must be listed, region/script suffixes ignored (`zh-Hant` is `zh`), and
/// `"unknown"` matches documents without one.
pub fn lang_matches(languages: &[String], lang: Option<&str>) -> bool {
    if languages.is_empty() {
        return true;
    }
    let Some(lang) = lang else { return languages.iter().any(|l| l == "unknown") };
    let base = lang.split(['-', '_']).next().unwrap_or(lang);
    languages.iter().any(|l| l.eq_ignore_ascii_case(lang) || l.eq_ignore_ascii_case(base))
}

/// The provenance a generated document carries (its `synth` field).
pub fn provenance(g: &Generator, t: &Prepared, source_id: &str, s: &Sample, answer: &Answer) -> Value {
    json!({
        "source_id": source_id,
        "template": t.name,
        "template_sha256": t.hash,
        "model": g.cfg.model,
        "endpoint": answer.endpoint,
        "api": match g.cfg.api { Api::Chat => "chat", Api::Completions => "completions" },
        "sampling": t.sampling,
        "sample": s.sample,
        "seed": s.seed,
        "finish_reason": answer.finish_reason,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
    })
}
