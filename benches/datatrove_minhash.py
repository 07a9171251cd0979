"""MinHash dedup: lehr against datatrove 0.10.1 on the same corpus with the same parameters
(word 5-grams, 14 bands x 8 rows, 64-bit hashes), one core each.

1. Quality: both dedup the near-duplicate fixture (dedup/near_dups.jsonl); cluster-level
   precision and recall per language against labels.csv at J >= 0.72 (a method that keeps one
   document per cluster should drop exactly the variants at or above the threshold).
2. Speed: both dedup the fixture corpora (en, zh, ko, mixed_dirty, near_dups; about 23 MB) from
   scratch; wall time, CPU time and peak RSS of each, and the ratios.

Usage: python benches/datatrove_minhash.py LEHR FIXTURES_DIR WORK [--json]
Run by scripts/bench_dedup.sh, which makes the venv.
"""

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import zstandard

THRESHOLD = 0.72


def datatrove_run(input_dir: Path, work: Path, tasks: int):
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    cfg = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5)
    if work.exists():
        shutil.rmtree(work)
    logs = str(work / "logs")

    def run(name, pipeline, n):
        LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=1, logging_dir=f"{logs}/{name}").run()

    reader = lambda: JsonlReader(str(input_dir), glob_pattern="*.jsonl")  # noqa: E731
    run("sigs", [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], tasks)
    run(
        "buckets",
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)],
        cfg.num_buckets,
    )
    run(
        "clusters",
        [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=cfg)],
        1,
    )
    run(
        "filter",
        [
            reader(),
            MinhashDedupFilter(input_folder=str(work / "remove")),
            JsonlWriter(str(work / "out"), compression=None),
        ],
        tasks,
    )
    kept = set()
    for p in (work / "out").glob("*.jsonl"):
        for line in p.open():
            kept.add(json.loads(line)["id"])
    return kept


def lehr_spec(input_dir: Path, out: Path, split: str) -> str:
    # The dedup-minhash preset's settings (FineWeb normalization, word 5-grams, zh character 5-grams).
    return f"""version = 1
name = "bench-minhash"
[input]
paths = ["{input_dir}/*.jsonl"]
split-size = "{split}"
[dedup]
method = "minhash"
normalize = ["nfkc", "lowercase", "punctuation", "digits", "whitespace"]
bands = 14
rows = 8
[dedup.languages]
zh = {{ unit = "chars", size = 5 }}
[output]
path = "{out}"
attributes = false
overwrite = true
"""


def lehr_run(lehr: str, input_dir: Path, work: Path, split: str):
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    spec = work / "spec.toml"
    spec.write_text(lehr_spec(input_dir, work / "out", split))
    subprocess.run([lehr, "corpus", "build", str(spec), "--workers", "1", "--json"], check=True, capture_output=True)
    kept = set()
    for p in (work / "out").glob("part-*.jsonl.zst"):
        with p.open("rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f).read()
        for line in data.splitlines():
            kept.add(json.loads(line)["id"])
    return kept


def score(kept, labels, langs):
    out = {}
    for lang in ["en", "zh", "ko", "all"]:
        ids = [d for d in labels if lang == "all" or langs[d] == lang]
        dropped = Counter(labels[d][0] for d in ids if d not in kept)
        pos = Counter(labels[d][0] for d in ids if labels[d][1] != "original" and labels[d][2] >= THRESHOLD)
        tp = sum(min(n, pos[c]) for c, n in dropped.items())
        nd, np_ = sum(dropped.values()), sum(pos.values())
        out[lang] = {
            "dropped": nd,
            "precision": tp / nd if nd else 1.0,
            "recall": tp / np_ if np_ else 1.0,
        }
    return out


def timed(f):
    self0, child0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = f()
    wall = time.perf_counter() - t0
    self1, child1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) + (
        child1.ru_utime + child1.ru_stime - child0.ru_utime - child0.ru_stime
    )
    return r, wall, cpu


def main():
    lehr, fixtures, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    as_json = "--json" in sys.argv
    work.mkdir(parents=True, exist_ok=True)

    # 1. quality on the labelled near duplicates
    nd = work / "nd-input"
    nd.mkdir(exist_ok=True)
    shutil.copy(fixtures / "dedup/near_dups.jsonl", nd / "near_dups.jsonl")
    labels = {
        r["doc_id"]: (r["cluster_id"], r["edit_kind"], float(r["jaccard_to_original"]))
        for r in csv.DictReader(open(fixtures / "dedup/labels.csv"))
    }
    langs = {json.loads(l)["id"]: json.loads(l)["lang"] for l in open(nd / "near_dups.jsonl")}
    quality = {
        "lehr": score(lehr_run(lehr, nd, work / "lehr-nd", "1MiB"), labels, langs),
        "datatrove": score(datatrove_run(nd, work / "dt-nd", 4), labels, langs),
    }

    # 2. speed on all fixture corpora (plain JSONL for both readers)
    speed_in = work / "speed-input"
    speed_in.mkdir(exist_ok=True)
    for name in ["corpus/en.jsonl", "corpus/zh.jsonl", "corpus/ko.jsonl", "corpus/mixed_dirty.jsonl", "dedup/near_dups.jsonl"]:
        dst = speed_in / Path(name).name
        if not dst.exists():
            shutil.copy(fixtures / name, dst)
    size = sum(p.stat().st_size for p in speed_in.glob("*.jsonl"))
    # lehr runs in a child process: its peak RSS is RUSAGE_CHILDREN's (nothing else ran as a child
    # of this process before except the small quality run, which is measured the same way).
    (_, lehr_wall, lehr_cpu) = timed(lambda: lehr_run(lehr, speed_in, work / "lehr-speed", "4MiB"))
    lehr_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (_, dt_wall, dt_cpu) = timed(lambda: datatrove_run(speed_in, work / "dt-speed", 6))
    dt_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "corpus_mb": size / 1e6,
        "lehr": {"wall_s": lehr_wall, "cpu_s": lehr_cpu, "peak_rss_mb": lehr_rss, "mb_per_s": size / 1e6 / lehr_wall},
        "datatrove": {"wall_s": dt_wall, "cpu_s": dt_cpu, "peak_rss_mb": dt_rss, "mb_per_s": size / 1e6 / dt_wall},
        "wall_ratio": dt_wall / lehr_wall,
        "cpu_ratio": dt_cpu / lehr_cpu,
        "quality": quality,
        "threshold": THRESHOLD,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"corpus: {size / 1e6:.1f} MB; MinHash 5-grams, 14x8, 64-bit; one worker / one process each")
    for k in ["lehr", "datatrove"]:
        r = result[k]
        print(
            f"{k:>10}: {r['wall_s']:7.2f} s wall, {r['cpu_s']:7.2f} s CPU, {r['mb_per_s']:6.2f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    print(f"lehr is {result['wall_ratio']:.1f}x faster (wall), {result['cpu_ratio']:.1f}x (CPU time)")
    print(f"cluster-level quality on dedup/near_dups.jsonl at J >= {THRESHOLD}:")
    for k in ["lehr", "datatrove"]:
        q = quality[k]
        print(
            f"{k:>10}: "
            + "  ".join(f"{lang} P {q[lang]['precision']:.3f} R {q[lang]['recall']:.3f}" for lang in ["en", "zh", "ko", "all"])
        )


if __name__ == "__main__":
    main()
