"""datatrove's read -> NFC + min-length -> write jsonl, one task, one process: the same job as
`lehr bench pipeline --workers 1` (lehr also collapses whitespace and strips controls, so the
comparison favours datatrove). Prints seconds and MB/s of input. Run by scripts/bench_datatrove.sh."""
import sys, time, unicodedata, os, tempfile, glob

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.writers import JsonlWriter

src = sys.argv[1]
files = sorted(glob.glob(os.path.join(src, "*.jsonl")))
size = sum(os.path.getsize(f) for f in files)


def keep(doc):
    doc.text = unicodedata.normalize("NFC", doc.text)
    return len(doc.text) >= 50


out = tempfile.mkdtemp()
ex = LocalPipelineExecutor(
    pipeline=[
        JsonlReader(src, glob_pattern="*.jsonl"),
        LambdaFilter(keep),
        JsonlWriter(os.path.join(out, "out"), compression="zstd"),
    ],
    tasks=1,
    workers=1,
    logging_dir=os.path.join(out, "logs"),
)
t = time.perf_counter()
ex.run()
secs = time.perf_counter() - t
print(f"datatrove: {size/1e6:.1f} MB in {secs:.2f}s: {size/1e6/secs:.1f} MB/s (1 task, 1 process)")
