//! fastText language-id models (`lid.176.ftz`, `lid.176.bin`, GlotLID-style supervised models).
//!
//! Loading and the sentence vector (average of the input rows of the words, their character
//! n-grams and `</s>`) come from the pure-Rust `fasttext` crate. Its `predict` on quantized
//! models treats every loss as a flat softmax, but lid.176 was trained with hierarchical
//! softmax: the output rows are the inner nodes of a Huffman tree over the label counts, not the
//! labels. So lehr builds that tree from the label counts (the same construction as fastText's
//! `HierarchicalSoftmaxLoss::buildTree`) and walks it (best-first, log-probabilities with
//! fastText's `log(x + 1e-5)`), which reproduces fastText's labels and probabilities.

use std::path::Path;

use fasttext::args::LossName;
use fasttext::FastText;

pub struct FastTextLid {
    model: FastText,
    labels: Vec<String>,
    tree: Option<Tree>,
}

struct Tree {
    /// children of inner node `i` are `left[i - n_labels]`, `right[i - n_labels]`
    left: Vec<usize>,
    right: Vec<usize>,
    n_labels: usize,
}

impl FastTextLid {
    pub fn load(path: &Path) -> Result<FastTextLid, String> {
        if !path.exists() {
            return Err(format!(
                "language-id model {} does not exist (lid.176.ftz is in ../shared/fixtures/langid/; \
                 point `model` at a local copy)",
                path.display()
            ));
        }
        let model =
            FastText::load_model(path).map_err(|e| format!("cannot load fastText model {}: {e}", path.display()))?;
        Self::check_supported(path, model.args())?;
        let (labels, counts) = model.get_labels();
        if labels.is_empty() {
            return Err(format!("{} is not a supervised fastText model (no labels)", path.display()));
        }
        let labels = labels.into_iter().map(|l| l.trim_start_matches("__label__").to_string()).collect();
        let tree = (model.args().loss == LossName::HierarchicalSoftmax).then(|| Tree::build(&counts));
        Ok(FastTextLid { model, labels, tree })
    }

    /// Refuses models lehr would read wrongly: the hierarchical-softmax walk reads the dense
    /// output matrix, which a model quantized with `-qout` does not have (its labels would be
    /// garbage, silently).
    fn check_supported(path: &Path, args: &fasttext::args::Args) -> Result<(), String> {
        if args.qout {
            return Err(format!(
                "{} was quantized with -qout (quantized output matrix), which lehr cannot score; \
                 quantize it without -qout (lid.176.ftz is fine) or use the unquantized .bin",
                path.display()
            ));
        }
        Ok(())
    }

    /// The most likely label and its probability; `None` for text without any token.
    pub fn predict(&self, text: &str) -> Option<(String, f64)> {
        let line = text.replace('\n', " ");
        if line.trim().is_empty() {
            return None;
        }
        match &self.tree {
            None => {
                let p = self.model.predict(&line, 1, 0.0);
                let best = p.into_iter().next()?;
                Some((best.label.trim_start_matches("__label__").to_string(), best.prob as f64))
            }
            Some(tree) => {
                let hidden = self.model.get_sentence_vector(&line);
                let (label, logp) = tree.best(&hidden, self.model.output_matrix());
                Some((self.labels[label].clone(), (logp as f64).exp()))
            }
        }
    }
}

fn std_log(x: f32) -> f32 {
    (x + 1e-5).ln()
}

impl Tree {
    /// Huffman tree over the label counts (counts sorted by decreasing frequency, as fastText's
    /// dictionary stores labels).
    fn build(counts: &[i64]) -> Tree {
        let n = counts.len();
        let total = 2 * n - 1;
        let mut count = vec![i64::MAX / 4; total];
        count[..n].copy_from_slice(counts);
        let (mut left, mut right) = (vec![0usize; n.saturating_sub(1)], vec![0usize; n.saturating_sub(1)]);
        let mut leaf = n as i64 - 1;
        let mut node = n;
        for i in n..total {
            let mut mini = [0usize; 2];
            for m in mini.iter_mut() {
                if leaf >= 0 && count[leaf as usize] < count[node] {
                    *m = leaf as usize;
                    leaf -= 1;
                } else {
                    *m = node;
                    node += 1;
                }
            }
            left[i - n] = mini[0];
            right[i - n] = mini[1];
            count[i] = count[mini[0]] + count[mini[1]];
        }
        Tree { left, right, n_labels: n }
    }

    /// Depth-first search with pruning: the label with the highest log-probability.
    fn best(&self, hidden: &[f32], wo: &fasttext::matrix::DenseMatrix) -> (usize, f32) {
        let mut best = (0usize, f32::NEG_INFINITY);
        let root = 2 * self.n_labels - 2;
        let mut stack = vec![(root, 0.0f32)];
        while let Some((node, score)) = stack.pop() {
            if score < best.1 {
                continue;
            }
            if node < self.n_labels {
                best = (node, score);
                continue;
            }
            let row = wo.row((node - self.n_labels) as i64);
            let f: f32 = row.iter().zip(hidden).map(|(a, b)| a * b).sum();
            let f = 1.0 / (1.0 + (-f).exp());
            let i = node - self.n_labels;
            // push the likelier child last so it is explored first
            let l = (self.left[i], score + std_log(1.0 - f));
            let r = (self.right[i], score + std_log(f));
            if l.1 > r.1 {
                stack.push(r);
                stack.push(l);
            } else {
                stack.push(l);
                stack.push(r);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_with_a_quantized_output_matrix_are_refused() {
        let mut args = fasttext::args::Args::default();
        assert!(FastTextLid::check_supported(Path::new("lid.ftz"), &args).is_ok());
        args.qout = true;
        let e = FastTextLid::check_supported(Path::new("lid-qout.ftz"), &args).unwrap_err();
        assert!(e.contains("lid-qout.ftz") && e.contains("-qout"), "{e}");
    }
}
