"""Reference labels for lehr's fastText language-id test.

Runs the `fasttext` Python package (fasttext-numpy2-wheel, the build datatrove uses) with
examples/models/lid.176.ftz over the in-repo sample corpora and writes, per document, the top
label and its probability for the text with newlines replaced by spaces (datatrove's
LanguageFilter input). pipeline/tests/cleaning.rs checks that lehr's Rust implementation gives
the same labels and probabilities.

    ~/.cache/lehr/bench-venv/bin/python benches/lid_reference.py > pipeline/tests/data/lid176_reference.jsonl
"""
import gzip
import json
import pathlib

import fasttext

root = pathlib.Path(__file__).resolve().parent.parent
model = fasttext.load_model(str(root / "examples/models/lid.176.ftz"))
for name in ["en.jsonl", "zh.jsonl", "ko.jsonl", "mixed_dirty.jsonl.gz"]:
    path = root / "examples/data" / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = doc["text"].replace("\n", " ")
            if not text.strip():
                continue
            labels, probs = model.predict(text, k=1)
            print(json.dumps({"file": name, "id": doc["id"], "label": labels[0].removeprefix("__label__"), "prob": round(float(probs[0]), 6)}, ensure_ascii=False))
