//! Against ggml's own C code: the `libggml-base.so` that npm's node-llama-cpp ships (set up by
//! scripts/setup.sh, loaded here through Python's ctypes) exports the reference quantizers
//! `quantize_row_*_ref` — what `llama-quantize` runs when no importance matrix is given — and
//! the dequantizers. Our quantizers give their bytes exactly and our dequantizers their floats
//! bit for bit, for every type we write (Q4_0 … Q8_0 and the K-quants Q4_K, Q5_K, Q6_K), on
//! weight-like rows and on blocks that test the edges.

use std::path::{Path, PathBuf};
use std::process::Command;

use lehr_formats::quants::{dequantize, quantize};
use lehr_formats::GgmlType;
use rand::{Rng, SeedableRng};

const REF: &str = r#"
import ctypes, sys, numpy as np
lib = ctypes.CDLL(sys.argv[1])
x = np.fromfile(sys.argv[2], dtype=np.float32)
sizes = {"q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q8_0": (32, 34),
         "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210)}
for name in sys.argv[4].split(","):
    block, size = sizes[name]
    out = np.zeros(x.size // block * size, dtype=np.uint8)
    f = getattr(lib, f"quantize_row_{name}_ref")
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(x.ctypes.data, out.ctypes.data, x.size)
    out.tofile(f"{sys.argv[3]}/{name}.ref")
    ours = np.fromfile(f"{sys.argv[3]}/{name}.ours", dtype=np.uint8)
    back = np.zeros(ours.size // size * block, dtype=np.float32)
    g = getattr(lib, f"dequantize_row_{name}")
    g.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    g(ours.ctypes.data, back.ctypes.data, back.size)
    back.tofile(f"{sys.argv[3]}/{name}.deq")
"#;

fn ggml_base() -> PathBuf {
    let node = std::env::var("LEHR_NODE")
        .expect("LEHR_NODE is unset: run the tests through scripts/test.sh (setup.sh installs node-llama-cpp)");
    let lib = Path::new(&node).join("node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so");
    assert!(lib.exists(), "{} is missing: rerun scripts/setup.sh", lib.display());
    lib
}

/// Rows of 256 that look like trained weights (normal, σ 0.02, a few outliers), then edge blocks.
fn values() -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let normal = |rng: &mut rand::rngs::StdRng| -> f32 {
        // Box–Muller
        let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let mut x: Vec<f32> = (0..64 * 256).map(|_| normal(&mut rng) * 0.02).collect();
    for i in (0..x.len()).step_by(997) {
        x[i] *= 25.0;
    }
    let mut edge = vec![0.0f32; 256]; // all zero
    edge.extend(std::iter::repeat_n(0.5f32, 256)); // constant
    edge.extend((0..256).map(|i| -((i % 7) as f32) * 0.01 - 0.001)); // all negative
    edge.extend((0..256).map(|i| if i == 100 { 3.0 } else { 1e-7 * (i as f32 - 128.0) })); // one outlier
    edge.extend((0..256).map(|i| (i as f32 - 128.0) * 1e-9)); // tiny
    edge.extend((0..256).map(|i| ((i % 32) as f32 - 16.0) * 0.25)); // ties on the grid
    edge.extend((0..256).map(|_| (rng.random::<f32>() - 0.5) * 200.0)); // large uniform
    edge.extend((0..256).map(|i| if i < 128 { 0.0 } else { normal(&mut rng) })); // half-zero super-block
    x.extend(edge);
    x
}

#[test]
fn our_quantizers_give_ggmls_reference_bytes() {
    let venv = std::env::var("LEHR_VENV").expect("LEHR_VENV is unset: run the tests through scripts/test.sh");
    let x = values();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("x.f32");
    std::fs::write(&src, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let types = [
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
        ("q8_0", GgmlType::Q8_0),
        ("q4_K", GgmlType::Q4_K),
        ("q5_K", GgmlType::Q5_K),
        ("q6_K", GgmlType::Q6_K),
    ];
    let mut ours = Vec::new();
    for (name, ty) in types {
        let q = quantize(ty, &x).unwrap();
        std::fs::write(dir.path().join(format!("{name}.ours")), &q).unwrap();
        ours.push(q);
    }
    let names: Vec<&str> = types.iter().map(|(n, _)| *n).collect();
    let out = Command::new(Path::new(&venv).join("bin/python"))
        .args(["-c", REF])
        .arg(ggml_base())
        .arg(&src)
        .arg(dir.path())
        .arg(names.join(","))
        .output()
        .unwrap();
    assert!(out.status.success(), "ggml reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut failures = Vec::new();
    for ((name, ty), q) in types.iter().zip(&ours) {
        let (block, size) = ty.block();
        let theirs = std::fs::read(dir.path().join(format!("{name}.ref"))).unwrap();
        assert_eq!(theirs.len(), q.len(), "{name}");
        let bad: Vec<usize> =
            (0..q.len() / size).filter(|b| q[b * size..(b + 1) * size] != theirs[b * size..(b + 1) * size]).collect();
        if !bad.is_empty() {
            failures.push(format!(
                "{name}: {} of {} blocks differ from ggml's (first: block {})",
                bad.len(),
                q.len() / size,
                bad[0]
            ));
        }
        let deq: Vec<f32> = std::fs::read(dir.path().join(format!("{name}.deq")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mine = dequantize(*ty, q).unwrap();
        assert_eq!(mine.len(), q.len() / size * block);
        if mine.iter().zip(&deq).any(|(a, b)| a.to_bits() != b.to_bits()) {
            failures.push(format!("{name}: our dequantization differs from ggml's"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
