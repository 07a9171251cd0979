#!/usr/bin/env bash
# The demo: install what is missing, build, and run a corpus job over the sample corpus in
# examples/data on the embedded default (local output directory, embedded coordinator state,
# local workers), with progress bars and a summary. Then prove the libtorch toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --features nccl
LEHR=${CARGO_TARGET_DIR:-target}/debug/lehr

rm -rf .lehr/demo
echo "== lehr corpus build examples/pipeline.toml"
"$LEHR" corpus build examples/pipeline.toml
echo
echo "== output in .lehr/demo:"
ls -l .lehr/demo | head -20
echo
echo "== lehr corpus build examples/bilingual.toml   (preset bilingual: cleanup, language routing, per-language filters, PII)"
rm -rf .lehr/demo-bilingual
"$LEHR" corpus build examples/bilingual.toml
echo
echo "== lehr corpus report .lehr/demo-bilingual"
# (to a file first: `| head` would cut lehr off mid-write, and pipefail would call that a failure)
"$LEHR" corpus report .lehr/demo-bilingual > .lehr/demo-bilingual-report.txt
head -40 .lehr/demo-bilingual-report.txt
echo
echo "== lehr corpus build examples/dedup.toml   (preset dedup-minhash: signatures -> buckets -> clusters -> filter)"
rm -rf .lehr/demo-dedup
"$LEHR" corpus build examples/dedup.toml
echo
echo "== lehr dedup curve --bands 14 --rows 8 --compare 20x13"
"$LEHR" dedup curve --bands 14 --rows 8 --compare 20x13 --svg .lehr/demo-dedup/curve.svg | tail -4
echo
echo "== lehr corpus build examples/tokenize.toml   (preset tokenize: Megatron .bin/.idx token shards per language)"
rm -rf .lehr/demo-tokens
"$LEHR" corpus build examples/tokenize.toml
echo
echo "== lehr mix inspect examples/mix-demo.toml --data .lehr/demo-tokens --measure   (planned vs realized per stage)"
"$LEHR" mix inspect examples/mix-demo.toml --data .lehr/demo-tokens --measure --out .lehr/demo-mix
echo
echo "== lehr schedule import-yulan examples/yulan-mini   (YuLan-Mini's real phase-1 and annealing recipes)"
"$LEHR" schedule import-yulan examples/yulan-mini -o .lehr/yulan-mini.toml
"$LEHR" mix inspect .lehr/yulan-mini.toml --by category --out .lehr/yulan-mix > .lehr/yulan-mix.txt
head -24 .lehr/yulan-mix.txt
echo
echo "== lehr train run examples/mix-demo.toml --model tiny --stop-at 40   (the mixer's data, the plan's LR; resumable)"
rm -rf .lehr/demo-train
"$LEHR" train run examples/mix-demo.toml --data .lehr/demo-tokens --model tiny --out .lehr/demo-train --stop-at 40 --device cpu | awk 'NR % 8 == 1'
echo
echo "== lehr eval ppl --checkpoint .lehr/demo-train/checkpoints/step-00000040   (perplexity, top-1/top-5 on the English shards)"
"$LEHR" eval ppl --checkpoint .lehr/demo-train/checkpoints/step-00000040 --data .lehr/demo-tokens/lang=en --seq-len 256 --max-tokens 50000 --device cpu
echo
echo "== lehr eval tasks --checkpoint .lehr/demo-train/checkpoints/step-00000040 --tasks arc_easy --num-fewshot 2   (scored as lm-eval scores it)"
"$LEHR" eval tasks --checkpoint .lehr/demo-train/checkpoints/step-00000040 --tasks arc_easy --num-fewshot 2 \
  --data-dir examples/data/eval --device cpu -o .lehr/demo-train/arc_easy-results.json
echo
echo "== lehr eval curve .lehr/demo-train   (loss and the spec's [eval] scores over steps, stages marked)"
"$LEHR" eval curve .lehr/demo-train
echo
echo "== lehr export gguf .lehr/demo-train/checkpoints/step-00000040 --type all --eval-data ...   (the GGUF ladder for llama.cpp, with perplexities), then llama.cpp runs one"
"$LEHR" export gguf .lehr/demo-train/checkpoints/step-00000040 -o .lehr/demo-train/gguf --name demo --type all \
  --eval-data .lehr/demo-tokens/lang=en --eval-tokens 8192 --eval-seq-len 256 --device cpu
cp .lehr/demo-train/gguf/demo-Q8_0.gguf .lehr/demo-train/demo-q8_0.gguf
"$LEHR" inspect gguf .lehr/demo-train/demo-q8_0.gguf | head -4
if command -v node >/dev/null && [ -d "${LEHR_NODE:-$HOME/.cache/lehr/node}/node_modules/node-llama-cpp" ]; then
  node scripts/llama/logprobs.mjs .lehr/demo-train/demo-q8_0.gguf "The model reads text. 你好，世界！" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); lp=r["logprobs"]; n=len(r["tokens"]); print("llama.cpp: %d tokens, mean log-prob %.3f nats" % (n, sum(lp)/len(lp)))'
else
  echo "(llama.cpp not installed: scripts/setup.sh installs node-llama-cpp when npm is present)"
fi
echo
echo "== lehr serve .lehr/demo-train/checkpoints/step-00000040   (the OpenAI API; one completion through it)"
"$LEHR" serve --checkpoint .lehr/demo-train/checkpoints/step-00000040 --listen 127.0.0.1:0 --device cpu \
  --model-name demo > .lehr/serve.out &
SERVE=$!
for _ in $(seq 1 120); do grep -q serving .lehr/serve.out 2>/dev/null && break; sleep 0.5; done
python3 - "$(awk '/serving/ {print $NF}' .lehr/serve.out)" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/completions", method="POST", headers={"Content-Type": "application/json"},
                             data=json.dumps({"model": "demo", "prompt": "The model", "max_tokens": 24, "temperature": 0}).encode())
r = json.load(urllib.request.urlopen(req))
print(f"POST /v1/completions: {r['choices'][0]['text']!r} ({r['usage']['completion_tokens']} tokens, {r['choices'][0]['finish_reason']})")
PY
echo
echo "== lehr corpus build (preset synth-qa, served by the lehr serve above)   (synthetic data: cached, rate-limited, then cleaned)"
SERVE_URL=$(awk '/serving/ {print $NF}' .lehr/serve.out)
head -n 24 examples/data/en.jsonl > .lehr/synth-seed.jsonl
rm -rf .lehr/demo-synth
# the demo model is tiny and has no chat template: completions, short answers and a lower
# length floor than the preset's
"$LEHR" corpus init --preset synth-qa --input .lehr/synth-seed.jsonl --output .lehr/demo-synth \
  --endpoint "$SERVE_URL" --model demo \
  | sed -e 's/^api = "chat"/api = "completions"/' -e 's/^max-tokens = 2048/max-tokens = 64/' \
        -e 's/^min-chars = .*/min-chars = 20/' > .lehr/synth-demo.toml
"$LEHR" corpus build .lehr/synth-demo.toml
zstdcat .lehr/demo-synth/part-*.jsonl.zst 2>/dev/null | head -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); s=d["synth"]; print("first document:", d["id"], {k: s[k] for k in ("template", "model", "finish_reason", "completion_tokens")}, repr(d["text"][:80]))' || true
echo "-- the same job again: every request is answered by the request cache"
sed -i 's/^overwrite = false/overwrite = true/' .lehr/synth-demo.toml
"$LEHR" corpus build .lehr/synth-demo.toml | grep -E "^synth:"
kill "$SERVE"; wait "$SERVE" 2>/dev/null || true
echo
echo "== lehr train smoke (libtorch forward/backward)"
"$LEHR" train smoke
