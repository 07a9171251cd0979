"""Checks deploy/k8s: renders every overlay with kustomize, validates every object against the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors), then checks what
the schemas cannot: probes, resources, security contexts, the token and TLS secrets, the state
(a volume claim for one coordinator, a Secret's database URL for several, and no readiness on
/readyz for several), that workers get the CA but never the coordinator's key and dial TLS, and
that every lehr flag in a container's args exists in the lehr binary under test.

usage: check.py --kustomize BIN --validate BIN --lehr BIN [--k8s-version V] [--dir deploy/k8s]
Prints one line per overlay; exits 1 listing every problem found.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

WORKLOADS = ("Deployment", "StatefulSet")


def render(kustomize, overlay):
    r = subprocess.run([kustomize, "build", str(overlay)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"kustomize build {overlay} failed: {r.stderr}")
    return r.stdout


def validate(validator, version, text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    r = subprocess.run([validator, "--strict", "--quiet", "-k", version, f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    return [line for line in (r.stdout + r.stderr).splitlines() if line.strip()] if r.returncode else []


def lehr_flags(lehr, command, cache={}):
    if command not in cache:
        r = subprocess.run([lehr, command, "--help"], capture_output=True, text=True)
        cache[command] = set(re.findall(r"--[a-z][a-z0-9-]*", r.stdout)) if r.returncode == 0 else None
    return cache[command]


def check_pod(name, kind, spec, lehr, problems):
    def bad(msg):
        problems.append(f"{kind}/{name}: {msg}")

    pod = spec["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        bad("pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad("pod securityContext.seccompProfile is not RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    for c in pod["containers"]:
        cname = f"container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{cname}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(f"{cname}: readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad(f"{cname}: capabilities do not drop ALL")
        res = c.get("resources", {})
        for k in ("cpu", "memory"):
            if k not in res.get("requests", {}):
                bad(f"{cname}: no resources.requests.{k}")
        if "memory" not in res.get("limits", {}):
            bad(f"{cname}: no resources.limits.memory")
        env = {e["name"]: e for e in c.get("env", [])}
        token = env.get("LEHR_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if token.get("name") != "lehr-token":
            bad(f"{cname}: LEHR_TOKEN does not come from the lehr-token Secret")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for m in mounts.values():
            if m["name"] not in volumes and m["name"] not in claims:
                bad(f"{cname}: mount {m['mountPath']} names no volume {m['name']}")
        if "/tmp" not in mounts:
            bad(f"{cname}: no writable /tmp (the root filesystem is read-only)")
        tls = volumes.get(mounts.get("/tls", {}).get("name"), {}).get("secret", {})
        if tls.get("secretName") != "lehr-tls":
            bad(f"{cname}: /tls is not the lehr-tls Secret")
        args = c.get("args", [])
        role = args[0] if args else ""
        if role == "coordinator":
            for p in ("readinessProbe", "livenessProbe"):
                if p not in c:
                    bad(f"{cname}: no {p}")
            replicas = spec.get("replicas", 1)
            if "--state" in args:
                if "state" not in claims or "/state" not in mounts:
                    bad(f"{cname}: the state directory is not on a volume claim")
                if replicas != 1:
                    bad(f"{cname}: {replicas} replicas on a state directory (one coordinator holds its lock; "
                        "share a PostgreSQL state instead: overlays/postgres-ha)")
            else:
                state = env.get("LEHR_STATE", {})
                if "value" in state:
                    bad(f"{cname}: LEHR_STATE is written in the manifest (a database password in plain "
                        "text): take it from a Secret (valueFrom.secretKeyRef)")
                elif "secretKeyRef" not in state.get("valueFrom", {}):
                    bad(f"{cname}: no --state and no LEHR_STATE from a Secret: the state would be the "
                        "container's own (lost on restart)")
            ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
            if replicas > 1 and ready == "/readyz":
                bad(f"{cname}: {replicas} replicas ready on /readyz: a standby is never ready there, so a "
                    "rolling update would wait for it forever (ready on /healthz; /readyz tells the leader)")
            if "--tls-cert" not in args:
                bad(f"{cname}: the coordinator serves no TLS")
            for flag in ("--tls-cert", "--tls-key", "--state"):
                if flag in args:
                    path = args[args.index(flag) + 1]
                    if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                        bad(f"{cname}: {flag} {path} is on no mounted volume")
        elif role == "worker":
            items = [i["key"] for i in tls.get("items", [])]
            if items != ["ca.pem"]:
                bad(f"{cname}: a worker mounts {items or 'the whole lehr-tls Secret'} (the CA only: never the key)")
            if env.get("LEHR_TLS_CA", {}).get("value") != "/tls/ca.pem":
                bad(f"{cname}: LEHR_TLS_CA is not /tls/ca.pem")
            coordinator = args[args.index("--coordinator") + 1] if "--coordinator" in args else ""
            if not all(u.startswith("https://") for u in coordinator.split(",")):
                bad(f"{cname}: the worker does not dial the coordinator over TLS ({coordinator!r})")
        else:
            bad(f"{cname}: args start with {role!r}, not a lehr role (coordinator, worker)")
        if role and lehr:
            known = lehr_flags(lehr, role)
            if known is None:
                bad(f"{cname}: `lehr {role} --help` failed")
            else:
                for a in args[1:]:
                    flag = a.split("=")[0]
                    if flag.startswith("--") and flag not in known:
                        bad(f"{cname}: `lehr {role}` has no flag {flag}")


def check(text, lehr):
    problems = []
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = [d["kind"] for d in docs]
    for d in docs:
        if d["kind"] in WORKLOADS:
            check_pod(d["metadata"]["name"], d["kind"], d["spec"], lehr, problems)
    if "Service" not in kinds:
        problems.append("no Service for the coordinator")
    return docs, problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kustomize", required=True)
    ap.add_argument("--validate", required=True)
    ap.add_argument("--lehr")
    ap.add_argument("--k8s-version", default="1.35.0")
    ap.add_argument("--dir", default=str(Path(__file__).parent))
    a = ap.parse_args()
    overlays = sorted(p for p in (Path(a.dir) / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    if not overlays:
        raise SystemExit(f"no overlays under {a.dir}/overlays")
    failed = False
    for overlay in overlays:
        text = render(a.kustomize, overlay)
        problems = validate(a.validate, a.k8s_version, text)
        docs, more = check(text, a.lehr)
        problems += more
        names = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        if problems:
            failed = True
            print(f"{overlay.name}: {len(problems)} problems in {names}")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"{overlay.name}: {len(docs)} objects valid for Kubernetes {a.k8s_version} and checked: {names}")
        gpu = [d for d in docs if d["kind"] == "Deployment" and "gpu" in yaml.safe_dump(d)]
        if overlay.name == "gpu-training" and not any(
            "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            for d in gpu for c in d["spec"]["template"]["spec"]["containers"]
        ):
            failed = True
            print("  gpu-training: no container asks for nvidia.com/gpu")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
