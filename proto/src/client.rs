//! The gRPC transport of [`CoordinatorApi`]: a tonic client that adds the shared token to every
//! call and maps transport failures to `Unavailable`, so callers retry through restarts.

use std::time::Duration;

use async_trait::async_trait;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::pb::coordinator_client::CoordinatorClient;
use crate::pb::*;
use crate::{ApiError, ApiResult, CoordinatorApi, ErrorCode, AUTH_HEADER, MAX_MESSAGE_BYTES};

#[derive(Clone)]
pub struct GrpcCoordinatorClient {
    client: CoordinatorClient<Channel>,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
}

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
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| ApiError::invalid(format!("bad coordinator URL `{url}`: {e} (expected http://HOST:PORT)")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20));
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
        Ok(GrpcCoordinatorClient { client, auth })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            req.metadata_mut().insert(AUTH_HEADER, a.clone());
        }
        req
    }
}

fn map(status: tonic::Status) -> ApiError {
    let mut e = ApiError::from(status);
    if e.code == ErrorCode::Unavailable && e.message.is_empty() {
        e.message = "coordinator unavailable".into();
    }
    e
}

#[async_trait]
impl CoordinatorApi for GrpcCoordinatorClient {
    async fn submit_job(&self, req: SubmitJobRequest) -> ApiResult<SubmitJobResponse> {
        self.client.clone().submit_job(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn get_job(&self, req: GetJobRequest) -> ApiResult<GetJobResponse> {
        self.client.clone().get_job(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn list_jobs(&self, req: ListJobsRequest) -> ApiResult<ListJobsResponse> {
        self.client.clone().list_jobs(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn cancel_job(&self, req: CancelJobRequest) -> ApiResult<CancelJobResponse> {
        self.client.clone().cancel_job(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn list_workers(&self, req: ListWorkersRequest) -> ApiResult<ListWorkersResponse> {
        self.client.clone().list_workers(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn register_worker(&self, req: RegisterWorkerRequest) -> ApiResult<RegisterWorkerResponse> {
        self.client.clone().register_worker(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn lease_tasks(&self, req: LeaseTasksRequest) -> ApiResult<LeaseTasksResponse> {
        self.client.clone().lease_tasks(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn heartbeat(&self, req: HeartbeatRequest) -> ApiResult<HeartbeatResponse> {
        self.client.clone().heartbeat(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn report_task(&self, req: ReportTaskRequest) -> ApiResult<ReportTaskResponse> {
        self.client.clone().report_task(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
    async fn join_rendezvous(&self, req: JoinRendezvousRequest) -> ApiResult<JoinRendezvousResponse> {
        self.client.clone().join_rendezvous(self.request(req)).await.map(|r| r.into_inner()).map_err(map)
    }
}
