//! `lehr serve`: a checkpoint behind the OpenAI HTTP API — `POST /v1/completions`,
//! `POST /v1/chat/completions` (the checkpoint's chat template), `GET /v1/models`,
//! `GET /health`; streaming (SSE) or whole responses; `temperature`, `top_p`, `top_k`,
//! `max_tokens`, `stop`, `seed`, `n`, `logprobs`; `usage` counts. One generation thread owns
//! the model and batches whatever is waiting (static batching, up to `max_batch` rows; each row
//! is computed as if alone, see `generate.rs`). Bad requests get OpenAI-shaped errors (400, the
//! message and `param` naming the field).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tch::Device;
use tokio::sync::mpsc as tmpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::ChatTemplate;
use crate::generate::{generate, Finish, Next, Request, Sampling, Token};
use crate::model::load_hf;
use crate::openai::{bad, chat_logprobs, completion_logprobs, params, parse, ApiError, Params, Piece};
use crate::TrainError;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub checkpoint: PathBuf,
    pub listen: SocketAddr,
    pub device: Device,
    /// Rows (requests × n) generated together at most.
    pub max_batch: usize,
    /// The model's name in the API (default: the checkpoint directory's name).
    pub model_name: Option<String>,
}

/// What a row's generation reports to its request.
enum RowEvent {
    Text {
        text: String,
        tokens: Vec<Piece>,
    },
    Done {
        finish: Finish,
        completion_tokens: usize,
    },
    /// The batch could not be generated (a libtorch error): the message, for a 500.
    Failed(String),
}

struct Row {
    request: Request,
    stops: Vec<String>,
    events: tmpsc::UnboundedSender<RowEvent>,
}

struct Shared {
    name: String,
    tokenizer: Arc<tokenizers::Tokenizer>,
    chat: Option<ChatTemplate>,
    eos: Vec<i64>,
    /// Chat also stops at the end-of-turn marker of the common templates (ChatML's
    /// `<|im_end|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`, Phi's `<|end|>`) when the
    /// vocabulary has it: checkpoints converted from GGUF often name only `<|endoftext|>`.
    turn_end: Vec<i64>,
    context: usize,
    vocab: i64,
    rows: std::sync::Mutex<mpsc::Sender<Row>>,
    next_id: AtomicU64,
}

/// The end-of-sequence ids: generation_config.json's `eos_token_id` (int or list), else the
/// tokenizer config's `eos_token`.
fn eos_ids(dir: &std::path::Path, tok: &tokenizers::Tokenizer) -> Vec<i64> {
    let read = |f: &str| -> Value {
        std::fs::read(dir.join(f)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    };
    let mut ids: Vec<i64> = match &read("generation_config.json")["eos_token_id"] {
        Value::Number(n) => n.as_i64().into_iter().collect(),
        Value::Array(a) => a.iter().filter_map(|v| v.as_i64()).collect(),
        _ => Vec::new(),
    };
    let config = read("tokenizer_config.json");
    if let Some(id) = crate::chat::special_token(&config["eos_token"]).and_then(|t| tok.token_to_id(&t)) {
        if !ids.contains(&(id as i64)) {
            ids.push(id as i64);
        }
    }
    ids
}

/// Serves until `shutdown`; `bound` learns the address (port 0 picks one).
pub async fn start(
    config: ServeConfig,
    shutdown: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> Result<(), TrainError> {
    let dir = config.checkpoint.clone();
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
        TrainError::Config(format!("{}: {e} (lehr serve needs the checkpoint's tokenizer.json)", tok_path.display()))
    })?;
    let tokenizer = Arc::new(tokenizer);
    let chat = ChatTemplate::from_dir(&dir).map_err(TrainError::Config)?;
    let (vs, model) = load_hf(&dir, config.device)?;
    let context = model.config.max_position_embeddings as usize;
    let vocab = model.config.vocab_size;
    let name = config
        .model_name
        .clone()
        .unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "lehr".into()));
    let (tx, rx) = mpsc::channel::<Row>();
    let gen_tok = tokenizer.clone();
    let (device, max_batch) = (config.device, config.max_batch.max(1));
    std::thread::Builder::new()
        .name("lehr-generate".into())
        .spawn(move || {
            let _vs = vs;
            generation_loop(&model, &gen_tok, rx, device, max_batch)
        })
        .map_err(|e| TrainError::Io("generation thread".into(), e))?;
    let eos = eos_ids(&dir, &tokenizer);
    let mut turn_end = eos.clone();
    for t in ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"] {
        if let Some(id) = tokenizer.token_to_id(t) {
            turn_end.push(id as i64);
        }
    }
    let shared = Arc::new(Shared {
        eos,
        turn_end,
        vocab,
        name,
        tokenizer,
        chat,
        context,
        rows: std::sync::Mutex::new(tx),
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into(), None) })
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| TrainError::Io(format!("listen on {}", config.listen), e))?;
    let addr = listener.local_addr().map_err(|e| TrainError::Io("listener".into(), e))?;
    bound(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| TrainError::Io("http server".into(), e))
}

/// Text of `ids` that is safe to emit: not ending in a partial UTF-8 character, and holding
/// back what could still become a stop string.
fn settled(text: &str, hold: usize) -> usize {
    let mut end = text.len();
    while text[..end].ends_with('\u{FFFD}') {
        end -= '\u{FFFD}'.len_utf8();
    }
    let mut cut = end;
    for _ in 0..hold {
        match text[..cut].char_indices().next_back() {
            Some((i, _)) => cut = i,
            None => break,
        }
    }
    cut
}

/// Where the earliest stop string begins in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// How long a batch waits for more rows after its last one arrived.
const BATCH_WINDOW_MS: u64 = 15;

fn generation_loop(
    model: &crate::model::Model,
    tok: &tokenizers::Tokenizer,
    rx: mpsc::Receiver<Row>,
    device: Device,
    max_batch: usize,
) {
    while let Ok(first) = rx.recv() {
        // static batching: whatever arrives within a few milliseconds of the first row (a
        // client's concurrent requests do not land at the same instant) goes in one batch
        let mut rows = vec![first];
        while rows.len() < max_batch {
            match rx.recv_timeout(std::time::Duration::from_millis(BATCH_WINDOW_MS)) {
                Ok(r) => rows.push(r),
                Err(_) => break,
            }
        }
        let requests: Vec<Request> = rows.iter().map(|r| r.request.clone()).collect();
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); rows.len()];
        let mut sent: Vec<usize> = vec![0; rows.len()];
        let mut pending: Vec<Vec<Piece>> = vec![Vec::new(); rows.len()];
        let piece = |id: i64| tok.decode(&[id as u32], false).unwrap_or_default();
        // a libtorch error panics inside tch: it fails this batch's requests, not the server
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate(model, &requests, device, |r, t: &Token| {
                ids[r].push(t.id as u32);
                pending[r].push((piece(t.id), t.logprob, t.top.iter().map(|(i, l)| (piece(*i), *l)).collect()));
                let text = tok.decode(&ids[r], true).unwrap_or_default();
                let row = &rows[r];
                if let Some(at) = first_stop(&text, &row.stops) {
                    let out = text[sent[r].min(at)..at].to_string();
                    let _ = row.events.send(RowEvent::Text { text: out, tokens: std::mem::take(&mut pending[r]) });
                    sent[r] = at;
                    return Next::Stop;
                }
                let hold = row.stops.iter().map(|s| s.chars().count()).max().unwrap_or(1).saturating_sub(1);
                let upto = settled(&text, hold).max(sent[r]);
                if upto > sent[r] || !pending[r].is_empty() {
                    let out = text[sent[r]..upto].to_string();
                    sent[r] = upto;
                    if row.events.send(RowEvent::Text { text: out, tokens: std::mem::take(&mut pending[r]) }).is_err() {
                        return Next::Stop; // the client went away
                    }
                }
                Next::Continue
            })
        }));
        let done = match done {
            Ok(d) => d,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "generation failed".into());
                for row in &rows {
                    let _ = row.events.send(RowEvent::Failed(why.clone()));
                }
                continue;
            }
        };
        for (r, (tokens, finish)) in done.into_iter().enumerate() {
            let row = &rows[r];
            let text = tok.decode(&ids[r], true).unwrap_or_default();
            let end = first_stop(&text, &row.stops).unwrap_or(text.len());
            if end > sent[r] {
                let _ = row.events.send(RowEvent::Text { text: text[sent[r]..end].to_string(), tokens: Vec::new() });
            }
            let _ = row.events.send(RowEvent::Done { finish, completion_tokens: tokens.len() });
        }
    }
}

async fn models(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": s.name, "object": "model", "created": 0, "owned_by": "lehr"}]}))
}

/// Queues `n` rows per prompt; returns one receiver per choice, in choice order.
fn submit(
    s: &Shared,
    prompts: &[Vec<i64>],
    p: &Params,
    chat: bool,
) -> Result<Vec<tmpsc::UnboundedReceiver<RowEvent>>, ApiError> {
    let mut out = Vec::new();
    let tx = s.rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for prompt in prompts {
        if prompt.len() >= s.context {
            return Err(bad(
                "prompt",
                format!("the prompt has {} tokens; the model's context is {}", prompt.len(), s.context),
            ));
        }
        for i in 0..p.n {
            let (etx, erx) = tmpsc::unbounded_channel();
            let request = Request {
                prompt: prompt.clone(),
                max_tokens: p.max_tokens.min(s.context - prompt.len()),
                stop_ids: if chat { s.turn_end.clone() } else { s.eos.clone() },
                sampling: Sampling { seed: p.sampling.seed.wrapping_add(i as u64), ..p.sampling.clone() },
            };
            tx.send(Row { request, stops: p.stops.clone(), events: etx }).map_err(|_| {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "the generation thread stopped".into(), None)
            })?;
            out.push(erx);
        }
    }
    Ok(out)
}

fn encode(s: &Shared, text: &str, special: bool) -> Result<Vec<i64>, ApiError> {
    let e = s.tokenizer.encode(text, special).map_err(|e| bad("prompt", format!("cannot tokenize: {e}")))?;
    Ok(e.get_ids().iter().map(|&i| i as i64).collect())
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A choice collected whole.
struct Whole {
    text: String,
    tokens: Vec<Piece>,
    finish: Finish,
    completion_tokens: usize,
}

async fn collect(mut rx: tmpsc::UnboundedReceiver<RowEvent>) -> Result<Whole, ApiError> {
    let mut w = Whole { text: String::new(), tokens: Vec::new(), finish: Finish::Length, completion_tokens: 0 };
    while let Some(e) = rx.recv().await {
        match e {
            RowEvent::Text { text, tokens } => {
                w.text.push_str(&text);
                w.tokens.extend(tokens);
            }
            RowEvent::Done { finish, completion_tokens } => {
                w.finish = finish;
                w.completion_tokens = completion_tokens;
                break;
            }
            RowEvent::Failed(why) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, why, None)),
        }
    }
    Ok(w)
}

/// `usage` of a response.
fn usage_of(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens})
}

/// A streamed error event (the batch failed).
fn server_error(why: &str) -> Value {
    json!({"error": {"message": why, "type": "server_error", "param": null, "code": null}})
}

/// A whole (non-streamed) response: `head` (id, object, created, model) with every choice,
/// collected in order and shaped by `choice`, and the usage.
async fn whole(
    rxs: Vec<tmpsc::UnboundedReceiver<RowEvent>>,
    mut head: Value,
    prompt_tokens: usize,
    choice: impl Fn(usize, Whole) -> Value,
) -> Result<Response, ApiError> {
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for (i, rx) in rxs.into_iter().enumerate() {
        let w = collect(rx).await?;
        completion_tokens += w.completion_tokens;
        choices.push(choice(i, w));
    }
    head["choices"] = Value::Array(choices);
    head["usage"] = usage_of(prompt_tokens, completion_tokens);
    Ok(Json(head).into_response())
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse(&body)?;
    let p = params(&body, &s.name, false)?;
    if body.get("echo").and_then(|v| v.as_bool()) == Some(true) {
        return Err(bad("echo", "`echo` is not supported"));
    }
    let prompts: Vec<Vec<i64>> = match body.get("prompt") {
        Some(Value::String(t)) => vec![encode(&s, t, true)?],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|v| v.is_string()) => {
            a.iter().map(|v| encode(&s, v.as_str().unwrap_or_default(), true)).collect::<Result<_, _>>()?
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|v| v.is_u64()) => {
            let ids: Vec<i64> = a.iter().filter_map(|v| v.as_i64()).collect();
            if let Some(bad_id) = ids.iter().find(|&&i| i >= s.vocab) {
                return Err(bad("prompt", format!("token id {bad_id} is past the vocabulary ({} ids)", s.vocab)));
            }
            vec![ids]
        }
        None => return Err(bad("prompt", "`prompt` is required")),
        Some(_) => return Err(bad("prompt", "`prompt` must be a string, a list of strings, or a list of token ids")),
    };
    let prompt_tokens: usize = prompts.iter().map(|p| p.len()).sum();
    let rxs = submit(&s, &prompts, &p, false)?;
    let id = format!("cmpl-{}", s.next_id.fetch_add(1, Ordering::Relaxed));
    let (created, model) = (now(), s.name.clone());
    if p.stream {
        let want_lp = p.logprobs.is_some();
        let include_usage = p.include_usage;
        let stream = async_stream(rxs, move |index, ev, usage| match ev {
            Some(RowEvent::Text { text, tokens }) => {
                Some(json!({"id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": index, "text": text, "finish_reason": null,
                "logprobs": if want_lp { completion_logprobs(&tokens) } else { Value::Null }}]}))
            }
            Some(RowEvent::Done { finish, .. }) => {
                Some(json!({"id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": index, "text": "", "finish_reason": finish_name(finish), "logprobs": null}]}))
            }
            Some(RowEvent::Failed(why)) => Some(server_error(&why)),
            None if include_usage => {
                Some(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [],
                "usage": usage_of(prompt_tokens, usage)}))
            }
            None => None,
        });
        return Ok(Sse::new(stream).into_response());
    }
    let head = json!({"id": id, "object": "text_completion", "created": created, "model": model});
    whole(rxs, head, prompt_tokens, |i, w| {
        json!({"index": i, "text": w.text, "finish_reason": finish_name(w.finish),
            "logprobs": if p.logprobs.is_some() { completion_logprobs(&w.tokens) } else { Value::Null }})
    })
    .await
}

async fn chat_completions(State(s): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse(&body)?;
    let p = params(&body, &s.name, true)?;
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        None => return Err(bad("messages", "`messages` is required")),
        Some(_) => return Err(bad("messages", "`messages` must be a non-empty list of {role, content}")),
    };
    for (i, m) in messages.iter().enumerate() {
        if !m["role"].is_string() || !(m["content"].is_string() || m["content"].is_null()) {
            return Err(bad("messages", format!("messages[{i}] needs a string `role` and a string `content`")));
        }
    }
    let template = s.chat.as_ref().ok_or_else(|| {
        bad(
            "messages",
            "the checkpoint has no chat template (tokenizer_config.json chat_template); use /v1/completions",
        )
    })?;
    let text = template.render(&Value::Array(messages.clone())).map_err(|e| bad("messages", e))?;
    let prompt = encode(&s, &text, false)?;
    let prompt_tokens = prompt.len();
    let rxs = submit(&s, std::slice::from_ref(&prompt), &p, true)?;
    let id = format!("chatcmpl-{}", s.next_id.fetch_add(1, Ordering::Relaxed));
    let (created, model) = (now(), s.name.clone());
    if p.stream {
        let want_lp = p.logprobs.is_some();
        let include_usage = p.include_usage;
        let mut started = vec![false; rxs.len()];
        let stream = async_stream(rxs, move |index, ev, usage| {
            let chunk = |delta: Value, finish: Value, lp: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": lp}]})
            };
            match ev {
                Some(RowEvent::Text { text, tokens }) => {
                    let mut delta = json!({"content": text});
                    if !std::mem::replace(&mut started[index], true) {
                        delta["role"] = json!("assistant");
                    }
                    Some(chunk(delta, Value::Null, if want_lp { chat_logprobs(&tokens) } else { Value::Null }))
                }
                Some(RowEvent::Done { finish, .. }) => Some(chunk(json!({}), json!(finish_name(finish)), Value::Null)),
                Some(RowEvent::Failed(why)) => Some(server_error(&why)),
                None if include_usage => {
                    Some(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": usage_of(prompt_tokens, usage)}))
                }
                None => None,
            }
        });
        return Ok(Sse::new(stream).into_response());
    }
    let head = json!({"id": id, "object": "chat.completion", "created": created, "model": model});
    whole(rxs, head, prompt_tokens, |i, w| {
        json!({"index": i, "message": {"role": "assistant", "content": w.text},
            "finish_reason": finish_name(w.finish),
            "logprobs": if p.logprobs.is_some() { chat_logprobs(&w.tokens) } else { Value::Null }})
    })
    .await
}

/// SSE events from every choice's receiver, in the order they come: `chunk(index, event,
/// total completion tokens)` makes each (None once all are done: the usage chunk), then
/// `[DONE]`.
fn async_stream(
    rxs: Vec<tmpsc::UnboundedReceiver<RowEvent>>,
    mut chunk: impl FnMut(usize, Option<RowEvent>, usize) -> Option<Value> + Send + 'static,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    let (tx, rx) = tmpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let mut merged = tokio_stream::StreamMap::new();
        for (i, r) in rxs.into_iter().enumerate() {
            merged.insert(i, tokio_stream::wrappers::UnboundedReceiverStream::new(r));
        }
        let mut usage = 0;
        while let Some((i, ev)) = futures::StreamExt::next(&mut merged).await {
            let done = matches!(ev, RowEvent::Done { .. } | RowEvent::Failed(_));
            if let RowEvent::Done { completion_tokens, .. } = &ev {
                usage += completion_tokens;
            }
            if let Some(v) = chunk(i, Some(ev), usage) {
                if tx.send(Event::default().data(v.to_string())).is_err() {
                    return;
                }
            }
            if done {
                merged.remove(&i);
            }
        }
        if let Some(v) = chunk(0, None, usage) {
            let _ = tx.send(Event::default().data(v.to_string()));
        }
        let _ = tx.send(Event::default().data("[DONE]"));
    });
    futures::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), Ok)
}
