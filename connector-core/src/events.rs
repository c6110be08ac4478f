//! Named telemetry events. Each `emit()` writes one tracing event and bumps
//! its metrics; tags come from config names and closed enums only, never raw
//! error text or secrets.

use std::time::Duration;

use crate::metrics::{METRICS, conn, conn_host, conn_kind, conn_stream};

/// Writes the event's tracing line and updates its metrics.
pub trait Emit {
    fn emit(self);
}

/// An HTTP attempt left for the source.
#[derive(Debug)]
pub struct RequestSent<'a> {
    pub connection: &'a str,
    pub endpoint: &'a str,
    pub attempt: u32,
}

impl Emit for RequestSent<'_> {
    fn emit(self) {
        tracing::debug!(
            event = "request_sent",
            connection = self.connection,
            endpoint = self.endpoint,
            attempt = self.attempt
        );
        METRICS.requests.get_or_create(&conn(self.connection)).inc();
    }
}

/// An HTTP attempt failed; `kind` is [`crate::Error::kind`].
#[derive(Debug)]
pub struct RequestFailed<'a> {
    pub connection: &'a str,
    pub endpoint: &'a str,
    pub kind: &'static str,
    pub error: &'a crate::Error,
}

impl Emit for RequestFailed<'_> {
    /// A failure that will be retried is INFO (the run's outcome says the
    /// rest, and an opening breaker is a WARN of its own); one that is final
    /// is WARN.
    fn emit(self) {
        macro_rules! failed {
            ($level:ident) => {
                tracing::$level!(
                    event = "request_failed",
                    connection = self.connection,
                    endpoint = self.endpoint,
                    error_kind = self.kind,
                    "{}",
                    self.error
                )
            };
        }
        if matches!(self.error.class(), crate::ErrorClass::Fail) {
            failed!(warn);
        } else {
            failed!(info);
        }
        METRICS
            .request_failures
            .get_or_create(&conn_kind(self.connection, self.kind))
            .inc();
    }
}

/// A page body was durably stored in the raw store.
#[derive(Debug)]
pub struct PageStored<'a> {
    pub connection: &'a str,
    pub stream: &'a str,
    pub page: &'a str,
    pub records: usize,
    pub bytes: u64,
}

impl Emit for PageStored<'_> {
    fn emit(self) {
        tracing::debug!(
            event = "page_stored",
            connection = self.connection,
            stream = self.stream,
            page = self.page,
            records = self.records,
            bytes = self.bytes
        );
        let l = conn_stream(self.connection, self.stream);
        METRICS.pages_stored.get_or_create(&l).inc();
        METRICS
            .records_fetched
            .get_or_create(&l)
            .inc_by(self.records as u64);
        METRICS.bytes_stored.get_or_create(&l).inc_by(self.bytes);
    }
}

/// A stream's watermark moved (in the same transaction as its page's ledger row).
#[derive(Debug)]
pub struct WatermarkAdvanced<'a> {
    pub connection: &'a str,
    pub stream: &'a str,
    /// The next page to fetch, or `None` when the pull completed.
    pub next: Option<&'a str>,
}

impl Emit for WatermarkAdvanced<'_> {
    fn emit(self) {
        tracing::debug!(
            event = "watermark_advanced",
            connection = self.connection,
            stream = self.stream,
            next = self.next
        );
        METRICS
            .watermark_advances
            .get_or_create(&conn_stream(self.connection, self.stream))
            .inc();
    }
}

/// Records of a stored page were dead-lettered with a reason.
#[derive(Debug)]
pub struct RecordsDeadLettered<'a> {
    pub connection: &'a str,
    pub stream: &'a str,
    pub count: u64,
}

impl Emit for RecordsDeadLettered<'_> {
    fn emit(self) {
        if self.count == 0 {
            return;
        }
        tracing::warn!(
            event = "records_dead_lettered",
            connection = self.connection,
            stream = self.stream,
            count = self.count
        );
        METRICS
            .dead_lettered
            .get_or_create(&conn_stream(self.connection, self.stream))
            .inc_by(self.count);
    }
}

/// A circuit breaker opened: calls to the host fail fast for `cool_down`.
#[derive(Debug)]
pub struct BreakerOpened<'a> {
    pub connection: &'a str,
    pub host: &'a str,
    pub consecutive_failures: u32,
    pub cool_down: Duration,
}

impl Emit for BreakerOpened<'_> {
    fn emit(self) {
        tracing::warn!(
            event = "breaker_opened",
            connection = self.connection,
            host = self.host,
            consecutive_failures = self.consecutive_failures,
            cool_down_secs = self.cool_down.as_secs()
        );
        METRICS
            .breaker_opened
            .get_or_create(&conn_host(self.connection, self.host))
            .inc();
    }
}

/// A half-open probe succeeded: the breaker closed.
#[derive(Debug)]
pub struct BreakerClosed<'a> {
    pub connection: &'a str,
    pub host: &'a str,
}

impl Emit for BreakerClosed<'_> {
    fn emit(self) {
        tracing::info!(
            event = "breaker_closed",
            connection = self.connection,
            host = self.host
        );
    }
}

/// A request waited for the connection's rate limiter.
#[derive(Debug)]
pub struct RateLimitWait<'a> {
    pub connection: &'a str,
    pub waited: Duration,
}

impl Emit for RateLimitWait<'_> {
    fn emit(self) {
        tracing::debug!(
            event = "rate_limit_wait",
            connection = self.connection,
            waited_ms = self.waited.as_millis() as u64
        );
        let l = conn(self.connection);
        METRICS.rate_limit_waits.get_or_create(&l).inc();
        METRICS
            .rate_limit_wait_seconds
            .get_or_create(&l)
            .inc_by(self.waited.as_secs_f64());
    }
}

/// A new access token was obtained (and a rotated refresh token saved first).
#[derive(Debug)]
pub struct TokenRefreshed<'a> {
    pub connection: &'a str,
    pub strategy: &'static str,
    pub lifetime: Duration,
    pub rotated: bool,
}

impl Emit for TokenRefreshed<'_> {
    fn emit(self) {
        tracing::info!(
            event = "token_refreshed",
            connection = self.connection,
            strategy = self.strategy,
            lifetime_secs = self.lifetime.as_secs(),
            rotated = self.rotated
        );
        METRICS
            .token_refreshes
            .get_or_create(&conn_kind(self.connection, self.strategy))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{render, sample};

    #[test]
    fn events_bump_their_metrics_with_bounded_labels() {
        let c = "events-test";
        PageStored {
            connection: c,
            stream: "workers",
            page: "offset 0",
            records: 100,
            bytes: 5000,
        }
        .emit();
        PageStored {
            connection: c,
            stream: "workers",
            page: "offset 100",
            records: 20,
            bytes: 700,
        }
        .emit();
        let l = [("connection", c), ("stream", "workers")];
        assert_eq!(sample("connector_pages_stored_total", &l), Some(2.0));
        assert_eq!(sample("connector_records_fetched_total", &l), Some(120.0));
        assert_eq!(sample("connector_bytes_stored_total", &l), Some(5700.0));
        let err = crate::Error::from_status("x GET /secret-path?token=abc", 503, None, b"");
        RequestFailed {
            connection: c,
            endpoint: "x GET /p",
            kind: err.kind(),
            error: &err,
        }
        .emit();
        assert_eq!(
            sample(
                "connector_request_failures_total",
                &[("connection", c), ("kind", "server")]
            ),
            Some(1.0)
        );
        RateLimitWait {
            connection: c,
            waited: Duration::from_millis(1500),
        }
        .emit();
        assert_eq!(
            sample(
                "connector_rate_limit_wait_seconds_total",
                &[("connection", c)]
            ),
            Some(1.5)
        );
        let text = render();
        assert!(
            !text.contains("token=abc") && !text.contains("secret-path"),
            "no raw error text in metrics"
        );
    }
}
