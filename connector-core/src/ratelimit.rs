//! Rate limiting per connection: a token bucket (`governor`) shared by all
//! of the connection's streams, a cap on requests in flight, and AIMD on 429:
//! each 429 halves the allowed rate (down to a sixteenth of the configured
//! one); every full second's worth of successful requests then adds back a
//! tenth of the configured rate.
//!
//! The bucket runs on tokio's clock, so tests under paused time measure the
//! spacing exactly.

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter as Gcra, middleware::NoOpMiddleware, state};
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::events::{Emit, RateLimitWait};

/// `requests_per_sec`, `burst` and `max_in_flight` of a `[[connection]]`.
#[derive(Clone, Debug, Default)]
pub struct RateLimitSettings {
    /// Sustained rate; `None` for no bucket.
    pub requests_per_sec: Option<f64>,
    /// Requests allowed at once after an idle period (at least 1).
    pub burst: u32,
    /// Requests in flight at once; `None` for no cap.
    pub max_in_flight: Option<usize>,
}

/// Nanoseconds since the limiter's creation, on tokio's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(u64);

impl Add<Nanos> for TokioInstant {
    type Output = Self;
    fn add(self, other: Nanos) -> Self {
        Self(self.0 + other.as_u64())
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_sub(earlier.0).into()
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.saturating_sub(duration.as_u64()))
    }
}

/// governor's clock over `tokio::time::Instant`.
#[derive(Clone, Debug)]
pub struct TokioClock(Instant);

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now().duration_since(self.0).as_nanos() as u64)
    }
}

type Bucket = Gcra<state::NotKeyed, state::InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

#[derive(Debug)]
struct Adaptive {
    rate: f64,
    bucket: Arc<Bucket>,
    successes: u32,
}

/// The limiter of one connection. Cheap to share through `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    connection: String,
    configured: Option<f64>,
    burst: NonZeroU32,
    clock: TokioClock,
    adaptive: Mutex<Option<Adaptive>>,
    in_flight: Option<Arc<Semaphore>>,
    /// No request starts before this instant: the source said to wait
    /// (`Retry-After` on a 429 or 503) and that holds for every stream.
    paused_until: Mutex<Option<Instant>>,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

fn bucket(rate: f64, burst: NonZeroU32, clock: &TokioClock) -> Arc<Bucket> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    Arc::new(Gcra::direct_with_clock(quota, clock.clone()))
}

impl RateLimiter {
    pub fn new(connection: &str, settings: &RateLimitSettings) -> Self {
        let clock = TokioClock(Instant::now());
        let burst = NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN);
        let adaptive = settings.requests_per_sec.map(|rate| Adaptive {
            rate,
            bucket: bucket(rate, burst, &clock),
            successes: 0,
        });
        Self {
            connection: connection.to_owned(),
            configured: settings.requests_per_sec,
            burst,
            clock,
            adaptive: Mutex::new(adaptive),
            in_flight: settings
                .max_in_flight
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            paused_until: Mutex::new(None),
        }
    }

    /// The source asked to wait `wait` (a 429's or 503's `Retry-After` or
    /// reset header): no request of the connection, from any stream or
    /// worker, starts before then. A later pause extends an earlier one,
    /// never shortens it.
    pub fn pause(&self, wait: Duration) {
        let Some(until) = Instant::now().checked_add(wait) else {
            return;
        };
        if let Ok(mut p) = self.paused_until.lock()
            && p.is_none_or(|p| p < until)
        {
            *p = Some(until);
            tracing::info!(event = "connection_paused", connection = %self.connection, secs = wait.as_secs());
        }
    }

    /// How long requests of this connection are held back from now.
    pub fn paused_for(&self) -> Duration {
        self.paused_until
            .lock()
            .ok()
            .and_then(|p| *p)
            .map(|p| p.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// The rate currently allowed (requests per second), if limited.
    pub fn current_rate(&self) -> Option<f64> {
        self.adaptive.lock().ok()?.as_ref().map(|a| a.rate)
    }

    /// Waits out a pause the source asked for, then for a token and an
    /// in-flight slot. When a wait would end after `deadline`, or a pause is
    /// longer than `max_pause`, returns the wait instead (the caller defers
    /// the run).
    pub async fn acquire(
        &self,
        deadline: Option<Instant>,
        max_pause: Duration,
    ) -> Result<Permit, Duration> {
        let permit = match &self.in_flight {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Duration::ZERO)?,
            ),
            None => None,
        };
        // Held by a slot, a request still waits out a pause set meanwhile.
        let mut waited = Duration::ZERO;
        loop {
            let pause = self.paused_for();
            if pause.is_zero() {
                break;
            }
            if pause > max_pause || deadline.is_some_and(|d| Instant::now() + pause > d) {
                return Err(pause);
            }
            waited += pause;
            tokio::time::sleep(pause).await;
        }
        while let Some(b) = self
            .adaptive
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|a| a.bucket.clone()))
        {
            match b.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if deadline.is_some_and(|d| Instant::now() + wait > d) {
                        return Err(wait);
                    }
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if !waited.is_zero() {
            RateLimitWait {
                connection: &self.connection,
                waited,
            }
            .emit();
        }
        Ok(Permit(permit))
    }

    /// A 429: halve the allowed rate (multiplicative decrease).
    pub fn on_rate_limited(&self) {
        let Some(configured) = self.configured else {
            return;
        };
        if let Ok(mut a) = self.adaptive.lock()
            && let Some(a) = a.as_mut()
        {
            a.rate = (a.rate / 2.0).max(configured / 16.0);
            a.successes = 0;
            // One request at a time until the rate recovers.
            a.bucket = bucket(a.rate, NonZeroU32::MIN, &self.clock);
            tracing::info!(event = "rate_decreased", connection = %self.connection, requests_per_sec = a.rate);
        }
    }

    /// A success: after a second's worth of them, add a tenth of the
    /// configured rate back (additive increase).
    pub fn on_success(&self) {
        let Some(configured) = self.configured else {
            return;
        };
        if let Ok(mut a) = self.adaptive.lock()
            && let Some(a) = a.as_mut()
            && a.rate < configured
        {
            a.successes += 1;
            if f64::from(a.successes) >= a.rate.ceil() {
                a.successes = 0;
                a.rate = (a.rate + configured / 10.0).min(configured);
                let burst = if a.rate >= configured {
                    self.burst
                } else {
                    NonZeroU32::MIN
                };
                a.bucket = bucket(a.rate, burst, &self.clock);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(
            "t",
            &RateLimitSettings {
                requests_per_sec: Some(rps),
                burst,
                max_in_flight: None,
            },
        )
    }

    async fn spacing(l: &RateLimiter, n: usize) -> Vec<Duration> {
        let mut times = Vec::new();
        for _ in 0..n {
            l.acquire(None, Duration::MAX).await.unwrap();
            times.push(Instant::now());
        }
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate_after_the_burst() {
        let l = limiter(4.0, 2);
        let gaps = spacing(&l, 8).await;
        assert_eq!(gaps[0], Duration::ZERO, "the burst passes at once");
        for g in &gaps[1..] {
            assert!(*g >= Duration::from_millis(250), "{gaps:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_halves_the_rate_and_successes_restore_it() {
        let l = limiter(10.0, 1);
        l.on_rate_limited();
        assert_eq!(l.current_rate(), Some(5.0));
        let gaps = spacing(&l, 4).await;
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(200)),
            "{gaps:?}"
        );
        l.on_rate_limited();
        l.on_rate_limited();
        l.on_rate_limited();
        l.on_rate_limited();
        assert_eq!(
            l.current_rate(),
            Some(10.0 / 16.0),
            "never below a sixteenth"
        );
        for _ in 0..200 {
            l.on_success();
        }
        assert_eq!(l.current_rate(), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_returned_not_slept() {
        let l = limiter(0.01, 1); // one request per 100 s
        l.acquire(None, Duration::MAX).await.unwrap();
        let started = Instant::now();
        let wait = l
            .acquire(
                Some(Instant::now() + Duration::from_secs(10)),
                Duration::MAX,
            )
            .await
            .unwrap_err();
        assert!(wait > Duration::from_secs(90), "{wait:?}");
        assert_eq!(Instant::now(), started, "nothing slept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request_until_it_ends() {
        let l = Arc::new(limiter(1000.0, 10));
        let started = Instant::now();
        l.pause(Duration::from_secs(30));
        l.pause(Duration::from_secs(5)); // a shorter pause does not shorten it
        assert_eq!(l.paused_for(), Duration::from_secs(30));
        let (a, b) = tokio::join!(
            l.acquire(None, Duration::MAX),
            l.acquire(None, Duration::MAX)
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        assert_eq!(l.paused_for(), Duration::ZERO);
        // A pause past the deadline, or longer than allowed, is returned.
        l.pause(Duration::from_secs(300));
        let wait = l
            .acquire(
                Some(Instant::now() + Duration::from_secs(60)),
                Duration::MAX,
            )
            .await
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(300));
        let wait = l.acquire(None, Duration::from_secs(120)).await.unwrap_err();
        assert_eq!(wait, Duration::from_secs(300));
        assert_eq!(
            Instant::now() - started,
            Duration::from_secs(30),
            "nothing slept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_are_capped() {
        let l = Arc::new(RateLimiter::new(
            "t",
            &RateLimitSettings {
                requests_per_sec: None,
                burst: 1,
                max_in_flight: Some(2),
            },
        ));
        let a = l.acquire(None, Duration::MAX).await.unwrap();
        let _b = l.acquire(None, Duration::MAX).await.unwrap();
        let l2 = l.clone();
        let third = tokio::spawn(async move { l2.acquire(None, Duration::MAX).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished(), "a third request waits for a slot");
        drop(a);
        third.await.unwrap().unwrap();
    }
}
