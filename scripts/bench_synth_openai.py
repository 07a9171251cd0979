"""The official openai client (AsyncOpenAI) against `lehr bench synth`'s stub: the same chat
request shape as lehr's synth stage, the same number in flight. Prints one JSON line:
{"requests", "seconds", "requests_per_s", "cpu_s"} (this process's CPU, user + system)."""

import argparse
import asyncio
import json
import resource
import time

from openai import AsyncOpenAI


async def main(a):
    client = AsyncOpenAI(base_url=a.base_url, api_key="unused", max_retries=0)
    sem = asyncio.Semaphore(a.concurrency)

    async def one(i):
        async with sem:
            text = f"Document {i}: a paragraph about trains, timetables and arithmetic. " * 8
            r = await client.chat.completions.create(
                model="stub",
                messages=[{"role": "system", "content": "You write problems."},
                          {"role": "user", "content": "Write a problem inspired by: " + text}],
                max_tokens=256, temperature=0.7, seed=i)
            assert r.choices[0].message.content

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(a.requests)))
    secs = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(json.dumps({"requests": a.requests, "seconds": secs, "requests_per_s": a.requests / secs, "cpu_s": cpu}))
    await client.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    asyncio.run(main(ap.parse_args()))
