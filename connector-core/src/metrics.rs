//! Prometheus metrics of the connector core, with bounded labels only:
//! connection and stream names come from the config, `kind` from
//! [`Error::kind`](crate::Error::kind), `strategy` from the auth config. Raw
//! error text, URLs and record ids never become labels.
//!
//! [`render`] writes the OpenMetrics text exposition (the daemon's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use crate::breaker::BreakerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Conn {
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnStream {
    pub connection: String,
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnKind {
    pub connection: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnHost {
    pub connection: String,
    pub host: String,
}

type Counters<L> = Family<L, Counter>;

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Counters<Conn>,
    pub request_failures: Counters<ConnKind>,
    pub pages_stored: Counters<ConnStream>,
    pub records_fetched: Counters<ConnStream>,
    pub bytes_stored: Counters<ConnStream>,
    pub watermark_advances: Counters<ConnStream>,
    pub dead_lettered: Counters<ConnStream>,
    pub breaker_state: Family<ConnHost, Gauge>,
    pub breaker_opened: Counters<ConnHost>,
    pub rate_limit_waits: Counters<Conn>,
    pub rate_limit_wait_seconds: Family<Conn, Counter<f64, AtomicU64>>,
    pub token_refreshes: Counters<ConnKind>,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("connector");
    macro_rules! reg {
        ($name:literal, $help:literal) => {{
            let m = Family::default();
            registry.register($name, $help, m.clone());
            m
        }};
    }
    let requests = reg!("requests", "HTTP requests sent (every attempt)");
    let request_failures = reg!("request_failures", "Failed HTTP attempts by error kind");
    let pages_stored = reg!("pages_stored", "Pages stored in the raw store");
    let records_fetched = reg!("records_fetched", "Records in stored pages");
    let bytes_stored = reg!("bytes_stored", "Bytes of stored pages");
    let watermark_advances = reg!("watermark_advances", "Watermark moves");
    let dead_lettered = reg!(
        "records_dead_lettered",
        "Records sent to the dead-letter table"
    );
    let breaker_state = reg!(
        "circuit_breaker_state",
        "Circuit breaker state per (connection, host): 0 closed, 1 open, 2 half-open"
    );
    let breaker_opened = reg!("circuit_breaker_opened", "Times the circuit breaker opened");
    let rate_limit_waits = reg!(
        "rate_limit_waits",
        "Requests that waited for the rate limiter"
    );
    let rate_limit_wait_seconds = reg!(
        "rate_limit_wait_seconds",
        "Time spent waiting for the rate limiter"
    );
    let token_refreshes = reg!(
        "token_refreshes",
        "Access tokens obtained, by auth strategy (kind)"
    );
    Metrics {
        registry,
        requests,
        request_failures,
        pages_stored,
        records_fetched,
        bytes_stored,
        watermark_advances,
        dead_lettered,
        breaker_state,
        breaker_opened,
        rate_limit_waits,
        rate_limit_wait_seconds,
        token_refreshes,
    }
});

pub(crate) fn conn(c: &str) -> Conn {
    Conn {
        connection: c.to_owned(),
    }
}
pub(crate) fn conn_stream(c: &str, s: &str) -> ConnStream {
    ConnStream {
        connection: c.to_owned(),
        stream: s.to_owned(),
    }
}
pub(crate) fn conn_kind(c: &str, k: &str) -> ConnKind {
    ConnKind {
        connection: c.to_owned(),
        kind: k.to_owned(),
    }
}
pub(crate) fn conn_host(c: &str, h: &str) -> ConnHost {
    ConnHost {
        connection: c.to_owned(),
        host: h.to_owned(),
    }
}

pub(crate) fn breaker_state(connection: &str, host: &str, state: BreakerState) {
    METRICS
        .breaker_state
        .get_or_create(&conn_host(connection, host))
        .set(state.gauge());
}

/// The OpenMetrics text of every connector metric.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

/// The value of one counter or gauge sample in [`render`]'s output, e.g.
/// `sample("connector_requests_total", &[("connection", "acme")])`. For tests
/// and `status`.
pub fn sample(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    render().lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let rest = rest.strip_suffix('}')?;
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}
