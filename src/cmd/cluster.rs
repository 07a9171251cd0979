//! `lehr up`, `lehr coordinator`, `lehr worker`.

use std::time::Duration;

use anyhow::Context;
use lehr_coordinator::{CoordinatorConfig, SchedulerConfig};
use lehr_pipeline::task::RunOptions;
use lehr_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

use super::{connect, interrupted, token, CmdResult, Failure, EXIT_OK};
use crate::cli::{CoordinatorArgs, ServeArgs, UpArgs, WorkerArgs};

fn coordinator_config(serve: &ServeArgs, token: Option<String>) -> Result<CoordinatorConfig, Failure> {
    let http_listen = match serve.http.as_str() {
        "" | "none" | "off" => None,
        s => Some(s.parse().map_err(|e| Failure::usage(anyhow::anyhow!("--http `{s}`: {e} (HOST:PORT or none)")))?),
    };
    check_exposure(serve.listen, http_listen, token.is_some(), serve.insecure)?;
    let tls = match (&serve.tls_cert, &serve.tls_key) {
        (Some(cert), Some(key)) => Some(
            lehr_coordinator::tls::ServerTls::from_files(cert, key).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?,
        ),
        _ => None,
    };
    if tls.is_none() && token.is_some() && !serve.listen.ip().is_loopback() {
        tracing::warn!(
            "serving {} without TLS: the token and every spec travel in clear text (pass --tls-cert and --tls-key)",
            serve.listen
        );
    }
    Ok(CoordinatorConfig {
        state: serve.state.clone(),
        listen: Some(serve.listen),
        http_listen,
        token,
        tls,
        scheduler: SchedulerConfig {
            lease_ttl_ms: serve.lease_ttl.as_millis() as i64,
            max_attempts: serve.max_attempts.max(1),
        },
    })
}

/// Nothing open by default: a coordinator reachable from other hosts needs a token, unless the
/// operator says `--insecure` (a private network where anyone reaching the port is trusted).
fn check_exposure(
    grpc: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    has_token: bool,
    insecure: bool,
) -> Result<(), Failure> {
    if has_token || insecure {
        return Ok(());
    }
    let exposed: Vec<String> =
        std::iter::once(grpc).chain(http).filter(|a| !a.ip().is_loopback()).map(|a| a.to_string()).collect();
    if exposed.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(anyhow::anyhow!(
        "refusing to serve {} without a token: anyone reaching it could submit jobs and report tasks. \
         Create one (`openssl rand -hex 32 > token`) and pass --token-file token (or set LEHR_TOKEN) here and \
         on every worker and client, or pass --insecure if every host that can reach this address is trusted",
        exposed.join(" and ")
    )))
}

async fn start_coordinator(
    serve: &ServeArgs,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<lehr_coordinator::RunningCoordinator, Failure> {
    let config = coordinator_config(serve, token)?;
    lehr_coordinator::start(config, shutdown).await.map_err(|e| {
        use lehr_coordinator::{store::StoreError, StartError};
        match &e {
            StartError::Store(StoreError::Stopped(_)) => {
                Failure { code: super::EXIT_INTERRUPTED, error: anyhow::anyhow!("interrupted while a standby") }
            }
            StartError::Store(s) if s.is_usage() => Failure::usage(anyhow::anyhow!(e)),
            _ => Failure::unavailable(anyhow::anyhow!(e)),
        }
    })
}

pub async fn coordinator(args: CoordinatorArgs) -> CmdResult {
    let shutdown = CancellationToken::new();
    // A standby waits inside `start`: a signal there stops the wait too.
    let stop = shutdown.clone();
    tokio::spawn(async move {
        interrupted().await;
        stop.cancel();
    });
    let mut running = start_coordinator(&args.serve, token(&args.auth)?, shutdown.clone()).await?;
    let scheme = scheme(&args.serve);
    eprintln!(
        "coordinator on {scheme}://{} (status page: {}), state in {}",
        running.grpc_addr.expect("grpc listens"),
        running.http_addr.map(|a| format!("{scheme}://{a}/")).unwrap_or_else(|| "off".into()),
        args.serve.state
    );
    shutdown.cancelled().await;
    while running.tasks.join_next().await.is_some() {}
    Ok(EXIT_OK)
}

/// Fault injection for tests: `LEHR_FAULT_SLOW_DOC_US` makes every document take this long,
/// `LEHR_FAULT_SLOW_KIB_US` this long per KiB of its text.
pub fn run_options_from_env() -> RunOptions {
    let micros = |name: &str| {
        std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()).filter(|&us| us > 0).map(Duration::from_micros)
    };
    RunOptions {
        slow_per_doc: micros("LEHR_FAULT_SLOW_DOC_US"),
        slow_per_kib: micros("LEHR_FAULT_SLOW_KIB_US"),
        ..Default::default()
    }
}

pub async fn worker(args: WorkerArgs) -> CmdResult {
    let api = connect(&args.coordinator, &args.auth)?;
    let shutdown = CancellationToken::new();
    let mut config = WorkerConfig {
        name: args.name.unwrap_or_else(lehr_worker::default_name),
        slots: args.slots.max(1),
        run: run_options_from_env(),
        ..Default::default()
    };
    if args.train {
        let exe = match args.train_exe {
            Some(p) => p,
            None if cfg!(feature = "train") => std::env::current_exe().context("cannot find the lehr executable")?,
            None => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "this lehr was built without training support: pass --train-exe PATH of one built with \
                     `--features train`, or rebuild this one with it"
                )))
            }
        };
        let advertise = match args.advertise {
            Some(a) => a,
            None => advertise_toward(&args.coordinator),
        };
        if !args.gpus.is_empty() {
            config.slots = args.gpus.len() as u32;
        }
        config.kinds = vec![
            lehr_schedules::job::TRAIN_RANK_TASK_KIND.to_string(),
            lehr_schedules::kinds::EVAL_SHARD_TASK_KIND.to_string(),
        ];
        eprintln!(
            "train worker: {} rank slot(s) on {}, advertising {advertise}",
            config.slots,
            if args.gpus.is_empty() { "CPU".to_string() } else { format!("GPUs {}", args.gpus.join(",")) }
        );
        config.train = Some(lehr_worker::TrainLaunch::new(exe, advertise, args.gpus));
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        interrupted().await;
        stop.cancel();
    });
    lehr_worker::start(config, api, shutdown).await.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    Ok(EXIT_OK)
}

fn scheme(serve: &ServeArgs) -> &'static str {
    if serve.tls_cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// This host's address on the route to the coordinator (what other hosts can reach), found
/// by "connecting" a UDP socket (no packet is sent); 127.0.0.1 when that fails.
fn advertise_toward(coordinator: &str) -> String {
    let host_port = coordinator.split("://").nth(1).unwrap_or(coordinator).trim_end_matches('/');
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect(host_port)?;
        s.local_addr()
    });
    match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// Coordinator in this process, workers as child processes (restarted if they die).
pub async fn up(args: UpArgs) -> CmdResult {
    let token_value = token(&args.auth)?;
    let shutdown = CancellationToken::new();
    let mut running = start_coordinator(&args.serve, token_value.clone(), shutdown.clone()).await?;
    let scheme = scheme(&args.serve);
    let grpc = running.grpc_addr.expect("grpc listens");
    // local workers dial the loopback address (covered by a certificate for this host)
    let dial =
        if grpc.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], grpc.port())) } else { grpc };
    let url = format!("{scheme}://{dial}");
    // a self-signed certificate is its own CA
    let ca = args.auth.tls_ca.clone().or_else(|| args.serve.tls_cert.clone());
    eprintln!(
        "lehr up: coordinator {url}, status page {}, state {}, {} workers",
        running.http_addr.map(|a| format!("{scheme}://{a}/")).unwrap_or_else(|| "off".into()),
        args.serve.state,
        args.workers
    );
    let exe = std::env::current_exe().context("cannot find the lehr executable")?;
    let mut supervisors = tokio::task::JoinSet::new();
    for i in 0..args.workers {
        let (exe, url, token_value, stop) = (exe.clone(), url.clone(), token_value.clone(), shutdown.clone());
        let ca = if args.serve.tls_cert.is_some() { ca.clone() } else { None };
        let slots = args.slots;
        supervisors.spawn(async move {
            let mut restarts = 0u32;
            loop {
                let mut cmd = tokio::process::Command::new(&exe);
                cmd.args([
                    "worker",
                    "--coordinator",
                    &url,
                    "--slots",
                    &slots.to_string(),
                    "--name",
                    &format!("local-{i}"),
                ]);
                if let Some(t) = &token_value {
                    cmd.env("LEHR_TOKEN", t);
                }
                if let Some(ca) = &ca {
                    cmd.env("LEHR_TLS_CA", ca);
                }
                cmd.kill_on_drop(true);
                // a `lehr up` killed outright takes its workers with it
                lehr_worker::rank::die_with_parent(&mut cmd, libc::SIGTERM);
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker process");
                        return;
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return;
                    }
                    status = child.wait() => {
                        restarts += 1;
                        tracing::warn!(worker = i, ?status, restarts, "worker process exited; restarting");
                        tokio::time::sleep(Duration::from_millis(500 * restarts.min(10) as u64)).await;
                    }
                }
            }
        });
    }
    interrupted().await;
    eprintln!("lehr up: stopping");
    shutdown.cancel();
    while supervisors.join_next().await.is_some() {}
    while running.tasks.join_next().await.is_some() {}
    Ok(EXIT_OK)
}
