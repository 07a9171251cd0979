//! The HTTP status face: `/healthz` (alive), `/readyz` (leading: serving the state), JSON under
//! `/api/` (jobs, one job with a page of its tasks, workers) and a small self-refreshing HTML
//! dashboard at `/` with a page per job. Before the coordinator leads (a standby waiting for
//! the leader lock, or a state still loading) [`Face`] answers only `/healthz`; the rest is 503.
//!
//! With a token configured, browsers log in once (`/login`: the token in a form, answered with an
//! HttpOnly, SameSite=Strict session cookie derived from the token, so the cookie never reveals
//! it) and scripts send `Authorization: Bearer TOKEN`. Tokens never travel in URLs.

mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use lehr_proto::pb::*;
use lehr_proto::{ApiError, CoordinatorApi, ErrorCode};

use crate::secret::{derive_secret, secrets_match};
use crate::service::Coordinator;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lehr_session";
/// Tasks per page on a job's page.
const TASKS_PER_PAGE: u32 = 200;
/// Jobs on the dashboard and per `/api/jobs` page unless `limit` says otherwise.
const JOBS_PER_PAGE: u32 = 100;

#[derive(Clone)]
struct AppState {
    coordinator: Arc<Coordinator>,
    /// The shared token and the session value derived from it; `None`: no authentication.
    auth: Option<Arc<(String, String)>>,
    /// Cookies get `Secure` when the page is served over TLS.
    tls: bool,
}

/// The session cookie's value for `token`: the same on every restart, and useless for gRPC.
pub fn session_value(token: &str) -> String {
    derive_secret(token, "http-session")
}

/// What the HTTP face serves before and after this coordinator leads: `/healthz` always
/// answers (the process is alive: an orchestrator keeps a standby running), `/readyz` and
/// every other path answer 503 until [`Face::lead`] installs the status router, then `/readyz`
/// answers ok and the rest goes to that router (so a Kubernetes Service routes to the leader).
#[derive(Clone, Default)]
pub struct Face {
    leading: Arc<std::sync::OnceLock<Router>>,
}

/// The 503 body of a coordinator that does not lead yet.
const NOT_LEADING: &str = "standby: this coordinator does not lead (yet): it waits for the leader lock of the shared \
                           state, or is still loading it; ask the leader";

impl Face {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .fallback(forward)
            .with_state(self.clone())
    }

    /// From now on the face serves `router` (this coordinator leads).
    pub fn lead(&self, router: Router) {
        let _ = self.leading.set(router);
    }
}

async fn readyz(State(face): State<Face>) -> Response {
    match face.leading.get() {
        Some(_) => "ok".into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, NOT_LEADING).into_response(),
    }
}

async fn forward(State(face): State<Face>, req: axum::extract::Request) -> Response {
    use tower::ServiceExt;
    match face.leading.get() {
        Some(router) => match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        None => (StatusCode::SERVICE_UNAVAILABLE, NOT_LEADING).into_response(),
    }
}

pub fn router(coordinator: Arc<Coordinator>, token: Option<String>, tls: bool) -> Router {
    let auth = token.map(|t| {
        let session = session_value(&t);
        Arc::new((t, session))
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/login", get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/", get(dashboard))
        .route("/jobs/{id}", get(job_page))
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/workers", get(api_workers))
        .with_state(AppState { coordinator, auth, tls })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(auth) = &state.auth else { return true };
    let (token, session) = (&auth.0, &auth.1);
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|b| secrets_match(b, token))
        || cookie(headers, SESSION_COOKIE).is_some_and(|c| secrets_match(c, session))
}

/// A JSON error body: `{"error": "...", "code": "not_found"}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message, "code": code }))).into_response()
}

fn api_error(e: ApiError) -> Response {
    let (status, code) = match e.code {
        ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorCode::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        ErrorCode::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    json_error(status, code, &e.message)
}

fn unauthorized_json() -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "this coordinator requires its token: send `Authorization: Bearer TOKEN`",
    );
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Browsers without a session go to the login page, and come back to `path` after it.
fn to_login(path: &str) -> Response {
    Redirect::to(&format!("/login?next={}", pages::percent_encode(path))).into_response()
}

/// A `next` that stays on this site (a path, never `//host` or a scheme).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

/// `offset` and `limit` (default `limit`), or the message of the 400 that names the bad one.
fn page_params(q: &HashMap<String, String>, limit: u32) -> Result<(u32, u32), String> {
    Ok((number(q, "offset", 0)?, number(q, "limit", limit)?))
}

/// A query parameter as a number, or the message of the 400 that names it.
fn number(q: &HashMap<String, String>, name: &str, default: u32) -> Result<u32, String> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("`{name}` must be a number, not `{v}`")),
    }
}

fn bad_request(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, "invalid_argument", message)
}

async fn api_jobs(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized_json();
    }
    let (offset, limit) = match page_params(&q, JOBS_PER_PAGE) {
        Ok(p) => p,
        Err(m) => return bad_request(&m),
    };
    match s.coordinator.list_jobs(ListJobsRequest { offset, limit }).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => api_error(e),
    }
}

async fn api_job(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized_json();
    }
    let (task_offset, task_limit) = match page_params(&q, 0) {
        Ok(p) => p,
        Err(m) => return bad_request(&m),
    };
    let req = GetJobRequest { job_id: id, include_tasks: true, task_offset, task_limit };
    match s.coordinator.get_job(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => api_error(e),
    }
}

async fn api_workers(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized_json();
    }
    match s.coordinator.list_workers(ListWorkersRequest {}).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => api_error(e),
    }
}

async fn login_form(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    if s.auth.is_none() {
        return Redirect::to("/").into_response();
    }
    pages::login(&safe_next(q.get("next").map(String::as_str)), None).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(s): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    let Some(auth) = &s.auth else { return Redirect::to(&next).into_response() };
    if !secrets_match(form.token.trim(), &auth.0) {
        return (StatusCode::UNAUTHORIZED, pages::login(&next, Some("That is not this coordinator's token.")))
            .into_response();
    }
    let secure = if s.tls { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=604800{secure}", auth.1);
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex cookie"));
    r
}

async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lehr_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

async fn dashboard(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return to_login("/");
    }
    let jobs = s.coordinator.list_jobs(ListJobsRequest { offset: 0, limit: JOBS_PER_PAGE }).await;
    let workers = s.coordinator.list_workers(ListWorkersRequest {}).await;
    match (jobs, workers) {
        (Ok(jobs), Ok(workers)) => pages::dashboard(&jobs, &workers.workers, s.auth.is_some()).into_response(),
        (Err(e), _) | (_, Err(e)) => api_error(e),
    }
}

async fn job_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return to_login(&format!("/jobs/{}", pages::percent_encode(&id)));
    }
    let offset = match number(&q, "offset", 0) {
        Ok(o) => o,
        Err(m) => return bad_request(&m),
    };
    let req = GetJobRequest { job_id: id, include_tasks: true, task_offset: offset, task_limit: TASKS_PER_PAGE };
    match s.coordinator.get_job(req).await {
        Ok(r) => pages::job(&r, offset, TASKS_PER_PAGE, s.auth.is_some()).into_response(),
        Err(e) if e.code == ErrorCode::NotFound => {
            (StatusCode::NOT_FOUND, pages::not_found(&e.message)).into_response()
        }
        Err(e) => api_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs/job-000001-ab12")), "/jobs/job-000001-ab12");
        for evil in ["//evil.example/x", "https://evil.example/", "evil", "/\\evil.example"] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; lehr_session=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
