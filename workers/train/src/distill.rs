//! Knowledge distillation (`[distill]`): a teacher model runs in the trainer's process beside
//! the student, without gradients (bf16 weights by default), on every micro-batch of the stages
//! that distill. The objective per token is α·CE + (1 − α)·T²·KL, the KL between the
//! temperature-softened distributions: forward KL(teacher ‖ student) by default, reverse
//! KL(student ‖ teacher) on request, or forward KL over the teacher's top-k tokens
//! (renormalized) when `top-k` is set. Masked like the cross-entropy (targets of -100 count
//! nothing).

use std::path::{Path, PathBuf};

use lehr_schedules::spec::{DistillKind, DistillSpec, TeacherPrecision};
use tch::{nn, Device, Kind, Tensor};

use crate::model::{load_hf, Model};
use crate::TrainError;

/// The teacher: its model, frozen, on the student's device.
pub struct Teacher {
    pub spec: DistillSpec,
    pub vs: nn::VarStore,
    pub model: Model,
    pub dir: PathBuf,
}

impl Teacher {
    /// Loads `spec.teacher` on `device` and checks it speaks the student's vocabulary: the
    /// same size, and when both tokenizers are known, the same token for every id.
    pub fn load(
        spec: &DistillSpec,
        device: Device,
        student_vocab: i64,
        tokenizer: Option<&[u8]>,
    ) -> Result<Self, TrainError> {
        let dir = PathBuf::from(&spec.teacher);
        let bad = |why: String| TrainError::Config(format!("[distill] teacher {}: {why}", dir.display()));
        let (mut vs, mut model) = load_hf(&dir, device).map_err(|e| bad(e.to_string()))?;
        if model.config.vocab_size != student_vocab {
            return Err(bad(format!(
                "its vocabulary has {} tokens, the student's {student_vocab}; distillation compares the two \
                 distributions token by token, so the teacher must use the shards' tokenizer",
                model.config.vocab_size
            )));
        }
        if let Some(ours) = tokenizer {
            check_same_tokens(&dir, ours).map_err(bad)?;
        }
        vs.freeze();
        if spec.precision == TeacherPrecision::Bf16 {
            vs.bfloat16();
            model.compute = Kind::BFloat16;
        }
        Ok(Teacher { spec: spec.clone(), vs, model, dir })
    }

    /// The teacher's logits `[N, vocab]` (fp32) for inputs `[B, T]`.
    pub fn logits(&self, inputs: &Tensor) -> Tensor {
        tch::no_grad(|| self.model.forward(inputs)).view([-1, self.model.config.vocab_size]).to_kind(Kind::Float)
    }
}

/// The teacher's `tokenizer.json` (when it has one) must give every id the token the shards'
/// tokenizer does.
fn check_same_tokens(dir: &Path, ours: &[u8]) -> Result<(), String> {
    let path = dir.join("tokenizer.json");
    let Ok(theirs) = std::fs::read(&path) else { return Ok(()) };
    if theirs == ours {
        return Ok(());
    }
    let vocab = |bytes: &[u8], what: &str| -> Result<std::collections::HashMap<String, u32>, String> {
        let t = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("{what}: {e}"))?;
        Ok(t.get_vocab(true))
    };
    let (a, b) = (vocab(&theirs, &path.display().to_string())?, vocab(ours, "the shards' tokenizer")?);
    let mut diff: Vec<(&String, &u32)> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).collect();
    diff.sort_by_key(|(_, v)| **v);
    match diff.first() {
        None if a.len() == b.len() => Ok(()),
        None => Err(format!("its tokenizer has {} tokens, the shards' {}", a.len(), b.len())),
        Some((tok, id)) => Err(format!(
            "its tokenizer differs from the shards' ({} of {} tokens differ; first: {tok:?} is id {id} in the \
             teacher's, {} in the shards'); distill from a teacher of the same tokenizer",
            diff.len(),
            a.len(),
            b.get(*tok).map_or("absent".to_string(), |v| v.to_string())
        )),
    }
}

/// Σ over unmasked tokens of the KL at temperature `t` between `student` and `teacher` logits
/// (`[N, vocab]`, fp32), in the spec's direction; `targets` `[N]` masks (-100: not counted).
pub fn kd_sum(student: &Tensor, teacher: &Tensor, targets: &Tensor, spec: &DistillSpec) -> Tensor {
    let t = spec.temperature;
    let s = student.to_kind(Kind::Float) / t;
    let teacher = teacher.to_kind(Kind::Float) / t;
    let per_token = match (spec.kind, spec.top_k) {
        (DistillKind::ForwardKl, Some(k)) => {
            let k = (k as i64).min(teacher.size()[1]);
            let (values, index) = teacher.topk(k, -1, true, false);
            let lt = values.log_softmax(-1, Kind::Float);
            let ls = s.log_softmax(-1, Kind::Float).gather(-1, &index, false);
            (lt.exp() * (&lt - ls)).sum_dim_intlist(-1, false, Kind::Float)
        }
        (DistillKind::ForwardKl, None) => {
            let lt = teacher.log_softmax(-1, Kind::Float);
            let ls = s.log_softmax(-1, Kind::Float);
            (lt.exp() * (&lt - ls)).sum_dim_intlist(-1, false, Kind::Float)
        }
        (DistillKind::ReverseKl, _) => {
            let lt = teacher.log_softmax(-1, Kind::Float);
            let ls = s.log_softmax(-1, Kind::Float);
            (ls.exp() * (&ls - lt)).sum_dim_intlist(-1, false, Kind::Float)
        }
    };
    let mask = targets.ne(-100).to_kind(Kind::Float);
    (per_token * mask).sum(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lehr_schedules::spec::DistillKind;

    fn spec(kind: DistillKind, t: f64, top_k: Option<u32>) -> DistillSpec {
        DistillSpec {
            teacher: "t".into(),
            alpha: 0.5,
            temperature: t,
            kind,
            top_k,
            stages: vec![],
            precision: TeacherPrecision::Fp32,
        }
    }

    fn softmax(x: &[f64], t: f64) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = x.iter().map(|v| ((v - m) / t).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
    }

    #[test]
    fn kd_term_equals_a_hand_computed_kl() {
        let s = [[1.0, 2.0, 0.5, -1.0], [0.0, 0.3, 0.2, 2.0], [3.0, 0.0, 0.0, 0.0]];
        let t = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.5, 0.5, 1.2], [0.0, 0.0, 0.0, 9.0]];
        let st = Tensor::from_slice(&s.concat().iter().map(|v| *v as f32).collect::<Vec<_>>()).view([3, 4]);
        let tt = Tensor::from_slice(&t.concat().iter().map(|v| *v as f32).collect::<Vec<_>>()).view([3, 4]);
        // the third token is masked out
        let targets = Tensor::from_slice(&[1i64, 3, -100]);
        for temp in [1.0, 2.0] {
            let fwd: f64 = (0..2).map(|i| kl(&softmax(&t[i], temp), &softmax(&s[i], temp))).sum();
            let rev: f64 = (0..2).map(|i| kl(&softmax(&s[i], temp), &softmax(&t[i], temp))).sum();
            let got = |k| kd_sum(&st, &tt, &targets, &spec(k, temp, None)).double_value(&[]);
            assert!(
                (got(DistillKind::ForwardKl) - fwd).abs() < 1e-6,
                "T={temp}: {} vs {fwd}",
                got(DistillKind::ForwardKl)
            );
            assert!(
                (got(DistillKind::ReverseKl) - rev).abs() < 1e-6,
                "T={temp}: {} vs {rev}",
                got(DistillKind::ReverseKl)
            );
            // top-2 of the teacher, renormalized, against the student's full-vocabulary log-probs
            let mut top2 = 0.0;
            for i in 0..2 {
                let mut idx: Vec<usize> = (0..4).collect();
                idx.sort_by(|a, b| t[i][*b].total_cmp(&t[i][*a]));
                let p = softmax(&[t[i][idx[0]], t[i][idx[1]]], temp);
                let q = softmax(&s[i], temp);
                top2 += p[0] * (p[0].ln() - q[idx[0]].ln()) + p[1] * (p[1].ln() - q[idx[1]].ln());
            }
            let got = kd_sum(&st, &tt, &targets, &spec(DistillKind::ForwardKl, temp, Some(2))).double_value(&[]);
            assert!((got - top2).abs() < 1e-6, "top-2 T={temp}: {got} vs {top2}");
        }
        // Equal distributions: zero.
        let zero = kd_sum(&st, &st, &targets, &spec(DistillKind::ForwardKl, 1.0, None)).double_value(&[]);
        assert!(zero.abs() < 1e-7);
    }
}
