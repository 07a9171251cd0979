"""lehr's quality filters against datatrove's on the same English corpus: per-document decision
agreement, then throughput per core. Run by scripts/bench_filters.sh.

    datatrove_filters.py LEHR INPUT.jsonl WORKDIR [--repeat N] [--json]

Both sides run the FineWeb English chain with datatrove's default parameters (C4 without the
terminal-punctuation rule), in this order:
    GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter
A document's decision is "keep" or the name of the first rule that dropped it (datatrove's
reason strings; lehr uses the same names in its attributes file).

datatrove: each filter's .filter(doc) is called directly in a loop in this process (no executor,
so no reader/writer overhead is counted for it). C4QualityFilter rewrites doc.text of the
documents it keeps, and FineWebQualityFilter sees the rewritten text, as in a datatrove pipeline.
lehr: `LEHR corpus build SPEC --workers 1 --json` on a spec written to WORKDIR; decisions come
from OUT/attributes/part-00000.parquet (columns id, kept, dropped_by, rule, <stage>.<score>).

Speed: both sides on INPUT concatenated N times (ids suffixed per copy). lehr's time is the wall
time of the whole `corpus build` process (reading JSONL, writing jsonl.zst and the parquet
attributes included: conservative); datatrove's is the filter loop only (JSON parsing and
Document construction excluded: favourable to datatrove). One core each.

Writes WORKDIR/disagreements.jsonl (every document whose decisions differ, with the scores of the
stages involved from both sides and the first 300 characters of its text).
With --json the report goes to stderr and a JSON summary to stdout.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

import orjson

try:
    import pyarrow.parquet as pq
except ImportError:  # the wrapper installs pyarrow; say so clearly if run by hand without it
    sys.exit("datatrove_filters.py: needs pyarrow in this venv to read lehr's attributes (pip install pyarrow)")

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, split_into_sentences, split_into_words

# lehr stage labels, in pipeline order (the spec below uses the stage types as labels)
STAGES = ["gopher-repetition", "gopher-quality", "c4", "fineweb"]

SPEC = """version = 1
name = "bench-filters"
[input]
paths = [{input}]
split-size = "1GiB"
[[stage]]
type = "gopher-repetition"
[[stage]]
type = "gopher-quality"
[[stage]]
type = "c4"
filter-no-terminal-punct = false
[[stage]]
type = "fineweb"
[output]
path = {out}
formats = ["jsonl.zst"]
overwrite = true
attributes = true
score-dropped = false
"""

REPORT = sys.stdout  # switched to stderr with --json


def say(*a):
    print(*a, file=REPORT, flush=True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def machine():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = " ".join(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return cores, model


# ------------------------------------------------------------------------------------------------
# input


def read_records(path):
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def write_repeated(src, dst, n):
    """Concatenate n copies of src, ids suffixed with "#r<k>" so they stay unique."""
    recs = read_records(src)
    with open(dst, "wb") as f:
        for k in range(n):
            for r in recs:
                r2 = dict(r, id=f"{r['id']}#r{k}")
                f.write(orjson.dumps(r2) + b"\n")


# ------------------------------------------------------------------------------------------------
# datatrove side


def make_filters():
    return [
        ("gopher-repetition", GopherRepetitionFilter()),
        ("gopher-quality", GopherQualityFilter()),
        ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb", FineWebQualityFilter()),
    ]


def run_datatrove(path):
    """Decisions {id: (stage | None, decision)} and timings. Times the filter loop on its own, and
    reading + filters together."""
    t0 = time.perf_counter()
    recs = read_records(path)
    docs = [Document(text=r["text"], id=str(r["id"])) for r in recs]
    del recs
    t_read = time.perf_counter() - t0
    text_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    filters = make_filters()
    decisions = {}
    errors = Counter()
    t1 = time.perf_counter()
    for doc in docs:
        decision, stage_of = "keep", None
        for stage, flt in filters:
            try:
                res = flt.filter(doc)
            except Exception as e:  # keep going; reported in the summary
                errors[f"{stage}: {type(e).__name__}: {e}"[:200]] += 1
                decision, stage_of = f"error:{type(e).__name__}", stage
                break
            ok, reason = (res, None) if isinstance(res, bool) else (res[0], res[1])
            if not ok:
                decision, stage_of = reason or f"{stage}:dropped", stage
                break
        decisions[doc.id] = (stage_of, decision)
    t_filter = time.perf_counter() - t1
    return {
        "decisions": decisions,
        "docs": len(docs),
        "text_bytes": text_bytes,
        "read_s": t_read,
        "filter_s": t_filter,
        "total_s": t_read + t_filter,
        "errors": errors,
    }


def first_error_hint(errors):
    """Turn a tokenizer failure into a clear message (datatrove's English tokenizer is spaCy's
    blank("en") and should need no download; an NLTK punkt lookup would mean something changed)."""
    for msg in errors:
        if "punkt" in msg or "nltk" in msg.lower() or "download" in msg.lower():
            return f"datatrove tried to load/download a tokenizer resource: {msg}"
    return None


# datatrove-side scores, under lehr's attribute names, computed the way datatrove's filters compute
# them (the filters return only a decision). Only used to explain disagreements.


def dt_scores_gopher_repetition(text):
    if not text:
        return {}
    s = {}
    paragraphs = re.split(r"\n{2,}", text.strip())
    pn, pc = find_duplicates(paragraphs)
    s["dup_para_frac"] = pn / len(paragraphs)
    s["dup_para_char_frac"] = pc / len(text)
    lines = re.split("\n+", text)
    ln, lc = find_duplicates(lines)
    s["dup_line_frac"] = ln / len(lines)
    s["dup_line_char_frac"] = lc / len(text)
    words = split_into_words(text, "en")
    for n in (2, 3, 4):
        grams = get_n_grams(words, n)
        s[f"top_{n}_gram"] = find_top_duplicate(grams) / len(text) if grams else None
    for n in range(5, 11):
        s[f"duplicated_{n}_n_grams"] = find_all_duplicate(words, n) / len(text)
    return s


def dt_scores_gopher_quality(text):
    words = split_into_words(text, "en")
    n_words = len(words)
    content = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines()
    per_word = lambda x: x / n_words if n_words else None  # noqa: E731
    per_line = lambda x: x / len(lines) if lines else None  # noqa: E731
    return {
        "words": len(content),
        "mean_word_length": sum(map(len, content)) / len(content) if content else None,
        "hash_ratio": per_word(text.count("#")),
        "ellipsis_ratio": per_word(text.count("...") + text.count("…")),
        "bullet_lines_ratio": per_line(sum(s.lstrip().startswith(("•", "-")) for s in lines)),
        "ellipsis_lines_ratio": per_line(sum(s.rstrip().endswith(("...", "…")) for s in lines)),
        "alpha_words_ratio": per_word(sum(any(c.isalpha() for c in w) for w in words)),
        "stop_words": len(set(STOP_WORDS) & set(words)),
    }


def dt_scores_c4(text):
    """C4QualityFilter's line loop with the bench's settings (no terminal-punctuation rule)."""
    lines = text.splitlines()
    s = {"lines": len(lines)}
    kept, sentences = 0, 0
    for line in lines:
        line = line.strip()
        words = line.split()
        if any(len(w) > 1000 for w in words):
            continue
        line = CITATION_REGEX.sub("", line)
        if len(words) < 3:
            continue
        low = line.lower()
        if "lorem ipsum" in low or "{" in line:
            return s  # document-level drop: lehr records no kept/sentence counts either
        if "javascript" in low or any(p in low for p in POLICY_SUBSTRINGS):
            continue
        sentences += len(split_into_sentences(line, "en"))
        kept += 1
    s["lines_kept"], s["sentences"] = kept, sentences
    return s


def dt_scores_fineweb(text):
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return {}
    stop = tuple(TERMINAL_PUNCTUATION)
    words = split_into_words(text, "en")
    denom = len(text.replace("\n", ""))
    return {
        "line_punct_ratio": sum(line.endswith(stop) for line in lines) / len(lines),
        "short_line_ratio": sum(len(line) <= 30 for line in lines) / len(lines),
        "char_dup_ratio": find_duplicates(lines)[1] / denom if denom else None,
        "list_ratio": text.count("\n") / len(words) if words else None,
    }


DT_SCORES = {
    "gopher-repetition": dt_scores_gopher_repetition,
    "gopher-quality": dt_scores_gopher_quality,
    "c4": dt_scores_c4,
    "fineweb": dt_scores_fineweb,
}


def dt_stage_texts(text):
    """The text each datatrove filter sees: C4 rewrites it for FineWeb (None if C4 dropped it)."""
    doc = Document(text=text, id="x")
    res = C4QualityFilter(filter_no_terminal_punct=False).filter(doc)
    ok = res if isinstance(res, bool) else res[0]
    after_c4 = doc.text if ok else None
    return {"gopher-repetition": text, "gopher-quality": text, "c4": text, "fineweb": after_c4}


# ------------------------------------------------------------------------------------------------
# lehr side


def run_lehr(lehr, input_path, work, tag):
    out = os.path.join(work, f"lehr-out-{tag}")
    spec = os.path.join(work, f"spec-{tag}.toml")
    with open(spec, "w") as f:
        # JSON strings are valid TOML basic strings
        f.write(SPEC.format(input=json.dumps(os.path.abspath(input_path)), out=json.dumps(os.path.abspath(out))))
    cmd = [lehr, "corpus", "build", spec, "--workers", "1", "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        log(p.stdout[-4000:])
        log(p.stderr[-4000:])
        sys.exit(f"lehr failed (exit {p.returncode}): {' '.join(cmd)}")
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = {}
    state = report.get("job", {}).get("state")
    if state not in (None, "succeeded"):
        sys.exit(f"lehr job ended in state {state!r}: {report.get('job', {}).get('error')}")
    return {"out": out, "wall_s": wall, "elapsed_s": report.get("elapsed_s"), "report": report}


def read_lehr_attributes(out):
    path = os.path.join(out, "attributes", "part-00000.parquet")
    rows = pq.read_table(path).to_pylist()
    by_id = {}
    for r in rows:
        by_id[str(r["id"])] = r
    return by_id


def lehr_decision(row):
    if row["kept"]:
        return "keep"
    return row.get("rule") or f"{row.get('dropped_by')}:dropped"


# ------------------------------------------------------------------------------------------------
# comparison


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}"
    return str(v)


def explain(text, dt_stage, lrow):
    """Scores of the stages involved in a disagreement, both sides."""
    involved = []
    for st in (dt_stage, lrow.get("dropped_by") if not lrow["kept"] else None):
        if st in DT_SCORES and st not in involved:
            involved.append(st)
    if not involved:  # both kept (can't differ) or unknown: nothing to show
        return {}
    texts = dt_stage_texts(text)
    out = {}
    for st in sorted(involved, key=STAGES.index):
        dts = DT_SCORES[st](texts[st]) if texts[st] is not None else {}
        keys = list(dict.fromkeys(list(dts) + [k.split(".", 1)[1] for k in lrow if k.startswith(st + ".")]))
        keys = [k for k in keys if k != "rule"]
        out[st] = {k: {"datatrove": dts.get(k), "lehr": lrow.get(f"{st}.{k}")} for k in keys}
    return out


def compare(texts, dt, lehr_rows, work):
    ids = list(texts)
    missing = [i for i in ids if i not in lehr_rows]
    n = 0
    agree_kd = agree_rule = 0
    confusion = Counter()
    dis = []
    dt_counts, lehr_counts = Counter(), Counter()
    for i in ids:
        if i not in lehr_rows:
            continue
        n += 1
        stage, d = dt["decisions"][i]
        lrow = lehr_rows[i]
        ld = lehr_decision(lrow)
        dt_counts[d] += 1
        lehr_counts[ld] += 1
        agree_kd += (d == "keep") == (ld == "keep")
        if d == ld:
            agree_rule += 1
        else:
            confusion[(d, ld)] += 1
            dis.append((i, stage, d, lrow, ld))
    # scores of the stages involved, both sides, for every disagreement
    dis = [
        {"id": i, "datatrove": d, "lehr": ld, "lehr_dropped_by": lrow.get("dropped_by"),
         "scores": explain(texts[i], stage, lrow), "text_head": texts[i][:300]}
        for i, stage, d, lrow, ld in dis
    ]
    path = os.path.join(work, "disagreements.jsonl")
    with open(path, "wb") as f:
        for rec in dis:
            f.write(orjson.dumps(rec) + b"\n")
    return {
        "docs": n,
        "missing_in_lehr": len(missing),
        "agree_keep_drop": agree_kd / n if n else None,
        "agree_rule": agree_rule / n if n else None,
        "confusion": confusion,
        "disagreements": dis,
        "disagreements_path": path,
        "dt_counts": dt_counts,
        "lehr_counts": lehr_counts,
    }


def print_agreement(cmp):
    n = cmp["docs"]
    say(f"\n== decision agreement on {n} documents ==")
    if cmp["missing_in_lehr"]:
        say(f"  WARNING: {cmp['missing_in_lehr']} documents missing from lehr's attributes")
    say(f"  keep/drop agreement: {100 * cmp['agree_keep_drop']:.2f}%")
    say(f"  exact rule agreement: {100 * cmp['agree_rule']:.2f}%")
    say("\n  decisions (datatrove vs lehr):")
    rules = sorted(set(cmp["dt_counts"]) | set(cmp["lehr_counts"]), key=lambda r: (r != "keep", r))
    say(f"    {'decision':32} {'datatrove':>10} {'lehr':>10}")
    for r in rules:
        say(f"    {r:32} {cmp['dt_counts'][r]:>10} {cmp['lehr_counts'][r]:>10}")
    if cmp["confusion"]:
        say("\n  differing decisions, top 15 (datatrove -> lehr: count):")
        for (d, ld), c in cmp["confusion"].most_common(15):
            say(f"    {d:32} -> {ld:32} {c:>6}")
    # up to 10 examples, round-robin over the confusion categories (largest first)
    groups = {}
    for rec in cmp["disagreements"]:
        groups.setdefault((rec["datatrove"], rec["lehr"]), []).append(rec)
    queues = [groups[k] for k, _ in cmp["confusion"].most_common()]
    examples = []
    for depth in range(10):
        examples += [q[depth] for q in queues if depth < len(q)]
    examples = examples[:10]
    if examples:
        say("\n  examples (scores that differ, datatrove|lehr):")
    for rec in examples:
        say(f"    {rec['id']}: datatrove={rec['datatrove']} lehr={rec['lehr']}")
        for st, scores in rec["scores"].items():
            # a side that dropped the document earlier has no scores for this stage
            only = [side for side in ("datatrove", "lehr") if all(v[side] is None for v in scores.values())]
            if len(only) == 2:
                continue
            if only:
                other = "lehr" if only == ["datatrove"] else "datatrove"
                vals = ", ".join(f"{k} {fmt(v[other])}" for k, v in scores.items() if v[other] is not None)
                say(f"      {st}: {other} only ({only[0]} dropped earlier): {vals or '-'}")
                continue
            diff = [(k, v) for k, v in scores.items() if fmt(v["datatrove"]) != fmt(v["lehr"])]
            same = len(scores) - len(diff)
            parts = ", ".join(f"{k} {fmt(v['datatrove'])}|{fmt(v['lehr'])}" for k, v in diff)
            say(f"      {st}: {parts or 'all scores equal'}" + (f" ({same} equal)" if diff and same else ""))
    say(f"\n  all {len(cmp['disagreements'])} disagreements: {cmp['disagreements_path']}")


# ------------------------------------------------------------------------------------------------


def main():
    global REPORT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lehr", help="the lehr binary")
    ap.add_argument("input", help="English JSONL (fields id, text, lang)")
    ap.add_argument("work", help="work directory (spec, lehr output, repeated input, disagreements)")
    ap.add_argument("--repeat", type=int, default=5, help="copies of the input for the speed run (default 5)")
    ap.add_argument("--json", action="store_true", help="JSON summary on stdout (report on stderr)")
    args = ap.parse_args()
    if args.json:
        REPORT = sys.stderr
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    os.makedirs(args.work, exist_ok=True)
    cores, model = machine()

    recs = read_records(args.input)
    texts = {str(r["id"]): r["text"] for r in recs}
    if len(texts) != len(recs):
        sys.exit(f"{args.input}: ids are not unique ({len(recs)} records, {len(texts)} ids)")
    no_lang = sum(1 for r in recs if r.get("lang") is None)
    if no_lang:
        log(f"warning: {no_lang} documents have no `lang`; lehr may not pick its English word splitter for them")
    del recs

    # A. + B. decisions on the input as it is (lehr first: it is quick and fails early on a spec
    # its build does not understand)
    log(f"lehr: corpus build {args.input} ...")
    le = run_lehr(args.lehr, args.input, args.work, "agree")
    lehr_rows = read_lehr_attributes(le["out"])
    log(f"datatrove: filtering {args.input} ...")
    dt = run_datatrove(args.input)
    if dt["errors"]:
        hint = first_error_hint(dt["errors"])
        log(hint or "datatrove raised errors:")
        for msg, c in dt["errors"].most_common(5):
            log(f"  {c} x {msg}")

    # C. agreement
    cmp = compare(texts, dt, lehr_rows, args.work)
    print_agreement(cmp)

    # D. speed on the repeated input (the agreement runs already are the speed runs for --repeat 1)
    if args.repeat == 1:
        dt_speed, le_speed = dt, le
    else:
        rep = os.path.join(args.work, f"input-x{args.repeat}.jsonl")
        write_repeated(args.input, rep, args.repeat)
        log(f"lehr: speed run on {args.repeat} copies ...")
        le_speed = run_lehr(args.lehr, rep, args.work, "speed")
        log(f"datatrove: speed run on {args.repeat} copies ...")
        dt_speed = run_datatrove(rep)
    mb = dt_speed["text_bytes"] / 1e6
    lehr_mbs = mb / le_speed["wall_s"]
    dt_mbs = mb / dt_speed["filter_s"]
    dt_total_mbs = mb / dt_speed["total_s"]
    say(f"\n== speed: {dt_speed['docs']} documents, {mb:.1f} MB of text ({args.repeat} x input), one core each ==")
    say(f"  machine: {cores} cores, {model}")
    say(f"  lehr:      {le_speed['wall_s']:8.2f}s wall for `corpus build --workers 1` (read + filters + write): {lehr_mbs:.2f} MB/s")
    say(f"  datatrove: {dt_speed['filter_s']:8.2f}s filter loop only: {dt_mbs:.2f} MB/s")
    say(f"  datatrove: {dt_speed['total_s']:8.2f}s incl. reading JSONL + building Documents: {dt_total_mbs:.2f} MB/s")

    ratio = lehr_mbs / dt_mbs
    say("\n== summary ==")
    say(f"agreement (keep/drop): {100 * cmp['agree_keep_drop']:.1f}% of {cmp['docs']} docs; exact rule: {100 * cmp['agree_rule']:.1f}%")
    say(f"speed: lehr {lehr_mbs:.2f} MB/s, datatrove {dt_mbs:.2f} MB/s (filters only) -> {ratio:.1f}x per core ({cores} cores, {model})")

    if args.json:
        summary = {
            "input": os.path.abspath(args.input),
            "docs": cmp["docs"],
            "missing_in_lehr": cmp["missing_in_lehr"],
            "agree_keep_drop": cmp["agree_keep_drop"],
            "agree_rule": cmp["agree_rule"],
            "confusion": [{"datatrove": d, "lehr": ld, "count": c} for (d, ld), c in cmp["confusion"].most_common()],
            "decisions": {"datatrove": dict(cmp["dt_counts"]), "lehr": dict(cmp["lehr_counts"])},
            "datatrove_errors": sum(dt["errors"].values()),
            "disagreements": cmp["disagreements_path"],
            "speed": {
                "repeat": args.repeat,
                "docs": dt_speed["docs"],
                "text_mb": mb,
                "lehr_wall_s": le_speed["wall_s"],
                "lehr_elapsed_s": le_speed["elapsed_s"],
                "lehr_mb_s": lehr_mbs,
                "datatrove_filter_s": dt_speed["filter_s"],
                "datatrove_total_s": dt_speed["total_s"],
                "datatrove_mb_s": dt_mbs,
                "datatrove_total_mb_s": dt_total_mbs,
                "ratio_per_core": ratio,
            },
            "machine": {"cores": cores, "cpu": model},
        }
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
