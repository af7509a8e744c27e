//! Capped exponential backoff with jitter for delivery retries.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(10);

/// Retry delays: 100 ms doubling up to 10 s, each drawn from the upper half of its step so
/// that many workers retrying the same receiver spread out.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        // xorshift must not start at zero.
        Backoff { step: FIRST, rng: seed | 1 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.step / 2;
        let jitter = half.mul_f64((self.rng % 1024) as f64 / 1024.0);
        let delay = half + jitter;
        self.step = (self.step * 2).min(CAP);
        delay
    }

    /// After a success, start again from the first step.
    pub fn reset(&mut self) {
        self.step = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(7);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= FIRST / 2 && delays[0] <= FIRST);
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(delays.iter().all(|d| *d <= CAP));
        assert!(delays[11] >= CAP / 2);
        let mut other = Backoff::new(8);
        let others: Vec<Duration> = (0..12).map(|_| other.next_delay()).collect();
        assert_ne!(delays, others, "different seeds spread out");
        b.reset();
        assert!(b.next_delay() <= FIRST);
    }
}
