// The test client for llama.cpp (npm node-llama-cpp, prebuilt CPU build; installed by
// scripts/setup.sh into $LEHR_NODE, never at run time): loads a GGUF file and prints, as JSON,
// the token ids llama.cpp gives TEXT, the teacher-forced log-probability of every token after
// the first (evaluated in batches), and with GREEDY the GREEDY tokens
// llama.cpp's argmax continues the text with.
//   node scripts/llama/logprobs.mjs MODEL.gguf TEXT [GREEDY]
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// node-llama-cpp lives outside the repo ($LEHR_NODE, default ~/.cache/lehr/node)
const home = process.env.LEHR_NODE ?? join(process.env.HOME, ".cache/lehr/node");
const { getLlama } = await import(pathToFileURL(join(home, "node_modules/node-llama-cpp/dist/index.js")).href);

const [modelPath, text, greedyArg] = process.argv.slice(2);
const greedyCount = Number(greedyArg ?? 0);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const tokens = Array.from(model.tokenize(text, false));
const context = await model.createContext({
  contextSize: Math.max(256, tokens.length + greedyCount + 8),
  batchSize: Math.max(512, tokens.length),
  // as many threads as this machine lends us: more spin on one another, and a one-token decode crawls
  threads: availableParallelism(),
});
const sequence = context.getSequence();
const want = { generateNext: { probabilities: true } };
// in chunks: each position's probabilities are a Map over the whole vocabulary (150k entries
// for Qwen), so only the teacher token's is kept and the rest is dropped chunk by chunk
const CHUNK = 32;
const logprobs = [];
for (let start = 0; start < tokens.length - 1; start += CHUNK) {
  const part = tokens.slice(start, Math.min(start + CHUNK, tokens.length - 1));
  const out = await sequence.controlledEvaluate(part.map((t) => [t, want]));
  part.forEach((_, j) => logprobs.push(Math.log(out[j].next.probabilities.get(tokens[start + j + 1]) ?? 0)));
}
// greedy continuation: the text again from an empty sequence, then argmax sampling (temperature 0)
const greedy = [];
if (greedyCount > 0) {
  await sequence.clearHistory();
  for await (const t of sequence.evaluate(tokens, { temperature: 0 })) {
    greedy.push(t);
    if (greedy.length >= greedyCount) break;
  }
}
console.log(JSON.stringify({ tokens, logprobs, greedy }));
await context.dispose();
await model.dispose();
process.exit(0);
