//! The gRPC transport of [`CoordinatorApi`]: a tonic client that adds the shared token to every
//! call and maps transport failures to `Unavailable`, so callers retry through restarts.
//! `https://` URLs speak TLS: against the CA given (`--tls-ca`), else the system's roots.

use std::time::Duration;

use async_trait::async_trait;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb::coordinator_client::CoordinatorClient;
use crate::pb::*;
use crate::{ApiError, ApiResult, CoordinatorApi, ErrorCode, AUTH_HEADER, MAX_MESSAGE_BYTES};

#[derive(Clone)]
pub struct GrpcCoordinatorClient {
    client: CoordinatorClient<Channel>,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// Whether the URL is plain `http://` (for the hint when the server speaks TLS).
    plain: bool,
    /// How long a call may wait for its answer (a lease call: plus the wait it asks for).
    call_timeout: Duration,
    url: String,
}

/// How long a call waits for its answer unless told otherwise: well past a loaded coordinator's
/// p99 (about 1.2 s with 1,000 workers on 2 cores, docs/benchmarks.md), well short of forever.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What SubmitJob gets on top of the call timeout: the coordinator plans the job before it
/// answers, listing every input (an object store's listing of a large corpus takes minutes), and
/// a submit given up on may still create the job.
pub const SUBMIT_PLANNING_ALLOWANCE: Duration = Duration::from_secs(600);

impl std::fmt::Debug for GrpcCoordinatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the token
        f.debug_struct("GrpcCoordinatorClient").field("auth", &self.auth.is_some()).finish()
    }
}

impl GrpcCoordinatorClient {
    /// A lazily connecting client: no call is made until the first request, and a coordinator
    /// that is down answers `Unavailable` until it is back.
    pub fn new(url: &str, token: Option<&str>) -> ApiResult<Self> {
        Self::with_tls(url, token, None)
    }

    /// As [`new`](Self::new); `ca_pem` is the PEM certificate (or bundle) that signed the
    /// coordinator's certificate, and needs an `https://` URL. An `https://` URL without it trusts
    /// the system's roots.
    pub fn with_tls(url: &str, token: Option<&str>, ca_pem: Option<&[u8]>) -> ApiResult<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| {
                ApiError::invalid(format!(
                    "bad coordinator URL `{url}`: {e} (expected http://HOST:PORT or https://HOST:PORT)"
                ))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20));
        let https = url.starts_with("https://");
        match (https, ca_pem) {
            (false, Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "a TLS CA was given but the coordinator URL `{url}` is plain http: use https://"
                )))
            }
            (false, None) => {}
            (true, ca) => {
                let mut tls = ClientTlsConfig::new();
                tls = match ca {
                    Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                    None => tls.with_native_roots(),
                };
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| ApiError::invalid(format!("TLS settings for `{url}`: {e}")))?;
            }
        }
        let channel = endpoint.connect_lazy();
        let client = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let auth = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ApiError::invalid("the shared token must be printable ASCII"))?,
            ),
            None => None,
        };
        Ok(GrpcCoordinatorClient {
            client,
            auth,
            plain: !https,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            url: url.to_string(),
        })
    }

    /// Calls that get no answer within `timeout` (a lease call: within `timeout` plus the wait
    /// it asks for) fail as `Unavailable`, as a coordinator that is down does: a stopped process
    /// or a cut-off network keeps the connection open and answers nothing.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            req.metadata_mut().insert(AUTH_HEADER, a.clone());
        }
        req
    }
}

impl GrpcCoordinatorClient {
    /// Awaits one call for at most the call timeout plus `wait` (what a long poll asks for).
    async fn call<T>(
        &self,
        what: &str,
        wait: Duration,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> ApiResult<T> {
        let limit = self.call_timeout.saturating_add(wait);
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => answer.map(|r| r.into_inner()).map_err(|s| self.map(s)),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the coordinator at {} did not answer {what} within {limit:?}: it may be stopped, overloaded \
                     or cut off (a longer --call-timeout waits longer){}",
                    self.url,
                    if what == "SubmitJob" { "; the job may still have been created: see `lehr status`" } else { "" }
                ),
            )),
        }
    }

    fn map(&self, status: tonic::Status) -> ApiError {
        // "transport error" alone says little: name the causes (connection refused, reset, ...)
        let mut parts = vec![status.message().to_string()];
        let mut source = std::error::Error::source(&status);
        while let Some(e) = source {
            let text = e.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            source = e.source();
        }
        let causes = parts.len() > 1;
        let said = parts.join(": ");
        let lower = said.to_ascii_lowercase();
        // A plain-text client talking to a TLS server sees the handshake's bytes as broken
        // HTTP/2, or the server hanging up on it.
        if self.plain
            && ["h2 protocol error", "broken pipe", "reset by peer", "connection closed"]
                .iter()
                .any(|m| lower.contains(m))
        {
            return ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the coordinator hung up on plain gRPC ({}): if it serves TLS, use an https:// URL \
                     (and --tls-ca for a private CA)",
                    said.trim()
                ),
            );
        }
        if causes {
            let code = ApiError::from(status).code;
            return ApiError::new(code, said);
        }
        let mut e = ApiError::from(status);
        if e.code == ErrorCode::Unavailable && e.message.is_empty() {
            e.message = "coordinator unavailable".into();
        }
        e
    }
}

#[async_trait]
impl CoordinatorApi for GrpcCoordinatorClient {
    async fn submit_job(&self, req: SubmitJobRequest) -> ApiResult<SubmitJobResponse> {
        self.call("SubmitJob", SUBMIT_PLANNING_ALLOWANCE, self.client.clone().submit_job(self.request(req))).await
    }
    async fn get_job(&self, req: GetJobRequest) -> ApiResult<GetJobResponse> {
        self.call("GetJob", Duration::ZERO, self.client.clone().get_job(self.request(req))).await
    }
    async fn list_jobs(&self, req: ListJobsRequest) -> ApiResult<ListJobsResponse> {
        self.call("ListJobs", Duration::ZERO, self.client.clone().list_jobs(self.request(req))).await
    }
    async fn prune_jobs(&self, req: PruneJobsRequest) -> ApiResult<PruneJobsResponse> {
        self.call("PruneJobs", Duration::ZERO, self.client.clone().prune_jobs(self.request(req))).await
    }
    async fn cancel_job(&self, req: CancelJobRequest) -> ApiResult<CancelJobResponse> {
        self.call("CancelJob", Duration::ZERO, self.client.clone().cancel_job(self.request(req))).await
    }
    async fn list_workers(&self, req: ListWorkersRequest) -> ApiResult<ListWorkersResponse> {
        self.call("ListWorkers", Duration::ZERO, self.client.clone().list_workers(self.request(req))).await
    }
    async fn register_worker(&self, req: RegisterWorkerRequest) -> ApiResult<RegisterWorkerResponse> {
        self.call("RegisterWorker", Duration::ZERO, self.client.clone().register_worker(self.request(req))).await
    }
    async fn lease_tasks(&self, req: LeaseTasksRequest) -> ApiResult<LeaseTasksResponse> {
        let wait = Duration::from_millis(req.wait_ms);
        self.call("LeaseTasks", wait, self.client.clone().lease_tasks(self.request(req))).await
    }
    async fn heartbeat(&self, req: HeartbeatRequest) -> ApiResult<HeartbeatResponse> {
        self.call("Heartbeat", Duration::ZERO, self.client.clone().heartbeat(self.request(req))).await
    }
    async fn report_task(&self, req: ReportTaskRequest) -> ApiResult<ReportTaskResponse> {
        self.call("ReportTask", Duration::ZERO, self.client.clone().report_task(self.request(req))).await
    }
    async fn join_rendezvous(&self, req: JoinRendezvousRequest) -> ApiResult<JoinRendezvousResponse> {
        self.call("JoinRendezvous", Duration::ZERO, self.client.clone().join_rendezvous(self.request(req))).await
    }
}
