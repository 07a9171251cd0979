//! The `lehr` command line: a thin layer over the crates. Exit codes: 0 success, 1 the job
//! failed or was cancelled, 2 bad arguments or spec, 3 coordinator or storage unreachable,
//! 130 interrupted.

mod chart;
mod cli;
mod cmd;
mod progress;

use clap::Parser;

fn main() {
    // `lehr ... | head` should end quietly like other Unix tools. SIGPIPE stays ignored (Rust's
    // default): with the default action, a write to a socket whose peer has gone (a client
    // that hung up, a TLS server refusing plain text) would kill the coordinator, a worker or
    // the CLI. Instead `println!` on a closed stdout panics, and this hook turns that one panic
    // into the exit a shell expects of a tool cut off by `head` (128 + SIGPIPE).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(cmd::run(cli));
    // Do not wait for blocking tasks of cancelled work.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
