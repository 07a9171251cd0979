//! AdamW with parameter groups, written on tch tensors rather than tch's `nn::AdamW`, whose
//! moment estimates cannot be read or restored: exact resume needs them in the checkpoint.
//! Decoupled weight decay as in Loshchilov & Hutter (PyTorch's `AdamW`): `p -= lr·wd·p`, then
//! the Adam step with bias correction.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::TrainError;

#[derive(Debug, Clone, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// YuLan-Mini's: β 0.9 / 0.95, weight decay 0.1 (its eps 1e-15 is for bf16 µP; 1e-8 here).
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Whether a parameter gets weight decay: not norms, biases or embeddings (the usual groups).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm") || name.contains("embed_tokens"))
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// `(name, parameter, decays)`, sorted by name.
    params: Vec<(String, Tensor, bool)>,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    /// Optimizer steps taken.
    pub steps: i64,
    /// Parameters added after the start (growth): the step count when they joined, so their
    /// bias correction counts their own steps, as PyTorch's per-parameter `step` does.
    born: BTreeMap<String, i64>,
}

impl AdamW {
    pub fn new(named: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let mut params: Vec<(String, Tensor, bool)> = named
            .into_iter()
            .map(|(n, t)| {
                let d = decays(&n);
                (n, t, d)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params.iter().map(|(n, t, _)| (n.clone(), t.zeros_like())).collect();
        let v = params.iter().map(|(n, t, _)| (n.clone(), t.zeros_like())).collect();
        AdamW { config, params, m, v, steps: 0, born: BTreeMap::new() }
    }

    /// Adds parameters (new blocks at a growth boundary) with fresh moments; the others keep
    /// theirs.
    pub fn add_params(&mut self, named: Vec<(String, Tensor)>) {
        for (n, t) in named {
            self.m.insert(n.clone(), t.zeros_like());
            self.v.insert(n.clone(), t.zeros_like());
            self.born.insert(n.clone(), self.steps);
            let d = decays(&n);
            self.params.push((n, t, d));
        }
        self.params.sort_by(|a, b| a.0.cmp(&b.0));
    }

    pub fn zero_grad(&mut self) {
        for (_, p, _) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The global L2 norm of the gradients; scales them down to `max_norm` when above it.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let sq: Vec<Tensor> = self
            .params
            .iter()
            .filter_map(|(_, p, _)| {
                let g = p.grad();
                g.defined().then(|| g.to_kind(Kind::Float).pow_tensor_scalar(2).sum(Kind::Float))
            })
            .collect();
        if sq.is_empty() {
            return 0.0;
        }
        let norm = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt().double_value(&[]);
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for (_, p, _) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            });
        }
        norm
    }

    /// One step at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let c = &self.config;
        tch::no_grad(|| {
            for (name, p, decay) in &mut self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let t = (self.steps - self.born.get(name.as_str()).copied().unwrap_or(0)) as f64;
                let bc1 = 1.0 - c.beta1.powf(t);
                let bc2 = 1.0 - c.beta2.powf(t);
                let m = self.m.get_mut(name.as_str()).expect("state per parameter");
                let v = self.v.get_mut(name.as_str()).expect("state per parameter");
                if *decay && c.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                // In place where libtorch allows, two temporaries per parameter (g², the
                // denominator): on large models the optimizer is memory-bound.
                // m ← β1·m + (1−β1)·g and v ← β2·v + (1−β2)·g², as lerps.
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v.lerp_(&g.square(), 1.0 - c.beta2);
                // p ← p − lr · (m/bc1) / (√(v/bc2) + ε), as p += m / (−(bc1/lr)·(√v/√bc2 + ε)).
                if lr != 0.0 {
                    let mut denom = v.sqrt();
                    let _ = denom.g_div_scalar_(bc2.sqrt()).g_add_scalar_(c.eps).g_mul_scalar_(-bc1 / lr);
                    let _ = p.addcdiv_(m, &denom);
                }
            }
        });
    }

    /// The moment estimates and the step count, as named tensors for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_string(), Tensor::from_slice(&[self.steps as f32]))];
        for (n, m) in &self.m {
            out.push((format!("m.{n}"), m.shallow_clone()));
        }
        for (n, v) in &self.v {
            out.push((format!("v.{n}"), v.shallow_clone()));
        }
        for (n, b) in &self.born {
            out.push((format!("born.{n}"), Tensor::from_slice(&[*b as f32])));
        }
        out
    }

    /// Restores [`state`](Self::state); every parameter must be there, with its shape.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), TrainError> {
        let map: BTreeMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let get = |key: &str, like: &Tensor| -> Result<Tensor, TrainError> {
            let t = map.get(key).ok_or_else(|| TrainError::Config(format!("optimizer state has no `{key}`")))?;
            if t.size() != like.size() {
                return Err(TrainError::Config(format!(
                    "optimizer state `{key}` has shape {:?}, expected {:?}",
                    t.size(),
                    like.size()
                )));
            }
            Ok(t.to_kind(like.kind()).to_device(like.device()))
        };
        for (name, p, _) in &self.params {
            let m = get(&format!("m.{name}"), p)?;
            let v = get(&format!("v.{name}"), p)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        let steps = map.get("steps").ok_or_else(|| TrainError::Config("optimizer state has no `steps`".into()))?;
        self.steps = steps.double_value(&[0]) as i64;
        self.born = named
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix("born.")?.to_string(), t.double_value(&[0]) as i64)))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_the_adamw_formula_and_groups() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("layer.weight".into(), w.shallow_clone()), ("layer.bias".into(), b.shallow_clone())],
            AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 },
        );
        let loss = (&w * &w).sum(Kind::Float) + (&b * 3.0).sum(Kind::Float);
        loss.backward();
        opt.step(0.01);
        // First step: m̂ = g, v̂ = g², so the update is lr·sign(g) (plus decay on the weight).
        let wv: Vec<f32> = Vec::try_from(w.detach()).unwrap();
        let expected_w0 = 1.0 * (1.0 - 0.01 * 0.1) - 0.01;
        let expected_w1 = -2.0 * (1.0 - 0.01 * 0.1) + 0.01;
        assert!((wv[0] as f64 - expected_w0).abs() < 1e-6 && (wv[1] as f64 - expected_w1).abs() < 1e-6, "{wv:?}");
        let bv: Vec<f32> = Vec::try_from(b.detach()).unwrap();
        assert!((bv[0] as f64 - (0.5 - 0.01)).abs() < 1e-6, "no decay on biases: {bv:?}");
        // State round trip.
        let state = opt.state();
        let mut other = AdamW::new(
            vec![("layer.weight".into(), w.shallow_clone()), ("layer.bias".into(), b.shallow_clone())],
            opt.config.clone(),
        );
        other.load_state(&state).unwrap();
        assert_eq!(other.steps, 1);
        assert!(other.load_state(&state[..1]).is_err());
        let _ = Device::Cpu;
    }
}
