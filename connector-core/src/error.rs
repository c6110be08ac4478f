//! Error kinds and their classification, decided in one place.

use std::time::Duration;

/// What the HTTP stack and the pipeline do with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry after a backoff, or after `after` when the source said so.
    Retry { after: Option<Duration> },
    /// The credential was refused once: drop the cached token, refresh, retry once.
    RefreshAuthThenRetry,
    /// Only this record is bad: dead-letter it and continue.
    SkipRecord,
    /// Retrying cannot help: stop this call and report.
    Fail,
}

/// Errors of the connector core. Every variant names the endpoint (connector,
/// method and path, never a query string or credentials) it concerns; none
/// carries a response body longer than a short snippet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Throttled: HTTP 429, or another status the connector reads as such.
    #[error("{endpoint}: rate limited (HTTP {status}){}{}", fmt_after(.retry_after), fmt_detail(.detail))]
    RateLimited {
        endpoint: String,
        status: u16,
        retry_after: Option<Duration>,
        /// The source's own explanation, when the connector reads one.
        detail: Option<String>,
    },
    #[error("{endpoint}: server error (HTTP {status}){}{}", fmt_after(.retry_after), fmt_detail(.detail))]
    Server {
        endpoint: String,
        status: u16,
        retry_after: Option<Duration>,
        /// The source's own explanation, when the connector reads one.
        detail: Option<String>,
    },
    #[error("{endpoint}: transport error: {message}")]
    Transport { endpoint: String, message: String },
    /// One attempt got no (complete) answer in time. Retried only when the
    /// request is idempotent: a timed-out write may have happened.
    #[error("{endpoint}: no response within {after:?}")]
    Timeout {
        endpoint: String,
        after: Duration,
        idempotent: bool,
    },
    /// The logical call (all its attempts and waits) ran past its deadline.
    #[error("{endpoint}: gave up after {after:?} (call timeout)")]
    CallTimeout { endpoint: String, after: Duration },
    #[error("{endpoint}: credential refused{}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Unauthorized {
        endpoint: String,
        /// The source's explanation, when the connector read one (NetSuite's
        /// `INVALID_LOGIN: Invalid login attempt …`).
        detail: Option<String>,
    },
    #[error("{endpoint}: credentials refused; the connection needs re-authorization ({detail})")]
    NeedsReauth { endpoint: String, detail: String },
    #[error("{endpoint}: HTTP {status}: {snippet}")]
    Client {
        endpoint: String,
        status: u16,
        snippet: String,
    },
    /// A complete body that is not what the endpoint promises (not JSON, no
    /// records array): asking again gives the same answer.
    #[error("{endpoint}: malformed response body: {message}")]
    Body { endpoint: String, message: String },
    /// The body ended early (connection cut, JSON cut off): fetch it again.
    #[error("{endpoint}: truncated response body: {message}")]
    Truncated { endpoint: String, message: String },
    /// The circuit breaker of (host, credential) is open: failing fast.
    #[error("{endpoint}: {host} keeps failing{}; the circuit is open, next probe in {}s",
        .last_failure.as_deref().map(|f| format!(" (last: {f})")).unwrap_or_default(), .retry_in.as_secs())]
    CircuitOpen {
        endpoint: String,
        host: String,
        retry_in: Duration,
        /// What the last failure that counted was (e.g. connection refused).
        last_failure: Option<String>,
    },
    /// The wait the source or the rate limit asks for ends after the run's
    /// budget: the run checkpoints and resumes later. Not a failure.
    #[error("{endpoint}: deferred: the source asks to wait {}s, beyond this run's budget", .wait.as_secs())]
    Deferred { endpoint: String, wait: Duration },
    /// A Postgres error, classified by its SQLSTATE (`None`: no answer from
    /// the server at all, e.g. a dropped connection or a pool timeout).
    #[error("database{}: {message}", .sqlstate.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Database {
        sqlstate: Option<String>,
        message: String,
    },
    #[error(
        "{endpoint}: refused a URL on another origin ({origin}); credentials are never sent off-origin"
    )]
    CrossOrigin { endpoint: String, origin: String },
    #[error("{endpoint}: pagination loop: page {token} was already requested")]
    PaginationLoop { endpoint: String, token: String },
    /// A page body over the configured limit: refused before the excess is read.
    #[error("{endpoint}: response body larger than the limit of {limit} bytes (max_body_bytes)")]
    BodyTooLarge { endpoint: String, limit: usize },
    /// The run lost its lease on the stream (another process took it over):
    /// it stops before writing anything else.
    #[error("lost the sync lease of {scope}: {detail}")]
    LeaseLost { scope: String, detail: String },
    #[error("raw store: {0}")]
    Storage(String),
    #[error("configuration: {0}")]
    Config(String),
}

fn fmt_detail(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
}

fn fmt_after(d: &Option<Duration>) -> String {
    d.map(|d| format!(", retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

impl Error {
    /// The one table from error to class. See the `classification` tests.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::RateLimited { retry_after, .. } => ErrorClass::Retry {
                after: *retry_after,
            },
            Error::Server {
                status,
                retry_after,
                ..
            } => match status {
                500 | 502 | 503 | 504 => ErrorClass::Retry {
                    after: *retry_after,
                },
                _ => ErrorClass::Fail,
            },
            Error::Transport { .. } | Error::Truncated { .. } => ErrorClass::Retry { after: None },
            Error::Timeout { idempotent, .. } => {
                if *idempotent {
                    ErrorClass::Retry { after: None }
                } else {
                    ErrorClass::Fail
                }
            }
            Error::Client { status: 408, .. } => ErrorClass::Retry { after: None },
            Error::CircuitOpen { retry_in, .. } => ErrorClass::Retry {
                after: Some(*retry_in),
            },
            Error::Unauthorized { .. } => ErrorClass::RefreshAuthThenRetry,
            Error::Database { sqlstate, .. } => {
                if sqlstate_is_transient(sqlstate.as_deref()) {
                    ErrorClass::Retry { after: None }
                } else {
                    ErrorClass::Fail
                }
            }
            Error::Body { .. }
            | Error::CallTimeout { .. }
            | Error::Deferred { .. }
            | Error::NeedsReauth { .. }
            | Error::Client { .. }
            | Error::CrossOrigin { .. }
            | Error::PaginationLoop { .. }
            | Error::BodyTooLarge { .. }
            | Error::LeaseLost { .. }
            | Error::Config(_) => ErrorClass::Fail,
            Error::Storage(_) => ErrorClass::Retry { after: None },
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.class(), ErrorClass::Retry { .. })
    }

    /// A stable, bounded name for the kind (metrics labels, run ledger).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "rate_limited",
            Error::Server { .. } => "server",
            Error::Transport { .. } => "transport",
            Error::Timeout { .. } => "timeout",
            Error::CallTimeout { .. } => "call_timeout",
            Error::Truncated { .. } => "truncated",
            Error::CircuitOpen { .. } => "circuit_open",
            Error::Deferred { .. } => "deferred",
            Error::Database { .. } => "database",
            Error::Unauthorized { .. } => "unauthorized",
            Error::NeedsReauth { .. } => "needs_reauth",
            Error::Client { .. } => "client",
            Error::Body { .. } => "body",
            Error::CrossOrigin { .. } => "cross_origin",
            Error::PaginationLoop { .. } => "pagination_loop",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Storage(_) => "storage",
            Error::Config(_) => "config",
        }
    }

    /// The same error with every free text (messages, snippets) passed
    /// through `f`: how the HTTP stack scrubs secrets a source echoed back.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            Error::Transport { endpoint, message } => Error::Transport {
                endpoint,
                message: f(&message),
            },
            Error::NeedsReauth { endpoint, detail } => Error::NeedsReauth {
                endpoint,
                detail: f(&detail),
            },
            Error::Client {
                endpoint,
                status,
                snippet,
            } => Error::Client {
                endpoint,
                status,
                snippet: f(&snippet),
            },
            Error::RateLimited {
                endpoint,
                status,
                retry_after,
                detail,
            } => Error::RateLimited {
                endpoint,
                status,
                retry_after,
                detail: detail.map(|d| f(&d)),
            },
            Error::Server {
                endpoint,
                status,
                retry_after,
                detail,
            } => Error::Server {
                endpoint,
                status,
                retry_after,
                detail: detail.map(|d| f(&d)),
            },
            Error::Body { endpoint, message } => Error::Body {
                endpoint,
                message: f(&message),
            },
            Error::Truncated { endpoint, message } => Error::Truncated {
                endpoint,
                message: f(&message),
            },
            Error::PaginationLoop { endpoint, token } => Error::PaginationLoop {
                endpoint,
                token: f(&token),
            },
            other => other,
        }
    }

    /// Classifies an HTTP status that is not a success.
    pub fn from_status(
        endpoint: &str,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        Self::from_answer(
            endpoint,
            status,
            retry_after,
            body,
            crate::ErrorReading::default(),
        )
    }

    /// Classifies an answer that is not a success, with what the connector
    /// read in it ([`crate::Connector::read_error`]): a throttling answer is
    /// rate limited whatever its status, and the source's explanation goes
    /// into the error.
    pub fn from_answer(
        endpoint: &str,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        reading: crate::ErrorReading,
    ) -> Self {
        let endpoint = endpoint.to_owned();
        let detail = reading.message.map(|m| snippet(m.as_bytes()));
        match status {
            _ if reading.throttled || status == 429 => Error::RateLimited {
                endpoint,
                status,
                retry_after,
                detail,
            },
            _ if reading.unauthorized || status == 401 => Error::Unauthorized {
                endpoint,
                detail: Some(detail.unwrap_or_else(|| format!("HTTP {status}"))),
            },
            500..=599 => Error::Server {
                endpoint,
                status,
                retry_after,
                detail,
            },
            // What the connector read replaces the body: an error body is
            // quoted only when nobody could read it (bounded, one line).
            _ => Error::Client {
                endpoint,
                status,
                snippet: detail.unwrap_or_else(|| snippet(body)),
            },
        }
    }
}

/// Postgres errors worth retrying (the transaction is retried whole):
/// connection exceptions (08), serialization failures and deadlocks (40001,
/// 40P01), insufficient resources (53), operator intervention (57P01-57P03),
/// lock not available (55P03), and no SQLSTATE at all (I/O, pool timeout).
/// Everything else (constraints, syntax, types, permissions) is fatal.
pub fn sqlstate_is_transient(code: Option<&str>) -> bool {
    match code {
        None => true,
        Some(c) => {
            c.starts_with("08")
                || c.starts_with("53")
                || matches!(c, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
        }
    }
}

/// At most 200 characters of a body, on one line, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut s: String = one_line.trim().chars().take(200).collect();
    if one_line.trim().chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod classification {
    use super::*;

    const E: &str = "workday GET /workers";

    macro_rules! class_table {
        ($($name:ident: $err:expr => $class:pat $(if $guard:expr)?,)*) => {$(
            #[test]
            fn $name() {
                let err: Error = $err;
                assert!(matches!(err.class(), $class $(if $guard)?), "{err}: {:?}", err.class());
            }
        )*};
    }

    class_table! {
        http_429_with_retry_after: Error::from_status(E, 429, Some(Duration::from_secs(7)), b"")
            => ErrorClass::Retry { after: Some(d) } if d == Duration::from_secs(7),
        http_500: Error::from_status(E, 500, None, b"") => ErrorClass::Retry { after: None },
        http_502: Error::from_status(E, 502, None, b"") => ErrorClass::Retry { after: None },
        http_503_with_retry_after: Error::from_status(E, 503, Some(Duration::from_secs(2)), b"")
            => ErrorClass::Retry { after: Some(_) },
        http_504: Error::from_status(E, 504, None, b"") => ErrorClass::Retry { after: None },
        http_501_is_not_transient: Error::from_status(E, 501, None, b"") => ErrorClass::Fail,
        http_408: Error::from_status(E, 408, None, b"") => ErrorClass::Retry { .. },
        first_401: Error::from_status(E, 401, None, b"") => ErrorClass::RefreshAuthThenRetry,
        second_401: Error::NeedsReauth { endpoint: E.into(), detail: "again".into() } => ErrorClass::Fail,
        http_400: Error::from_status(E, 400, None, b"bad") => ErrorClass::Fail,
        http_400_read_as_throttling: Error::from_answer(E, 400, Some(Duration::from_secs(3)), b"",
            crate::ErrorReading { throttled: true, ..Default::default() })
            => ErrorClass::Retry { after: Some(d) } if d == Duration::from_secs(3),
        http_403_with_a_reason: Error::from_answer(E, 403, None, b"",
            crate::ErrorReading { message: Some("no access".into()), ..Default::default() })
            => ErrorClass::Fail,
        http_400_read_as_a_refused_login: Error::from_answer(E, 400, None, b"",
            crate::ErrorReading { unauthorized: true, ..Default::default() })
            => ErrorClass::RefreshAuthThenRetry,
        http_403: Error::from_status(E, 403, None, b"") => ErrorClass::Fail,
        http_404: Error::from_status(E, 404, None, b"") => ErrorClass::Fail,
        http_422: Error::from_status(E, 422, None, b"") => ErrorClass::Fail,
        connection_refused: Error::Transport { endpoint: E.into(), message: "connection refused".into() }
            => ErrorClass::Retry { .. },
        connection_reset: Error::Transport { endpoint: E.into(), message: "connection reset by peer".into() }
            => ErrorClass::Retry { .. },
        timeout_idempotent: Error::Timeout { endpoint: E.into(), after: Duration::from_secs(30), idempotent: true }
            => ErrorClass::Retry { .. },
        timeout_non_idempotent: Error::Timeout { endpoint: E.into(), after: Duration::from_secs(30), idempotent: false }
            => ErrorClass::Fail,
        call_timeout: Error::CallTimeout { endpoint: E.into(), after: Duration::from_secs(600) } => ErrorClass::Fail,
        malformed_body: Error::Body { endpoint: E.into(), message: "expected value".into() } => ErrorClass::Fail,
        truncated_body: Error::Truncated { endpoint: E.into(), message: "EOF while parsing".into() }
            => ErrorClass::Retry { .. },
        circuit_open: Error::CircuitOpen { endpoint: E.into(), host: "h".into(), retry_in: Duration::from_secs(30), last_failure: None }
            => ErrorClass::Retry { after: Some(d) } if d == Duration::from_secs(30),
        deferred_is_not_retried_in_the_run: Error::Deferred { endpoint: E.into(), wait: Duration::from_secs(3600) }
            => ErrorClass::Fail,
        cross_origin: Error::CrossOrigin { endpoint: E.into(), origin: "https://evil".into() } => ErrorClass::Fail,
        pagination_loop: Error::PaginationLoop { endpoint: E.into(), token: "cursor abc".into() } => ErrorClass::Fail,
        pg_serialization_failure: Error::Database { sqlstate: Some("40001".into()), message: "".into() }
            => ErrorClass::Retry { .. },
        pg_deadlock: Error::Database { sqlstate: Some("40P01".into()), message: "".into() } => ErrorClass::Retry { .. },
        pg_connection_lost: Error::Database { sqlstate: None, message: "connection reset".into() }
            => ErrorClass::Retry { .. },
        pg_admin_shutdown: Error::Database { sqlstate: Some("57P01".into()), message: "".into() }
            => ErrorClass::Retry { .. },
        pg_too_many_connections: Error::Database { sqlstate: Some("53300".into()), message: "".into() }
            => ErrorClass::Retry { .. },
        pg_unique_violation: Error::Database { sqlstate: Some("23505".into()), message: "".into() } => ErrorClass::Fail,
        pg_undefined_table: Error::Database { sqlstate: Some("42P01".into()), message: "".into() } => ErrorClass::Fail,
        pg_check_violation: Error::Database { sqlstate: Some("23514".into()), message: "".into() } => ErrorClass::Fail,
        body_too_large: Error::BodyTooLarge { endpoint: E.into(), limit: 1 << 20 } => ErrorClass::Fail,
        lease_lost: Error::LeaseLost { scope: "wd/workers".into(), detail: "taken over".into() } => ErrorClass::Fail,
    }

    #[test]
    fn snippets_are_bounded_and_single_line() {
        let s = snippet("a\nb".repeat(500).as_bytes());
        assert!(s.chars().count() <= 201 && !s.contains('\n'));
    }
}
