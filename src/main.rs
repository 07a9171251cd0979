//! The `lehr` command line: a thin layer over the crates. Exit codes: 0 success, 1 the job
//! failed or was cancelled, 2 bad arguments or spec, 3 coordinator or storage unreachable,
//! 130 interrupted.

mod chart;
mod cli;
mod cmd;
mod progress;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(cmd::run(cli));
    // Do not wait for blocking tasks of cancelled work.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
