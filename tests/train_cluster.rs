//! Training through a coordinator (builds with the `train` feature): `lehr train run
//! --coordinator` places two ranks on `lehr worker --train` processes, which meet through the
//! rendezvous and train data-parallel over the CPU collective. One worker is SIGKILLed mid-run:
//! its rank process dies with it, the gang restarts from the latest checkpoint on a replacement
//! worker, and the run ends at the plan's last step with one metrics line per step and the same
//! model (to float tolerance) as an uninterrupted one-rank run.
#![cfg(feature = "train")]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn spawn_train_worker(url: &str, name: &str) -> Proc {
    let child = lehr()
        // The coordinator through the environment: the rank processes inherit it and must still
        // be ranks, not submitters.
        .args(["worker", "--train", "--advertise", "127.0.0.1", "--name", name])
        .env("LEHR_COORDINATOR", url)
        .env("LEHR_FAULT_SLOW_STEP_MS", "150")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn eval_loss(ckpt: &Path, data: &Path) -> f64 {
    let run = lehr()
        .args(["eval", "ppl", "--device", "cpu", "--seq-len", "64", "--max-tokens", "8192", "--json", "--checkpoint"])
        .arg(ckpt)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    json_of(&run)["loss"].as_f64().unwrap()
}

#[test]
fn a_killed_train_worker_restarts_the_gang_from_the_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let spec = small_spec(dir.path());
    let common_args = ["--model", "tiny", "--device", "cpu", "--micro-batch", "4", "--checkpoint-every", "4"];

    // The reference: one rank, no interruption.
    let reference = dir.path().join("reference");
    let run = lehr()
        .args(["train", "run"])
        .arg(&spec)
        .args(common_args)
        .arg("--data")
        .arg(&tokens)
        .arg("--out")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let total = metric_steps(&reference).len() as u64;
    assert_eq!(total, 5 + 12 + 6, "2560, 6144 and 3072 tokens in steps of 512");

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _coordinator = spawn_coordinator(dir.path().join("state"), port, "2s");
    let mut a = spawn_train_worker(&url, "train-a");
    let _b = spawn_train_worker(&url, "train-b");
    let out = dir.path().join("cluster");
    let submit = lehr()
        .args(["train", "run"])
        .arg(&spec)
        .args(common_args)
        .args(["--world", "2", "--detach", "--json", "--coordinator", &url, "--data"])
        .arg(&tokens)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let job = json_of(&submit)["job_id"].as_str().unwrap().to_string();

    // Past the step-4 checkpoint, before the end: kill one worker (and so its rank).
    wait_until("rank 0 to pass step 6", Duration::from_secs(120), || (metric_steps(&out).len() >= 6).then_some(()));
    assert!(metric_steps(&out).len() < total as usize, "the run must still be going");
    a.sigkill();
    let _c = spawn_train_worker(&url, "train-c");
    let status = wait_until("the job to end", Duration::from_secs(300), || {
        job_status(&url, &job).filter(|s| ["succeeded", "failed", "cancelled"].contains(&job_state(s).as_str()))
    });
    assert_eq!(job_state(&status), "succeeded", "{status}");

    // The gang restarted: one rank failed or expired, the other was aborted, both ran again.
    let outcomes: Vec<String> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap().to_string()))
        .collect();
    eprintln!("attempt outcomes: {outcomes:?}");
    assert!(outcomes.iter().any(|o| o == "failed" || o == "expired"), "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "committed").count(), 2, "{outcomes:?}");

    // One metrics line per step, in order, despite the steps run twice after the resume.
    assert_eq!(metric_steps(&out), (0..total).collect::<Vec<_>>());
    let last = out.join(format!("checkpoints/step-{total:08}"));
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/latest")).unwrap().trim(),
        last.file_name().unwrap().to_str().unwrap()
    );

    // Two ranks with a restart = one rank uninterrupted, to float tolerance.
    let held = tokens.join("lang=en");
    let (mine, theirs) =
        (eval_loss(&last, &held), eval_loss(&reference.join(format!("checkpoints/step-{total:08}")), &held));
    assert!((mine - theirs).abs() < 1e-3, "cluster {mine} vs reference {theirs}");
    assert!(theirs < 8000f64.ln() - 0.1, "the run learned something: {theirs}");
}

/// `lehr train run --world 2` with neither --coordinator nor --rendezvous: two local rank
/// processes under an embedded coordinator, the same model as one rank to float tolerance.
#[test]
fn local_ranks_train_like_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let spec = small_spec(dir.path());
    let run = |out: &Path, world: &str| {
        let r = lehr()
            .args(["train", "run"])
            .arg(&spec)
            .args(["--model", "tiny", "--device", "cpu", "--micro-batch", "4", "--world", world, "--data"])
            .arg(&tokens)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).to_string()
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run(&one, "1");
    let said = run(&two, "2");
    assert!(said.contains("succeeded at step 23"), "{said}");
    assert_eq!(metric_steps(&two), (0..23).collect::<Vec<_>>());
    let held = tokens.join("lang=en");
    let last = "checkpoints/step-00000023";
    let (a, b) = (eval_loss(&one.join(last), &held), eval_loss(&two.join(last), &held));
    assert!((a - b).abs() < 1e-3, "one rank {a} vs two local ranks {b}");

    // A rank restarted after the run ended (its peer finished and is gone) exits at once,
    // without connecting to anyone.
    let late = lehr()
        .args(["train", "run"])
        .arg(&spec)
        .args(["--model", "tiny", "--device", "cpu", "--world", "2", "--rank", "1", "--rendezvous", "127.0.0.1:9"])
        .args(["--json", "--data"])
        .arg(&tokens)
        .arg("--out")
        .arg(&two)
        .output()
        .unwrap();
    assert!(late.status.success(), "{}", String::from_utf8_lossy(&late.stderr));
    let done: Value = serde_json::from_slice(&late.stdout).unwrap();
    assert_eq!((done["event"].as_str(), done["step"].as_u64()), (Some("done"), Some(23)));
}
