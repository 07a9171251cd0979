"""Client side of tests/serve_cli.rs: the official `openai` client against `lehr serve`, and
transformers' greedy `generate` on the same checkpoint as the reference.

  serve_openai.py BASE_URL CHECKPOINT [--no-chat]   prints one JSON object of findings
"""

import json
import sys
import threading
import urllib.request

import openai
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

base, ckpt = sys.argv[1], sys.argv[2]
chat = "--no-chat" not in sys.argv
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
out = {}

out["health"] = json.load(urllib.request.urlopen(base.removesuffix("/v1") + "/health"))
model = client.models.list().data[0].id
out["model"] = model

prompts = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4,",
    "The quick brown fox",
]
N = 24


def greedy(p, **kw):
    r = client.completions.create(model=model, prompt=p, max_tokens=N, temperature=0, **kw)
    return r


# alone, one after the other
alone = [greedy(p, logprobs=1) for p in prompts]
out["alone"] = [r.choices[0].text for r in alone]
out["alone_tokens"] = [r.usage.completion_tokens for r in alone]
out["finish"] = [r.choices[0].finish_reason for r in alone]
out["logprob_lengths"] = [len(r.choices[0].logprobs.token_logprobs) for r in alone]
out["logprobs_negative"] = all(x <= 0 for r in alone for x in r.choices[0].logprobs.token_logprobs)

# concurrently: the server batches what is waiting
together = [None] * len(prompts)


def one(i):
    together[i] = greedy(prompts[i]).choices[0].text


threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
for t in threads:
    t.start()
for t in threads:
    t.join()
out["together"] = together
# one request with a list of prompts (one batch)
out["listed"] = [c.text for c in sorted(greedy(prompts).choices, key=lambda c: c.index)]

# transformers' greedy generate, one prompt at a time
tok = AutoTokenizer.from_pretrained(ckpt)
hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
hf.eval()
ref = []
for p in prompts:
    ids = tok(p, return_tensors="pt").input_ids
    with torch.no_grad():
        g = hf.generate(ids, max_new_tokens=N, do_sample=False, attention_mask=torch.ones_like(ids))
    ref.append(tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True))
out["transformers"] = ref

# streaming gives the same text, in pieces
pieces = []
for chunk in client.completions.create(model=model, prompt=prompts[0], max_tokens=N, temperature=0, stream=True):
    pieces.append(chunk.choices[0].text)
out["stream_text"] = "".join(pieces)
out["stream_chunks"] = len(pieces)

# a stop sequence from the middle of the greedy text
text = out["alone"][2]
stop = text[len(text) // 2 : len(text) // 2 + 3]
r = greedy(prompts[2], stop=[stop])
out["stop"] = {"stop": stop, "text": r.choices[0].text, "finish": r.choices[0].finish_reason,
               "expected": text[: text.find(stop)]}

# sampling: a seed gives the same text; n choices
s1 = client.completions.create(model=model, prompt=prompts[0], max_tokens=12, temperature=0.9, seed=7, n=2)
s2 = client.completions.create(model=model, prompt=prompts[0], max_tokens=12, temperature=0.9, seed=7, n=2)
out["seeded"] = [[c.text for c in s1.choices], [c.text for c in s2.choices]]

# chat, whole and streamed
msgs = [{"role": "user", "content": "What is the capital of France?"}]
if not chat:
    try:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=20)
        out["no_template"] = "no error"
    except openai.BadRequestError as e:
        out["no_template"] = str(e)
    print(json.dumps(out))
    sys.exit(0)
c = client.chat.completions.create(model=model, messages=msgs, max_tokens=20, temperature=0)
out["chat"] = {"content": c.choices[0].message.content, "role": c.choices[0].message.role,
               "finish": c.choices[0].finish_reason,
               "prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens}
text = ""
roles = []
usage = None
for chunk in client.chat.completions.create(model=model, messages=msgs, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage.completion_tokens
    for ch in chunk.choices:
        text += ch.delta.content or ""
        if ch.delta.role:
            roles.append(ch.delta.role)
out["chat_stream"] = {"content": text, "roles": roles, "usage": usage}
messages_template = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
out["hf_chat_prompt_tokens"] = len(tok(messages_template, add_special_tokens=False).input_ids)

# errors are OpenAI-shaped: the client raises its own exception types
errors = {}
for name, call in {
    "temperature": lambda: client.completions.create(model=model, prompt="x", temperature="hot"),
    "top_p": lambda: client.completions.create(model=model, prompt="x", top_p=3),
    "messages": lambda: client.chat.completions.create(model=model, messages=[]),
    "model": lambda: client.completions.create(model="no-such-model", prompt="x"),
    "prompt": lambda: client.completions.create(model=model, prompt=[10**9]),
}.items():
    try:
        call()
        errors[name] = "no error"
    except openai.APIStatusError as e:
        errors[name] = {"status": e.status_code, "message": str(e)}
out["errors"] = errors
out["health_after"] = json.load(urllib.request.urlopen(base.removesuffix("/v1") + "/health"))
print(json.dumps(out))
