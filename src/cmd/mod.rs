mod bench;
mod bench_coordinator;
mod bench_synth;
mod cluster;
mod compare;
mod corpus;
mod curve;
mod dedup;
mod export;
mod grow;
mod inspect;
mod schedule;
mod status;
mod tasks;
mod tokenizer;
mod train;

use std::sync::Arc;

use lehr_proto::{ApiError, CoordinatorApi, ErrorCode, FailoverClient, GrpcCoordinatorClient};

use crate::cli::{AuthArgs, Cli, Command};

pub const EXIT_OK: i32 = 0;
pub const EXIT_JOB_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNAVAILABLE: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

/// An error with the exit code it means.
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Failure { code: EXIT_USAGE, error: e.into() }
    }
    pub fn unavailable(e: impl Into<anyhow::Error>) -> Self {
        Failure { code: EXIT_UNAVAILABLE, error: e.into() }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            ErrorCode::InvalidArgument | ErrorCode::NotFound | ErrorCode::Unauthenticated => EXIT_USAGE,
            ErrorCode::Unavailable => EXIT_UNAVAILABLE,
            _ => EXIT_JOB_FAILED,
        };
        let hint = match e.code {
            ErrorCode::Unavailable if e.message.contains("CaUsedAsEndEntity") => {
                " (the coordinator's certificate is a CA certificate; make its certificate with \
                 `basicConstraints=CA:FALSE`, deploy/README.md shows how)"
            }
            ErrorCode::Unavailable if e.message.contains("certificate") => {
                " (TLS: the coordinator's certificate is not trusted here; pass --tls-ca with the CA that signed it)"
            }
            ErrorCode::Unavailable if e.message.contains("https://") => "",
            ErrorCode::Unavailable => " (is the coordinator running? start one with `lehr up` or `lehr coordinator`)",
            ErrorCode::Unauthenticated => " (pass the coordinator's token with --token-file or LEHR_TOKEN)",
            _ => "",
        };
        Failure { code, error: anyhow::anyhow!("{}{hint}", e.message) }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { code: EXIT_JOB_FAILED, error }
    }
}

pub type CmdResult = Result<i32, Failure>;

fn init_tracing(cli: &Cli, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| default.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The shared token from `--token-file` or `LEHR_TOKEN`.
pub fn token(auth: &AuthArgs) -> Result<Option<String>, Failure> {
    if let Some(path) = &auth.token_file {
        return lehr_proto::read_token_file(path)
            .map(Some)
            .map_err(|e| Failure::usage(anyhow::anyhow!("cannot read token file {}: {e}", path.display())));
    }
    Ok(std::env::var("LEHR_TOKEN").ok().filter(|t| !t.trim().is_empty()).map(|t| t.trim().to_string()))
}

pub fn connect(url: &str, auth: &AuthArgs) -> Result<Arc<dyn CoordinatorApi>, Failure> {
    if auth.call_timeout.is_zero() {
        return Err(Failure::usage(anyhow::anyhow!("--call-timeout must be above zero (e.g. 30s)")));
    }
    let token = token(auth)?;
    let ca = match &auth.tls_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Failure::usage(anyhow::anyhow!("cannot read the TLS CA certificate {}: {e}", path.display()))
        })?),
        None => None,
    };
    // `URL1,URL2`: coordinators sharing one PostgreSQL state; calls follow the one that leads.
    let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let mut endpoints = Vec::new();
    for url in &urls {
        if token.is_some() && url.starts_with("http://") && !is_loopback_url(url) {
            tracing::warn!(%url, "sending the token over plain http: anyone on the path can read it (serve TLS and use https://)");
        }
        let client = GrpcCoordinatorClient::with_tls(url, token.as_deref(), ca.as_deref())?;
        endpoints.push((url.to_string(), client.with_call_timeout(auth.call_timeout)));
    }
    match endpoints.len() {
        0 => Err(Failure::usage(anyhow::anyhow!("--coordinator is empty: give URL or URL1,URL2"))),
        1 => Ok(Arc::new(endpoints.pop().expect("one").1)),
        _ => Ok(Arc::new(FailoverClient::new(endpoints)?)),
    }
}

/// Whether a coordinator URL names this host (`localhost`, `127.x`, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub async fn run(cli: Cli) -> i32 {
    let default_log = match &cli.command {
        Command::Up(_) | Command::Coordinator(_) | Command::Worker(_) => "info",
        _ => "warn",
    };
    init_tracing(&cli, default_log);
    let result = match cli.command {
        Command::Up(a) => cluster::up(a).await,
        Command::Coordinator(a) => cluster::coordinator(a).await,
        Command::Worker(a) => cluster::worker(a).await,
        Command::Corpus(c) => corpus::run(c).await,
        Command::Dedup(d) => dedup::run(d),
        Command::Tokenizer(t) => tokenizer::run(t).await,
        Command::Schedule(c) => schedule::run(c).await,
        Command::Mix(c) => schedule::mix(c).await,
        Command::Status(a) => status::status(a).await,
        Command::Cancel(a) => status::cancel(a).await,
        Command::Bench(b) => bench::run(b).await,
        Command::Train(t) => train::run(t).await,
        Command::Eval(crate::cli::EvalCommand::Tasks(a)) => tasks::run(*a).await,
        Command::Eval(crate::cli::EvalCommand::Curve(a)) => curve::run(a),
        Command::Eval(crate::cli::EvalCommand::Compare(a)) => compare::run(a),
        Command::Eval(crate::cli::EvalCommand::Shard(a)) => tasks::shard(a).await,
        Command::Eval(e) => train::eval(e).await,
        Command::Inspect(i) => inspect::run(i),
        Command::Export(e) => export::export(e).await,
        Command::Import(i) => export::import(i),
        Command::Grow(g) => grow::run(g).await,
        Command::Serve(a) => train::serve(a).await,
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            f.code
        }
    }
}

/// A coordinator in this process (state at `state`, gRPC only when `listen` is given) and
/// `workers` local workers on its in-process API: the embedded mode of `corpus build` and the
/// benchmarks.
pub async fn start_embedded(
    state: lehr_coordinator::store::StateLocation,
    listen: Option<std::net::SocketAddr>,
    workers: u32,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(lehr_coordinator::RunningCoordinator, tokio::task::JoinSet<Result<(), lehr_worker::WorkerError>>), Failure>
{
    let config = lehr_coordinator::CoordinatorConfig {
        state,
        listen,
        http_listen: None,
        token: None,
        tls: None,
        scheduler: lehr_coordinator::SchedulerConfig::default(),
    };
    let running = lehr_coordinator::start(config, shutdown.clone())
        .await
        .map_err(|e| Failure::unavailable(anyhow::anyhow!(e)))?;
    let api: Arc<dyn CoordinatorApi> = running.api.clone();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..workers {
        let config = lehr_worker::WorkerConfig {
            name: format!("embedded-{i}"),
            slots: 1,
            run: cluster::run_options_from_env(),
            ..Default::default()
        };
        set.spawn(lehr_worker::start(config, api.clone(), shutdown.child_token()));
    }
    Ok((running, set))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn interrupted() {
    let term = async {
        #[cfg(unix)]
        {
            if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                s.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
