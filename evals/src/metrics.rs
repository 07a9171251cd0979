//! Multiple-choice metrics as lm-eval computes them: `acc` is whether the choice of highest
//! log-likelihood (the first of equals, numpy's argmax) is the gold one; `acc_norm` divides each
//! log-likelihood by its choice's length in characters first; each is averaged over documents
//! with the standard error `sample_stddev / sqrt(n)` (ddof 1).

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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DocScore {
    pub doc: usize,
    pub line: usize,
    pub loglikelihoods: Vec<f64>,
    pub pred: usize,
    pub pred_norm: usize,
    pub gold: usize,
}

pub fn score_doc(i: usize, doc: &Doc, lls: Vec<f64>) -> DocScore {
    let norm: Vec<f64> = lls.iter().zip(&doc.choices).map(|(l, c)| l / c.chars().count() as f64).collect();
    DocScore {
        doc: i,
        line: doc.line,
        pred: argmax(&lls),
        pred_norm: argmax(&norm),
        gold: doc.gold,
        loglikelihoods: lls,
    }
}

/// (mean, standard error) of a metric over documents.
pub fn aggregate(metric: Metric, scores: &[DocScore]) -> (f64, f64) {
    let x: Vec<f64> = scores
        .iter()
        .map(|s| {
            let p = if metric == Metric::Acc { s.pred } else { s.pred_norm };
            (p == s.gold) as u8 as f64
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
    use proptest::prelude::*;

    fn doc(choices: &[&str], gold: usize) -> Doc {
        Doc { line: 1, context: String::new(), choices: choices.iter().map(|s| s.to_string()).collect(), gold }
    }

    #[test]
    fn acc_and_acc_norm() {
        // "x" has the higher sum, "long" the higher per character
        let s = score_doc(0, &doc(&["x", "long"], 0), vec![-1.0, -1.5]);
        assert_eq!((s.pred, s.pred_norm), (0, 1));
        let t = score_doc(1, &doc(&["x", "y"], 1), vec![-1.0, -1.0]);
        assert_eq!(t.pred, 0, "the first of equals");
        let (acc, se) = aggregate(Metric::Acc, &[s.clone(), t.clone()]);
        assert_eq!(acc, 0.5);
        assert!((se - 0.5).abs() < 1e-12);
        assert_eq!(aggregate(Metric::AccNorm, &[s, t]).0, 0.0);
    }

    proptest! {
        #[test]
        fn acc_is_a_mean_of_hits(lls in proptest::collection::vec(proptest::collection::vec(-50.0f64..0.0, 2..5), 1..40)) {
            let scores: Vec<DocScore> = lls.iter().enumerate().map(|(i, l)| {
                let d = doc(&vec!["ab"; l.len()], i % l.len());
                score_doc(i, &d, l.clone())
            }).collect();
            let (acc, se) = aggregate(Metric::Acc, &scores);
            prop_assert!((0.0..=1.0).contains(&acc));
            // equal-length choices: acc_norm is acc
            prop_assert_eq!(aggregate(Metric::AccNorm, &scores).0, acc);
            if scores.len() > 1 { prop_assert!(se >= 0.0); }
        }
    }
}
