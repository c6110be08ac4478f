//! Retry timing: full-jitter exponential backoff, `Retry-After`, bounds.
//! What is retryable is decided by [`crate::Error::class`]; this module only
//! decides *when*.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::transport::MAX_SOURCE_WAIT;

/// Retry settings of a connection (`[connection.http]`).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts of one logical call, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the call began.
    pub max_elapsed: Duration,
    /// The longest wait honoured inside a run. A source that asks for more
    /// (`Retry-After`, a rate-limit reset) defers the run instead.
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

    /// What to do before the next attempt: the source's `Retry-After` when it
    /// sent one, otherwise full jitter over `backoff`. A wait the source asks
    /// for that is longer than `max_retry_after` or than what is left of the
    /// run's budget defers the run; no retry starts past `max_elapsed`.
    pub fn decide(
        &self,
        backoff: Duration,
        retry_after: Option<Duration>,
        elapsed: Duration,
        budget_left: Option<Duration>,
    ) -> Decision {
        match retry_after {
            Some(after) if after > self.max_retry_after => Decision::Defer(after),
            Some(after) if budget_left.is_some_and(|b| after > b) => Decision::Defer(after),
            Some(after) if elapsed.saturating_add(after) > self.max_elapsed => Decision::GiveUp,
            Some(after) => Decision::Wait(after),
            None => {
                let d = self.jitter(backoff);
                if elapsed.saturating_add(d) > self.max_elapsed {
                    Decision::GiveUp
                } else {
                    Decision::Wait(d)
                }
            }
        }
    }

    pub(crate) fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }
}

/// What the retry layer does after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait(Duration),
    /// Stop and return the last error.
    GiveUp,
    /// The source asks for a wait beyond the run: checkpoint, resume later.
    Defer(Duration),
}

/// Reset headers of rate-limited APIs, in order of preference.
const RESET_HEADERS: &[&str] = &["x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"];

/// The wait a rate-limit reset header asks for, when there is one:
/// `X-RateLimit-Reset` style values are either Unix epoch seconds (GitHub,
/// Okta) or seconds from now (the IETF `RateLimit-Reset`); a value above
/// 10^9 is read as a timestamp. Waits are clamped to
/// [`MAX_SOURCE_WAIT`]; a negative, non-finite or non-numeric value is ignored.
pub fn parse_rate_limit_reset(
    headers: &reqwest::header::HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    RESET_HEADERS.iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?.trim();
        let n: f64 = v.parse().ok()?;
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let secs = if n > 1e9 {
            let now = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            (n - now).max(0.0)
        } else {
            n
        };
        Some(clamp_wait(secs))
    })
}

/// Seconds a source asked to wait, as a duration of at most [`MAX_SOURCE_WAIT`].
fn clamp_wait(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).map_or(MAX_SOURCE_WAIT, |d| d.min(MAX_SOURCE_WAIT))
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3),
/// clamped to [`MAX_SOURCE_WAIT`]. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: delta-seconds, however many there are.
        return Some(v.parse::<u64>().map_or(MAX_SOURCE_WAIT, |s| {
            Duration::from_secs(s).min(MAX_SOURCE_WAIT)
        }));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SOURCE_WAIT),
    )
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
        assert_eq!(parse_retry_after("-5", now), None);
        for huge in [
            "9000000000000",
            "99999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(huge, now),
                Some(MAX_SOURCE_WAIT),
                "{huge}"
            );
        }
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
    fn long_waits_defer_and_elapsed_is_bounded() {
        let p = RetryPolicy::default();
        let s = Duration::from_secs;
        assert_eq!(
            p.decide(s(1), Some(s(7)), Duration::ZERO, None),
            Decision::Wait(s(7))
        );
        assert_eq!(
            p.decide(s(1), Some(s(9999)), Duration::ZERO, None),
            Decision::Defer(s(9999)),
            "beyond the cap"
        );
        assert_eq!(
            p.decide(s(1), Some(s(60)), Duration::ZERO, Some(s(30))),
            Decision::Defer(s(60)),
            "beyond the run's budget"
        );
        assert_eq!(
            p.decide(s(1), Some(s(10)), p.max_elapsed, None),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(s(1), None, p.max_elapsed + s(1), None),
            Decision::GiveUp
        );
        assert!(
            matches!(p.decide(s(4), None, Duration::ZERO, None), Decision::Wait(d) if d <= s(4))
        );
    }

    #[test]
    fn rate_limit_reset_as_epoch_or_delta() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-ratelimit-reset",
            (epoch + 42).to_string().parse().unwrap(),
        );
        assert_eq!(
            parse_rate_limit_reset(&h, now),
            Some(Duration::from_secs(42))
        );
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("ratelimit-reset", "17".parse().unwrap());
        assert_eq!(
            parse_rate_limit_reset(&h, now),
            Some(Duration::from_secs(17))
        );
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-reset", "soon".parse().unwrap());
        assert_eq!(parse_rate_limit_reset(&h, now), None);
        for (v, want) in [
            ("1e20", Some(MAX_SOURCE_WAIT)),
            ("1e308", Some(MAX_SOURCE_WAIT)),
            ("-3", None),
            ("NaN", None),
            ("inf", None),
            ("1000000000.5", Some(Duration::ZERO)),
        ] {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-ratelimit-reset", v.parse().unwrap());
            assert_eq!(parse_rate_limit_reset(&h, now), want, "{v}");
        }
    }
}
