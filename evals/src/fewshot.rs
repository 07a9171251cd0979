//! Few-shot examples drawn exactly as lm-eval 0.4.13 draws them: its `ContextSampler` holds a
//! Python `random.Random(seed)` (seed 1234 unless told) made once per task and drawn from doc
//! after doc in evaluation order. With the examples from the evaluated file itself (lm-eval's
//! `fewshot_split` equal to the test split) it draws `n + 1` with `random.sample`, drops the
//! rows equal to the evaluated one and keeps the first `n`; from a separate file it draws `n`.
//! `first_n` takes the first `n` (less the evaluated row). The generator is CPython's: the
//! Mersenne Twister seeded through `init_by_array`, `_randbelow` by rejection over
//! `getrandbits`, and `sample`'s two algorithms (a shrinking pool for small populations, a
//! set of taken indices for large ones), so the same seed gives the same examples.

use serde::{Deserialize, Serialize};

/// CPython's `random.Random` as far as `sample` needs it.
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut r = PyRandom { mt: [0; 624], index: 624 };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                self.mt[0] = self.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                self.mt[0] = self.mt[623];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for `k` ≤ 64.
    fn getrandbits(&mut self, k: u32) -> u64 {
        match k {
            0 => 0,
            1..=32 => (self.next_u32() >> (32 - k)) as u64,
            _ => {
                // CPython fills 32-bit words from the least significant end
                let lo = self.next_u32() as u64;
                let hi = (self.next_u32() >> (64 - k)) as u64;
                lo | (hi << 32)
            }
        }
    }

    /// `_randbelow(n)`: rejection sampling over `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `random.sample(range(n), k)`: indices into the population.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            setsize += 4usize.pow(((k * 3) as f64).log(4.0).ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut taken = std::collections::HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while taken.contains(&j) {
                    j = self.randbelow(n);
                }
                taken.insert(j);
                out.push(j);
            }
        }
        out
    }
}

/// lm-eval's `fewshot_config.sampler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    #[default]
    Default,
    FirstN,
}

/// Draws few-shot examples (indices into the pool) for one task.
pub struct Sampler {
    rnd: PyRandom,
    kind: SamplerKind,
    /// The pool is the evaluated file: drop the evaluated row from its own examples.
    same_file: bool,
}

impl Sampler {
    pub fn new(kind: SamplerKind, seed: u64, same_file: bool) -> Self {
        Sampler { rnd: PyRandom::new(seed), kind, same_file }
    }

    /// `n` examples for an evaluated row; `equal(i)` says whether pool row `i` equals it.
    pub fn draw(&mut self, pool: usize, n: usize, equal: impl Fn(usize) -> bool) -> Result<Vec<usize>, String> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let short = |have: usize| format!("{n} few-shot examples asked for, but the pool has {have}");
        match self.kind {
            SamplerKind::FirstN => {
                let keep: Vec<usize> = (0..pool).filter(|&i| !(self.same_file && equal(i))).take(n).collect();
                if keep.len() < n {
                    return Err(short(keep.len()));
                }
                Ok(keep)
            }
            SamplerKind::Default => {
                if !self.same_file {
                    if pool < n {
                        return Err(short(pool));
                    }
                    return Ok(self.rnd.sample(pool, n));
                }
                if pool < n + 1 {
                    return Err(short(pool.saturating_sub(1)));
                }
                let mut res: Vec<usize> = self.rnd.sample(pool, n + 1).into_iter().filter(|&i| !equal(i)).collect();
                res.truncate(n);
                if res.len() < n {
                    // duplicates of the evaluated row were drawn: resample without any of them
                    let others: Vec<usize> = (0..pool).filter(|&i| !equal(i)).collect();
                    if others.len() < n {
                        return Err(short(others.len()));
                    }
                    res = self.rnd.sample(others.len(), n).into_iter().map(|i| others[i]).collect();
                }
                Ok(res)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mersenne_twister_reference_outputs() {
        // the first outputs of init_by_array([0x123, 0x234, 0x345, 0x456]) from mt19937ar.c's
        // published test vector
        let mut r = PyRandom { mt: [0; 624], index: 624 };
        r.init_by_array(&[0x123, 0x234, 0x345, 0x456]);
        let got: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![1067595299, 955945823, 477289528, 4107218783, 4228976476]);
    }

    proptest! {
        #[test]
        fn samples_are_distinct_and_in_range(seed in 0u64..1_000_000, n in 1usize..300, k in 0usize..40) {
            let k = k.min(n);
            let s = PyRandom::new(seed).sample(n, k);
            let set: std::collections::HashSet<_> = s.iter().collect();
            prop_assert_eq!(s.len(), k);
            prop_assert_eq!(set.len(), k);
            prop_assert!(s.iter().all(|&i| i < n));
        }

        #[test]
        fn the_evaluated_row_is_never_its_own_example(seed in 0u64..1000, pool in 2usize..60, n in 1usize..5, me in 0usize..60) {
            let me = me % pool;
            let n = n.min(pool - 1);
            let got = Sampler::new(SamplerKind::Default, seed, true).draw(pool, n, |i| i == me).unwrap();
            prop_assert_eq!(got.len(), n);
            prop_assert!(!got.contains(&me));
        }
    }
}
