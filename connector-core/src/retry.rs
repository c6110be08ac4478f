//! Retry timing: full-jitter exponential backoff, `Retry-After`, bounds.
//! What is retryable is decided by [`crate::Error::class`]; this module only
//! decides *when*.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Retry settings of a connection (`[connection.http]`).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts of one logical call, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the call began.
    pub max_elapsed: Duration,
    /// A `Retry-After` longer than this is capped to it.
    pub max_retry_after: Duration,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(120),
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
        }
    }
}

impl RetryPolicy {
    /// Uses a seeded random source for the jitter (deterministic tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        self
    }

    /// Full jitter: a uniformly random delay in `[0, backoff]` where `backoff` is
    /// the exponential schedule's delay for this retry.
    pub fn jitter(&self, backoff: Duration) -> Duration {
        let f = self.rng.lock().map(|mut r| r.f64()).unwrap_or(1.0);
        backoff.mul_f64(f)
    }

    /// The delay before the next attempt, or `None` to give up: the source's
    /// `Retry-After` (capped) when it sent one, otherwise full jitter over
    /// `backoff`; never past `max_elapsed`.
    pub fn delay(
        &self,
        backoff: Duration,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        let d = match retry_after {
            Some(after) => after.min(self.max_retry_after),
            None => self.jitter(backoff),
        };
        (elapsed + d <= self.max_elapsed).then_some(d)
    }

    pub(crate) fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn full_jitter_stays_within_the_backoff_and_varies() {
        let p = RetryPolicy::default().with_seed(7);
        let b = Duration::from_secs(8);
        let samples: Vec<_> = (0..50).map(|_| p.jitter(b)).collect();
        assert!(samples.iter().all(|d| *d <= b));
        assert!(samples.iter().any(|d| *d < b / 2) && samples.iter().any(|d| *d > b / 2));
        let q = RetryPolicy::default().with_seed(7);
        assert_eq!(
            samples[0],
            q.jitter(b),
            "the seed makes jitter reproducible"
        );
    }

    #[test]
    fn retry_after_is_capped_and_elapsed_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(
                Duration::from_secs(1),
                Some(Duration::from_secs(9999)),
                Duration::ZERO
            ),
            Some(p.max_retry_after)
        );
        assert_eq!(
            p.delay(
                Duration::from_secs(1),
                Some(Duration::from_secs(10)),
                p.max_elapsed
            ),
            None
        );
    }
}
