//! Log-likelihood scoring for benchmark tasks (the requests come from `lehr-evals`): for each
//! (model input, continuation) pair, the sum of the log-probabilities the model gives the
//! continuation's tokens and whether each is the argmax — lm-eval's `loglikelihood`.
//!
//! Requests that read the same prefix (a question's choices) share one row: the prefix once,
//! then each continuation as its own segment that attends to the prefix and to itself only,
//! at the positions it would have alone. The prefix is computed once and its last position
//! predicts every choice's first token, so a four-choice question costs about a quarter of
//! four separate rows (more with few-shot contexts). Rows are sorted longest first and batched
//! under a token budget with right padding; the output head runs only at the positions that
//! predict continuation tokens.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::model::Model;

pub struct Scored {
    pub loglikelihood: f64,
    pub greedy: bool,
}

/// How many rows go into one forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// At most this many rows (packed questions).
    Rows(usize),
    /// As many rows as fit a token budget picked for the device.
    Auto,
}

impl Batch {
    fn tokens(self, device: Device) -> usize {
        match self {
            Batch::Rows(_) => usize::MAX,
            Batch::Auto if device.is_cuda() => 65_536,
            Batch::Auto => 4_096,
        }
    }
    fn rows(self) -> usize {
        match self {
            Batch::Rows(n) => n.max(1),
            Batch::Auto => usize::MAX,
        }
    }
}

/// One packed row: a prefix and the continuations that follow it.
struct Row {
    prefix: Vec<u32>,
    /// (request index, continuation tokens)
    segments: Vec<(usize, Vec<u32>)>,
}

impl Row {
    fn len(&self) -> usize {
        self.prefix.len() + self.segments.iter().map(|s| s.1.len() - 1).sum::<usize>()
    }
}

/// `requests[i] = (input, continuation)`: the model reads `input`, whose last
/// `continuation.len()` positions predict the continuation. `progress` gets the number of
/// requests done after each batch.
pub fn loglikelihoods(
    model: &Model,
    requests: &[(Vec<u32>, Vec<u32>)],
    batch: Batch,
    device: Device,
    mut progress: impl FnMut(usize),
) -> Vec<Scored> {
    // the prefix each request reads before its continuation's first prediction
    let mut by_prefix: HashMap<&[u32], usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for (i, (input, cont)) in requests.iter().enumerate() {
        assert!(!cont.is_empty() && input.len() >= cont.len(), "request {i}: input must end with the continuation");
        let prefix = &input[..input.len() + 1 - cont.len()];
        assert_eq!(
            &input[prefix.len()..],
            &cont[..cont.len() - 1],
            "request {i}: input must end with the continuation"
        );
        let r = *by_prefix.entry(prefix).or_insert_with(|| {
            rows.push(Row { prefix: prefix.to_vec(), segments: Vec::new() });
            rows.len() - 1
        });
        rows[r].segments.push((i, cont.clone()));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let budget = batch.tokens(device);
    let mut out: Vec<Option<Scored>> = (0..requests.len()).map(|_| None).collect();
    tch::no_grad(|| {
        let mut start = 0;
        while start < rows.len() {
            // rows are longest first: the first row of a batch sets its width
            let width = rows[start].len().max(1);
            let fit = (budget / width).clamp(1, batch.rows());
            let chunk = &rows[start..(start + fit).min(rows.len())];
            score_batch(model, chunk, width, device, &mut out);
            progress(chunk.iter().map(|r| r.segments.len()).sum());
            start += chunk.len();
        }
    });
    out.into_iter().map(|s| s.expect("every request scored")).collect()
}

fn score_batch(model: &Model, rows: &[Row], width: usize, device: Device, out: &mut [Option<Scored>]) {
    let b = rows.len();
    let mut ids = vec![0i64; b * width];
    let mut pos = vec![0i64; b * width];
    // mask[r][q][k]: query q may attend to key k
    let mut mask = vec![false; b * width * width];
    // (flat hidden index, target token, request) for every predicted continuation token
    let mut picks: Vec<(i64, i64, usize)> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let base = r * width;
        let m = |q: usize, k: usize| (r * width + q) * width + k;
        let p = row.prefix.len();
        for (j, &t) in row.prefix.iter().enumerate() {
            ids[base + j] = t as i64;
            pos[base + j] = j as i64;
            for k in 0..=j {
                mask[m(j, k)] = true;
            }
        }
        let mut at = p;
        for (req, cont) in &row.segments {
            let seg = at;
            for (j, &t) in cont[..cont.len() - 1].iter().enumerate() {
                let q = seg + j;
                ids[base + q] = t as i64;
                pos[base + q] = (p + j) as i64;
                for k in 0..p {
                    mask[m(q, k)] = true;
                }
                for k in seg..=q {
                    mask[m(q, k)] = true;
                }
            }
            // token 0 is predicted by the prefix's last position, token j by the segment's j-1
            for (j, &t) in cont.iter().enumerate() {
                let from = if j == 0 { p - 1 } else { seg + j - 1 };
                picks.push(((base + from) as i64, t as i64, *req));
            }
            at += cont.len() - 1;
        }
        // padding attends to itself only (a row of no keys would be NaN)
        for q in at..width {
            mask[m(q, q)] = true;
        }
    }
    let (bi, wi) = (b as i64, width as i64);
    let ids = Tensor::from_slice(&ids).view([bi, wi]).to_device(device);
    let pos = Tensor::from_slice(&pos).view([bi, wi]).to_device(device);
    let mask = Tensor::from_slice(&mask).view([bi, 1, wi, wi]).to_device(device);
    let h = model.hidden(&ids, Some((&pos, &mask)));
    let dim = h.size()[2];
    let at = Tensor::from_slice(&picks.iter().map(|p| p.0).collect::<Vec<_>>()).to_device(device);
    let targets = Tensor::from_slice(&picks.iter().map(|p| p.1).collect::<Vec<_>>()).to_device(device);
    let logits = model.head(&h.view([bi * wi, dim]).index_select(0, &at));
    let lp = logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let picked = Vec::<f64>::try_from(lp.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1).to_device(Device::Cpu))
        .expect("log-probabilities");
    let best = Vec::<i64>::try_from(lp.argmax(-1, false).to_device(Device::Cpu)).expect("argmax");
    let mut sums: HashMap<usize, (f64, bool)> = HashMap::new();
    for (k, (_, t, req)) in picks.iter().enumerate() {
        let e = sums.entry(*req).or_insert((0.0, true));
        e.0 += picked[k];
        e.1 &= best[k] == *t;
    }
    for (req, (ll, greedy)) in sums {
        out[req] = Some(Scored { loglikelihood: ll, greedy });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use tch::nn;

    /// Each request alone through the plain causal forward.
    fn unpacked(model: &Model, input: &[u32], cont: &[u32]) -> (f64, bool) {
        let ids = Tensor::from_slice(&input.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
        let n = cont.len() as i64;
        let lp = model
            .forward(&ids)
            .get(0)
            .narrow(0, input.len() as i64 - n, n)
            .to_kind(Kind::Double)
            .log_softmax(-1, Kind::Double);
        let mut ll = 0.0;
        let mut greedy = true;
        for (j, &t) in cont.iter().enumerate() {
            let row = lp.get(j as i64);
            ll += row.double_value(&[t as i64]);
            greedy &= row.argmax(-1, false).int64_value(&[]) == t as i64;
        }
        (ll, greedy)
    }

    #[test]
    fn packed_rows_score_as_separate_forwards() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig { qk_norm: true, ..ModelConfig::preset("tiny", 96).unwrap() };
        let model = Model::new(&vs, &cfg).unwrap();
        // two questions of three choices (one a single token) sharing their prefixes, one lone
        // request, and a duplicate prefix across questions
        let q1: Vec<u32> = vec![5, 9, 17, 3, 44];
        let q2: Vec<u32> = vec![7, 7, 8];
        let mut reqs = Vec::new();
        for (prefix, conts) in
            [(&q1, vec![vec![12u32, 13, 14], vec![60], vec![61, 62]]), (&q2, vec![vec![1u32, 2], vec![90, 91, 92, 93]])]
        {
            for c in conts {
                let mut input = prefix.clone();
                input.extend(&c[..c.len() - 1]);
                reqs.push((input, c));
            }
        }
        reqs.push((vec![40, 41, 42, 43], vec![43, 50]));
        reqs.push((q1.clone(), vec![44 + 1]));
        for batch in [Batch::Rows(1), Batch::Rows(3), Batch::Auto] {
            let got = loglikelihoods(&model, &reqs, batch, Device::Cpu, |_| {});
            for ((input, cont), s) in reqs.iter().zip(&got) {
                let (ll, greedy) = unpacked(&model, input, cont);
                assert!(
                    (ll - s.loglikelihood).abs() < 1e-4,
                    "{batch:?} {input:?}+{cont:?}: {ll} vs {}",
                    s.loglikelihood
                );
                assert_eq!(greedy, s.greedy);
            }
        }
    }
}
