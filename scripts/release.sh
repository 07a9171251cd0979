#!/usr/bin/env bash
# The release binaries the container images copy (deploy/docker), built and checked once:
#   dist/lehr        data image: coordinator and data workers; no libtorch
#   dist/lehr-train  train image: `--features nccl`, libtorch found through LD_LIBRARY_PATH as
#                    Dockerfile.train sets it (built with LEHR_NO_RPATH=1: no build-machine path)
#   dist/MANIFEST.json  version, commit, features, toolchain, libtorch, sha256, linked libraries
# Checks, against the Dockerfiles' own text: every COPY source exists; the data binary needs
# nothing beyond glibc (what debian:bookworm-slim has) and no symbol newer than bookworm's
# glibc 2.36; the train binary runs `train smoke` (a forward/backward through libtorch) with the
# image's LD_LIBRARY_PATH mapped onto this machine's venv (the same PyPI torch) and nothing else.
# CI runs it after the tests (.ci/run); the release profile's cache makes later runs incremental.
# Usage: scripts/release.sh   (writes dist/, where the Dockerfiles copy from)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=dist
eval "$(scripts/setup.sh)"
TARGET=${CARGO_TARGET_DIR:-target}
BOOKWORM_GLIBC=2.36
BOOKWORM_GLIBCXX=3.4.30
command -v readelf >/dev/null && command -v objdump >/dev/null || { echo "release: needs readelf and objdump (apt-get install binutils)" >&2; exit 1; }
mkdir -p "$OUT"
say() { echo "release: $*" >&2; }
fail() { echo "release: $*" >&2; exit 1; }

say "building dist/lehr (release, no libtorch)"
cargo build --release --locked --bin lehr
install -m 0755 "$TARGET/release/lehr" "$OUT/lehr"
say "building dist/lehr-train (release, --features nccl, no rpath)"
LEHR_NO_RPATH=1 cargo build --release --locked --features nccl --bin lehr
install -m 0755 "$TARGET/release/lehr" "$OUT/lehr-train"

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort; }
runpath() { readelf -d "$1" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p'; }
glibc_max() { objdump -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1; }
glibcxx_max() { { objdump -T "$1" | grep -o 'GLIBCXX_[0-9.]*' || true; } | sed 's/GLIBCXX_//' | sort -V | tail -1; }

# the data binary: glibc only, nothing newer than the base image's
for lib in $(needed "$OUT/lehr"); do
  case $lib in
    libc.so.6|libm.so.6|libgcc_s.so.1|ld-linux-x86-64.so.2|libpthread.so.0|libdl.so.2|librt.so.1) ;;
    *) fail "dist/lehr needs $lib, which debian:bookworm-slim lacks (the data image must not link libtorch)" ;;
  esac
done
[ -z "$(runpath "$OUT/lehr")" ] || fail "dist/lehr carries a runpath: $(runpath "$OUT/lehr")"
for bin in lehr lehr-train; do
  v=$(glibc_max "$OUT/$bin")
  [ "$(printf '%s\n%s\n' "$v" "$BOOKWORM_GLIBC" | sort -V | tail -1)" = "$BOOKWORM_GLIBC" ] \
    || fail "dist/$bin needs glibc $v; the images' bookworm has $BOOKWORM_GLIBC"
  v=$(glibcxx_max "$OUT/$bin")
  [ -z "$v" ] || [ "$(printf '%s\n%s\n' "$v" "$BOOKWORM_GLIBCXX" | sort -V | tail -1)" = "$BOOKWORM_GLIBCXX" ] \
    || fail "dist/$bin needs libstdc++ GLIBCXX_$v; the images' bookworm has $BOOKWORM_GLIBCXX"
done
"$OUT/lehr" --version >/dev/null
[ -z "$(runpath "$OUT/lehr-train")" ] || fail "dist/lehr-train carries a runpath: $(runpath "$OUT/lehr-train")"

# The train binary under the train image's library path, mapped onto this venv's PyPI torch.
IMAGE_LD=$(sed -n 's/^ENV LD_LIBRARY_PATH=//p' deploy/docker/Dockerfile.train)
[ -n "$IMAGE_LD" ] || fail "deploy/docker/Dockerfile.train sets no LD_LIBRARY_PATH"
HERE_LD=${IMAGE_LD//\/opt\/venv/$LEHR_VENV}
if env -u LD_LIBRARY_PATH "$OUT/lehr-train" --version >/dev/null 2>&1; then
  fail "dist/lehr-train starts without LD_LIBRARY_PATH: it must not find libtorch on its own"
fi
SMOKE=$(env -i HOME="$HOME" PATH=/usr/bin:/bin LD_LIBRARY_PATH="$HERE_LD" "$OUT/lehr-train" train smoke --json) \
  || fail "dist/lehr-train train smoke failed with the image's LD_LIBRARY_PATH ($HERE_LD)"
TORCH=$("$LEHR_VENV/bin/python" -c 'import torch; print(torch.__version__)')

python3 - "$OUT" "$TORCH" "$SMOKE" <<'PY'
import hashlib, json, os, subprocess, sys
out, torch, smoke = sys.argv[1], sys.argv[2], sys.argv[3]
def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
def needed(path):
    d = run("readelf", "-d", path)
    return sorted(l.split("[", 1)[1].rstrip("]") for l in d.splitlines() if "(NEEDED)" in l)
def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
commit = run("git", "rev-parse", "HEAD")
dirty = bool(run("git", "status", "--porcelain", "--untracked-files=no"))
binaries = {}
for name, features, image in [("lehr", [], "deploy/docker/Dockerfile"), ("lehr-train", ["train", "nccl"], "deploy/docker/Dockerfile.train")]:
    p = os.path.join(out, name)
    binaries[name] = {"sha256": sha(p), "bytes": os.path.getsize(p), "features": features, "image": image, "needed": needed(p)}
binaries["lehr-train"]["libtorch"] = "torch==" + torch + " (PyPI)"
binaries["lehr-train"]["smoke"] = json.loads(smoke)
manifest = {
    "version": run(os.path.join(out, "lehr"), "--version").split()[-1],
    "commit": commit,
    "dirty": dirty,
    "profile": "release",
    "rustc": run("rustc", "--version"),
    "target": run("rustc", "-vV").split("host: ")[1].split()[0],
    "binaries": binaries,
}
with open(os.path.join(out, "MANIFEST.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
PY
# Every COPY source of the Dockerfiles exists (the build context is the repository root).
for f in deploy/docker/Dockerfile deploy/docker/Dockerfile.train; do
  for src in $(sed -n 's/^COPY \(--[^ ]* \)*\([^ ]*\) .*/\2/p' "$f"); do
    [ -e "$src" ] || fail "$f copies $src, which this script did not produce"
  done
done

say "dist ready: $(cd "$OUT" && ls -l lehr lehr-train MANIFEST.json | awk '{print $5, $9}' | paste -sd' ')"
