//! Text generation with a KV cache, for `lehr serve`: a static batch of prompts is left-padded
//! to one length, prefilled in one forward (each row at its own positions, pads masked out),
//! then decoded one token per row per step from the cache. A row's tokens do not depend on the
//! other rows of its batch (positions and masks are per row; the test checks greedy output
//! against transformers' `generate` alone and in mixed batches).
//!
//! Sampling is per row and reproducible: greedy (`temperature` 0) is libtorch's argmax of the
//! logits, as transformers' greedy search; otherwise temperature, then top-k, then top-p
//! (nucleus), drawn with the row's own seeded generator (SplitMix64), so a seed gives the same
//! text whatever else is in the batch.

use tch::{Device, Kind, Tensor};

use crate::model::{KvCache, Model};

#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0: greedy.
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches this (1: all).
    pub top_p: f64,
    /// Keep the k likeliest tokens (0: all).
    pub top_k: usize,
    pub seed: u64,
    /// Also return the n likeliest alternatives of every generated token (with their logprobs).
    pub top_logprobs: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0, top_logprobs: 0 }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<i64>,
    pub max_tokens: usize,
    /// Token ids that end the row (EOS); they are not part of the output.
    pub stop_ids: Vec<i64>,
    pub sampling: Sampling,
}

/// One generated token: id, its log-probability under the model, and the alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: i64,
    pub logprob: f64,
    pub top: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An EOS id, or the caller's stop (a stop string).
    Stop,
    /// `max_tokens`, or the model's context.
    Length,
}

/// What the caller says after each token of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Stop,
}

/// SplitMix64: a tiny, well-mixed generator, seeded per row.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next token of one row from its logits `[vocab]` (fp32, CPU).
fn pick(logits: &Tensor, s: &Sampling, rng: &mut Rng) -> Token {
    let logp = logits.log_softmax(-1, Kind::Float);
    let id = if s.temperature <= 0.0 {
        logits.argmax(-1, false).int64_value(&[])
    } else {
        let scaled: Vec<f32> = Vec::try_from(logits / s.temperature).expect("float logits");
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
        if s.top_k > 0 {
            order.truncate(s.top_k);
        }
        let max = scaled[order[0]] as f64;
        let weights: Vec<f64> = order.iter().map(|&i| (scaled[i] as f64 - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut keep = order.len();
        if s.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, w) in weights.iter().enumerate() {
                acc += w / total;
                if acc >= s.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let total: f64 = weights[..keep].iter().sum();
        let mut u = rng.next_f64() * total;
        let mut chosen = order[keep - 1];
        for (i, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                chosen = order[i];
                break;
            }
            u -= w;
        }
        chosen as i64
    };
    let logprob = logp.double_value(&[id]);
    let top = if s.top_logprobs > 0 {
        let (v, i) = logp.topk(s.top_logprobs as i64, -1, true, true);
        let v: Vec<f64> = Vec::try_from(v.to_kind(Kind::Double)).expect("values");
        let i: Vec<i64> = Vec::try_from(i).expect("indices");
        i.into_iter().zip(v).collect()
    } else {
        Vec::new()
    };
    Token { id, logprob, top }
}

/// Generates for every request of the batch; `each(row, token)` sees every token as it comes
/// (it may end the row). Returns each row's tokens and why it ended.
pub fn generate(
    model: &Model,
    requests: &[Request],
    device: Device,
    mut each: impl FnMut(usize, &Token) -> Next,
) -> Vec<(Vec<Token>, Finish)> {
    let b = requests.len();
    let mut out: Vec<(Vec<Token>, Option<Finish>)> =
        requests.iter().map(|r| (Vec::new(), (r.max_tokens == 0).then_some(Finish::Length))).collect();
    if b == 0 {
        return Vec::new();
    }
    let context = model.config.max_position_embeddings as usize;
    let p = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0).max(1);
    // left padding: row r's prompt ends at column p - 1
    let mut ids = vec![0i64; b * p];
    let mut pos = vec![0i64; b * p];
    let mut valid = vec![false; b * p];
    for (r, req) in requests.iter().enumerate() {
        let off = p - req.prompt.len();
        for (j, &t) in req.prompt.iter().enumerate() {
            ids[r * p + off + j] = t;
            pos[r * p + off + j] = j as i64;
            valid[r * p + off + j] = true;
        }
    }
    // query i sees key j when j ≤ i and j is a real token; a pad query sees itself (no NaN rows)
    let mut mask = vec![false; b * p * p];
    for r in 0..b {
        for i in 0..p {
            for j in 0..=i {
                mask[(r * p + i) * p + j] = valid[r * p + j] || i == j;
            }
        }
    }
    let mut keys: Vec<Vec<bool>> = (0..b).map(|r| valid[r * p..(r + 1) * p].to_vec()).collect();
    let mut rngs: Vec<Rng> = requests.iter().map(|r| Rng(r.sampling.seed)).collect();
    let mut lens: Vec<usize> = requests.iter().map(|r| r.prompt.len()).collect();
    let mut cache = KvCache::default();
    let bool_tensor = |v: &[bool], shape: &[i64]| {
        Tensor::from_slice(&v.iter().map(|&x| x as u8).collect::<Vec<u8>>())
            .to_kind(Kind::Bool)
            .view(shape)
            .to_device(device)
    };
    let mut step_ids = Tensor::from_slice(&ids).view([b as i64, p as i64]).to_device(device);
    let mut step_pos = Tensor::from_slice(&pos).view([b as i64, p as i64]).to_device(device);
    let mut step_mask = bool_tensor(&mask, &[b as i64, 1, p as i64, p as i64]);
    let max_steps = requests.iter().map(|r| r.max_tokens).max().unwrap_or(0);
    for _ in 0..max_steps {
        let logits = tch::no_grad(|| {
            // one row has no padding: no mask, so libtorch takes its fused kernels
            let h = model.hidden_cached(&step_ids, &step_pos, (b > 1).then_some(&step_mask), &mut cache);
            let last = h.narrow(1, h.size()[1] - 1, 1);
            model.head(&last).to_kind(Kind::Float).squeeze_dim(1).to_device(Device::Cpu)
        });
        let mut next = vec![0i64; b];
        for r in 0..b {
            if out[r].1.is_some() {
                continue;
            }
            let req = &requests[r];
            let tok = pick(&logits.get(r as i64), &req.sampling, &mut rngs[r]);
            next[r] = tok.id;
            if req.stop_ids.contains(&tok.id) {
                out[r].1 = Some(Finish::Stop);
                continue;
            }
            let verdict = each(r, &tok);
            out[r].0.push(tok);
            lens[r] += 1;
            if verdict == Next::Stop {
                out[r].1 = Some(Finish::Stop);
            } else if out[r].0.len() >= req.max_tokens || lens[r] >= context {
                out[r].1 = Some(Finish::Length);
            }
        }
        if out.iter().all(|o| o.1.is_some()) {
            break;
        }
        // one more column: each row's new token (finished rows feed a masked filler)
        for r in 0..b {
            keys[r].push(out[r].1.is_none());
        }
        let width = keys[0].len();
        let mut m = vec![false; b * width];
        for r in 0..b {
            for j in 0..width {
                m[r * width + j] = keys[r][j] || j == width - 1;
            }
        }
        step_ids = Tensor::from_slice(&next).view([b as i64, 1]).to_device(device);
        let p_now: Vec<i64> = lens.iter().map(|&l| l as i64 - 1).collect();
        step_pos = Tensor::from_slice(&p_now).view([b as i64, 1]).to_device(device);
        step_mask = bool_tensor(&m, &[b as i64, 1, 1, width as i64]);
    }
    out.into_iter().map(|(t, f)| (t, f.unwrap_or(Finish::Length))).collect()
}
