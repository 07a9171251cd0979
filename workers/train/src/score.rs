//! Log-likelihood scoring for benchmark tasks (the requests come from `lehr-evals`): for each
//! (model input, continuation) pair, the sum of the log-probabilities the model gives the
//! continuation's tokens and whether each is the argmax — lm-eval's `loglikelihood`. Requests
//! are sorted longest first and batched with right padding (causal attention never looks
//! right, so padding changes nothing), as lm-eval's HF backend batches them.

use tch::{Device, Kind, Tensor};

use crate::model::Model;

/// One request: the tokens the model reads and the continuation's tokens, which are the last
/// `continuation.len()` tokens predicted from `input`'s last positions.
pub struct Scored {
    pub loglikelihood: f64,
    pub greedy: bool,
}

pub fn loglikelihoods(
    model: &Model,
    requests: &[(Vec<u32>, Vec<u32>)],
    batch: usize,
    device: Device,
    mut progress: impl FnMut(usize),
) -> Vec<Scored> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].0.len()));
    let mut out: Vec<Option<Scored>> = (0..requests.len()).map(|_| None).collect();
    tch::no_grad(|| {
        for chunk in order.chunks(batch.max(1)) {
            let width = chunk.iter().map(|&i| requests[i].0.len()).max().unwrap_or(1).max(1);
            let mut flat = vec![0i64; chunk.len() * width];
            for (r, &i) in chunk.iter().enumerate() {
                for (j, &t) in requests[i].0.iter().enumerate() {
                    flat[r * width + j] = t as i64;
                }
            }
            let ids = Tensor::from_slice(&flat).view([chunk.len() as i64, width as i64]).to_device(device);
            let logits = model.forward(&ids);
            for (r, &i) in chunk.iter().enumerate() {
                let (input, cont) = &requests[i];
                let n = cont.len() as i64;
                let lp = logits
                    .get(r as i64)
                    .narrow(0, input.len() as i64 - n, n)
                    .to_kind(Kind::Double)
                    .log_softmax(-1, Kind::Double);
                let target = Tensor::from_slice(&cont.iter().map(|&t| t as i64).collect::<Vec<_>>()).to_device(device);
                let picked = lp.gather(1, &target.unsqueeze(1), false).sum(Kind::Double).double_value(&[]);
                let greedy = lp.argmax(-1, false).eq_tensor(&target).all().int64_value(&[]) == 1;
                out[i] = Some(Scored { loglikelihood: picked, greedy });
            }
            progress(chunk.len());
        }
    });
    out.into_iter().map(|s| s.expect("every request scored")).collect()
}
