//! MinHash-LSH against the near-duplicate fixture's ground truth: our shingles reproduce the
//! labelled Jaccard similarities, the observed S-curve follows the predicted one, and pair-level
//! precision and recall at the threshold are sane. Prints the figures (`--nocapture`).
//!
//! Uses `../shared/fixtures/dedup` when present (LEHR_TEST_NO_SHARED=1 forces the in-repo
//! sample in examples/data/dedup).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use lehr_pipeline::dedup::{
    catch_probability, estimate_jaccard, DedupMethod, DedupSpec, Hasher, ShingleSet, ShingleSpec, ShingleUnit, TextNorm,
};
use serde_json::Value;

fn dedup_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = repo.join("../shared/fixtures/dedup");
    if std::env::var_os("LEHR_TEST_NO_SHARED").is_none() && shared.join("labels.csv").exists() {
        shared
    } else {
        repo.join("examples/data/dedup")
    }
}

struct Doc {
    text: String,
    lang: String,
}

fn docs() -> HashMap<String, Doc> {
    let text = std::fs::read_to_string(dedup_dir().join("near_dups.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                Doc { text: v["text"].as_str().unwrap().to_string(), lang: v["lang"].as_str().unwrap().to_string() },
            )
        })
        .collect()
}

fn csv_rows(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dedup_dir().join(name)).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// The fixture's shingling: lowercase, 5-grams of whitespace words (en, ko) or of non-space
/// characters (zh).
fn fixture_spec(bands: u32, rows: u32) -> DedupSpec {
    let mut languages = BTreeMap::new();
    languages.insert("zh".to_string(), ShingleSpec { unit: ShingleUnit::Chars, size: 5 });
    DedupSpec {
        method: DedupMethod::Minhash,
        keep: Default::default(),
        normalize: Some(vec![TextNorm::Lowercase]),
        bands,
        rows,
        seed: 1,
        shingle: ShingleSpec { unit: ShingleUnit::Words, size: 5 },
        languages,
        bucket_partitions: 0,
        annotate: true,
    }
}

fn shingles(spec: &DedupSpec, d: &Doc) -> ShingleSet {
    ShingleSet::new(&d.text.to_lowercase(), spec.shingle_for(Some(&d.lang)))
}

#[test]
fn shingles_reproduce_the_labelled_jaccard() {
    let docs = docs();
    let spec = fixture_spec(14, 8);
    let (mut n, mut exact, mut worst) = (0, 0, 0.0f64);
    for row in csv_rows("labels.csv") {
        let (id, cluster, kind, j) = (&row[0], &row[1], &row[2], row[3].parse::<f64>().unwrap());
        if kind == "original" {
            continue;
        }
        let ours = shingles(&spec, &docs[id]).jaccard(&shingles(&spec, &docs[cluster]));
        n += 1;
        let err = (ours - j).abs();
        worst = worst.max(err);
        if err < 0.00051 {
            exact += 1;
        }
    }
    println!("labelled variants: {n}; Jaccard equal to 4 decimals: {exact}; largest difference {worst:.4}");
    assert!(n > 100);
    assert!(exact as f64 >= 0.99 * n as f64, "{exact} of {n}");
}

#[test]
fn s_curve_and_pair_precision_recall_follow_the_ground_truth() {
    let docs = docs();
    let (bands, rows) = (14, 8);
    let spec = fixture_spec(bands, rows);
    let hasher = Hasher::new(&spec);
    let mut sigs: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut band_of: HashMap<&str, Vec<u128>> = HashMap::new();
    for (id, d) in &docs {
        sigs.insert(id, hasher.signature(&d.text, Some(&d.lang)).unwrap());
        band_of.insert(id, hasher.band_hashes(&d.text, Some(&d.lang)).unwrap());
    }
    // Candidate pairs: every pair of documents sharing a band hash.
    let mut buckets: HashMap<(usize, u128), Vec<&str>> = HashMap::new();
    for (id, bs) in &band_of {
        for (b, h) in bs.iter().enumerate() {
            buckets.entry((b, *h)).or_default().push(id);
        }
    }
    let mut candidates: std::collections::HashSet<(String, String)> = Default::default();
    for members in buckets.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                candidates.insert((x.to_string(), y.to_string()));
            }
        }
    }
    let pairs: Vec<(String, String, f64, bool)> = csv_rows("pairs.csv")
        .into_iter()
        .map(|r| {
            let (a, b) = if r[0] < r[1] { (r[0].clone(), r[1].clone()) } else { (r[1].clone(), r[0].clone()) };
            (a, b, r[2].parse().unwrap(), r[3] == "1")
        })
        .collect();
    let labelled: HashMap<(String, String), f64> = pairs.iter().map(|p| ((p.0.clone(), p.1.clone()), p.2)).collect();

    // The S-curve, observed (share of labelled pairs caught) against predicted, per 0.1 bin.
    println!("{:>9} {:>6} {:>9} {:>9}", "Jaccard", "pairs", "observed", "predicted");
    for bin in 2..10 {
        let (lo, hi) = (bin as f64 / 10.0, (bin + 1) as f64 / 10.0);
        let in_bin: Vec<_> = pairs.iter().filter(|p| p.2 >= lo && (p.2 < hi || bin == 9)).collect();
        if in_bin.is_empty() {
            continue;
        }
        let caught = in_bin.iter().filter(|p| candidates.contains(&(p.0.clone(), p.1.clone()))).count();
        let observed = caught as f64 / in_bin.len() as f64;
        let predicted = in_bin.iter().map(|p| catch_probability(p.2, bands, rows)).sum::<f64>() / in_bin.len() as f64;
        println!("{lo:.1}–{hi:.1} {:>6} {observed:>9.3} {predicted:>9.3}", in_bin.len());
        if in_bin.len() >= 30 {
            // binomial standard error of the bin's share, plus a margin for the curve's slope
            let se = (predicted * (1.0 - predicted) / in_bin.len() as f64).sqrt();
            assert!(
                (observed - predicted).abs() <= 3.0 * se + 0.08,
                "bin {lo:.1}: observed {observed:.3}, predicted {predicted:.3}, {} pairs",
                in_bin.len()
            );
        }
    }

    // Pair level at the threshold: reported = candidates whose estimated similarity ≥ t.
    let t = spec.threshold();
    let reported: Vec<&(String, String)> =
        candidates.iter().filter(|(a, b)| estimate_jaccard(&sigs[a.as_str()], &sigs[b.as_str()]) >= t).collect();
    let positives = pairs.iter().filter(|p| p.2 >= t).count();
    let tp = reported.iter().filter(|k| labelled.get(k).is_some_and(|&j| j >= t)).count();
    let near = reported.iter().filter(|k| labelled.get(k).is_some_and(|&j| j >= t - 0.1)).count();
    let cross = candidates.iter().filter(|k| !labelled.contains_key(k)).count();
    let (precision, recall) = (tp as f64 / reported.len() as f64, tp as f64 / positives as f64);
    println!(
        "threshold {t:.3}: {positives} true pairs, {} reported, precision {precision:.3} (within 0.1 of t: {:.3}), recall {recall:.3}; candidates with true J < 0.2: {cross}",
        reported.len(),
        near as f64 / reported.len() as f64
    );
    assert!(precision >= 0.75, "precision {precision}");
    assert!(near as f64 >= 0.97 * reported.len() as f64, "reported pairs far below the threshold");
    assert!(recall >= 0.8, "recall {recall}");
    // Unrelated documents (true J < 0.2) essentially never share a band.
    assert!(cross <= 1 + candidates.len() / 200, "{cross} candidates with J < 0.2");
}

#[test]
fn hashes_ignore_what_normalization_removes() {
    let spec = DedupSpec {
        method: DedupMethod::Exact,
        normalize: Some(vec![TextNorm::Nfkc, TextNorm::Lowercase, TextNorm::Whitespace]),
        ..fixture_spec(1, 1)
    };
    let h = Hasher::new(&spec);
    let a = h.band_hashes("Hello   World\n", None).unwrap();
    assert_eq!(a, h.band_hashes("hello world", None).unwrap());
    assert_eq!(a, h.band_hashes("ＨＥＬＬＯ world", None).unwrap());
    assert_ne!(a, h.band_hashes("hello, world", None).unwrap());
    assert!(h.band_hashes(" \n ", None).is_none());
}
