//! Object-store I/O against a local S3-compatible server (moto's server mode, installed by
//! scripts/setup.sh): inputs read from `s3://`, outputs and manifest written to `s3://`, checksums
//! verified by reading them back. `make test` sets LEHR_REQUIRE_S3=1 so a missing server fails the
//! test instead of skipping it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

fn moto_server() -> Option<std::path::PathBuf> {
    let venv = std::env::var("LEHR_VENV")
        .ok()
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var("HOME").ok().map(|h| std::path::Path::new(&h).join(".cache/lehr/venv")))?;
    let bin = venv.join("bin/moto_server");
    bin.exists().then_some(bin)
}

/// One plain HTTP/1.1 request (moto needs no signature for bucket creation).
fn http(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A moto S3 server on a free port with bucket `lehr-test`, and the environment that points
/// object_store at it; `None` (skip) when moto is missing and LEHR_REQUIRE_S3 is not set.
fn start_moto() -> Option<(Proc, Vec<(&'static str, String)>)> {
    let Some(moto) = moto_server() else {
        assert!(
            std::env::var("LEHR_REQUIRE_S3").is_err(),
            "LEHR_REQUIRE_S3 is set but moto_server is missing: run scripts/setup.sh"
        );
        eprintln!("skipping: no moto_server (run scripts/setup.sh)");
        return None;
    };
    let port = free_port();
    let server = Proc(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("moto to listen", Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).ok());
    assert!(http(port, "PUT", "/lehr-test").starts_with("HTTP/1.1 200"), "bucket created");
    let env = vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
    ];
    Some((server, env))
}

#[test]
fn corpus_job_reads_and_writes_s3() {
    let Some((_server, env)) = start_moto() else { return };
    let with_env = |mut c: Command| {
        for (k, v) in &env {
            c.env(k, v);
        }
        c
    };

    // Upload the sample corpus with lehr itself: a copy job from local files to s3 (no stages).
    let dir = tempfile::tempdir().unwrap();
    let samples = repo().join("examples/data");
    let upload = dir.path().join("upload.toml");
    std::fs::write(
        &upload,
        format!(
            "version = 1\n[input]\npaths = [{:?}]\n[output]\npath = \"s3://lehr-test/raw\"\nformats = [\"jsonl.zst\"]\n",
            samples.join("*.jsonl").to_string_lossy()
        ),
    )
    .unwrap();
    let run = with_env(lehr()).args(["corpus", "build"]).arg(&upload).args(["--workers", "2"]).output().unwrap();
    assert!(run.status.success(), "upload: {}", String::from_utf8_lossy(&run.stderr));

    // The same pipeline from s3 to s3, and from the local copy to a local directory.
    let s3_spec = write_spec(
        dir.path(),
        "s3",
        &["s3://lehr-test/raw/part-*.jsonl.zst".to_string()],
        std::path::Path::new("s3://lehr-test/clean"),
        "1MiB",
        "",
    );
    let s3_text = std::fs::read_to_string(&s3_spec)
        .unwrap()
        .replace(&format!("{:?}", "s3://lehr-test/clean"), "\"s3://lehr-test/clean\"");
    std::fs::write(&s3_spec, s3_text).unwrap();
    let run =
        with_env(lehr()).args(["corpus", "build"]).arg(&s3_spec).args(["--workers", "2", "--json"]).output().unwrap();
    assert!(run.status.success(), "s3 run: {}", String::from_utf8_lossy(&run.stderr));
    let s3_manifest = json_of(&run)["manifest"].clone();
    assert_eq!(s3_manifest["totals"]["docs_read"].as_u64().unwrap(), 1800);

    // Every file the manifest lists is in the bucket with that checksum, and no attempt
    // directory is left behind (read through object_store with the same environment).
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let loc = lehr_pipeline::store::resolve("s3://lehr-test/clean").unwrap();
        for f in s3_manifest["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let got = loc.get(name).await.unwrap().expect("listed file exists");
            assert_eq!(hex::encode(Sha256::digest(&got)), f["sha256"].as_str().unwrap(), "{name}");
        }
        assert!(loc.get("manifest.json").await.unwrap().is_some());
        use futures::TryStreamExt;
        let left: Vec<_> = loc.store.list(Some(&loc.child("_lehr"))).try_collect().await.unwrap();
        assert!(left.is_empty(), "attempt files left: {left:?}");
    });
}

/// Training with `--out s3://...`: checkpoints are published to the bucket, and a second run on
/// "another machine" (a fresh scratch directory) pulls the latest one and resumes at its step.
#[cfg(feature = "train")]
#[test]
fn training_checkpoints_go_to_s3_and_resume_from_there() {
    let Some((_server, env)) = start_moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let train = |scratch: &str, stop: &str| -> Vec<serde_json::Value> {
        let mut c = lehr();
        for (k, v) in &env {
            c.env(k, v);
        }
        // The small model's optimizer state (~14 MB) goes up in 5 MB parts.
        let run = c
            .env("LEHR_MULTIPART_BYTES", (5 << 20).to_string())
            .args(["train", "run", "--model", "small", "--device", "cpu", "--json", "--stop-at", stop])
            .args(["--checkpoint-every", "1", "--keep-checkpoints", "2"])
            .args(["--out", "s3://lehr-test/run", "--scratch"])
            .arg(dir.path().join(scratch))
            .arg("--data")
            .arg(&tokens)
            .arg(repo().join("examples/mix-demo.toml"))
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8(run.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let first = train("host-a", "3");
    let second = train("host-b", "5");
    let steps = |v: &[serde_json::Value]| -> Vec<u64> {
        v.iter().filter(|m| m["event"] == "step").map(|m| m["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps(&first), [0, 1, 2]);
    assert_eq!(steps(&second), [3, 4], "host b resumed from the bucket, not from scratch");
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let loc = lehr_pipeline::store::resolve("s3://lehr-test/run").unwrap();
        let latest = loc.get("checkpoints/latest").await.unwrap().unwrap();
        assert_eq!(&latest[..], b"step-00000005");
        for f in ["model.safetensors", "config.json", "optimizer.safetensors", "trainer.json"] {
            assert!(loc.exists(&format!("checkpoints/step-00000005/{f}")).await.unwrap(), "{f}");
        }
        // Retention: the two newest interval checkpoints, in the bucket and on host b.
        let mut names: Vec<String> = loc
            .list_files()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|f| f.strip_prefix("checkpoints/")?.split_once('/').map(|(d, _)| d.to_string()))
            .collect();
        names.dedup();
        assert_eq!(names, ["step-00000004", "step-00000005"]);
        let mut local: Vec<String> = std::fs::read_dir(dir.path().join("host-b/checkpoints"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        local.sort();
        assert_eq!(local, ["step-00000004", "step-00000005"]);
        let metrics = loc.get("metrics.jsonl").await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&metrics).lines().count(), 5, "one line per step across both hosts");
        // The published weights equal host b's local ones byte for byte.
        for f in ["model.safetensors", "optimizer.safetensors"] {
            let local = std::fs::read(dir.path().join("host-b/checkpoints/step-00000005").join(f)).unwrap();
            assert_eq!(
                &loc.get(&format!("checkpoints/step-00000005/{f}")).await.unwrap().unwrap()[..],
                &local[..],
                "{f}"
            );
        }
    });
}
