//! The HTTP status face: `/healthz`, JSON under `/api/` (jobs, one job with its tasks, workers)
//! and a small self-refreshing HTML dashboard at `/`. When a token is configured it is required
//! here too (`Authorization: Bearer …` or `?token=…`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lehr_pipeline::text::escape_xml;
use lehr_proto::pb::*;
use lehr_proto::CoordinatorApi;

use crate::grpc::token_matches;
use crate::service::Coordinator;

#[derive(Clone)]
struct AppState {
    coordinator: Arc<Coordinator>,
    token: Option<String>,
}

pub fn router(coordinator: Arc<Coordinator>, token: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(dashboard))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/workers", get(workers))
        .with_state(AppState { coordinator, token })
}

fn authorized(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = &state.token else { return Ok(()) };
    let from_header =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let given = from_header.or(query.get("token").map(String::as_str));
    match given {
        Some(g) if token_matches(g, expected) => Ok(()),
        _ => Err((StatusCode::UNAUTHORIZED, "token required (Authorization: Bearer … or ?token=…)")),
    }
}

/// Authorizes, then answers with the call's JSON or its error under `error_status`.
async fn api_json<T: serde::Serialize>(
    s: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    error_status: StatusCode,
    call: impl std::future::Future<Output = lehr_proto::ApiResult<T>>,
) -> Response {
    if let Err(r) = authorized(s, headers, query) {
        return r.into_response();
    }
    match call.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (error_status, e.message).into_response(),
    }
}

async fn jobs(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    api_json(&s, &headers, &q, StatusCode::INTERNAL_SERVER_ERROR, s.coordinator.list_jobs(ListJobsRequest {})).await
}

async fn job(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let call = s.coordinator.get_job(GetJobRequest { job_id: id, include_tasks: true });
    api_json(&s, &headers, &q, StatusCode::NOT_FOUND, call).await
}

async fn workers(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    api_json(&s, &headers, &q, StatusCode::INTERNAL_SERVER_ERROR, s.coordinator.list_workers(ListWorkersRequest {}))
        .await
}

async fn dashboard(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&s, &headers, &q) {
        return r.into_response();
    }
    let jobs = s.coordinator.list_jobs(ListJobsRequest {}).await.map(|r| r.jobs).unwrap_or_default();
    let workers = s.coordinator.list_workers(ListWorkersRequest {}).await.map(|r| r.workers).unwrap_or_default();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2><title>lehr coordinator</title>\
         <style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
         .bar{background:#eee;width:200px;height:10px}.fill{background:#4a7;height:10px}.failed{color:#b22}</style></head><body><h1>lehr coordinator</h1><h2>Jobs</h2>\
         <table><tr><th>job</th><th>name</th><th>kind</th><th>state</th><th>shards</th><th>progress</th><th>docs in → out</th><th>bad records</th><th>error</th></tr>",
    );
    for j in &jobs {
        let total: u32 = j.stages.iter().map(|s| s.tasks_total).sum();
        let done: u32 = j.stages.iter().map(|s| s.tasks_committed).sum();
        let din: u64 = j.stages.iter().map(|s| s.docs_in).sum();
        let dout: u64 = j.stages.iter().map(|s| s.docs_out).sum();
        let bad: u64 = j.stages.iter().map(|s| s.bad_records).sum();
        let pct = if total == 0 { 0.0 } else { 100.0 * done as f64 / total as f64 };
        html.push_str(&format!(
            "<tr><td><a href=\"/api/jobs/{id}\">{id}</a></td><td>{name}</td><td>{kind}</td><td class=\"{state}\">{state}</td><td>{done}/{total}</td>\
             <td><div class=bar><div class=fill style=\"width:{pct:.0}%\"></div></div></td><td>{din} → {dout}</td><td>{bad}</td><td class=failed>{err}</td></tr>",
            id = escape_xml(&j.job_id),
            name = escape_xml(&j.name),
            kind = escape_xml(&j.kind),
            state = escape_xml(&j.state),
            err = escape_xml(&j.error),
        ));
    }
    html.push_str(
        "</table><h2>Workers</h2><table><tr><th>worker</th><th>name</th><th>alive</th><th>running tasks</th></tr>",
    );
    for w in &workers {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td></tr>",
            escape_xml(&w.worker_id),
            escape_xml(&w.name),
            if w.alive { "yes" } else { "no" },
            w.running_tasks
        ));
    }
    html.push_str("</table></body></html>");
    Html(html).into_response()
}
