//! The HTTP shell: one attempt of one request against one endpoint, classified into an answer,
//! something worth retrying, or a refusal; and each endpoint's shared state (in-flight permits,
//! rate buckets, breaker), one per endpoint per worker process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::cache::Answer;
use crate::config::{Api, EndpointSpec};
use crate::limits::{Admit, Breaker, Bucket};

/// Seconds since the process's first use of the client: the clock of buckets and breakers.
pub fn now() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// An API key; never printed.
#[derive(Clone)]
pub struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt {
    Answered(Answer),
    /// Worth another try: `kind` is counted (`rate-limited`, `server-error`, `timeout`,
    /// `connection`, `malformed`); `endpoint_fault` feeds the breaker.
    Retry {
        kind: &'static str,
        retry_after: Option<f64>,
        detail: String,
        endpoint_fault: bool,
    },
    /// The server refused the request itself (4xx other than 408/429): retrying cannot help.
    Refused {
        detail: String,
    },
}

pub async fn send(
    http: &reqwest::Client,
    base: &str,
    api: Api,
    key: Option<&Secret>,
    payload: String,
    timeout: Duration,
) -> Attempt {
    let url = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        match api {
            Api::Chat => "chat/completions",
            Api::Completions => "completions",
        }
    );
    let mut req = http.post(&url).header("content-type", "application/json").timeout(timeout).body(payload);
    if let Some(k) = key {
        req = req.bearer_auth(&k.0);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0);
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return transport(e),
    };
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status.as_u16() == 429 {
        return Attempt::Retry {
            kind: "rate-limited",
            retry_after,
            detail: format!("429: {}", snippet()),
            endpoint_fault: false,
        };
    }
    if status.is_server_error() || status.as_u16() == 408 {
        return Attempt::Retry {
            kind: "server-error",
            retry_after,
            detail: format!("{}: {}", status.as_u16(), snippet()),
            endpoint_fault: true,
        };
    }
    if !status.is_success() {
        return Attempt::Refused { detail: format!("{}: {}", status.as_u16(), snippet()) };
    }
    match parse(&body, api, base) {
        Ok(a) => Attempt::Answered(a),
        Err(why) => Attempt::Retry { kind: "malformed", retry_after: None, detail: why, endpoint_fault: true },
    }
}

fn transport(e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() { "timeout" } else { "connection" };
    // reqwest's message names the URL, never the headers (the key).
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(&format!(": {s}"));
        src = s.source();
    }
    Attempt::Retry { kind, retry_after: None, detail, endpoint_fault: true }
}

/// The first choice of a completions or chat response.
pub fn parse(body: &[u8], api: Api, endpoint: &str) -> Result<Answer, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&body[..body.len().min(120)])))?;
    let choice = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
        .ok_or_else(|| "the response has no choices".to_string())?;
    let text = match api {
        Api::Completions => choice.get("text").and_then(|t| t.as_str()),
        Api::Chat => choice.get("message").and_then(|m| m.get("content")).and_then(|t| t.as_str()),
    }
    .ok_or_else(|| match api {
        Api::Completions => "choices[0].text is missing or not a string".to_string(),
        Api::Chat => "choices[0].message.content is missing or not a string".to_string(),
    })?;
    let usage = v.get("usage");
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(|n| n.as_u64());
    Ok(Answer {
        text: text.to_string(),
        finish_reason: choice.get("finish_reason").and_then(|f| f.as_str()).map(str::to_string),
        prompt_tokens: count("prompt_tokens").unwrap_or(0),
        completion_tokens: count("completion_tokens").unwrap_or(0),
        usage_reported: count("prompt_tokens").is_some() && count("completion_tokens").is_some(),
        endpoint: endpoint.to_string(),
    })
}

/// An endpoint's shared state in this process.
pub struct Endpoint {
    pub spec: EndpointSpec,
    pub permits: Arc<Semaphore>,
    state: Mutex<EndpointInner>,
}

struct EndpointInner {
    breaker: Breaker,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
}

impl Endpoint {
    /// The process's state for this endpoint (and these limits): shard tasks running side by
    /// side on one worker share its permits, buckets and breaker.
    pub fn shared(spec: &EndpointSpec) -> Arc<Endpoint> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Endpoint>>>> = OnceLock::new();
        let key = format!("{}|{}|{:?}|{:?}", spec.url, spec.max_concurrency, spec.rpm, spec.tpm);
        let mut reg = REGISTRY.get_or_init(Default::default).lock().expect("endpoint registry");
        reg.entry(key)
            .or_insert_with(|| {
                let t = now();
                Arc::new(Endpoint {
                    spec: spec.clone(),
                    permits: Arc::new(Semaphore::new(spec.max_concurrency)),
                    state: Mutex::new(EndpointInner {
                        breaker: Breaker::default(),
                        rpm: spec.rpm.map(|r| Bucket::per_minute(r as u64, t)),
                        tpm: spec.tpm.map(|r| Bucket::per_minute(r, t)),
                    }),
                })
            })
            .clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, EndpointInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn available(&self, t: f64) -> bool {
        self.inner().breaker.available(t)
    }

    pub fn admit(&self, t: f64) -> Admit {
        self.inner().breaker.admit(t)
    }

    pub fn success(&self) {
        self.inner().breaker.success();
    }

    pub fn failure(&self, threshold: u32, cooldown: f64) {
        self.inner().breaker.failure(now(), threshold, cooldown);
    }

    /// Takes one request and `tokens` (an estimate) from the buckets, or says how long to wait.
    pub fn take(&self, tokens: f64) -> Result<(), Duration> {
        let t = now();
        let mut s = self.inner();
        let mut rpm = s.rpm.clone();
        let mut tpm = s.tpm.clone();
        let wait_r = rpm.as_mut().map(|b| b.take(t, 1.0)).unwrap_or(Ok(()));
        let wait_t = tpm.as_mut().map(|b| b.take(t, tokens)).unwrap_or(Ok(()));
        match (wait_r, wait_t) {
            (Ok(()), Ok(())) => {
                s.rpm = rpm;
                s.tpm = tpm;
                Ok(())
            }
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(a), _) | (_, Err(a)) => Err(a),
        }
    }

    /// Corrects the token bucket once the real usage is known.
    pub fn charge(&self, delta: f64) {
        let t = now();
        if let Some(b) = self.inner().tpm.as_mut() {
            b.charge(t, delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_apis_and_says_what_is_missing() {
        let c =
            br#"{"choices":[{"text":"hi","finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let a = parse(c, Api::Completions, "http://e/v1").unwrap();
        assert_eq!(
            (a.text.as_str(), a.finish_reason.as_deref(), a.prompt_tokens, a.usage_reported),
            ("hi", Some("stop"), 3, true)
        );
        let chat = br#"{"choices":[{"message":{"role":"assistant","content":"yo"},"finish_reason":"length"}]}"#;
        let a = parse(chat, Api::Chat, "e").unwrap();
        assert_eq!((a.text.as_str(), a.usage_reported), ("yo", false));
        assert!(parse(b"{\"choices\":[]}", Api::Chat, "e").unwrap_err().contains("no choices"));
        assert!(parse(b"<html>", Api::Chat, "e").unwrap_err().starts_with("not JSON"));
        assert!(parse(c, Api::Chat, "e").unwrap_err().contains("message.content"));
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("sk-123".into())), "Secret(***)");
    }
}
