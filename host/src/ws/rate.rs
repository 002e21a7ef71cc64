//! Token buckets: how fast a connection, and a user over all their
//! connections, may send.

use std::time::{Duration, Instant};

/// `per_second` messages on average, `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket; `per_second` of 0 (or less) means no limit.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    /// How long to wait before the next message may be read; `None` when
    /// one may be read now (or there is no limit).
    pub fn wait(&mut self) -> Option<Duration> {
        if self.per_second <= 0.0 {
            return None;
        }
        let now = Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.refilled).as_secs_f64() * self.per_second)
            .min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            None
        } else {
            Some(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }

    /// One message was read.
    pub fn take(&mut self) {
        if self.per_second > 0.0 {
            self.tokens -= 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(bucket.wait(), None);
            bucket.take();
        }
        let wait = bucket.wait().expect("empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(wait >= Duration::from_millis(90), "{wait:?}");
        let mut unlimited = TokenBucket::new(0.0, 1);
        for _ in 0..1000 {
            assert_eq!(unlimited.wait(), None);
            unlimited.take();
        }
    }
}
