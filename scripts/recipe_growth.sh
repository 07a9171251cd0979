#!/usr/bin/env bash
# Recipe fidelity for growth and distillation (issue 16; docs/training.md "Recipes compared").
# On the fixture corpora (English + Korean, the last HELD docs of each held out), at CPU scale:
#   reference  a deeper model (tiny shape, REF_LAYERS blocks) trained first on REF_TOKENS
#   base       a shallower model (BASE_LAYERS blocks) trained on the same REF_TOKENS, for DUS
# then five students of the same final depth, each trained on the same 4 stages x STAGE_TOKENS:
#   (a) scratch    random init at the final depth
#   (b) inherit    the reference's first blocks, grown by one block per stage (Inheritune)
#   (c) distill    (b) plus distillation from the reference (alpha 0.5, T 1)
#   (d) dus        SOLAR's depth up-scaling of the base, BASE_LAYERS -> FINAL blocks (lehr grow
#                  dus --drop 1: blocks 0..2 then 1..3), continued
#   (e) cut        SOLAR's map applied to the reference, REF_LAYERS -> FINAL (its first FINAL/2
#                  blocks, then its last FINAL/2), continued
# A student run whose spec is unchanged and that finished is kept (delete WORK to redo all).
# and draws their held-out losses at equal tokens (lehr eval compare), with a table, and the
# step time with the teacher against without it ((c) vs (b), the same student).
#
#   scripts/recipe_growth.sh            [env: STAGE_TOKENS REF_TOKENS WORK LEHR LEHR_FIXTURES DEVICE]
#   scripts/recipe_growth.sh --docs     also copy the chart into docs/img/
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release_lehr.sh
FIX=${LEHR_FIXTURES:-../shared/fixtures}
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/recipe-growth}
STAGE_TOKENS=${STAGE_TOKENS:-196608}
REF_TOKENS=${REF_TOKENS:-1572864}
HELD=${HELD:-200}
DEVICE=${DEVICE:-cpu}
REF_LAYERS=8 BASE_LAYERS=4 START=3 FINAL=6
[ -f "$FIX/corpus/en.jsonl" ] || { echo "recipe_growth: needs the fixture corpora at $FIX (LEHR_FIXTURES)" >&2; exit 2; }
mkdir -p "$WORK"

# 1. data: train and held-out token shards per language (the demo tokenizer, 8,000 ids)
if [ ! -d "$WORK/held/lang=ko" ]; then
  rm -rf "$WORK/split" "$WORK/train-tokens" "$WORK/held"
  mkdir -p "$WORK/split"
  for lang in en ko; do
    n=$(wc -l < "$FIX/corpus/$lang.jsonl")
    head -n $((n - HELD)) "$FIX/corpus/$lang.jsonl" > "$WORK/split/train-$lang.jsonl"
    tail -n "$HELD" "$FIX/corpus/$lang.jsonl" > "$WORK/split/held-$lang.jsonl"
  done
  for part in train held; do
    out=$WORK/$part; [ "$part" = train ] && out=$WORK/train-tokens
    sed -e "s#^paths = .*#paths = [\"$WORK/split/$part-en.jsonl\", \"$WORK/split/$part-ko.jsonl\"]#" \
        -e "s#^path = \".lehr/demo-tokens\"#path = \"$out\"#" \
        -e "s#^name = .*#name = \"recipe-$part\"#" examples/tokenize.toml > "$WORK/tokenize-$part.toml"
    "$LEHR" corpus build "$WORK/tokenize-$part.toml" > /dev/null
  done
fi
DATA=$WORK/train-tokens
HELDOUT=$WORK/held

head_spec() { # name
  cat <<SPEC
version = 1
name = "$1"
seed = 11
sequence-length = 128
global-batch-tokens = 4096
[lr]
peak = 3e-3
[sources.en]
path = "lang=en"
[sources.ko]
path = "lang=ko"
# ~550K Korean tokens: the reference sees them up to twice
max-repetition = 2
SPEC
}

# 2. the reference and the base, trained beforehand
train_one_stage() { # name layers out
  head_spec "$1" > "$WORK/$1.toml"
  cat >> "$WORK/$1.toml" <<SPEC
[[stage]]
name = "pretrain"
tokens = $REF_TOKENS
lr = { phase = "stable", warmup-steps = 20 }
ratios = { en = 0.5, ko = 0.5 }
SPEC
  if [ ! -f "$3/checkpoints/latest" ]; then
    echo "== $1: tiny shape, $2 blocks, $REF_TOKENS tokens"
    "$LEHR" train run "$WORK/$1.toml" --data "$DATA" --model tiny --layers "$2" --out "$3" --device "$DEVICE" \
      --micro-batch 32 > "$3.log"
  fi
}
train_one_stage reference $REF_LAYERS "$WORK/reference"
train_one_stage base $BASE_LAYERS "$WORK/base"
REF=$WORK/reference/checkpoints/$(cat "$WORK/reference/checkpoints/latest")
BASE=$WORK/base/checkpoints/$(cat "$WORK/base/checkpoints/latest")
# SOLAR: 2 * (n - m) blocks, so m = n - FINAL/2
for g in "dus $BASE $((BASE_LAYERS - FINAL / 2))" "cut $REF $((REF_LAYERS - FINAL / 2))"; do
  read -r name src drop <<< "$g"
  for lang in en ko; do
    rm -rf "$WORK/$name-init"
    "$LEHR" grow dus "$src" --drop "$drop" -o "$WORK/$name-init" --eval-data "$HELDOUT/lang=$lang" \
      --eval-tokens 32768 --eval-seq-len 128 > "$WORK/$name-init-$lang.log"
  done
done

# 3. the students: 4 stages of STAGE_TOKENS, START -> FINAL blocks where they grow
student_spec() { # name grow(0/1) extra-tables
  head_spec "$1"
  local i=0
  for layers in $(seq $START $FINAL); do
    local lr='{ phase = "stable" }'
    [ $i = 0 ] && lr='{ phase = "stable", warmup-steps = 10 }'
    [ "$layers" = $FINAL ] && lr='{ phase = "decay", shape = "1-sqrt" }'
    printf '[[stage]]\nname = "s%d"\ntokens = %d\nlr = %s\nratios = { en = 0.5, ko = 0.5 }\n' "$i" "$STAGE_TOKENS" "$lr"
    [ "$2" = 1 ] && printf 'layers = %d\n' "$layers"
    i=$((i + 1))
  done
  printf '%b' "${3:-}"
}
INIT="[init]\nfrom = \"$REF\"\nlayers = \"0..$START\"\n"
DISTILL="[distill]\nteacher = \"$REF\"\nalpha = 0.5\ntemperature = 1.0\n"
student_spec scratch 0 > "$WORK/scratch.toml"
student_spec inherit 1 "$INIT" > "$WORK/inherit.toml"
student_spec distill 1 "$INIT$DISTILL" > "$WORK/distill.toml"
student_spec dus 0 "[init]\nfrom = \"$WORK/dus-init\"\n" > "$WORK/dus.toml"
student_spec cut 0 "[init]\nfrom = \"$WORK/cut-init\"\n" > "$WORK/cut.toml"
for run in scratch inherit distill dus cut; do
  if cmp -s "$WORK/$run.toml" "$WORK/$run.spec-used" && [ -f "$WORK/$run/checkpoints/latest" ] \
    && [ "$(cat "$WORK/$run/checkpoints/latest")" != "" ] && grep -q '"stage":"s3"' "$WORK/$run/metrics.jsonl"; then
    echo "== ($run) kept from an earlier run with the same spec"
    continue
  fi
  rm -rf "$WORK/$run"
  model=(); [ $run = scratch ] && model=(--model tiny --layers $FINAL)
  echo "== ($run) $(grep -c '^\[\[stage' "$WORK/$run.toml") stages x $STAGE_TOKENS tokens"
  "$LEHR" train run "$WORK/$run.toml" --data "$DATA" "${model[@]}" --out "$WORK/$run" --device "$DEVICE" \
    --micro-batch 32 --eval-data "$HELDOUT" --eval-every 6 --eval-tokens 32768 > "$WORK/$run.log"
  cp "$WORK/$run.toml" "$WORK/$run.spec-used"
done

# 4. the comparison
LABELS="(a) scratch,(b) inherit+grow,(c) inherit+grow+KD,(d) DUS of the base,(e) SOLAR cut of the ref"
RUNS=("$WORK/scratch" "$WORK/inherit" "$WORK/distill" "$WORK/dus" "$WORK/cut")
"$LEHR" eval compare "${RUNS[@]}" --labels "$LABELS" --json -o "$WORK" > "$WORK/compare.json"
"$LEHR" eval compare "${RUNS[@]}" --labels "$LABELS" -o "$WORK"
echo "reference held-out loss (the teacher, $REF_LAYERS blocks):"
"$LEHR" eval ppl --checkpoint "$REF" --data "$HELDOUT/lang=en" --max-tokens 32768 --seq-len 128 2>/dev/null | tail -2 || true
"$LEHR" eval ppl --checkpoint "$REF" --data "$HELDOUT/lang=ko" --max-tokens 32768 --seq-len 128 2>/dev/null | tail -2 || true
for f in "$WORK"/dus-init-*.log "$WORK"/cut-init-*.log; do echo "$(basename "$f" .log): $(tr '\n' ' ' < "$f")"; done

# 5. step time with the teacher against without (same student, same data, stage s0's steps):
# the teacher in bf16 (the recipe's run (c)) and in fp32 (a short extra run)
sed 's/^temperature = 1.0$/temperature = 1.0\nprecision = "fp32"/' "$WORK/distill.toml" > "$WORK/distill-fp32.toml"
rm -rf "$WORK/distill-fp32"
"$LEHR" train run "$WORK/distill-fp32.toml" --data "$DATA" --out "$WORK/distill-fp32" --device "$DEVICE" \
  --micro-batch 32 --stop-at 24 > "$WORK/distill-fp32.log"
"$LEHR_VENV/bin/python" - "$WORK" <<'PY' | tee "$WORK/step-time.txt"
import json, statistics, sys
work = sys.argv[1]
def ms(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    s0 = [r for r in rows if r["stage"] == "s0"][3:24]
    return statistics.median(r["tokens"] / r["tokens_per_s"] * 1000 for r in s0), rows
b, _ = ms("inherit")
c, rc = ms("distill")
f, _ = ms("distill-fp32")
kd = [r["kd_loss"] for r in rc if r.get("kd_loss") is not None]
print(f"step time (stage s0, median of steps 3-23): no teacher {b:.1f} ms; bf16 teacher {c:.1f} ms ({c / b:.2f}x); "
      f"fp32 teacher {f:.1f} ms ({f / b:.2f}x)")
print(f"KD term (KL to the teacher per token): first step {kd[0]:.3f}, last {kd[-1]:.3f}")
PY
if [ "${1:-}" = "--docs" ]; then
  cp "$WORK/compare.svg" docs/img/recipe-growth.svg
  cp "$WORK/compare.png" docs/img/recipe-growth.png
fi
