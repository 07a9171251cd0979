//! Nothing open by default: a coordinator on a non-loopback address needs a token (or an
//! explicit `--insecure`), and calls for an attempt without its lease token are refused.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_coordinator_on_a_public_address_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = lehr()
        .args(["coordinator", "--state"])
        .arg(dir.path().join("state"))
        .args(["--listen", &format!("0.0.0.0:{port}"), "--http", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a token") && err.contains("--token-file") && err.contains("--insecure"), "{err}");

    // the status page counts too
    let out = lehr()
        .args(["coordinator", "--state"])
        .arg(dir.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--http", &format!("0.0.0.0:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // with a token, or --insecure, it serves
    for extra in [&["--insecure"][..], &["--token-file", dir.path().join("token").to_str().unwrap()][..]] {
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        let port = free_port();
        let _proc = Proc(
            lehr()
                .args(["coordinator", "--state"])
                .arg(dir.path().join(format!("state-{port}")))
                .args(["--listen", &format!("0.0.0.0:{port}"), "--http", "none"])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_until("the coordinator to answer", Duration::from_secs(30), || {
            lehr()
                .args(["status", "--json", "--coordinator", &url])
                .env("LEHR_TOKEN", "s3cret-token")
                .output()
                .unwrap()
                .status
                .success()
                .then_some(())
        });
    }
}

/// `lehr up` over TLS: its own workers reach it (the certificate is their CA), clients reach it
/// with `--tls-ca` and `https://`, and nobody reaches it without the CA or in plain text.
#[test]
fn lehr_up_serves_tls_to_its_workers_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (cert, key, token) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("token"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token, "tls-token\n").unwrap();

    // a key that is not a key: exit 2, naming the file
    let out = lehr()
        .args(["coordinator", "--state"])
        .arg(dir.path().join("s0"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--http", "none", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{}", String::from_utf8_lossy(&out.stderr));

    let port = free_port();
    let _up = Proc(
        lehr()
            .args(["up", "--workers", "1", "--state"])
            .arg(dir.path().join("s1"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "none", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--token-file")
            .arg(&token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://localhost:{port}");
    let status = |extra: &[&str]| {
        lehr().args(["status", "--json", "--coordinator"]).args(extra).env("LEHR_TOKEN", "tls-token").output().unwrap()
    };
    wait_until("the TLS coordinator's own worker to register", Duration::from_secs(60), || {
        let out = status(&[url.as_str(), "--tls-ca", cert.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["workers"].as_array().filter(|w| w.iter().any(|w| w["alive"] == true)).map(|_| ())
    });
    let out = status(&[url.as_str(), "--tls-ca", cert.to_str().unwrap(), "--prune-older-than", "1d"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pruned"], serde_json::json!([]));
    let plain = format!("http://127.0.0.1:{port}");
    let out = status(&[url.as_str()]);
    assert_eq!(out.status.code(), Some(3), "no CA: {}", String::from_utf8_lossy(&out.stderr));
    // Plain text against TLS, several times: the server's hang-up must never kill the client
    // with SIGPIPE (it did, about one run in five, while SIGPIPE had its default action).
    for _ in 0..10 {
        let out = status(&[plain.as_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "plain text: {err}");
        assert!(err.contains("https://"), "the error says what to do: {err}");
    }
}

/// `lehr ... | head`: a closed stdout ends the command quietly with 141, as a shell expects.
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = lehr()
        .args(["corpus", "init", "--list-presets"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The operator's path: `deploy/tls/make-certs.sh` makes a private CA and a server certificate
/// that `lehr coordinator` serves and `lehr status --tls-ca` trusts (by name and by address).
#[test]
fn the_deploy_scripts_certificates_work() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let out = std::process::Command::new(repo().join("deploy/tls/make-certs.sh"))
        .arg(&tls)
        .args(["localhost", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.path().join("token"), "deploy-token\n").unwrap();
    let port = free_port();
    let _coordinator = Proc(
        lehr()
            .args(["coordinator", "--state"])
            .arg(dir.path().join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "none", "--token-file"])
            .arg(dir.path().join("token"))
            .arg("--tls-cert")
            .arg(tls.join("server.pem"))
            .arg("--tls-key")
            .arg(tls.join("server.key"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for url in [format!("https://localhost:{port}"), format!("https://127.0.0.1:{port}")] {
        wait_until("the coordinator to answer over TLS", Duration::from_secs(30), || {
            lehr()
                .args(["status", "--json", "--coordinator", &url, "--tls-ca"])
                .arg(tls.join("ca.pem"))
                .env("LEHR_TOKEN", "deploy-token")
                .output()
                .unwrap()
                .status
                .success()
                .then_some(())
        });
    }
}
