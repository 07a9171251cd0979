//! The few-shot sampler's generator against CPython's own `random.Random`: the same seed gives
//! the same `sample` draws, call after call, on both of CPython's paths (a shrinking pool for
//! small populations, a set of taken indices for large ones) — so `--num-fewshot` picks the
//! examples lm-eval picks. Runs the project's venv Python (scripts/setup.sh), else `python3`.

use lehr_evals::fewshot::PyRandom;

fn python() -> String {
    match std::env::var("LEHR_VENV") {
        Ok(v) => format!("{v}/bin/python"),
        Err(_) => "python3".into(),
    }
}

#[test]
fn sample_draws_equal_cpythons() {
    // (population, k) per call, in order, from one generator per seed
    let calls: Vec<(usize, usize)> =
        vec![(60, 2), (60, 6), (10, 10), (1000, 3), (1000, 26), (5, 1), (100_000, 9), (22, 21), (23, 6), (300, 40)];
    let seeds = [0u64, 1, 1234, 42, 4_294_967_296 + 7];
    let script = format!(
        "import random, json\nout = []\nfor s in {seeds:?}:\n    r = random.Random(s)\n    out.append([r.sample(range(n), k) for n, k in {calls:?}])\nprint(json.dumps(out))"
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python (set LEHR_VENV, run scripts/setup.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Vec<Vec<usize>>> = serde_json::from_slice(&out.stdout).unwrap();
    for (s, want) in seeds.iter().zip(&theirs) {
        let mut r = PyRandom::new(*s);
        let got: Vec<Vec<usize>> = calls.iter().map(|&(n, k)| r.sample(n, k)).collect();
        assert_eq!(&got, want, "seed {s}");
    }
}
