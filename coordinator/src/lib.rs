//! lehr's coordinator: jobs (DAGs of stages), shard tasks, leases with TTLs, bounded retries,
//! exactly-once commits, durable state (SQLite, or PostgreSQL shared by a leader and standbys), a
//! gRPC API and an HTTP status page.
//!
//! - `scheduler/`: the pure core (decisions as data, proptest-tested);
//! - `store/`: durable state behind the `StateStore` trait (SQLite, PostgreSQL with leader lock);
//! - `service.rs`: the async shell implementing `CoordinatorApi` in-process, `status.rs` its
//!   status views (built outside the lock);
//! - `grpc.rs`, `http.rs`: the network faces, `tls.rs` their TLS;
//! - `jobs/`: job kinds (planning, promotion, finalization).

pub mod grpc;
pub mod http;
pub mod jobs;
pub mod scheduler;
pub mod secret;
pub mod service;
pub mod status;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use scheduler::SchedulerConfig;
pub use service::Coordinator;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The durable state: a directory (`state.db`, `LOCK`) or a PostgreSQL URL.
    pub state: store::StateLocation,
    /// gRPC address; `None` serves no network (embedded use through the in-process API).
    pub listen: Option<SocketAddr>,
    /// HTTP status address.
    pub http_listen: Option<SocketAddr>,
    pub token: Option<String>,
    /// TLS on both faces (one certificate and key); `None` serves plain text.
    pub tls: Option<tls::ServerTls>,
    pub scheduler: SchedulerConfig,
}

/// A running coordinator.
pub struct RunningCoordinator {
    pub api: Arc<Coordinator>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub tasks: tokio::task::JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("TLS settings: {0}")]
    TlsSetup(String),
    #[error("opening the state: {0}")]
    Panicked(String),
}

/// Opens the state, binds the listeners and starts serving until `shutdown` is cancelled. On a
/// shared (PostgreSQL) state this waits, as a standby, until this coordinator leads; its gRPC
/// face listens only then, so clients given several URLs find the leader by who answers, and
/// its HTTP face answers only `/healthz` until then (`/readyz` and the rest: 503).
pub async fn start(config: CoordinatorConfig, shutdown: CancellationToken) -> Result<RunningCoordinator, StartError> {
    let mut tasks = tokio::task::JoinSet::new();
    // The HTTP face listens first: while this waits as a standby it answers `/healthz` (alive)
    // and 503 on `/readyz`, so an orchestrator keeps it running and routes to the leader only.
    let face = http::Face::default();
    let mut http_addr = None;
    if let Some(addr) = config.http_listen {
        let listener = TcpListener::bind(addr).await.map_err(|e| StartError::Bind(addr, e))?;
        let local = listener.local_addr().map_err(|e| StartError::Bind(addr, e))?;
        http_addr = Some(local);
        let app = face.router();
        let stop = shutdown.clone();
        match &config.tls {
            None => serve_http(&mut tasks, listener, app, stop),
            Some(t) => {
                let config = t.rustls_config(vec![b"http/1.1".to_vec()])?;
                serve_http(&mut tasks, tls::TlsListener::new(listener, config, stop.clone()), app, stop)
            }
        }
        tracing::info!(addr = %local, tls = config.tls.is_some(), "coordinator status page (http)");
    }

    let location = config.state.clone();
    let options = store::OpenOptions { identity: identity(config.listen) };
    let stop = shutdown.clone();
    let (store, state) = tokio::task::spawn_blocking(move || {
        let mut store = store::open(&location, &options, &stop)?;
        let state = store.load()?;
        Ok::<_, store::StoreError>((store, state))
    })
    .await
    .map_err(|e| StartError::Panicked(e.to_string()))??;
    let api = Arc::new(Coordinator::with_state(store, state, config.scheduler, jobs::registry()));
    let tick = Duration::from_millis((config.scheduler.lease_ttl_ms / 4).clamp(50, 1000) as u64);
    tasks.spawn(api.clone().run_maintenance(tick, shutdown.clone()));

    let mut grpc_addr = None;
    if let Some(addr) = config.listen {
        let listener = TcpListener::bind(addr).await.map_err(|e| StartError::Bind(addr, e))?;
        let local = listener.local_addr().map_err(|e| StartError::Bind(addr, e))?;
        grpc_addr = Some(local);
        let server = grpc::GrpcService::server(api.clone(), config.token.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = &config.tls {
            tls::install_crypto_provider();
            builder = builder.tls_config(t.tonic()).map_err(|e| StartError::TlsSetup(e.to_string()))?;
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = builder.add_service(server).serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                tracing::error!(error = %e, "grpc server stopped");
            }
        });
        tracing::info!(addr = %local, auth = config.token.is_some(), tls = config.tls.is_some(), "coordinator listening (grpc)");
    }
    face.lead(http::router(api.clone(), config.token.clone(), config.tls.is_some()));
    Ok(RunningCoordinator { api, grpc_addr, http_addr, tasks })
}

/// How this coordinator names itself to the others sharing its state: host and gRPC address.
fn identity(listen: Option<SocketAddr>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let pid = std::process::id();
    match listen {
        Some(addr) => format!("{host} {addr} pid {pid}"),
        None => format!("{host} pid {pid}"),
    }
}

/// Serves the status page on `listener` (plain TCP or TLS) until `stop`.
fn serve_http<L>(tasks: &mut tokio::task::JoinSet<()>, listener: L, app: axum::Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
}
