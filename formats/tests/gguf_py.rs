//! Against gguf-py (PyPI `gguf`, pinned in scripts/setup.sh): its `GGUFReader` reads what we
//! write (metadata of every value type, tensors of every type we quantize), `gguf.quants.quantize`
//! of the same floats gives our bytes exactly (F16, BF16, Q8_0, Q4_0, Q5_0, Q4_1, Q5_1), and its
//! `dequantize` of our bytes equals ours bit for bit — for the K-quants (Q2_K … Q6_K, which
//! gguf-py cannot quantize) on random blocks.

use std::process::Command;

use lehr_formats::quants::{dequantize, quantize};
use lehr_formats::{GgmlType, GgufWriter, MetaValue};
use rand::{Rng, SeedableRng};

const CHECK: &str = r#"
import json, sys
import numpy as np
import gguf
from gguf import GGUFReader, GGMLQuantizationType as T
r = GGUFReader(sys.argv[1])
out = {"errors": []}
def err(m): out["errors"].append(m)
f = {k: r.fields[k] for k in r.fields}
def scalar(k):
    fl = f[k]
    return fl.parts[fl.data[0]].tolist()[0]
def string(k):
    fl = f[k]
    return bytes(fl.parts[fl.data[0]]).decode()
expect = json.loads(sys.argv[2])
for k, v in expect["scalars"].items():
    got = scalar(k)
    if (abs(got - v) > 1e-6 if isinstance(v, float) else got != v):
        err(f"{k}: {got!r} != {v!r}")
for k, v in expect["strings"].items():
    if string(k) != v: err(f"{k}: {string(k)!r} != {v!r}")
toks = f["tokenizer.ggml.tokens"]
got = [bytes(toks.parts[i]).decode() for i in toks.data]
if got != expect["tokens"]: err(f"tokens {got!r}")
t = {x.name: x for x in r.tensors}
src = np.array(t["src"].data, dtype=np.float32).reshape(-1)
names = {"F16": T.F16, "BF16": T.BF16, "Q8_0": T.Q8_0, "Q4_0": T.Q4_0, "Q5_0": T.Q5_0, "Q4_1": T.Q4_1, "Q5_1": T.Q5_1}
for name, qt in names.items():
    ours = t[f"q.{name}"]
    if ours.tensor_type != qt: err(f"{name}: type {ours.tensor_type}")
    if [int(d) for d in ours.shape] != expect["dims"][::-1]: err(f"{name}: shape {list(ours.shape)} (ggml order)")
    raw = np.frombuffer(bytes(np.asarray(ours.data).tobytes()), dtype=np.uint8)
    theirs = gguf.quants.quantize(src.reshape(expect["dims"]), qt)
    theirs = np.frombuffer(theirs.tobytes(), dtype=np.uint8)
    if not np.array_equal(raw, theirs):
        bad = int(np.nonzero(raw != theirs)[0][0])
        err(f"{name}: bytes differ from gguf.quants.quantize (first at byte {bad} of {raw.size})")
    deq = gguf.quants.dequantize(raw.reshape(expect["dims"][0], -1), qt).astype(np.float32).reshape(-1)
    mine = np.array(t[f"deq.{name}"].data, dtype=np.float32).reshape(-1)
    if not np.array_equal(deq.view(np.uint32), mine.view(np.uint32)):
        err(f"{name}: dequantized values differ (max {float(np.max(np.abs(deq - mine)))})")
# K-quants (gguf-py dequantizes them; it cannot quantize): our dequantization of random blocks
kq = {"Q2_K": T.Q2_K, "Q3_K": T.Q3_K, "Q4_K": T.Q4_K, "Q5_K": T.Q5_K, "Q6_K": T.Q6_K}
for name, qt in kq.items():
    raw = np.frombuffer(bytes(np.asarray(t[f"k.{name}"].data).tobytes()), dtype=np.uint8)
    deq = gguf.quants.dequantize(raw.reshape(4, -1), qt).astype(np.float32).reshape(-1)
    mine = np.array(t[f"kdeq.{name}"].data, dtype=np.float32).reshape(-1)
    if deq.shape != mine.shape or not np.array_equal(deq.view(np.uint32), mine.view(np.uint32)):
        err(f"{name}: dequantized values differ")
out["tensors"] = len(r.tensors)
print(json.dumps(out))
"#;

#[test]
fn gguf_py_reads_our_files_and_quantizes_to_our_bytes() {
    let venv = std::env::var("LEHR_VENV")
        .expect("LEHR_VENV is unset: run the tests through scripts/test.sh (setup.sh installs gguf-py)");
    let python = std::path::Path::new(&venv).join("bin/python");
    let (rows, cols) = (24usize, 256usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut x: Vec<f32> = (0..rows * cols).map(|_| (rng.random::<f32>() - 0.5) * 6.0).collect();
    // blocks that test the edges: all zeros, a negative extreme, exact ties, tiny and huge values
    x[..32].fill(0.0);
    x[32] = -9.0;
    for (i, v) in x[64..96].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5;
    }
    x[100] = 1e-9;
    x[130] = 60000.0;
    let dims = [cols as u64, rows as u64];

    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("llama".into()))
        .meta("general.name", MetaValue::String("lehr gguf-py check · 检查".into()))
        .meta("llama.block_count", MetaValue::U32(2))
        .meta("llama.rope.freq_base", MetaValue::F32(1_000_000.0))
        .meta("test.u64", MetaValue::U64(1 << 40))
        .meta("test.i32", MetaValue::I32(-7))
        .meta("test.bool", MetaValue::Bool(true))
        .meta("test.f64", MetaValue::F64(0.25))
        .meta("general.alignment", MetaValue::U32(64))
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(
                ["<s>", "你好", "Ġworld", "한국어"].iter().map(|s| MetaValue::String(s.to_string())).collect(),
            ),
        );
    let f32_bytes = quantize(GgmlType::F32, &x).unwrap();
    w.tensor("src", &dims, GgmlType::F32, f32_bytes).unwrap();
    for ty in
        [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1]
    {
        let q = quantize(ty, &x).unwrap();
        let deq = dequantize(ty, &q).unwrap();
        w.tensor(&format!("q.{}", ty.name()), &dims, ty, q).unwrap();
        w.tensor(&format!("deq.{}", ty.name()), &dims, GgmlType::F32, quantize(GgmlType::F32, &deq).unwrap()).unwrap();
    }
    // K-quant blocks of random bytes with finite scales: 4 rows of 256
    for ty in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let (_, size) = ty.block();
        let mut raw: Vec<u8> = (0..4 * size).map(|_| rng.random::<u8>()).collect();
        // the f16 scales (d, dmin) as small finite numbers
        let scale_at: &[usize] = match ty {
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            _ => &[0, 2],
        };
        for block in raw.chunks_exact_mut(size) {
            for &at in scale_at {
                let h = lehr_formats::half::f32_to_f16(rng.random::<f32>() * 0.01 + 1e-4);
                block[at..at + 2].copy_from_slice(&h.to_le_bytes());
            }
        }
        let deq = dequantize(ty, &raw).unwrap();
        assert_eq!(deq.len(), 4 * 256);
        w.tensor(&format!("k.{}", ty.name()), &[256, 4], ty, raw).unwrap();
        w.tensor(&format!("kdeq.{}", ty.name()), &[256, 4], GgmlType::F32, quantize(GgmlType::F32, &deq).unwrap())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("check.gguf");
    w.write_file(&path).unwrap();

    let expect = serde_json::json!({
        "scalars": {"llama.block_count": 2, "llama.rope.freq_base": 1_000_000.0, "test.u64": 1u64 << 40, "test.i32": -7,
                    "test.bool": true, "test.f64": 0.25, "general.alignment": 64},
        "strings": {"general.architecture": "llama", "general.name": "lehr gguf-py check · 检查"},
        "tokens": ["<s>", "你好", "Ġworld", "한국어"],
        "dims": [rows, cols],
    });
    let out = Command::new(&python).args(["-c", CHECK]).arg(&path).arg(expect.to_string()).output().unwrap();
    assert!(out.status.success(), "gguf-py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["tensors"], 25);

    // and our reader reads gguf-py's writer
    let theirs = dir.path().join("theirs.gguf");
    let script = r#"
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "qwen2")
w.add_block_count(3)
w.add_string("general.name", "from gguf-py")
w.add_tensor("blk.0.attn_q.weight", np.arange(64 * 2, dtype=np.float32).reshape(2, 64))
w.add_tensor("q8", gguf.quants.quantize(np.linspace(-1, 1, 64 * 4, dtype=np.float32).reshape(4, 64), gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;
    let out = Command::new(&python).args(["-c", script]).arg(&theirs).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = lehr_formats::GgufFile::open(&theirs).unwrap();
    assert_eq!(f.meta["general.architecture"].as_str(), Some("qwen2"));
    assert_eq!(f.meta["qwen2.block_count"].as_u64(), Some(3));
    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(t.dims, vec![64, 2], "ggml order: the row length first");
    let values = dequantize(t.ty, f.data(t).unwrap()).unwrap();
    assert_eq!(values, (0..128).map(|i| i as f32).collect::<Vec<_>>());
    let q = f.tensor("q8").unwrap();
    assert_eq!((q.ty, q.dims.clone()), (GgmlType::Q8_0, vec![64, 4]));
    let back = dequantize(q.ty, f.data(q).unwrap()).unwrap();
    assert!((back[0] + 1.0).abs() < 0.01 && (back[255] - 1.0).abs() < 0.01);
}
