//! Several coordinator URLs (`--coordinator URL1,URL2`): coordinators sharing one PostgreSQL
//! state, of which one leads and listens while the others wait without listening. A call goes
//! to the URL that answered last; when that one is unavailable (refused, reset, timed out) the
//! others are tried in order, and the first that answers is followed from then on. A call that
//! none answers fails `Unavailable` with every URL's reason, and the caller's usual retry
//! through a restart applies.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::pb::*;
use crate::{ApiError, ApiResult, CoordinatorApi, ErrorCode, GrpcCoordinatorClient};

pub struct FailoverClient {
    endpoints: Vec<(String, GrpcCoordinatorClient)>,
    /// The index of the endpoint that answered last.
    current: AtomicUsize,
}

impl std::fmt::Debug for FailoverClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("FailoverClient").field("urls", &urls).finish()
    }
}

impl FailoverClient {
    /// `endpoints`: each URL with its client; at least one.
    pub fn new(endpoints: Vec<(String, GrpcCoordinatorClient)>) -> ApiResult<Self> {
        if endpoints.is_empty() {
            return Err(ApiError::invalid("no coordinator URL given"));
        }
        Ok(FailoverClient { endpoints, current: AtomicUsize::new(0) })
    }

    /// The URL calls go to now.
    pub fn current_url(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed)].0
    }

    async fn call<T, F, Fut>(&self, f: F) -> ApiResult<T>
    where
        F: Fn(GrpcCoordinatorClient) -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let (url, client) = &self.endpoints[idx];
            match f(client.clone()).await {
                Err(e) if e.code == ErrorCode::Unavailable => reasons.push(format!("{url}: {}", e.message)),
                answer => {
                    if idx != start && self.current.swap(idx, Ordering::Relaxed) != idx {
                        tracing::info!(%url, "following the coordinator that answers");
                    }
                    return answer;
                }
            }
        }
        Err(ApiError::new(ErrorCode::Unavailable, format!("no coordinator answered ({})", reasons.join("; "))))
    }
}

macro_rules! failover {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        #[async_trait]
        impl CoordinatorApi for FailoverClient {
            $(async fn $name(&self, req: $req) -> ApiResult<$resp> {
                self.call(|c| {
                    let req = req.clone();
                    async move { c.$name(req).await }
                })
                .await
            })*
        }
    };
}

failover! {
    submit_job(SubmitJobRequest) -> SubmitJobResponse;
    get_job(GetJobRequest) -> GetJobResponse;
    list_jobs(ListJobsRequest) -> ListJobsResponse;
    prune_jobs(PruneJobsRequest) -> PruneJobsResponse;
    cancel_job(CancelJobRequest) -> CancelJobResponse;
    list_workers(ListWorkersRequest) -> ListWorkersResponse;
    register_worker(RegisterWorkerRequest) -> RegisterWorkerResponse;
    lease_tasks(LeaseTasksRequest) -> LeaseTasksResponse;
    heartbeat(HeartbeatRequest) -> HeartbeatResponse;
    report_task(ReportTaskRequest) -> ReportTaskResponse;
    join_rendezvous(JoinRendezvousRequest) -> JoinRendezvousResponse;
}
