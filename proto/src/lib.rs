//! lehr's gRPC contract: the generated `lehr.v1` types, the [`CoordinatorApi`] trait that every
//! transport implements (gRPC client here, and its failover over several URLs; in-process in
//! `lehr-coordinator`; mocks in tests), and
//! the shared-token and message-size rules of the wire.

mod client;
mod failover;
pub mod wire;

pub mod pb {
    tonic::include_proto!("lehr.v1");
}

pub use client::GrpcCoordinatorClient;
pub use failover::FailoverClient;
pub use wire::Named;

use async_trait::async_trait;
use pb::*;

/// Largest gRPC message either side accepts (specs, task results with bad-record samples).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Metadata key carrying the shared token: `authorization: Bearer <token>`.
pub const AUTH_HEADER: &str = "authorization";

/// Error codes of the coordinator API, mapped one to one onto gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    Unauthenticated,
    /// Authenticated, but not allowed: a call for an attempt without its lease token.
    PermissionDenied,
    FailedPrecondition,
    Unavailable,
    Internal,
}

/// An error of a coordinator call, whatever the transport.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// Whether a caller should retry the same call later (coordinator down or restarting).
    pub fn is_transient(&self) -> bool {
        self.code == ErrorCode::Unavailable
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                ErrorCode::InvalidArgument
            }
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        ApiError { code, message: s.message().to_string() }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The coordinator's API. Workers and the CLI hold an `Arc<dyn CoordinatorApi>` and never know
/// whether it is a remote coordinator (gRPC) or one in the same process.
#[async_trait]
pub trait CoordinatorApi: Send + Sync {
    async fn submit_job(&self, req: SubmitJobRequest) -> ApiResult<SubmitJobResponse>;
    async fn get_job(&self, req: GetJobRequest) -> ApiResult<GetJobResponse>;
    async fn list_jobs(&self, req: ListJobsRequest) -> ApiResult<ListJobsResponse>;
    async fn prune_jobs(&self, req: PruneJobsRequest) -> ApiResult<PruneJobsResponse>;
    async fn cancel_job(&self, req: CancelJobRequest) -> ApiResult<CancelJobResponse>;
    async fn list_workers(&self, req: ListWorkersRequest) -> ApiResult<ListWorkersResponse>;
    async fn register_worker(&self, req: RegisterWorkerRequest) -> ApiResult<RegisterWorkerResponse>;
    async fn lease_tasks(&self, req: LeaseTasksRequest) -> ApiResult<LeaseTasksResponse>;
    async fn heartbeat(&self, req: HeartbeatRequest) -> ApiResult<HeartbeatResponse>;
    async fn report_task(&self, req: ReportTaskRequest) -> ApiResult<ReportTaskResponse>;
    async fn join_rendezvous(&self, req: JoinRendezvousRequest) -> ApiResult<JoinRendezvousResponse>;
}

/// Reads a shared token from a file (trimmed), for `--token-file`.
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    let t = std::fs::read_to_string(path)?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file is empty"));
    }
    Ok(t)
}
