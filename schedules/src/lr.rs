//! Learning-rate schedules as a pure function of the step, so a restart at any step gets the
//! same learning rate (no schedule state to save). [`WsdConfig`] is the one-piece
//! warmup-stable-decay shape; run specs give every stage its own phase and [`crate::plan::Plan::lr_at`]
//! strings them together. The 1-sqrt decay is YuLan-Mini's (and MiniCPM's).

use serde::{Deserialize, Serialize};

/// How the learning rate falls during the decay phase, `p` going 0 → 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayShape {
    /// `from + (to − from)·p`
    Linear,
    /// `to + (from − to)·(1 + cos πp)/2`
    Cosine,
    /// `to + (from − to)·(1 − √p)` (YuLan-Mini's annealing, "1-sqrt")
    #[serde(rename = "1-sqrt", alias = "one-sqrt")]
    OneSqrt,
}

impl DecayShape {
    /// The share of the way from `from` still left at progress `p` ∈ [0, 1] (1 → 0).
    pub fn remaining(self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match self {
            DecayShape::Linear => 1.0 - p,
            DecayShape::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            DecayShape::OneSqrt => 1.0 - p.sqrt(),
        }
    }
}

/// Warmup (linear from `warmup-start-factor`·peak to peak), stable (peak), decay (`shape`
/// down to `final-factor`·peak), then flat at the final value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WsdConfig {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub stable_steps: u64,
    pub decay_steps: u64,
    pub decay_shape: DecayShape,
    #[serde(default)]
    pub warmup_start_factor: f64,
    #[serde(default)]
    pub final_factor: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid learning-rate schedule: `{key}`: {message}")]
pub struct ScheduleError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError { key, message: message.into() }
}

impl WsdConfig {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return Err(err("peak-lr", format!("must be a positive number, got {}", self.peak_lr)));
        }
        if !(0.0..=1.0).contains(&self.warmup_start_factor) {
            return Err(err("warmup-start-factor", "must be within [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.final_factor) {
            return Err(err("final-factor", "must be within [0, 1]"));
        }
        if self.warmup_steps + self.stable_steps + self.decay_steps == 0 {
            return Err(err("decay-steps", "the schedule has no steps"));
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        let peak = self.peak_lr;
        if step < self.warmup_steps {
            let p = step as f64 / self.warmup_steps as f64;
            return peak * (self.warmup_start_factor + (1.0 - self.warmup_start_factor) * p);
        }
        let after_warmup = step - self.warmup_steps;
        if after_warmup < self.stable_steps {
            return peak;
        }
        let into_decay = after_warmup - self.stable_steps;
        let to = peak * self.final_factor;
        if into_decay >= self.decay_steps {
            return to;
        }
        let p = into_decay as f64 / self.decay_steps as f64;
        to + (peak - to) * self.decay_shape.remaining(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wsd(shape: DecayShape) -> WsdConfig {
        WsdConfig {
            peak_lr: 1e-2,
            warmup_steps: 10,
            stable_steps: 100,
            decay_steps: 40,
            decay_shape: shape,
            warmup_start_factor: 0.0,
            final_factor: 0.1,
        }
    }

    #[test]
    fn phases_and_endpoints() {
        for shape in [DecayShape::Linear, DecayShape::Cosine, DecayShape::OneSqrt] {
            let s = wsd(shape);
            assert_eq!(s.lr_at(0), 0.0);
            assert!((s.lr_at(5) - 5e-3).abs() < 1e-12);
            assert_eq!(s.lr_at(10), 1e-2);
            assert_eq!(s.lr_at(109), 1e-2);
            assert!((s.lr_at(110) - 1e-2).abs() < 1e-15, "decay starts at the peak");
            assert!((s.lr_at(150) - 1e-3).abs() < 1e-12);
            assert!((s.lr_at(10_000) - 1e-3).abs() < 1e-12);
        }
        // 1-sqrt falls fastest at first: a quarter into the decay it has done half the drop.
        let s = wsd(DecayShape::OneSqrt);
        assert!((s.lr_at(120) - (1e-3 + 9e-3 * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = wsd(DecayShape::Linear);
        s.final_factor = 1.5;
        assert_eq!(s.validate().unwrap_err().key, "final-factor");
        let bad: Result<WsdConfig, _> = toml::from_str(
            "peak-lr = 1.0\nwarmup-steps = 1\nstable-steps = 1\ndecay-steps = 1\ndecay-shape = \"sqrt\"\n",
        );
        assert!(bad.unwrap_err().to_string().contains("1-sqrt"), "the error lists the shapes");
        let ok: WsdConfig = toml::from_str(
            "peak-lr = 1.0\nwarmup-steps = 1\nstable-steps = 1\ndecay-steps = 1\ndecay-shape = \"one-sqrt\"\n",
        )
        .unwrap();
        assert!(ok.validate().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn bounded_and_non_increasing_after_warmup(w in 0u64..50, st in 0u64..50, d in 1u64..200, f in 0.0f64..1.0, shape in 0usize..3) {
            let shape = [DecayShape::Linear, DecayShape::Cosine, DecayShape::OneSqrt][shape];
            let s = WsdConfig { peak_lr: 3e-4, warmup_steps: w, stable_steps: st, decay_steps: d, decay_shape: shape, warmup_start_factor: 0.0, final_factor: f };
            let mut prev = f64::INFINITY;
            for step in w..w + st + d + 5 {
                let lr = s.lr_at(step);
                proptest::prop_assert!(lr <= 3e-4 + 1e-15 && lr >= 3e-4 * f - 1e-15);
                proptest::prop_assert!(lr <= prev + 1e-15);
                prev = lr;
            }
        }
    }
}
