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
