//! The OpenAI wire format of `lehr serve`: the request fields both endpoints take, checked
//! with errors that name the field (400, OpenAI's `{"error": {message, type, param, code}}`),
//! and the `logprobs` shapes of completions and chat completions.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::generate::Sampling;

/// A generated token as text, its logprob, and the alternatives' texts and logprobs.
pub type Piece = (String, f64, Vec<(String, f64)>);

/// An OpenAI-shaped error.
pub struct ApiError(pub StatusCode, pub String, pub Option<&'static str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.0 == StatusCode::NOT_FOUND { "not_found_error" } else { "invalid_request_error" };
        (self.0, Json(json!({"error": {"message": self.1, "type": kind, "param": self.2, "code": null}})))
            .into_response()
    }
}

pub fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into(), Some(param))
}

/// The sampling fields both endpoints share.
pub struct Params {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub n: usize,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: Option<usize>,
}

fn number(body: &Value, key: &'static str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(key, format!("`{key}` must be a number, got {v}"))),
    }
}

fn count(body: &Value, key: &'static str) -> Result<Option<usize>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| bad(key, format!("`{key}` must be a non-negative integer, got {v}"))),
    }
}

pub fn params(body: &Value, served: &str, chat: bool) -> Result<Params, ApiError> {
    if let Some(m) = body.get("model").and_then(|m| m.as_str()) {
        if m != served {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("the model `{m}` does not exist; this server serves `{served}`"),
                Some("model"),
            ));
        }
    }
    let temperature = number(body, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad("temperature", format!("`temperature` must be in [0, 2], got {temperature}")));
    }
    let top_p = number(body, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad("top_p", format!("`top_p` must be in (0, 1], got {top_p}")));
    }
    let top_k = match body.get("top_k") {
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => 0,
        _ => count(body, "top_k")?.unwrap_or(0),
    };
    let max_key =
        if chat && body.get("max_completion_tokens").is_some() { "max_completion_tokens" } else { "max_tokens" };
    let max_tokens = count(body, max_key)?.unwrap_or(if chat { 256 } else { 16 });
    let n = count(body, "n")?.unwrap_or(1);
    if n == 0 || n > 16 {
        return Err(bad("n", format!("`n` must be 1 to 16, got {n}")));
    }
    let stops = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(st)) => vec![st.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop", "`stop` must be a string or a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("stop", "`stop` must be a string or a list of strings")),
    };
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty()) {
        return Err(bad("stop", "`stop` takes up to 4 non-empty strings"));
    }
    let seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| bad("seed", format!("`seed` must be an integer, got {v}")))? as u64),
    };
    let logprobs = if chat {
        match body.get("logprobs") {
            Some(Value::Bool(true)) => Some(count(body, "top_logprobs")?.unwrap_or(0)),
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(v) => return Err(bad("logprobs", format!("`logprobs` must be true or false, got {v}"))),
        }
    } else {
        count(body, "logprobs")?
    };
    if logprobs.is_some_and(|k| k > 20) {
        return Err(bad("logprobs", "at most 20 log-probabilities per token"));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad("stream", format!("`stream` must be true or false, got {v}"))),
    };
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    // without a seed, a fresh one per request
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(Params {
        max_tokens,
        sampling: Sampling { temperature, top_p, top_k, seed, top_logprobs: logprobs.unwrap_or(0) },
        n,
        stops,
        stream,
        include_usage,
        logprobs,
    })
}

pub fn parse(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the request body is not JSON: {e}"), None))?;
    if !v.is_object() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "the request body must be a JSON object".into(), None));
    }
    Ok(v)
}

pub fn completion_logprobs(tokens: &[Piece]) -> Value {
    let mut offset = 0;
    let mut offsets = Vec::new();
    for t in tokens {
        offsets.push(offset);
        offset += t.0.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.1).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| t.2.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

pub fn chat_logprobs(tokens: &[Piece]) -> Value {
    let entry = |t: &str, l: f64| json!({"token": t, "logprob": l, "bytes": t.as_bytes()});
    json!({"content": tokens.iter().map(|t| {
        let mut e = entry(&t.0, t.1);
        e["top_logprobs"] = Value::Array(t.2.iter().map(|(k, v)| entry(k, *v)).collect());
        e
    }).collect::<Vec<_>>()})
}
