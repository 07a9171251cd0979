//! `lehr train ...`: only in builds with the `train` feature (libtorch).

use super::CmdResult;
#[cfg(feature = "train")]
use super::EXIT_OK;
use crate::cli::TrainCommand;

#[cfg(feature = "train")]
pub async fn run(cmd: TrainCommand) -> CmdResult {
    match cmd {
        TrainCommand::Smoke(a) => {
            let report = tokio::task::spawn_blocking(lehr_train::smoke)
                .await
                .map_err(|e| anyhow::anyhow!("smoke test panicked: {e}"))?
                .map_err(|e| anyhow::anyhow!(e))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("json"));
            } else {
                for r in &report {
                    println!(
                        "{}: loss {:.4} → {:.4} after {} steps (grad norm {:.4})",
                        r.device, r.first_loss, r.last_loss, r.steps, r.first_grad_norm
                    );
                }
            }
            Ok(EXIT_OK)
        }
    }
}

#[cfg(not(feature = "train"))]
pub async fn run(_cmd: TrainCommand) -> CmdResult {
    Err(super::Failure::usage(anyhow::anyhow!(
        "this lehr was built without training support; rebuild with `cargo build --features train` (scripts/setup.sh installs libtorch)"
    )))
}
