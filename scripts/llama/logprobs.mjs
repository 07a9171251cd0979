// The test client for llama.cpp (npm node-llama-cpp, prebuilt CPU build; installed by
// scripts/setup.sh into $LEHR_NODE, never at run time): loads a GGUF file and prints, as JSON,
// the token ids llama.cpp gives TEXT, the teacher-forced log-probability of every token after
// the first (the whole text evaluated as one batch), and with GREEDY the GREEDY tokens
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
const out = await sequence.controlledEvaluate(tokens.map((t) => [t, want]));
const logprobs = [];
for (let i = 1; i < tokens.length; i++) {
  logprobs.push(Math.log(out[i - 1].next.probabilities.get(tokens[i]) ?? 0));
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
