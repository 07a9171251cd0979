"""A fault-injecting OpenAI-compatible server for the synth stage's tests (standard library only).

POST /v1/completions and /v1/chat/completions answer with text that depends only on the request's
prompt (or messages) and seed, so a run with faults must give what a run without them gives.
Faults, each drawn per request at its configured rate (seeded, so runs repeat):
  429 with Retry-After, 500, a connection closed halfway through the body, a stall longer than the
  client's timeout, a 200 whose body is not JSON, a 200 without choices.
GET /stats: requests received, answers sent and, per request body, how many times it was answered.
POST /config: replace the fault rates ({"r429": 0.1, ...}) and the delay before each answer
  ({"delay": 0.2}, seconds), and reset the counts.
Prints "listening PORT" on stdout once it accepts connections.

usage: synth_fault_server.py [--port N] [--seed S] [--r429 F] [--r500 F] [--rclose F]
                             [--rstall F] [--rbadjson F] [--rnochoices F] [--stall-secs S]
                             [--delay-secs S]
"""

import argparse
import hashlib
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ["r429", "r500", "rclose", "rstall", "rbadjson", "rnochoices"]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone light window garden letter number").split()


class State:
    def __init__(self, rates, seed, stall, delay):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.rates = rates
        self.stall = stall
        self.delay = delay
        self.reset()

    def reset(self):
        self.received = 0
        self.answered = 0
        self.faults = {k: 0 for k in FAULTS}
        self.per_body = {}


def answer_text(body):
    prompt = body.get("prompt")
    if prompt is None:
        prompt = json.dumps(body.get("messages"), sort_keys=True, ensure_ascii=False)
    h = hashlib.sha256((prompt + "|" + str(body.get("seed"))).encode()).digest()
    n = 12 + h[0] % 20
    words = [WORDS[h[(i % 31) + 1] % len(WORDS)] for i in range(n)]
    return "Problem: " + " ".join(words) + ". Solution: " + " ".join(reversed(words)) + "."


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, payload, headers=()):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stats":
                with state.lock:
                    self.reply(200, {"received": state.received, "answered": state.answered,
                                     "faults": state.faults, "per_body": state.per_body})
            else:
                self.reply(404, {"error": {"message": "not found"}})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/config":
                with state.lock:
                    conf = json.loads(raw)
                    state.delay = float(conf.pop("delay", 0.0))
                    state.rates = {k: float(v) for k, v in conf.items()}
                    state.reset()
                self.reply(200, {"ok": True})
                return
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self.reply(404, {"error": {"message": "not found"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self.reply(400, {"error": {"message": "body is not JSON"}})
                return
            with state.lock:
                state.received += 1
                fault = None
                for k in FAULTS:
                    if state.rng.random() < state.rates.get(k, 0.0):
                        fault = k
                        break
                if fault:
                    state.faults[fault] += 1
            if fault == "r429":
                self.reply(429, {"error": {"message": "slow down"}}, [("retry-after", "0.05")])
                return
            if fault == "r500":
                self.reply(500, {"error": {"message": "internal error"}})
                return
            if fault == "rstall":
                time.sleep(state.stall)
                self.close_connection = True
                return
            if fault == "rbadjson":
                self.reply(200, b"{\"choices\": [ this is not json")
                return
            if fault == "rnochoices":
                self.reply(200, {"object": "text_completion", "choices": []})
                return
            if state.delay:
                time.sleep(state.delay)
            text = answer_text(body)
            chat = self.path.endswith("chat/completions")
            choice = {"index": 0, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            payload = json.dumps({
                "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"),
                "choices": [choice],
                "usage": {"prompt_tokens": len(raw) // 4, "completion_tokens": len(text.split()),
                          "total_tokens": len(raw) // 4 + len(text.split())},
            }).encode()
            if fault == "rclose":
                # headers and half the body, then the connection goes away
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            key = hashlib.sha256(raw).hexdigest()
            self.reply(200, payload)
            with state.lock:
                state.answered += 1
                state.per_body[key] = state.per_body.get(key, 0) + 1

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that went away (killed, or timed out on a stall) is part of the test
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stall-secs", type=float, default=3.0)
    ap.add_argument("--delay-secs", type=float, default=0.0)
    for k in FAULTS:
        ap.add_argument("--" + k, type=float, default=0.0)
    a = ap.parse_args()
    state = State({k: getattr(a, k) for k in FAULTS}, a.seed, a.stall_secs, a.delay_secs)
    server = Server(("127.0.0.1", a.port), make_handler(state))
    print("listening", server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
