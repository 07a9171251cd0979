//! Perplexity and next-token accuracy of a model on token shards: the shards' documents in
//! listing order as one stream, cut into windows of `L + 1` tokens that overlap by one (every
//! token after the first is predicted exactly once), up to a token budget.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::model::Model;
use lehr_pipeline::tokens::TokenShard;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    /// Tokens predicted.
    pub tokens: u64,
    pub sequences: u64,
    pub sequence_length: i64,
    /// Mean cross-entropy in nats per token.
    pub loss: f64,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    pub top5_accuracy: f64,
}

/// Evaluates `model` on up to `max_tokens` predicted tokens of `shards`, `batch` windows of
/// `seq_len` at a time.
pub fn evaluate(
    model: &Model,
    shards: &[TokenShard],
    seq_len: i64,
    max_tokens: u64,
    batch: usize,
    device: Device,
) -> EvalReport {
    let mut stream: Vec<u32> = Vec::new();
    let want = max_tokens + 1;
    for s in shards {
        if stream.len() as u64 >= want {
            break;
        }
        let take = (want - stream.len() as u64).min(s.meta.tokens);
        s.extend_range(0, take, &mut stream);
    }
    let l = seq_len.max(1) as usize;
    let windows: Vec<&[u32]> =
        (0..).map(|i| i * l).take_while(|&s| s + l < stream.len()).map(|s| &stream[s..s + l + 1]).collect();
    let (mut nll, mut top1, mut top5, mut n) = (0.0f64, 0u64, 0u64, 0u64);
    tch::no_grad(|| {
        for chunk in windows.chunks(batch.max(1)) {
            let flat: Vec<i64> = chunk.iter().flat_map(|w| w.iter().map(|&t| t as i64)).collect();
            let b = Tensor::from_slice(&flat).view([chunk.len() as i64, seq_len + 1]).to_device(device);
            let inputs = b.narrow(1, 0, seq_len);
            let targets = b.narrow(1, 1, seq_len).reshape([-1]);
            let logits = model.forward(&inputs).to_kind(Kind::Float).view([-1, model.config.vocab_size]);
            nll +=
                logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Sum, -100, 0.0).double_value(&[]);
            let (_, idx) = logits.topk(5, -1, true, true);
            let hit = idx.eq_tensor(&targets.unsqueeze(1));
            top1 += hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as u64;
            top5 += hit.sum(Kind::Int64).int64_value(&[]) as u64;
            n += targets.size()[0] as u64;
        }
    });
    let loss = if n == 0 { f64::NAN } else { nll / n as f64 };
    EvalReport {
        tokens: n,
        sequences: windows.len() as u64,
        sequence_length: seq_len,
        loss,
        perplexity: loss.exp(),
        top1_accuracy: if n == 0 { 0.0 } else { top1 as f64 / n as f64 },
        top5_accuracy: if n == 0 { 0.0 } else { top5 as f64 / n as f64 },
    }
}
