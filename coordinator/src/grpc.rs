//! The tonic face of [`Coordinator`]: checks the shared token, then forwards each RPC.

use std::sync::Arc;

use lehr_proto::pb::coordinator_server::{Coordinator as CoordinatorRpc, CoordinatorServer};
use lehr_proto::pb::*;
use lehr_proto::{CoordinatorApi, AUTH_HEADER, MAX_MESSAGE_BYTES};
use tonic::{Request, Response, Status};

use crate::service::Coordinator;

pub struct GrpcService {
    inner: Arc<Coordinator>,
    token: Option<String>,
}

/// Compares without an early exit, so response times do not reveal how much of a guess matched.
pub use crate::secret::secrets_match as token_matches;

impl GrpcService {
    pub fn server(inner: Arc<Coordinator>, token: Option<String>) -> CoordinatorServer<Self> {
        CoordinatorServer::new(GrpcService { inner, token })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.token else { return Ok(()) };
        let given = req
            .metadata()
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("this coordinator requires a token: pass --token-file or set LEHR_TOKEN")
            })?;
        if token_matches(given, expected) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong token"))
        }
    }
}

macro_rules! rpc {
    ($self:ident, $req:ident, $method:ident) => {{
        $self.check(&$req)?;
        $self.inner.$method($req.into_inner()).await.map(Response::new).map_err(Status::from)
    }};
}

#[tonic::async_trait]
impl CoordinatorRpc for GrpcService {
    /// Planned on a task of its own: a client that hangs up (or times out) mid-planning does
    /// not abort it halfway, which would leave the output reserved by a job that never exists
    /// or a previous run's files half removed. The job is then submitted all the same.
    async fn submit_job(&self, req: Request<SubmitJobRequest>) -> Result<Response<SubmitJobResponse>, Status> {
        self.check(&req)?;
        let inner = self.inner.clone();
        let submitted = tokio::spawn(async move { inner.submit_job(req.into_inner()).await })
            .await
            .map_err(|e| Status::internal(format!("submitting the job panicked: {e}")))?;
        submitted.map(Response::new).map_err(Status::from)
    }
    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        rpc!(self, req, get_job)
    }
    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        rpc!(self, req, list_jobs)
    }
    async fn prune_jobs(&self, req: Request<PruneJobsRequest>) -> Result<Response<PruneJobsResponse>, Status> {
        rpc!(self, req, prune_jobs)
    }
    async fn cancel_job(&self, req: Request<CancelJobRequest>) -> Result<Response<CancelJobResponse>, Status> {
        rpc!(self, req, cancel_job)
    }
    async fn list_workers(&self, req: Request<ListWorkersRequest>) -> Result<Response<ListWorkersResponse>, Status> {
        rpc!(self, req, list_workers)
    }
    async fn register_worker(
        &self,
        req: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        rpc!(self, req, register_worker)
    }
    async fn lease_tasks(&self, req: Request<LeaseTasksRequest>) -> Result<Response<LeaseTasksResponse>, Status> {
        rpc!(self, req, lease_tasks)
    }
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        rpc!(self, req, heartbeat)
    }
    async fn report_task(&self, req: Request<ReportTaskRequest>) -> Result<Response<ReportTaskResponse>, Status> {
        rpc!(self, req, report_task)
    }
    async fn join_rendezvous(
        &self,
        req: Request<JoinRendezvousRequest>,
    ) -> Result<Response<JoinRendezvousResponse>, Status> {
        rpc!(self, req, join_rendezvous)
    }
}
