//! Metrics as lm-eval computes them. Multiple choice: `acc` is whether the choice of highest
//! log-likelihood (the first of equals, numpy's argmax) is the gold one; `acc_norm` divides each
//! log-likelihood by its choice's length in characters first; each is averaged over documents
//! with the standard error `sample_stddev / sqrt(n)` (ddof 1). `f1` is scikit-learn's macro F1
//! of predictions against gold. `loglikelihood` tasks: `acc` is whether the continuation is the
//! greedy one, `perplexity` is `exp(-mean log-likelihood)`. lm-eval gives F1 no standard error
//! and perplexity a bootstrap one; lehr reports neither ("N/A").

use crate::task::{Doc, Metric};

fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// One document's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DocScore {
    pub doc: usize,
    pub line: usize,
    pub loglikelihoods: Vec<f64>,
    pub pred: usize,
    pub pred_norm: usize,
    pub gold: usize,
    /// `loglikelihood` tasks: whether every continuation token was the argmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<bool>,
}

/// One document from its requests' log-likelihoods and greedy flags (in choice order).
pub fn score_doc(i: usize, doc: &Doc, lls: Vec<f64>, greedy: &[bool]) -> DocScore {
    let choices = doc.choices();
    let norm: Vec<f64> = lls.iter().zip(choices).map(|(l, c)| l / c.chars().count() as f64).collect();
    DocScore {
        doc: i,
        line: doc.line,
        pred: argmax(&lls),
        pred_norm: argmax(&norm),
        gold: doc.gold,
        greedy: choices.is_empty().then(|| greedy.iter().all(|g| *g)),
        loglikelihoods: lls,
    }
}

/// scikit-learn's `f1_score(gold, pred, average="macro")`: the mean over the labels present in
/// either of `2·tp / (2·tp + fp + fn)`.
fn macro_f1(scores: &[DocScore]) -> f64 {
    let mut labels: Vec<usize> = scores.iter().flat_map(|s| [s.gold, s.pred]).collect();
    labels.sort_unstable();
    labels.dedup();
    let f1 = |l: usize| {
        let tp = scores.iter().filter(|s| s.pred == l && s.gold == l).count() as f64;
        let fp = scores.iter().filter(|s| s.pred == l && s.gold != l).count() as f64;
        let fneg = scores.iter().filter(|s| s.pred != l && s.gold == l).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        }
    };
    labels.iter().map(|&l| f1(l)).sum::<f64>() / labels.len() as f64
}

/// (value, standard error) of a metric over documents; NaN where lehr gives no error.
pub fn aggregate(metric: Metric, scores: &[DocScore]) -> (f64, f64) {
    match metric {
        Metric::F1 => return (macro_f1(scores), f64::NAN),
        Metric::Perplexity => {
            let mean = scores.iter().map(|s| s.loglikelihoods[0]).sum::<f64>() / scores.len() as f64;
            return ((-mean).exp(), f64::NAN);
        }
        _ => {}
    }
    let x: Vec<f64> = scores
        .iter()
        .map(|s| {
            let hit = match (metric, s.greedy) {
                (Metric::Acc, Some(g)) => g,
                (Metric::Acc, None) => s.pred == s.gold,
                _ => s.pred_norm == s.gold,
            };
            hit as u8 as f64
        })
        .collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let stderr = if x.len() > 1 {
        (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() / n.sqrt()
    } else {
        f64::NAN
    };
    (mean, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Input;
    use proptest::prelude::*;
    use serde_json::Value;

    fn doc(choices: &[&str], gold: usize) -> Doc {
        let choices = choices.iter().map(|s| s.to_string()).collect();
        Doc { line: 1, raw: Value::Null, input: Input::Choices { context: String::new(), choices }, gold }
    }

    #[test]
    fn acc_and_acc_norm() {
        // "x" has the higher sum, "long" the higher per character
        let s = score_doc(0, &doc(&["x", "long"], 0), vec![-1.0, -1.5], &[]);
        assert_eq!((s.pred, s.pred_norm), (0, 1));
        let t = score_doc(1, &doc(&["x", "y"], 1), vec![-1.0, -1.0], &[]);
        assert_eq!(t.pred, 0, "the first of equals");
        let (acc, se) = aggregate(Metric::Acc, &[s.clone(), t.clone()]);
        assert_eq!(acc, 0.5);
        assert!((se - 0.5).abs() < 1e-12);
        assert_eq!(aggregate(Metric::AccNorm, &[s.clone(), t.clone()]).0, 0.0);
        // gold 0, pred 0 and gold 1, pred 0: label 0 has F1 2/3, label 1 has 0
        assert!((aggregate(Metric::F1, &[s, t]).0 - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn greedy_match_and_perplexity() {
        let d = Doc {
            line: 1,
            raw: Value::Null,
            input: Input::Target { context: "a".into(), continuation: " b".into() },
            gold: 0,
        };
        let s = [score_doc(0, &d, vec![-1.0], &[true]), score_doc(1, &d, vec![-3.0], &[false])];
        assert_eq!(aggregate(Metric::Acc, &s).0, 0.5);
        assert!((aggregate(Metric::Perplexity, &s).0 - 2f64.exp()).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn acc_is_a_mean_of_hits(lls in proptest::collection::vec(proptest::collection::vec(-50.0f64..0.0, 2..5), 1..40)) {
            let scores: Vec<DocScore> = lls.iter().enumerate().map(|(i, l)| {
                let d = doc(&vec!["ab"; l.len()], i % l.len());
                score_doc(i, &d, l.clone(), &[])
            }).collect();
            let (acc, se) = aggregate(Metric::Acc, &scores);
            prop_assert!((0.0..=1.0).contains(&acc));
            // equal-length choices: acc_norm is acc
            prop_assert_eq!(aggregate(Metric::AccNorm, &scores).0, acc);
            if scores.len() > 1 { prop_assert!(se >= 0.0); }
        }
    }
}
