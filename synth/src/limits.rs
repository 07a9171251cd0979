//! The client's decisions as pure functions of time: token buckets for requests and tokens per
//! minute, exponential backoff with full jitter (honouring `Retry-After`), and a circuit breaker
//! per endpoint. The shell (`client.rs`) only sleeps and sends.

use std::time::Duration;

/// A token bucket of `capacity` units refilled at `capacity` per minute. Times are seconds on
/// any monotonic clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: f64,
}

impl Bucket {
    pub fn per_minute(capacity: u64, now: f64) -> Bucket {
        let capacity = capacity as f64;
        Bucket { capacity, per_sec: capacity / 60.0, level: capacity, last: now }
    }

    fn refill(&mut self, now: f64) {
        if now > self.last {
            self.level = (self.level + (now - self.last) * self.per_sec).min(self.capacity);
            self.last = now;
        }
    }

    /// Takes `cost` units now, or says how long to wait before they are there. A cost above the
    /// capacity is let through once the bucket is full (it could never be paid otherwise) and
    /// leaves the bucket in debt.
    pub fn take(&mut self, now: f64, cost: f64) -> Result<(), Duration> {
        self.refill(now);
        let need = cost.min(self.capacity);
        if self.level >= need {
            self.level -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.level) / self.per_sec))
        }
    }

    /// Corrects an estimate once the real cost is known (`delta` > 0: it cost more).
    pub fn charge(&mut self, now: f64, delta: f64) {
        self.refill(now);
        self.level = (self.level - delta).min(self.capacity);
    }
}

/// The wait before retry number `retry` (0 for the first retry): the server's `Retry-After`
/// when it gave one, else a uniformly drawn time in [0, min(max, base · 2^retry)] ("full
/// jitter"); `unit` is the draw in [0, 1).
pub fn backoff(retry: u32, base: f64, max: f64, retry_after: Option<f64>, unit: f64) -> Duration {
    if let Some(s) = retry_after {
        return Duration::from_secs_f64(s.clamp(0.0, max.max(s.min(3600.0))));
    }
    let cap = (base * 2f64.powi(retry.min(62) as i32)).min(max);
    Duration::from_secs_f64(cap * unit.clamp(0.0, 1.0))
}

/// One endpoint's health: closed (in rotation), open until a time, or half-open (one probe in
/// flight decides).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breaker {
    failures: u32,
    open_until: Option<f64>,
    probing: bool,
    /// Times the breaker opened.
    pub opened: u64,
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    Yes,
    /// The probe after a cool-down: its outcome closes or reopens the breaker.
    Probe,
    /// Out of rotation until this time.
    No(f64),
}

impl Breaker {
    pub fn admit(&mut self, now: f64) -> Admit {
        match self.open_until {
            None => Admit::Yes,
            Some(t) if now < t || self.probing => Admit::No(if self.probing { now + 0.05 } else { t }),
            Some(_) => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// Whether the endpoint would take a request now (without starting a probe).
    pub fn available(&self, now: f64) -> bool {
        match self.open_until {
            None => true,
            Some(t) => now >= t && !self.probing,
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.probing = false;
    }

    /// A failure that says something about the endpoint (timeouts, resets, 5xx; not a 429,
    /// which is the endpoint working as asked, nor a 400).
    pub fn failure(&mut self, now: f64, threshold: u32, cooldown: f64) {
        self.failures += 1;
        if self.probing || self.failures >= threshold {
            if self.open_until.is_none() || self.probing {
                self.opened += 1;
            }
            self.open_until = Some(now + cooldown);
            self.probing = false;
        }
    }
}

/// Picks an endpoint by weight among those `available`, with `unit` in [0, 1); `None` when
/// none is.
pub fn pick(weights: &[f64], available: &[bool], unit: f64) -> Option<usize> {
    let total: f64 = weights.iter().zip(available).filter(|(_, a)| **a).map(|(w, _)| w).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = unit.clamp(0.0, 1.0) * total;
    let mut last = None;
    for (i, (w, a)) in weights.iter().zip(available).enumerate() {
        if !a {
            continue;
        }
        last = Some(i);
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the arrival pattern, what a bucket admits by time t is at most its capacity
        /// plus what it refilled (capacity per minute), and a refused take says how long to wait,
        /// after which the same take succeeds.
        #[test]
        fn bucket_never_admits_more_than_the_rate(
            capacity in 1u64..10_000,
            arrivals in proptest::collection::vec((0.0f64..5.0, 1.0f64..500.0), 1..200),
        ) {
            let mut b = Bucket::per_minute(capacity, 0.0);
            let (mut now, mut admitted) = (0.0, 0.0);
            for (gap, cost) in arrivals {
                now += gap;
                match b.clone().take(now, cost) {
                    Ok(()) => { b.take(now, cost).unwrap(); admitted += cost; }
                    Err(wait) => {
                        let later = now + wait.as_secs_f64() + 1e-9;
                        prop_assert!(b.clone().take(later, cost).is_ok());
                    }
                }
                let cap = capacity as f64;
                // one over-capacity take may overdraw by its excess
                prop_assert!(admitted <= cap + cap * now / 60.0 + 500.0 + 1e-6);
            }
        }

        #[test]
        fn backoff_is_bounded_and_grows(retry in 0u32..40, base in 0.0f64..5.0, extra in 0.0f64..100.0, unit in 0.0f64..1.0) {
            let max = base + extra;
            let d = backoff(retry, base, max, None, unit).as_secs_f64();
            prop_assert!(d <= max + 1e-9);
            prop_assert!(d <= base * 2f64.powi(retry as i32) + 1e-9);
            prop_assert!(backoff(retry, base, max, None, 0.999).as_secs_f64() + 1e-9 >= backoff(retry.saturating_sub(1), base, max, None, 0.999).as_secs_f64());
        }

        #[test]
        fn pick_only_available(weights in proptest::collection::vec(0.1f64..10.0, 1..6), mask in proptest::collection::vec(any::<bool>(), 6), unit in 0.0f64..1.0) {
            let avail = &mask[..weights.len()];
            match pick(&weights, avail, unit) {
                Some(i) => prop_assert!(avail[i]),
                None => prop_assert!(avail.iter().all(|a| !a)),
            }
        }
    }

    #[test]
    fn retry_after_wins() {
        assert_eq!(backoff(0, 1.0, 60.0, Some(2.5), 0.0), Duration::from_secs_f64(2.5));
        assert_eq!(backoff(3, 1.0, 60.0, None, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(10, 1.0, 60.0, None, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let mut b = Breaker::default();
        for t in 0..3 {
            assert_eq!(b.admit(t as f64), Admit::Yes);
            b.failure(t as f64, 3, 10.0);
        }
        assert_eq!(b.opened, 1);
        assert_eq!(b.admit(5.0), Admit::No(12.0));
        assert!(!b.available(5.0));
        assert_eq!(b.admit(12.0), Admit::Probe);
        assert!(matches!(b.admit(12.0), Admit::No(_)), "one probe at a time");
        b.failure(12.5, 3, 10.0);
        assert_eq!((b.opened, b.admit(13.0)), (2, Admit::No(22.5)));
        assert_eq!(b.admit(23.0), Admit::Probe);
        b.success();
        assert_eq!(b.admit(23.0), Admit::Yes);
    }

    #[test]
    fn weights_split_requests() {
        let w = [3.0, 1.0];
        let n = 1000;
        let first = (0..n).filter(|i| pick(&w, &[true, true], *i as f64 / n as f64) == Some(0)).count();
        assert_eq!(first, 750);
        assert_eq!(pick(&w, &[false, true], 0.1), Some(1));
    }
}
