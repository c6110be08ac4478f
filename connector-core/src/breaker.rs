//! Circuit breaker per (host, credential).
//!
//! Closed: calls pass; the breaker opens after `consecutive_failures` transient
//! failures in a row, or when at least `min_calls` calls in the last `window`
//! failed at a rate of `failure_rate` or more. Open: calls fail fast with
//! [`Error::CircuitOpen`] until `cool_down` has passed. Half-open: one probe
//! call passes; its success closes the breaker, its failure opens it again.
//!
//! Only transient failures count ([`ErrorClass::Retry`] minus rate limiting,
//! which the rate limiter handles). Data errors (4xx, malformed bodies) and
//! credential errors never trip it: the host is up, the request is wrong.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::events::{BreakerClosed, BreakerOpened, Emit};
use crate::{Error, ErrorClass};

/// Settings (`[connection.http]` keys `breaker_*`).
#[derive(Clone, Debug)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub window: Duration,
    pub min_calls: u32,
    pub failure_rate: f64,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            window: Duration::from_secs(60),
            min_calls: 20,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The state of a breaker, as exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
    /// The value of the `connector_circuit_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// How a call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    TransientFailure,
    /// Neither: a data or credential error, or rate limiting.
    Ignored,
}

impl Outcome {
    pub fn of(result: &Result<impl Sized, Error>) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(Error::RateLimited { .. } | Error::CircuitOpen { .. } | Error::Deferred { .. }) => {
                Outcome::Ignored
            }
            Err(e) if matches!(e.class(), ErrorClass::Retry { .. }) => Outcome::TransientFailure,
            Err(_) => Outcome::Ignored,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    consecutive: u32,
    window: VecDeque<(Instant, bool)>,
    opened_count: u64,
}

/// One breaker. Shared by every client of the same (host, credential).
#[derive(Debug)]
pub struct CircuitBreaker {
    pub host: String,
    pub credential: String,
    /// The connection that created it (metric label).
    connection: String,
    settings: BreakerSettings,
    state: Mutex<State>,
    /// The last failure that counted, for the error an open breaker gives.
    last_failure: Mutex<Option<String>>,
}

/// A snapshot for `status` and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct BreakerSnapshot {
    pub host: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub times_opened: u64,
    /// Until when an open breaker fails fast.
    pub retry_in_secs: Option<u64>,
}

type Registry = Mutex<HashMap<(String, String), Arc<CircuitBreaker>>>;
static BREAKERS: LazyLock<Registry> = LazyLock::new(Default::default);

impl CircuitBreaker {
    /// The process-wide breaker of (host, credential), created on first use.
    pub fn shared(
        host: &str,
        credential: &str,
        connection: &str,
        settings: BreakerSettings,
    ) -> Arc<Self> {
        let mut map = BREAKERS.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((host.to_owned(), credential.to_owned()))
            .or_insert_with(|| Arc::new(Self::new(host, credential, connection, settings)))
            .clone()
    }

    pub fn new(host: &str, credential: &str, connection: &str, settings: BreakerSettings) -> Self {
        Self {
            host: host.to_owned(),
            credential: credential.to_owned(),
            connection: connection.to_owned(),
            settings,
            state: Mutex::new(State {
                phase: Phase::Closed,
                consecutive: 0,
                window: VecDeque::new(),
                opened_count: 0,
            }),
            last_failure: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or says how long the breaker stays open.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut s = self.lock();
        let now = Instant::now();
        match s.phase {
            Phase::Closed => Ok(()),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                s.phase = Phase::HalfOpen { probing: true };
                self.export(BreakerState::HalfOpen);
                Ok(())
            }
            Phase::HalfOpen { probing: true } => {
                Err(self.settings.cool_down.min(Duration::from_secs(1)))
            }
            Phase::HalfOpen { probing: false } => {
                s.phase = Phase::HalfOpen { probing: true };
                Ok(())
            }
        }
    }

    /// Records how an admitted call ended.
    /// Remembers what the last transient failure was (shown while open).
    pub fn note_failure(&self, what: String) {
        if let Ok(mut l) = self.last_failure.lock() {
            *l = Some(crate::snippet(what.as_bytes()));
        }
    }

    /// The last transient failure noted, if any.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|l| l.clone())
    }

    pub fn record(&self, outcome: Outcome) {
        let mut s = self.lock();
        let now = Instant::now();
        let cfg = &self.settings;
        match outcome {
            Outcome::Ignored => {
                // A half-open probe that ended in a data error says nothing
                // about the host's health: let the next call probe again.
                if let Phase::HalfOpen { probing: true } = s.phase {
                    s.phase = Phase::HalfOpen { probing: false };
                }
                return;
            }
            Outcome::Success => {
                s.consecutive = 0;
                s.window.push_back((now, true));
                if matches!(s.phase, Phase::HalfOpen { .. }) {
                    s.phase = Phase::Closed;
                    s.window.clear();
                    BreakerClosed {
                        connection: &self.connection,
                        host: &self.host,
                    }
                    .emit();
                    self.export(BreakerState::Closed);
                }
            }
            Outcome::TransientFailure => {
                s.consecutive += 1;
                s.window.push_back((now, false));
            }
        }
        while s
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > cfg.window)
        {
            s.window.pop_front();
        }
        let failures = s.window.iter().filter(|(_, ok)| !ok).count();
        let calls = s.window.len();
        let rate_tripped =
            calls >= cfg.min_calls as usize && failures as f64 / calls as f64 >= cfg.failure_rate;
        let trip = outcome == Outcome::TransientFailure
            && match s.phase {
                Phase::HalfOpen { .. } => true,
                Phase::Closed => s.consecutive >= cfg.consecutive_failures || rate_tripped,
                Phase::Open { .. } => false,
            };
        if trip {
            s.phase = Phase::Open {
                until: crate::transport::instant_after(now, cfg.cool_down),
            };
            s.opened_count += 1;
            s.window.clear();
            BreakerOpened {
                connection: &self.connection,
                host: &self.host,
                consecutive_failures: s.consecutive,
                cool_down: cfg.cool_down,
            }
            .emit();
            self.export(BreakerState::Open);
        }
    }

    /// Takes over the state another process saved: a breaker that was open
    /// with `retry_in` of its cool-down left stays open that long (a closed
    /// one, or one whose cool-down is over, starts closed). So a run started
    /// during a cool-down fails fast instead of hammering the host again,
    /// and `status` tells the truth.
    pub fn restore(&self, retry_in: Duration, consecutive: u32, times_opened: u64) {
        if retry_in.is_zero() {
            return;
        }
        let mut s = self.lock();
        if let Phase::Closed = s.phase {
            s.phase = Phase::Open {
                until: crate::transport::instant_after(Instant::now(), retry_in),
            };
            s.consecutive = consecutive;
            s.opened_count = s.opened_count.max(times_opened);
            drop(s);
            self.export(BreakerState::Open);
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let s = self.lock();
        let now = Instant::now();
        let (state, retry_in) = match s.phase {
            Phase::Closed => (BreakerState::Closed, None),
            Phase::Open { until } if now < until => {
                (BreakerState::Open, Some((until - now).as_secs()))
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        };
        BreakerSnapshot {
            host: self.host.clone(),
            state,
            consecutive_failures: s.consecutive,
            times_opened: s.opened_count,
            retry_in_secs: retry_in,
        }
    }

    fn export(&self, state: BreakerState) {
        crate::metrics::breaker_state(&self.connection, &self.host, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "h.test",
            "bearer:x",
            "t",
            BreakerSettings {
                consecutive_failures: 3,
                min_calls: 10,
                ..Default::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_after_the_cool_down() {
        let b = breaker();
        for _ in 0..2 {
            b.admit().unwrap();
            b.record(Outcome::TransientFailure);
        }
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        b.admit().unwrap();
        b.record(Outcome::TransientFailure);
        assert_eq!(b.snapshot().state, BreakerState::Open);
        let wait = b.admit().unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(b.admit().is_err(), "still open before the cool-down ends");
        tokio::time::advance(Duration::from_secs(1)).await;
        b.admit().expect("one probe after the cool-down");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(Outcome::TransientFailure);
        assert_eq!(
            b.snapshot().state,
            BreakerState::Open,
            "a failed probe reopens"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        b.admit().unwrap();
        b.record(Outcome::Success);
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(b.snapshot().times_opened, 2);
        b.admit().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_error_rate_over_the_window() {
        let b = breaker();
        // Alternating failures never reach 3 in a row, but reach 50% of 10 calls.
        for i in 0..10 {
            b.admit().unwrap();
            b.record(if i % 2 == 1 {
                Outcome::TransientFailure
            } else {
                Outcome::Success
            });
            if i < 9 {
                assert_eq!(b.snapshot().state, BreakerState::Closed, "call {i}");
            }
        }
        assert_eq!(b.snapshot().state, BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = breaker();
        for i in 0..9 {
            b.record(if i % 2 == 0 {
                Outcome::TransientFailure
            } else {
                Outcome::Success
            });
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        b.record(Outcome::Success);
        b.record(Outcome::TransientFailure);
        assert_eq!(b.snapshot().state, BreakerState::Closed);
    }

    #[test]
    fn data_errors_never_count() {
        let b = breaker();
        let data: Result<(), Error> = Err(Error::from_status("e", 422, None, b""));
        let limited: Result<(), Error> = Err(Error::from_status("e", 429, None, b""));
        let down: Result<(), Error> = Err(Error::from_status("e", 503, None, b""));
        for _ in 0..50 {
            b.record(Outcome::of(&data));
            b.record(Outcome::of(&limited));
        }
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(Outcome::of(&down), Outcome::TransientFailure);
    }
}
