//! The `lehr` command line: a thin layer over the crates. Exit codes: 0 success, 1 the job
//! failed or was cancelled, 2 bad arguments or spec, 3 coordinator or storage unreachable,
//! 130 interrupted.

mod chart;
mod cli;
mod cmd;
mod progress;

use clap::Parser;

fn main() {
    // `lehr ... | head` should end quietly like other Unix tools, not panic on a closed pipe:
    // Rust ignores SIGPIPE by default, so printing to a closed stdout is an error that
    // `println!` turns into a panic.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(cmd::run(cli));
    // Do not wait for blocking tasks of cancelled work.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
