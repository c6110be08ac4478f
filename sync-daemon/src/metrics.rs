//! The daemon's `/metrics` and `/healthz` (`[daemon] listen`).
//!
//! `/metrics` is the OpenMetrics text of three parts: the connector core's
//! counters ([`connector_core::metrics::render`]: requests, failures by kind,
//! pages, bytes, breaker, rate-limit waits, token refreshes); this process's
//! run counters (runs by outcome, records by outcome, per stream); and
//! gauges read from Postgres at each scrape, so every replica reports the
//! same shared state: last success per stream, watermark lag (age of the
//! last complete pull), open dead
//! letters, raw bytes stored, drift events, the schedule, and the leases
//! this replica holds. Label values are connection and stream names from
//! the config and outcomes from closed lists: never error text or ids.

use crate::db::Counts;
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    connection: String,
    stream: String,
    work: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    connection: String,
    stream: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    connection: String,
    stream: String,
}

struct RunMetrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    records: Family<RecordLabels, Counter>,
}

static RUNS: LazyLock<RunMetrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sync");
    let runs = Family::<RunLabels, Counter>::default();
    registry.register(
        "runs",
        "Runs this process ended, by work (sync, replay) and outcome (succeeded, deferred, failed, needs_reauth, interrupted)",
        runs.clone(),
    );
    let records = Family::<RecordLabels, Counter>::default();
    registry.register(
        "records",
        "Records of loaded pages by outcome (changed, unchanged, dead_lettered, superseded)",
        records.clone(),
    );
    RunMetrics {
        registry,
        runs,
        records,
    }
});

/// Counts a finished run (every run of this process, whatever its end).
/// `stream` is the stream the run was for, `*` for all of a connection's.
pub fn run_ended(connection: &str, stream: &str, mode: &str, status: &str, counts: &Counts) {
    let work = if mode == "replay" { "replay" } else { "sync" };
    RUNS.runs
        .get_or_create(&RunLabels {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
            work: work.to_owned(),
            outcome: status.to_owned(),
        })
        .inc();
    for (outcome, n) in [
        ("changed", counts.changed),
        ("unchanged", counts.unchanged),
        ("dead_lettered", counts.dead),
        ("superseded", counts.superseded),
    ] {
        RUNS.records
            .get_or_create(&RecordLabels {
                connection: connection.to_owned(),
                stream: stream.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(u64::try_from(n).unwrap_or(0));
    }
}

/// Whether `run` is alive: its loop ticks, and Postgres answers.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds of the scheduler loop's last tick.
    last_tick: AtomicI64,
    /// The loop's last database error, until a tick succeeds.
    db_error: Mutex<Option<String>>,
    /// How long the loop may go without a tick (3 polls and some slack).
    stale_after_secs: AtomicI64,
    /// 1 once the loop stopped for a shutdown.
    stopping: AtomicU64,
}

impl Health {
    pub fn new(poll: Duration) -> Arc<Self> {
        let h = Health::default();
        h.stale_after_secs.store(
            i64::try_from(poll.as_secs() * 3 + 10).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        h.last_tick.store(Utc::now().timestamp(), Ordering::Relaxed);
        Arc::new(h)
    }

    /// The loop ticked; `db` is how its database query went.
    pub fn tick(&self, db: Result<(), String>) {
        self.last_tick
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        if let Ok(mut e) = self.db_error.lock() {
            *e = db.err();
        }
    }

    pub fn stopping(&self) {
        self.stopping.store(1, Ordering::Relaxed);
    }

    /// `Ok` when healthy, else why not (one reason per line).
    async fn check(&self, pool: &PgPool) -> Result<(), String> {
        let mut why = Vec::new();
        if self.stopping.load(Ordering::Relaxed) == 1 {
            why.push("shutting down: no new run starts".to_owned());
        }
        let age = Utc::now().timestamp() - self.last_tick.load(Ordering::Relaxed);
        if age > self.stale_after_secs.load(Ordering::Relaxed) {
            why.push(format!("the scheduler loop has not ticked for {age}s"));
        }
        if let Some(e) = self.db_error.lock().ok().and_then(|e| e.clone()) {
            why.push(format!("the scheduler's last database query failed: {e}"));
        }
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("select 1").execute(pool),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => why.push(format!("database: {}", e)),
            Err(_) => why.push("database: no answer within 2s".into()),
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("\n"))
        }
    }
}

/// The configured streams (connection, stream name) the gauges report.
pub type Streams = Vec<(String, String)>;

/// The OpenMetrics text of `/metrics`.
pub async fn render(pool: &PgPool, streams: &Streams) -> String {
    let mut out = String::new();
    for part in [connector_core::metrics::render(), encode(&RUNS.registry)] {
        out.push_str(part.trim_end().trim_end_matches("# EOF"));
    }
    let mut scrape = Registry::with_prefix("sync");
    let up = Gauge::<i64, AtomicI64>::default();
    match shared_gauges(pool, streams, &mut scrape).await {
        Ok(()) => {
            up.set(1);
        }
        Err(e) => tracing::warn!(event = "metrics_query_failed", "{e}"),
    }
    scrape.register(
        "database_up",
        "1 when the gauges could be read from Postgres",
        up,
    );
    out.push_str(&encode(&scrape));
    out
}

/// OpenMetrics text in the classic Prometheus text format (0.0.4): a
/// counter family is named with its `_total` suffix, and the `# EOF` and
/// `# UNIT` lines go.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn encode(r: &Registry) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, r);
    s
}

type Gauges = Family<StreamLabels, Gauge<f64, AtomicU64>>;

fn labels(connection: &str, stream: &str) -> StreamLabels {
    StreamLabels {
        connection: connection.to_owned(),
        stream: stream.to_owned(),
    }
}

/// The gauges of the state every replica shares, from Postgres.
async fn shared_gauges(
    pool: &PgPool,
    streams: &Streams,
    r: &mut Registry,
) -> Result<(), sqlx::Error> {
    let mut reg = |name: &str, help: &str| {
        let g = Gauges::default();
        r.register(name, help, g.clone());
        g
    };
    let last_success = reg(
        "last_success_timestamp_seconds",
        "Unix time the last successful sync of the stream ended",
    );
    let lag = reg(
        "watermark_lag_seconds",
        "Now minus the start of the stream's last complete pull (server time): how old the newest complete view of the source is",
    );
    let dead = reg("dead_letters_open", "Open dead letters per stream");
    let bytes = reg("raw_stored_bytes", "Bytes of raw pages stored per stream");
    let drift = reg(
        "drift_events",
        "Schema drift events recorded per stream (added, removed, type changed fields)",
    );
    let next = reg(
        "schedule_next_run_timestamp_seconds",
        "Unix time the stream is next due",
    );
    let failures = reg(
        "schedule_failures",
        "Failed scheduled runs of the stream in a row (its backoff)",
    );
    let leases = Gauge::<i64, AtomicI64>::default();
    r.register(
        "leases_held",
        "Stream leases this process holds now",
        leases.clone(),
    );
    // Zero rather than absent for every configured stream: a series that
    // drops to 0 stays.
    for (c, n) in streams {
        dead.get_or_create(&labels(c, n)).set(0.0);
        drift.get_or_create(&labels(c, n)).set(0.0);
    }
    let conns: Vec<&str> = streams.iter().map(|s| s.0.as_str()).collect();
    let names: Vec<&str> = streams.iter().map(|s| s.1.as_str()).collect();
    let configured = |c: &str, s: &str| {
        let name = s.split('@').next().unwrap_or(s);
        streams.iter().any(|(cc, n)| cc == c && n == name)
    };
    for row in sqlx::query(
        "select u.c, u.s, extract(epoch from (select max(r.finished_at) from sync_run r
             where r.connection = u.c and (r.stream = u.s or r.stream is null)
               and r.mode <> 'replay' and r.status = 'succeeded'))::float8
         from unnest($1::text[], $2::text[]) as u(c, s)",
    )
    .bind(&conns)
    .bind(&names)
    .fetch_all(pool)
    .await?
    {
        if let Some(t) = row.get::<Option<f64>, _>(2) {
            last_success
                .get_or_create(&labels(row.get(0), row.get(1)))
                .set(t);
        }
    }
    let now = Utc::now();
    for row in sqlx::query("select connection, stream, cursor from watermark")
        .fetch_all(pool)
        .await?
    {
        let (c, s): (String, String) = (row.get(0), row.get(1));
        if !configured(&c, &s) {
            continue;
        }
        let cursor: Option<crate::db::Cursor> = serde_json::from_value(row.get(2)).ok();
        // Not the high-water mark: a quiet source's newest record may be
        // old while the stream is up to date.
        if let Some(at) = cursor.and_then(|c| c.completed_at.or(c.high_water)) {
            let secs = (now - at).num_milliseconds() as f64 / 1000.0;
            lag.get_or_create(&labels(&c, &s)).set(secs.max(0.0));
        }
    }
    for (sql, g) in [
        (
            "select connection, stream, count(*)::float8 from dead_letter where status = 'open' group by 1, 2",
            &dead,
        ),
        (
            "select connection, stream, sum(body_bytes)::float8 from raw_page group by 1, 2",
            &bytes,
        ),
        (
            "select connection, stream, count(*)::float8 from drift_event group by 1, 2",
            &drift,
        ),
        (
            "select connection, stream, extract(epoch from next_at)::float8 from sync_schedule",
            &next,
        ),
        (
            "select connection, stream, failures::float8 from sync_schedule",
            &failures,
        ),
    ] {
        for row in sqlx::query(sql).fetch_all(pool).await? {
            let (c, s): (String, String) = (row.get(0), row.get(1));
            if configured(&c, &s) {
                g.get_or_create(&labels(&c, &s))
                    .set(row.get::<Option<f64>, _>(2).unwrap_or(0.0));
            }
        }
    }
    let held: i64 = sqlx::query_scalar(
        "select count(*) from sync_lease where holder like $1 || '%' and expires_at > now()",
    )
    .bind(crate::lease::process_prefix())
    .fetch_one(pool)
    .await?;
    leases.set(held);
    Ok(())
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub fn serve(
    listener: tokio::net::TcpListener,
    pool: PgPool,
    streams: Streams,
    health: Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    let state = Arc::new((pool, streams, health));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let state = state.clone();
                    async move {
                        let (pool, streams, health) = &*state;
                        let openmetrics = req
                            .headers()
                            .get(hyper::header::ACCEPT)
                            .and_then(|a| a.to_str().ok())
                            .is_some_and(|a| a.contains("application/openmetrics-text"));
                        let (status, ctype, body) = match req.uri().path() {
                            // Prometheus asks for OpenMetrics; anything else
                            // gets the classic text format.
                            "/metrics" if openmetrics => (
                                StatusCode::OK,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                render(pool, streams).await,
                            ),
                            "/metrics" => (
                                StatusCode::OK,
                                "text/plain; version=0.0.4; charset=utf-8",
                                classic(&render(pool, streams).await),
                            ),
                            "/healthz" => match health.check(pool).await {
                                Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
                                Err(why) => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "text/plain",
                                    format!("{why}\n"),
                                ),
                            },
                            _ => (
                                StatusCode::NOT_FOUND,
                                "text/plain",
                                "not found: /metrics or /healthz\n".to_owned(),
                            ),
                        };
                        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
                        *r.status_mut() = status;
                        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
                            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
