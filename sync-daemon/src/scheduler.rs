//! `sync-daemon run`: the scheduled daemon (DESIGN.md §10; ADR 0012).
//!
//! Every replica runs the same loop against the same Postgres:
//! - the due times live in `sync_schedule`, one row per scheduled
//!   (connection, stream), so replicas agree on them;
//! - a due stream is run through [`pipeline::sync_due`]: it takes the
//!   connection's lock and the stream's lease as a one-shot `sync` does,
//!   claims the due time under that lock, and sets the next one before the
//!   lock goes. So each due time is run by one replica, never two at once;
//!   one a replica died in is still due, and the next replica to get the
//!   lock runs it (the watermark says where to resume);
//! - a stream whose connection is busy (another replica runs one of its
//!   streams) is tried again a few polls later;
//! - after a run: a success is due again at the next regular time
//!   (jittered), a deferred run at its `resume_at`, a failed one after an
//!   exponential backoff (`[daemon] backoff_base` … `backoff_max`), without
//!   holding back the others; at most `max_concurrent_runs` run at once;
//! - SIGTERM or SIGINT: no new run starts; running ones stop at their next
//!   page boundary (what was fetched is loaded, the watermark covers it),
//!   or where they are once `shutdown_grace` is over; their ledger rows
//!   are closed, their leases released, and the process exits 0. Their
//!   streams stay due, so another replica picks them up at once.

use crate::config::Config;
use crate::metrics::Health;
use crate::pipeline::{self, Shutdown, StopLevel};
use crate::schedule::{DaemonConfig, Outcome, Schedule, after_run};
use chrono::{DateTime, Utc};
use connector_core::RawStore;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// A scheduled run's hold on its stream's due time.
#[derive(Debug)]
pub struct Claim {
    pub connection: String,
    pub stream: String,
    pub schedule: Schedule,
    pub daemon: DaemonConfig,
    /// Failures in a row before this run (read when the claim is taken).
    failures: AtomicU32,
}

impl Claim {
    pub fn new(connection: &str, stream: &str, schedule: Schedule, daemon: DaemonConfig) -> Self {
        Claim {
            connection: connection.to_owned(),
            stream: stream.to_owned(),
            schedule,
            daemon,
            failures: AtomicU32::new(0),
        }
    }

    /// Claims the due time of the stream; `false` when it is not due
    /// (another replica ran it since). Call it holding the connection's lock.
    pub async fn take(&self, pool: &PgPool) -> anyhow::Result<bool> {
        let failures: Option<i32> = sqlx::query_scalar(
            "update sync_schedule set claimed_by = $3, claimed_at = now()
             where connection = $1 and stream = $2 and next_at <= now() returning failures",
        )
        .bind(&self.connection)
        .bind(&self.stream)
        .bind(crate::lease::process_prefix())
        .fetch_optional(pool)
        .await?;
        if let Some(f) = failures {
            self.failures
                .store(u32::try_from(f).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(failures.is_some())
    }

    /// Sets the next due time after run `run` ended with `status` (still
    /// holding the lock). A failure to write it leaves the stream due: the
    /// next replica with the lock runs it again.
    pub async fn finish(
        &self,
        pool: &PgPool,
        run: i64,
        status: &str,
        resume_at: Option<DateTime<Utc>>,
    ) {
        let now = Utc::now();
        let outcome = match status {
            "succeeded" => Outcome::Succeeded,
            "deferred" => Outcome::Deferred(resume_at.unwrap_or(now)),
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Failed,
        };
        let mut rng = fastrand::Rng::new();
        let (next, failures) = after_run(
            &self.schedule,
            &self.daemon,
            outcome,
            self.failures.load(Ordering::Relaxed),
            now,
            &mut rng,
        );
        let r = sqlx::query(
            "update sync_schedule set next_at = $3, failures = $4, claimed_by = null,
                 claimed_at = null, last_run_id = $5, last_outcome = $6, last_finished_at = now()
             where connection = $1 and stream = $2",
        )
        .bind(&self.connection)
        .bind(&self.stream)
        .bind(next)
        .bind(i32::try_from(failures).unwrap_or(i32::MAX))
        .bind(run)
        .bind(status)
        .execute(pool)
        .await;
        match r {
            Ok(_) => tracing::info!(
                event = "run_scheduled", connection = %self.connection, stream = %self.stream,
                outcome = status, failures, next = %next.to_rfc3339(), "next run at {next}"
            ),
            Err(e) => tracing::warn!(
                event = "schedule_not_saved", connection = %self.connection, stream = %self.stream,
                "the next due time could not be saved ({e}); the stream stays due"
            ),
        }
    }
}

/// A stream running in this process, taken out of the set when dropped.
struct Running {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut r) = self.set.lock() {
            r.remove(&self.key);
        }
    }
}

/// One scheduled (connection, stream).
#[derive(Debug, Clone)]
struct Unit {
    connection: String,
    stream: String,
    schedule: Schedule,
}

/// The scheduled streams of the config; an error names a stream schedule
/// of a stream the connector does not have.
fn units(cfg: &Config) -> anyhow::Result<Vec<Unit>> {
    let mut out = Vec::new();
    for c in &cfg.connections {
        let built = crate::registry::build(c)?;
        let mut names: Vec<&str> = Vec::new();
        let defs = built.connector.streams();
        for d in &defs {
            if !names.contains(&d.name) {
                names.push(d.name);
            }
        }
        for s in c.stream_schedules.keys() {
            if !names.contains(&s.as_str()) {
                anyhow::bail!(
                    "config: connection {:?}: streams.{s} names no stream of the connector (its streams: {})",
                    c.name,
                    names.join(", ")
                );
            }
        }
        for n in names {
            if let Some(s) = c.schedule_of(n) {
                out.push(Unit {
                    connection: c.name.clone(),
                    stream: n.to_owned(),
                    schedule: s.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Writes each unit's row: a new one is due at its first time; one whose
/// schedule changed is due at the new schedule's next time.
async fn register(pool: &PgPool, cfg: &Config, units: &[Unit]) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::new();
    let now = Utc::now();
    for c in &cfg.connections {
        if units.iter().any(|u| u.connection == c.name) {
            crate::db::ensure_connection(pool, &c.name, &c.connector).await?;
        }
    }
    for u in units {
        sqlx::query(
            "insert into sync_schedule (connection, stream, spec, next_at) values ($1, $2, $3, $4)
             on conflict (connection, stream) do update set spec = excluded.spec,
                 next_at = least(sync_schedule.next_at, excluded.next_at), failures = 0
             where sync_schedule.spec <> excluded.spec",
        )
        .bind(&u.connection)
        .bind(&u.stream)
        .bind(u.schedule.spec())
        .bind(u.schedule.first_due(now, &mut rng))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Runs the scheduler until SIGTERM or SIGINT.
pub async fn run(cfg: &Config, pool: &PgPool, store: &RawStore) -> anyhow::Result<()> {
    run_until(cfg, pool, store, pipeline::stop_signal()).await
}

/// Runs the scheduler until `stop` resolves, then shuts down as on SIGTERM.
pub async fn run_until(
    cfg: &Config,
    pool: &PgPool,
    store: &RawStore,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let units = units(cfg)?;
    if units.is_empty() {
        anyhow::bail!(
            "no connection has a schedule: add `every = \"15m\"` or `schedule = \"*/15 * * * *\"` to a [[connection]] (or a [connection.streams.NAME]) of the config"
        );
    }
    for c in &cfg.connections {
        if units.iter().any(|u| u.connection == c.name) {
            // A scheduled connection's credentials must be there from the start.
            c.require_env(crate::config::Need::Source)?;
        } else {
            tracing::warn!(event = "not_scheduled", connection = %c.name, "connection {:?} has no schedule: run leaves it alone", c.name);
        }
    }
    register(pool, cfg, &units).await?;
    let daemon = cfg.daemon.clone();
    let health = Health::new(daemon.poll);
    let streams: crate::metrics::Streams = units
        .iter()
        .map(|u| (u.connection.clone(), u.stream.clone()))
        .collect();
    let server = match daemon.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "daemon.listen: cannot listen on {addr}: {e} (another replica on this host? give each its own with `run --listen 127.0.0.1:PORT`)"
                    )
                })?;
            eprintln!(
                "serving /metrics and /healthz at http://{}",
                l.local_addr()?
            );
            Some(crate::metrics::serve(
                l,
                pool.clone(),
                streams.clone(),
                health.clone(),
            ))
        }
        None => None,
    };
    eprintln!(
        "scheduling {} stream(s) of {} connection(s), at most {} run(s) at once; SIGTERM or Ctrl-C stops",
        units.len(),
        units
            .iter()
            .map(|u| &u.connection)
            .collect::<HashSet<_>>()
            .len(),
        daemon.max_concurrent_runs
    );
    let (stop_tx, stop_rx) = watch::channel(StopLevel::Running);
    let permits = Arc::new(Semaphore::new(daemon.max_concurrent_runs.get()));
    let running: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    // Streams whose connection was busy: not tried again before then.
    let busy_until: Arc<Mutex<HashMap<(String, String), tokio::time::Instant>>> = Arc::default();
    // One client per connection for the daemon's life: its streams share
    // the rate limit, the breaker and the cached token.
    let mut contexts: HashMap<String, pipeline::Ctx> = HashMap::new();
    for u in &units {
        if contexts.contains_key(&u.connection) {
            continue;
        }
        let ctx = crate::context(cfg, pool, store, &u.connection, true)?;
        crate::restore_breaker(&ctx).await;
        let ctx = pipeline::Ctx {
            progress: None,
            stop_on_signal: false,
            shutdown: Some(Shutdown(stop_rx.clone())),
            ..ctx
        };
        contexts.insert(u.connection.clone(), ctx);
    }
    let mut tasks = JoinSet::new();
    let signal = stop;
    tokio::pin!(signal);
    // Wakes at the earliest due time, or after `poll` (another replica may
    // have moved the times; a busy connection may be free).
    let mut wake = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep_until(wake) => {}
            Some(_) = tasks.join_next() => continue,
        }
        let due = due_units(pool, &units).await;
        health.tick(due.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let wait = match &due {
            Ok((_, Some(next))) => (*next).min(daemon.poll),
            _ => daemon.poll,
        };
        wake = tokio::time::Instant::now() + wait.max(Duration::from_millis(50));
        let Ok((due, _)) = due else { continue };
        for u in due {
            let key = (u.connection.clone(), u.stream.clone());
            if running.lock().map(|r| r.contains(&key)).unwrap_or(true) {
                continue;
            }
            if busy_until
                .lock()
                .ok()
                .and_then(|b| b.get(&key).copied())
                .is_some_and(|t| t > tokio::time::Instant::now())
            {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Some(ctx) = contexts.get(&u.connection).cloned() else {
                continue;
            };
            if let Ok(mut r) = running.lock() {
                r.insert(key.clone());
            }
            let claim = Claim::new(&u.connection, &u.stream, u.schedule.clone(), daemon.clone());
            let busy_until = busy_until.clone();
            let poll = daemon.poll;
            // The stream leaves `running` however its task ends (a panic too).
            let guard = Running {
                set: running.clone(),
                key: key.clone(),
            };
            tasks.spawn(async move {
                let _permit = permit;
                let _guard = guard;
                match pipeline::sync_due(&ctx, &claim.stream, &claim).await {
                    Ok(Some(s)) => tracing::info!(
                        event = "scheduled_run_ended", connection = %claim.connection,
                        stream = %claim.stream, run = s.run_id, outcome = s.outcome,
                        changed = s.changed, unchanged = s.unchanged, dead = s.dead_lettered,
                        "run #{} {}", s.run_id, s.outcome
                    ),
                    Ok(None) => tracing::debug!(
                        event = "already_run", connection = %claim.connection, stream = %claim.stream,
                        "another replica ran this due time"
                    ),
                    Err(e) if e.is::<crate::lease::Busy>() => {
                        tracing::debug!(event = "connection_busy", connection = %claim.connection, stream = %claim.stream, "{e}");
                        if let Ok(mut b) = busy_until.lock() {
                            b.insert(key.clone(), tokio::time::Instant::now() + poll * 5);
                        }
                    }
                    Err(e) if e.chain().any(|c| c.is::<pipeline::Stopped>()) => tracing::info!(
                        event = "scheduled_run_interrupted", connection = %claim.connection,
                        stream = %claim.stream, "stopped at a page boundary for the shutdown"
                    ),
                    Err(e) => tracing::warn!(
                        event = "scheduled_run_failed", connection = %claim.connection,
                        stream = %claim.stream, "{}", ctx.scrubber().scrub(&format!("{e:#}"))
                    ),
                }
            });
        }
    }
    health.stopping();
    let n = tasks.len();
    if n > 0 {
        eprintln!(
            "stopping: {n} run(s) finish at their next page boundary (at most {}s)",
            daemon.shutdown_grace.as_secs()
        );
    }
    let _ = stop_tx.send(StopLevel::AtCheckpoint);
    let drained = tokio::time::timeout(daemon.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("grace period over: stopping the remaining run(s) where they are");
        let _ = stop_tx.send(StopLevel::Now);
        // They close their ledger rows and release their leases.
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if closed.is_err() {
            tasks.abort_all();
        }
    }
    if let Some(s) = server {
        s.abort();
    }
    eprintln!("stopped");
    Ok(())
}

/// The configured units due now, earliest first, and how long until the
/// next one is due.
async fn due_units(
    pool: &PgPool,
    units: &[Unit],
) -> Result<(Vec<Unit>, Option<Duration>), sqlx::Error> {
    let conns: Vec<&str> = units.iter().map(|u| u.connection.as_str()).collect();
    let names: Vec<&str> = units.iter().map(|u| u.stream.as_str()).collect();
    let rows = sqlx::query(
        "select s.connection, s.stream, extract(epoch from s.next_at - now())::float8
         from sync_schedule s
         join unnest($1::text[], $2::text[]) as u(c, n) on s.connection = u.c and s.stream = u.n
         order by s.next_at",
    )
    .bind(&conns)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let mut due = Vec::new();
    let mut next: Option<Duration> = None;
    for r in &rows {
        let (c, s, secs): (String, String, f64) = (r.get(0), r.get(1), r.get(2));
        if secs > 0.0 {
            let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
            next = Some(next.map_or(d, |n| n.min(d)));
        } else if let Some(u) = units.iter().find(|u| u.connection == c && u.stream == s) {
            due.push(u.clone());
        }
    }
    Ok((due, next))
}
