// The test client for llama.cpp (npm node-llama-cpp, prebuilt CPU build; installed by
// scripts/setup_llama.sh into $LEHR_CACHE/node, never at run time): loads a GGUF file and
// prints, as JSON, the token ids llama.cpp gives TEXT and the teacher-forced log-probability of
// every token after the first.
//   node scripts/llama/logprobs.mjs MODEL.gguf TEXT
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// node-llama-cpp lives outside the repo ($LEHR_NODE, default ~/.cache/lehr/node)
const home = process.env.LEHR_NODE ?? join(process.env.HOME, ".cache/lehr/node");
const { getLlama } = await import(pathToFileURL(join(home, "node_modules/node-llama-cpp/dist/index.js")).href);

const [modelPath, text] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const tokens = Array.from(model.tokenize(text, false));
const context = await model.createContext({ contextSize: Math.max(64, tokens.length + 8), batchSize: 512 });
const sequence = context.getSequence();
const it = sequence.evaluateWithMetadata([tokens[0]], { probabilities: true });
const logprobs = [];
let step = await it.next();
for (let i = 1; i < tokens.length; i++) {
  const p = step.value.probabilities.get(tokens[i]) ?? 0;
  logprobs.push(Math.log(p));
  step = await it.next(tokens[i]);
}
await it.return?.();
console.log(JSON.stringify({ tokens, logprobs }));
await context.dispose();
await model.dispose();
process.exit(0);
