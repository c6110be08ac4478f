//! Sync (fetch → raw store → ledger → load) and replay (ledger → load).
//!
//! Fetch and load run concurrently with a bounded queue between them: a slow
//! Postgres slows the fetcher, and memory stays flat whatever the data size
//! (at most `fetch_concurrency` bodies in flight, [`QUEUE_PAGES`] queued and
//! [`BATCH_PAGES`] in each of the two batches the loader holds, each at most
//! `max_body_bytes`; the loader's bookkeeping is per record, and a batch
//! holds at most [`BATCH_RECORDS`] records past its first page, a page at
//! most 100,000).
//!
//! The loader keeps two batches in flight: while one is written in its
//! transaction ([`crate::load::apply`]), the next is received, split, hashed
//! and mapped ([`crate::load::prepare`], no transaction), so the daemon's work
//! overlaps Postgres's and each transaction holds only database work.
//!
//! Every run is ledgered and always ends in a terminal state (`succeeded`,
//! `failed`, `deferred`, `needs_reauth`, `interrupted`), whatever path it
//! leaves by, a panic included. Every write of the run first checks its lease
//! ([`crate::lease`]). A batch Postgres refuses on a data error is isolated
//! record by record: the records it refuses are dead-lettered and the rest
//! loads, so no record can stall a stream.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use connector_core::events::{Emit, PageStored, RecordsDeadLettered, WatermarkAdvanced};
use connector_core::{
    DynConnector, ErrorClass, HttpClient, ObjectProblem, PageToken, Pager, RawStore, StreamDef,
    SyncMode,
};
use futures::FutureExt;
use futures::stream::StreamExt;
use sqlx::{Acquire, PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::db::{self, Counts, NewPage, PageRef, RunEnd};
use crate::lease::{self, Lease};
use crate::load::{
    DiffReport, LoadCtx, LoadOpts, PageBody, Prepared, RecordKey, apply, load_batch, prepare,
    record_keys,
};

/// Pages queued between fetch and load.
pub const QUEUE_PAGES: usize = 16;
/// Pages loaded per transaction, at most…
pub const BATCH_PAGES: usize = 10;
/// …and records (a batch holds at least one page, of at most
/// `connector_core::records::MAX_RECORDS_PER_PAGE` records).
pub const BATCH_RECORDS: i64 = 10_000;

/// Stored pages cut into load batches: at most [`BATCH_PAGES`] pages and,
/// past the first page, [`BATCH_RECORDS`] records each.
fn batches(pages: &[PageRef]) -> Vec<&[PageRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut records = 0i64;
    for (i, p) in pages.iter().enumerate() {
        let n = i64::from(p.record_count.max(0));
        if i > start && (i - start == BATCH_PAGES || records + n > BATCH_RECORDS) {
            out.push(&pages[start..i]);
            start = i;
            records = 0;
        }
        records += n;
    }
    if start < pages.len() {
        out.push(&pages[start..]);
    }
    out
}

/// Everything one connection's sync or replay needs.
#[derive(Clone)]
pub struct Ctx {
    pub pool: PgPool,
    pub store: RawStore,
    pub tenant: String,
    pub connection: String,
    pub connector: Arc<dyn DynConnector>,
    /// What each stream of the connector feeds (entity and mapper).
    pub models: Vec<canonical_model::StreamModel>,
    pub http: Option<HttpClient>,
    pub fetch_concurrency: usize,
    /// Called after each loaded batch with (pages, records) so far.
    pub progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
    /// SIGINT / SIGTERM end the run as `interrupted` (the command line sets it).
    pub stop_on_signal: bool,
    /// `run`'s shutdown: the run stops at its next page boundary, then,
    /// after the grace period, where it is.
    pub shutdown: Option<Shutdown>,
    /// The largest share of a full-refresh stream's rows one sweep may
    /// delete (`max_sweep_share`; see [`crate::sweep`]).
    pub max_sweep_share: f64,
    /// The secret values of the connection's config (`AuthConfig::secret_values`):
    /// scrubbed from dead-letter messages, which quote what the source sent.
    pub secrets: Vec<secrecy::SecretString>,
}

impl Ctx {
    /// The model of stream `name`.
    pub fn model(&self, name: &str) -> anyhow::Result<&canonical_model::StreamModel> {
        self.models
            .iter()
            .find(|m| m.stream == name)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "connection {:?}: stream {name} feeds no canonical entity",
                    self.connection
                )
            })
    }

    /// A scrubber of every secret known now: the config's and, during a
    /// sync, the tokens the HTTP client holds.
    pub fn scrubber(&self) -> connector_core::secret::Scrubber {
        let mut all = self.secrets.clone();
        if let Some(http) = &self.http {
            all.extend(http.secrets());
        }
        connector_core::secret::Scrubber::new(&all)
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("connection", &self.connection)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// How far a shutdown of `run` has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    Running,
    /// Stop at the next checkpoint: no new page is asked for; what was
    /// fetched is loaded and the watermark covers it.
    AtCheckpoint,
    /// The grace period is over: stop where the run is (its open
    /// transaction rolls back; the ledger and the leases are still closed).
    Now,
}

/// The receiving end of `run`'s shutdown, shared by its runs.
#[derive(Clone, Debug)]
pub struct Shutdown(pub tokio::sync::watch::Receiver<StopLevel>);

impl Shutdown {
    fn at_checkpoint(&self) -> bool {
        *self.0.borrow() >= StopLevel::AtCheckpoint
    }

    /// Resolves once the run must stop where it is (never, when the
    /// sender is gone without asking).
    async fn now(&self) {
        let mut r = self.0.clone();
        if r.wait_for(|l| *l == StopLevel::Now).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A run stopped at a checkpoint for `run`'s shutdown.
#[derive(Debug, thiserror::Error)]
#[error("stopped at a page boundary for a shutdown; the next run resumes from the watermark")]
pub struct Stopped;

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub run_id: i64,
    pub pages_fetched: u64,
    pub pages_loaded: u64,
    /// Pages whose raw object was missing or corrupt: set aside (a replay
    /// skips them; a sync fetches an unloaded one again when it can).
    pub pages_missing: u64,
    pub pages_refetched: u64,
    /// Pages whose body could not be read (stored and dead-lettered).
    pub pages_unreadable: u64,
    /// Streams whose pull skipped pages it could not read, or stopped short.
    pub pulls_incomplete: u64,
    pub changed: i64,
    pub unchanged: i64,
    pub dead_lettered: i64,
    /// Records another record with the same source id won over.
    pub superseded: i64,
    /// Rows soft-deleted because a complete full pull no longer listed them.
    pub swept: u64,
    /// Journal entries whose balance this run checked, and how many of
    /// them do not balance ([`crate::balance`]).
    pub balance: crate::balance::Checked,
    pub elapsed_secs: f64,
    pub diff: Option<DiffReport>,
    /// `succeeded` or `deferred` (failures are errors).
    pub outcome: &'static str,
    /// A deferred run: when to resume (the source's wait, from now).
    pub resume_at: Option<DateTime<Utc>>,
    /// Schema drift on fields the mapping reads ([`crate::drift`]).
    pub warnings: Vec<String>,
}

impl Summary {
    pub fn counts(&self) -> Counts {
        Counts {
            changed: self.changed,
            unchanged: self.unchanged,
            dead: self.dead_lettered,
            superseded: self.superseded,
        }
    }
    pub fn records(&self) -> i64 {
        self.counts().seen()
    }
    pub fn records_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.records() as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

/// The run being executed: its ledger id and its leases.
#[derive(Debug)]
pub struct Run<'a> {
    pub id: i64,
    pub lease: &'a Lease,
}

fn streams(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<Vec<StreamDef>> {
    Ok(crate::registry::select_streams(
        &ctx.connection,
        ctx.connector.streams(),
        only,
    )?)
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How a run's body ended.
enum Ended {
    Done(anyhow::Result<()>),
    Panicked(String),
    Interrupted,
}

/// Runs `body` as one ledgered run of the connection: takes the connection's
/// lock and the streams' leases, closes runs a dead process left open,
/// records the run, and finishes it with its counts and a terminal status
/// whatever `body` does (returns, fails, panics, or is stopped by a signal).
async fn ledgered_run(
    ctx: &Ctx,
    only_stream: Option<&str>,
    work: Work<'_>,
) -> anyhow::Result<Summary> {
    ledgered_run_claimed(ctx, only_stream, work, None)
        .await
        .map(|s| s.unwrap_or_default())
}

/// [`ledgered_run`] of a scheduled run: `None` when the claim finds the
/// stream not due any more (another replica ran it).
async fn ledgered_run_claimed(
    ctx: &Ctx,
    only_stream: Option<&str>,
    work: Work<'_>,
    claim: Option<&crate::scheduler::Claim>,
) -> anyhow::Result<Option<Summary>> {
    let (mode, dry_run) = match work {
        Work::Sync => ("full", false),
        Work::Replay { dry_run, .. } => ("replay", dry_run),
    };
    let started = Instant::now();
    let defs = streams(ctx, only_stream)?;
    db::ensure_connection(&ctx.pool, &ctx.connection, ctx.connector.name()).await?;
    let session = lease::lock(&ctx.pool, &ctx.connection).await?;
    // Under the connection's lock: only one replica can claim a due time.
    if let Some(claim) = claim
        && !claim.take(&ctx.pool).await?
    {
        let _ = sqlx::Connection::close(session).await;
        return Ok(None);
    }
    db::close_abandoned_runs(&ctx.pool, &ctx.connection).await?;
    let run = db::start_run(&ctx.pool, &ctx.connection, only_stream, mode, dry_run).await?;
    let mut summary = Summary {
        run_id: run,
        ..Default::default()
    };
    // From here on, the run is finished in the ledger whatever happens.
    let keys: Vec<String> = defs.iter().map(StreamDef::key).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let ended = match Lease::take(&ctx.pool, session, &ctx.connection, &names, run).await {
        Err(e) => (Ended::Done(Err(e)), None),
        Ok(lease) => {
            let r = Run {
                id: run,
                lease: &lease,
            };
            let body = async {
                match work {
                    Work::Sync => sync_streams(ctx, &r, &defs, &mut summary).await,
                    Work::Replay { dry_run, pages } => {
                        replay_streams(ctx, &r, &defs, dry_run, pages, &mut summary).await
                    }
                }
            };
            let work = std::panic::AssertUnwindSafe(body).catch_unwind();
            let shutdown_now = async {
                match &ctx.shutdown {
                    Some(s) => s.now().await,
                    None => std::future::pending().await,
                }
            };
            let ended = tokio::select! {
                r = work => r.map_or_else(|p| Ended::Panicked(panic_text(p)), Ended::Done),
                _ = stop_signal(), if ctx.stop_on_signal => Ended::Interrupted,
                _ = shutdown_now => Ended::Interrupted,
            };
            (ended, Some(lease))
        }
    };
    let (ended, lease) = ended;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    let (status, error, result) = match ended {
        Ended::Done(Ok(())) => ("succeeded", None, Ok(())),
        Ended::Done(Err(e)) => {
            let text = format!("{e:#}");
            if is_needs_reauth(&e) {
                ("needs_reauth", Some(text), Err(e))
            } else if e.chain().any(|c| c.is::<Stopped>()) {
                ("interrupted", Some(text), Err(e))
            } else if let Some(wait) = deferred_wait(&e) {
                // Deferred is not a failure: the watermark holds the place to resume.
                let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(7));
                summary.resume_at = Some(
                    Utc::now()
                        .checked_add_signed(wait)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                );
                ("deferred", Some(text), Ok(()))
            } else {
                ("failed", Some(text), Err(e))
            }
        }
        Ended::Panicked(msg) => {
            let text = format!("internal error (a bug): {msg}");
            ("failed", Some(text.clone()), Err(anyhow::anyhow!(text)))
        }
        Ended::Interrupted => {
            let text = "interrupted by a signal; the next run resumes from the watermark";
            (
                "interrupted",
                Some(text.to_owned()),
                Err(anyhow::anyhow!(text)),
            )
        }
    };
    summary.outcome = status;
    if let Some(http) = &ctx.http
        && let Err(e) = db::save_breaker(&ctx.pool, &ctx.connection, &http.breaker()).await
    {
        tracing::warn!(event = "breaker_not_saved", connection = %ctx.connection, "{e:#}");
    }
    // The error quotes what failed, which may quote what the source sent.
    let error = error.map(|e| ctx.scrubber().scrub(&e));
    let end = RunEnd {
        status,
        pages: (mode == "replay").then_some(summary.pages_loaded as i64),
        pages_missing: summary.pages_missing as i64,
        pages_unreadable: summary.pages_unreadable as i64,
        counts: summary.counts(),
        error: error.as_deref(),
        resume_at: summary.resume_at,
    };
    // The ledger row is the run's last word: try hard, then leave it to the
    // next run (which marks a run left `running` as `interrupted`).
    let mut finished = db::finish_run(&ctx.pool, run, &end).await;
    for attempt in 1..4 {
        if finished.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        finished = db::finish_run(&ctx.pool, run, &end).await;
    }
    crate::metrics::run_ended(
        &ctx.connection,
        only_stream.unwrap_or("*"),
        mode,
        status,
        &summary.counts(),
    );
    // The next due time is set while the lock is still held.
    if let Some(claim) = claim {
        claim
            .finish(&ctx.pool, run, status, summary.resume_at)
            .await;
    }
    if let Some(lease) = lease {
        lease.release().await;
    }
    finished?;
    result.map(|()| Some(summary))
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// What a ledgered run does.
#[derive(Debug, Clone, Copy)]
enum Work<'a> {
    Sync,
    /// A replay of every stored page, or only of these raw pages (a retry
    /// of dead letters).
    Replay {
        dry_run: bool,
        pages: Option<&'a std::collections::HashSet<i64>>,
    },
}

/// Fetches every page of the connection's streams into the raw store and loads them.
pub async fn sync(ctx: &Ctx, only_stream: Option<&str>) -> anyhow::Result<Summary> {
    ledgered_run(ctx, only_stream, Work::Sync).await
}

/// A scheduled sync of `stream`: claims its due time under the connection's
/// lock and sets the next one before the lock goes; `None` when it is not
/// due any more (another replica ran it).
pub async fn sync_due(
    ctx: &Ctx,
    stream: &str,
    claim: &crate::scheduler::Claim,
) -> anyhow::Result<Option<Summary>> {
    ledgered_run_claimed(ctx, Some(stream), Work::Sync, Some(claim)).await
}

async fn sync_streams(
    ctx: &Ctx,
    run: &Run<'_>,
    defs: &[StreamDef],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    // Per stream name: its keys synced in this run, what their complete
    // pulls saw, and how many of them could be swept.
    struct Sweepable {
        entity: canonical_model::EntityKind,
        keys: Vec<String>,
        seen: crate::sweep::Seen,
        complete: usize,
    }
    let mut sweeps: Vec<(&str, Sweepable)> = Vec::new();
    for def in defs {
        let at = |e: anyhow::Error| e.context(stream_context(&ctx.connection, &def.key()));
        let seen = sync_stream(ctx, run, def, summary).await.map_err(at)?;
        if def.mode != SyncMode::FullRefresh || def.details.is_some() {
            continue;
        }
        let entity = ctx.model(def.name)?.entity;
        let i = match sweeps.iter().position(|(n, _)| *n == def.name) {
            Some(i) => i,
            None => {
                sweeps.push((
                    def.name,
                    Sweepable {
                        entity,
                        keys: Vec::new(),
                        seen: crate::sweep::Seen::default(),
                        complete: 0,
                    },
                ));
                sweeps.len() - 1
            }
        };
        let g = &mut sweeps[i].1;
        g.keys.push(def.key());
        if let Some(seen) = seen {
            g.seen.merge(seen);
            g.complete += 1;
        }
    }
    // A stream is swept once every partition of it ran complete in this
    // run, with what all of them saw (a record that moved from one
    // partition to another is not gone).
    let all = ctx.connector.streams();
    for (name, g) in sweeps {
        let partitions = all.iter().filter(|d| d.name == name).count();
        if g.complete == partitions && g.keys.len() == partitions {
            let n = crate::sweep::sweep(ctx, run, &g.keys, g.entity, g.seen)
                .await
                .map_err(|e| e.context(stream_context(&ctx.connection, name)))?;
            summary.swept += n;
        } else if partitions > 1 && g.keys.len() < partitions {
            tracing::info!(
                event = "sweep_skipped", connection = %ctx.connection, stream = name,
                "only some partitions of the stream ran: nothing is swept"
            );
        }
    }
    // Every page this run fetched is loaded: the entries its lines touched
    // are complete as far as the source said, and are checked. After a pull
    // that stopped short, the rest of an entry may be on a page not fetched:
    // the entries stay listed for the next complete run.
    if summary.pulls_incomplete == 0 {
        summary.balance = crate::balance::check_entries(&ctx.pool, &ctx.connection).await?;
    }
    Ok(())
}

/// What a stream's failure says first: `connection "C", stream S` (status
/// reads the stream back from it: [`failed_stream`]).
pub fn stream_context(connection: &str, stream: &str) -> String {
    format!("connection {connection:?}, stream {stream}")
}

/// The stream a run's error names first, by [`stream_context`].
pub fn failed_stream<'e>(connection: &str, error: &'e str) -> Option<&'e str> {
    let rest = error.strip_prefix(&stream_context(connection, ""))?;
    rest.split(':').next().map(str::trim)
}

/// The wait of a deferred call in an error chain.
fn deferred_wait(e: &anyhow::Error) -> Option<Duration> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<connector_core::Error>() {
            Some(connector_core::Error::Deferred { wait, .. }) => Some(*wait),
            _ => None,
        })
}

/// A Postgres error in the core's classification (transient or fatal).
pub fn db_error(e: &sqlx::Error) -> connector_core::Error {
    let (sqlstate, message) = match e {
        sqlx::Error::Database(d) => (d.code().map(|c| c.into_owned()), d.message().to_owned()),
        // No answer from the server: the connection or the pool failed.
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => (None, e.to_string()),
        // Decoding, missing rows or columns: a bug or a schema mismatch.
        other => (Some("XX000".to_owned()), other.to_string()),
    };
    connector_core::Error::Database { sqlstate, message }
}

/// True when an error chain holds a Postgres error worth retrying.
fn is_transient_db(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .is_some_and(|s| matches!(db_error(s).class(), ErrorClass::Retry { .. }))
    })
}

/// The Postgres error of a value it refused (data exception, integrity,
/// program limit, cardinality): the batch holds a bad record to isolate.
fn data_error(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(d)) => {
                let code = d.code()?;
                ["22", "23", "54", "21"]
                    .iter()
                    .any(|p| code.starts_with(p))
                    .then(|| format!("Postgres refused it: {} (SQLSTATE {code})", d.message()))
            }
            _ => None,
        })
}

fn is_needs_reauth(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<connector_core::Error>(),
            Some(connector_core::Error::NeedsReauth { .. })
        )
    })
}

/// A fetched page, already stored and recorded, on its way to the loader.
struct Fetched {
    page: PageBody,
}

/// Syncs one stream (or partition). Returns what its pull saw when it may
/// be swept: a full pull this run made from its first page to its last,
/// every page read and loaded, while the source's total stayed put.
async fn sync_stream(
    ctx: &Ctx,
    run: &Run<'_>,
    def: &StreamDef,
    summary: &mut Summary,
) -> anyhow::Result<Option<crate::sweep::Seen>> {
    let http = ctx
        .http
        .clone()
        .ok_or_else(|| anyhow::anyhow!("sync needs an HTTP client"))?;
    let model = ctx.model(def.name)?;
    let key = def.key();
    let mapping_id = db::register_mapping(&ctx.pool, model.mapper.mapping()).await?;
    let lctx = LoadCtx {
        stream: &key,
        ..LoadCtx::new(&ctx.connection, def, model, mapping_id, Some(run.lease))
    };
    // Pages fetched by an earlier, interrupted run are loaded first, in fetch
    // order; one whose object is gone or corrupt is fetched again.
    recover_leftovers(ctx, &http, run, def, &lctx, summary).await?;
    let (tx, rx) = mpsc::channel::<Fetched>(QUEUE_PAGES);
    let mut fetched = Fetching::default();
    let fetch = fetch_stream(ctx, &http, run, def, tx, &mut fetched);
    // The ids seen, 8 bytes a record, are kept only where a complete pull
    // sweeps what it did not see.
    let mut seen = crate::sweep::Seen::default();
    let sweeps = def.mode == SyncMode::FullRefresh;
    let mut fields = crate::drift::Seen::default();
    let load = load_stream(
        ctx,
        &lctx,
        rx,
        summary,
        sweeps.then_some(&mut seen),
        &mut fields,
    );
    // The loader drains whatever the fetcher stored even when the fetcher fails.
    let (fetch_result, loaded) = tokio::join!(fetch, load);
    summary.pages_fetched += fetched.pages;
    summary.pages_unreadable += fetched.unreadable;
    loaded?;
    // What the loaded records showed of the stream's shape, even when the
    // pull stopped short (a vanished field only after a complete one).
    match crate::drift::record(
        ctx,
        &key,
        run.id,
        model.mapper.mapping(),
        fields,
        fetched.complete && fetch_result.is_ok(),
    )
    .await
    {
        Ok(w) => summary.warnings.extend(w),
        Err(e) => tracing::warn!(
            event = "drift_not_recorded", connection = %ctx.connection, stream = %key,
            "the field catalogue could not be updated: {e:#}"
        ),
    }
    fetch_result?;
    if fetched.complete {
        // Every page of this pull was read and loaded: dead letters of
        // unreadable pages, and of records without an id, that this run
        // did not see again are about records read since (or gone).
        db::sweep_dead_letters(&ctx.pool, run.lease, &ctx.connection, &key, run.id).await?;
        // A full pull this run made from its first page to its last saw
        // every row the source still has, unless records moved between
        // pages while it ran (the source's total changed).
        if def.mode == SyncMode::FullRefresh && fetched.from_start {
            if fetched.total_moved {
                tracing::warn!(
                    event = "sweep_skipped", connection = %ctx.connection, stream = %key,
                    "the source's total changed during the pull, so records may have moved \
                     between pages unseen: nothing is swept this time"
                );
            } else {
                return Ok(Some(seen));
            }
        }
    } else {
        summary.pulls_incomplete += 1;
    }
    Ok(None)
}

/// What the fetcher of one stream did.
#[derive(Debug, Default)]
struct Fetching {
    pages: u64,
    unreadable: u64,
    /// The pull started at the first page in this run (not resumed).
    from_start: bool,
    /// The total the source announced changed between pages of the pull.
    total_moved: bool,
    /// The pull reached its last page without skipping any.
    complete: bool,
    /// The raw page recorded last.
    last_page: Option<i64>,
}

/// Loads the pages an earlier run stored but did not load. A page whose
/// object is missing or corrupt is set aside (marked in the ledger) and
/// fetched again from its recorded position; when the source cannot serve
/// it, the stream's pull is marked incomplete and an incremental stream's
/// lower bound is moved back to the page's, so its records are asked for
/// again by the next pull.
async fn recover_leftovers(
    ctx: &Ctx,
    http: &HttpClient,
    run: &Run<'_>,
    def: &StreamDef,
    lctx: &LoadCtx<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let leftovers = db::pages(&ctx.pool, &ctx.connection, lctx.stream, true).await?;
    for chunk in batches(&leftovers) {
        let (mut bodies, bad) = read_bodies(ctx, chunk).await?;
        summary.pages_missing += bad.len() as u64;
        for page in &bad {
            match refetch(ctx, http, run, def, page).await {
                Ok(body) => {
                    summary.pages_refetched += 1;
                    summary.pages_fetched += 1;
                    bodies.push(body);
                }
                Err(e) => {
                    tracing::warn!(
                        event = "refetch_failed", connection = %ctx.connection, stream = lctx.stream,
                        raw_page = page.id, "{e:#}"
                    );
                    give_up_page(ctx, run, def, page).await?;
                }
            }
        }
        if !bodies.is_empty() {
            load_and_count(ctx, lctx, &bodies, summary, Load::default(), None).await?;
        }
    }
    Ok(())
}

/// Fetches one recorded page again, from its stored token and bound, and
/// records it as a new page that replaces the lost one.
async fn refetch(
    ctx: &Ctx,
    http: &HttpClient,
    run: &Run<'_>,
    def: &StreamDef,
    page: &PageRef,
) -> anyhow::Result<PageBody> {
    let token: PageToken = serde_json::from_value(page.page_token.clone())?;
    if token.is_redacted() {
        anyhow::bail!("its stored link has masked parameters and cannot be requested again");
    }
    let mut pager = if def.details.is_some() {
        // A detail page keeps its batch of ids in `since`.
        let ids: Vec<String> = serde_json::from_str(page.since.as_deref().unwrap_or("[]"))?;
        Pager::new(http.clone(), def.clone(), token, None, 1).with_ids(ids)
    } else {
        // A keyset state is stored as its JSON text; others as the text sent.
        let since = page.since.clone().map(|s| match def.mode {
            SyncMode::Incremental { keyset: true, .. } => {
                serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
            }
            _ => serde_json::Value::String(s),
        });
        Pager::new(http.clone(), def.clone(), token, since, 1)
    };
    let fetched = pager
        .next_page()
        .await
        .ok_or_else(|| anyhow::anyhow!("the source returned no page"))??;
    let mut fetched = fetched;
    fetched.since.clone_from(&page.since);
    let stored = store_page(ctx, http, run, def, &fetched, None).await?;
    db::mark_replaced(&ctx.pool, page.id, stored.page.id).await?;
    tracing::info!(
        event = "page_refetched", connection = %ctx.connection, stream = %def.key(),
        raw_page = page.id, new_raw_page = stored.page.id
    );
    Ok(stored)
}

/// A lost page that could not be fetched again: the pull that holds it is
/// incomplete, and an incremental stream asks for its records again.
async fn give_up_page(
    ctx: &Ctx,
    run: &Run<'_>,
    def: &StreamDef,
    page: &PageRef,
) -> anyhow::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    run.lease.check(&mut tx).await?;
    let key = def.key();
    let mut cursor = db::watermark(&ctx.pool, &ctx.connection, &key)
        .await?
        .unwrap_or_default();
    cursor.pull_skipped_pages = cursor.pull_skipped_pages.saturating_add(1);
    match (def.mode, page.since.as_deref()) {
        // A detail stream asks for every detail again.
        _ if def.details.is_some() => cursor.state = None,
        // A first pull of a server-issued or keyset state: start over.
        (
            SyncMode::Incremental {
                token_at: Some(_), ..
            }
            | SyncMode::Incremental { keyset: true, .. },
            None,
        ) => cursor.state = None,
        // A keyset state: ask again from the page's own.
        (SyncMode::Incremental { keyset: true, .. }, Some(since)) => {
            cursor.state = serde_json::from_str(since).ok();
        }
        // A server-issued state: ask again from the page's own.
        (
            SyncMode::Incremental {
                token_at: Some(_), ..
            },
            Some(since),
        ) => cursor.state = Some(serde_json::Value::String(since.to_owned())),
        (SyncMode::Incremental { .. }, Some(since)) => {
            if let Ok(since) = DateTime::parse_from_rfc3339(since) {
                let since = since.with_timezone(&Utc);
                cursor.high_water = Some(cursor.high_water.map_or(since, |h| h.min(since)));
            }
        }
        _ => {}
    }
    db::set_watermark(
        &mut tx,
        &ctx.connection,
        &key,
        &cursor,
        Some(run.id),
        "recovery",
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Stores a fetched body (raw first), then records it in the ledger, moving
/// the watermark when `cursor` is given. Returns the recorded page.
/// A page whose body is in the raw store, waiting for its ledger row.
struct Put {
    body: Bytes,
    obj: connector_core::StoredObject,
    fetched_at: DateTime<Utc>,
    content_type: Option<String>,
    /// The token as it may be stored (secrets in links masked).
    token: PageToken,
    meta: connector_core::RequestMeta,
    records: usize,
    unparseable: Option<String>,
    since: Option<String>,
}

/// Puts a fetched page's body in the raw store (invariant 1: before any
/// ledger row or watermark covers it).
async fn put_page(
    ctx: &Ctx,
    http: &HttpClient,
    def: &StreamDef,
    page: &connector_core::FetchedPage,
) -> anyhow::Result<Put> {
    let fetched_at = Utc::now();
    let key = def.key();
    let body = page.response.body.clone();
    let content_type = page
        .response
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let obj = ctx
        .store
        .put(
            &ctx.tenant,
            &ctx.connection,
            &key,
            fetched_at,
            content_type.as_deref(),
            body.clone(),
        )
        .await?;
    let token = http.storable_token(&page.token);
    PageStored {
        connection: &ctx.connection,
        stream: &key,
        page: &token.to_string(),
        records: page.facts.records,
        bytes: obj.bytes as u64,
    }
    .emit();
    Ok(Put {
        body,
        obj,
        fetched_at,
        content_type,
        token,
        meta: page.response.meta.clone(),
        records: page.facts.records,
        unparseable: page.unparseable.clone(),
        since: page.since.clone(),
    })
}

/// Records stored pages in the ledger, in one transaction that moves the
/// watermark to `cursor` (invariant 2), and returns them for the loader.
async fn record_puts(
    ctx: &Ctx,
    run: &Run<'_>,
    def: &StreamDef,
    puts: Vec<Put>,
    cursor: Option<&db::Cursor>,
) -> anyhow::Result<Vec<PageBody>> {
    let key = def.key();
    let record_path = def.records.stored();
    let rows: Vec<NewPage<'_>> = puts
        .iter()
        .map(|p| NewPage {
            run: run.id,
            connection: &ctx.connection,
            stream: &key,
            token: &p.token,
            object_key: &p.obj.key,
            sha256: &p.obj.sha256,
            bytes: p.obj.bytes,
            fetched_at: p.fetched_at,
            meta: &p.meta,
            record_path: &record_path,
            record_count: p.records,
            parse_error: p.unparseable.as_deref(),
            since: p.since.as_deref(),
            content_type: p.content_type.as_deref(),
        })
        .collect();
    let ids = db::record_pages(&ctx.pool, run.lease, &rows, cursor).await?;
    drop(rows);
    puts.into_iter()
        .zip(ids)
        .map(|(p, id)| {
            Ok(PageBody {
                page: PageRef {
                    id,
                    object_key: p.obj.key,
                    body_sha256: p.obj.sha256,
                    record_path: record_path.clone(),
                    record_count: i32::try_from(p.records).unwrap_or(i32::MAX),
                    parse_error: p.unparseable,
                    page_token: serde_json::to_value(&p.token)?,
                    since: p.since,
                    content_type: p.content_type,
                },
                body: p.body,
            })
        })
        .collect()
}

/// Puts one page and records it (with `cursor`, when the watermark moves).
async fn store_page(
    ctx: &Ctx,
    http: &HttpClient,
    run: &Run<'_>,
    def: &StreamDef,
    page: &connector_core::FetchedPage,
    cursor: Option<&db::Cursor>,
) -> anyhow::Result<PageBody> {
    let put = put_page(ctx, http, def, page).await?;
    let mut stored = record_puts(ctx, run, def, vec![put], cursor).await?;
    stored
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the ledger recorded no page"))
}

async fn fetch_stream(
    ctx: &Ctx,
    http: &HttpClient,
    run: &Run<'_>,
    def: &StreamDef,
    tx: mpsc::Sender<Fetched>,
    out: &mut Fetching,
) -> anyhow::Result<()> {
    if let Some(d) = def.details {
        return fetch_details(ctx, http, run, def, d, tx, out).await;
    }
    let key = def.key();
    let mut cursor = db::watermark(&ctx.pool, &ctx.connection, &key)
        .await?
        .unwrap_or_default();
    if cursor.next.as_ref().is_some_and(PageToken::is_redacted) {
        // The stored link was masked (it carried a secret): start the pull over.
        tracing::info!(
            event = "pull_restarted", connection = %ctx.connection, stream = %key,
            "the stored next link has masked parameters; the pull starts over"
        );
        cursor.next = None;
    }
    let start = cursor
        .next
        .clone()
        .unwrap_or_else(|| def.pagination.first());
    if cursor.next.is_none() {
        cursor.pull_started_at = None;
        // A snapshot stream's pull is answered as of now (whole seconds),
        // page after page, resumed or not.
        cursor.pull_as_of = def
            .snapshot
            .then(|| chrono::SubsecRound::trunc_subsecs(Utc::now(), 0));
        cursor.pull_max_cursor = None;
        cursor.pull_max_key = None;
        cursor.pull_skipped_pages = 0;
    }
    // The stream's state, as its requests carry it: the server's own token,
    // or the time bound (RFC 3339, whole seconds, UTC).
    let since = match def.mode {
        SyncMode::Incremental {
            token_at: Some(_), ..
        }
        | SyncMode::Incremental { keyset: true, .. } => cursor.state.clone(),
        SyncMode::Incremental { .. } => cursor.high_water.map(|h| {
            serde_json::Value::String(h.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }),
        SyncMode::FullRefresh => None,
    };
    out.from_start = cursor.next.is_none();
    let mut first_total: Option<u64> = None;
    let mut pager = Pager::new(
        http.clone(),
        def.clone(),
        start,
        since.clone(),
        ctx.fetch_concurrency,
    )
    .with_as_of(cursor.pull_as_of.filter(|_| def.snapshot));
    // Pages are recorded in groups: the first page of a group is waited
    // for, the next ones only taken while the pager already has them (its
    // `next_page` is cancel-safe), so one ledger transaction covers what
    // arrived together and a slow source still gets one per page.
    let mut group: Vec<Put> = Vec::new();
    loop {
        let next = if group.is_empty() {
            still_leased(ctx, run, &key)?;
            pager.next_page().await
        } else {
            match futures::FutureExt::now_or_never(pager.next_page()) {
                Some(next) => next,
                None => {
                    record_group(ctx, run, def, &mut group, &cursor, &tx, out).await?;
                    continue;
                }
            }
        };
        let Some(page) = next else {
            break;
        };
        // Keep the typed error in the chain: the run's outcome is decided from it.
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                let at = pager
                    .failed_page()
                    .map(|t| format!(" at {t}"))
                    .unwrap_or_default();
                record_group(ctx, run, def, &mut group, &cursor, &tx, out).await?;
                return Err(anyhow::Error::new(e).context(format!("fetching{at}")));
            }
        };
        let server_now: DateTime<Utc> = page
            .response
            .meta
            .server_date()
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(Utc::now);
        cursor.pull_started_at.get_or_insert(server_now);
        cursor.pull_max_cursor = cursor.pull_max_cursor.max(page.max_cursor);
        if let Some(t) = page.facts.total {
            if first_total.is_some_and(|f| f != t) {
                out.total_moved = true;
            }
            first_total.get_or_insert(t);
        }
        if page.state_token.is_some() {
            cursor.pull_token.clone_from(&page.state_token);
        }
        if let Some(k) = &page.max_key
            && cursor
                .pull_max_key
                .as_ref()
                .is_none_or(|m| connector_core::fetch::keyset_order(k, m).is_gt())
        {
            cursor.pull_max_key = Some(k.clone());
        }
        if page.unparseable.is_some() {
            out.unreadable += 1;
            if page.stuck.is_none() {
                // Skipped: its records were not read, the pull is incomplete.
                // (A page the pull stops at is asked for again instead.)
                cursor.pull_skipped_pages = cursor.pull_skipped_pages.saturating_add(1);
            }
        }
        if page.stuck.is_some() {
            // The page after this one is unknown: the next run asks for this one again.
            cursor.next = Some(http.storable_token(&page.token));
        } else if page.next.is_none() {
            let pull_started = cursor.pull_started_at.take();
            cursor.completed_at = pull_started;
            if let (
                SyncMode::Incremental {
                    token_at: Some(_), ..
                },
                Some(token),
            ) = (def.mode, cursor.pull_token.take())
            {
                // The server issued the next state itself (its clock, not ours).
                // A time it issues ahead of its own clock (a record stamped in
                // the future) would skip what changes until then: it is held
                // at the server's time when the pull started.
                let token = match (DateTime::parse_from_rfc3339(&token), pull_started) {
                    (Ok(t), Some(now)) if t.with_timezone(&Utc) > now => {
                        tracing::warn!(
                            event = "state_clamped", connection = %ctx.connection, stream = %key,
                            "the source's next state {token} is ahead of its own clock; \
                             asking from {now} instead"
                        );
                        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    }
                    _ => token,
                };
                if cursor.pull_skipped_pages == 0 {
                    cursor.state = Some(serde_json::Value::String(token));
                }
            } else if let (
                SyncMode::Incremental {
                    keyset: true, lag, ..
                },
                Some(started),
            ) = (def.mode, pull_started)
            {
                // The largest (modified, id) seen, held at (server now − lag,
                // no id): a later record of the same second is asked for again.
                let cap = started - chrono::Duration::from_std(lag).unwrap_or_default();
                if let Some((t, id, text)) = cursor.pull_max_key.take()
                    && cursor.pull_skipped_pages == 0
                {
                    // The time as the source wrote it; the cap as RFC 3339.
                    cursor.state = Some(if t <= cap {
                        serde_json::json!({"modified": text, "id": id})
                    } else {
                        let cap = cap.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        serde_json::json!({"modified": cap, "id": null})
                    });
                }
            } else if let (SyncMode::Incremental { lag, .. }, Some(started)) =
                (def.mode, pull_started)
            {
                // High water = min(max seen, server now − lag); a pull that saw
                // nothing keeps the old mark, and so does a pull that skipped
                // pages it could not read. A snapshot pull saw nothing after
                // its moment.
                let mut cap = started - chrono::Duration::from_std(lag).unwrap_or_default();
                if let Some(as_of) = cursor.pull_as_of {
                    cap = cap.min(as_of);
                }
                if let Some(seen) = cursor.pull_max_cursor.take()
                    && cursor.pull_skipped_pages == 0
                {
                    cursor.high_water = Some(seen.min(cap));
                }
            }
            out.complete = cursor.pull_skipped_pages == 0;
            cursor.pull_skipped_pages = 0;
            cursor.pull_as_of = None;
            cursor.next = None;
        } else {
            cursor.next = page.next.as_ref().map(|n| http.storable_token(n));
        }
        group.push(put_page(ctx, http, def, &page).await?);
        if group.len() >= LEDGER_GROUP || page.next.is_none() || page.stuck.is_some() {
            record_group(ctx, run, def, &mut group, &cursor, &tx, out).await?;
        }
        if let Some(why) = page.stuck {
            let kept = if page.unparseable.is_some() {
                "stored and dead-lettered"
            } else {
                "stored"
            };
            let page_id = out.last_page.unwrap_or_default();
            anyhow::bail!(
                "{why}; the page is {kept} (raw page {page_id}) and the next sync asks for it again"
            );
        }
    }
    record_group(ctx, run, def, &mut group, &cursor, &tx, out).await
}

/// Pages recorded in one ledger transaction at most: about what the pager
/// has in flight (`fetch_concurrency`, 4 by default), so a group is what
/// arrived together and the ledger never lags far behind the fetch.
const LEDGER_GROUP: usize = 4;

/// Records the pages of `group` (emptied) with the watermark at `cursor`,
/// then hands them to the loader.
async fn record_group(
    ctx: &Ctx,
    run: &Run<'_>,
    def: &StreamDef,
    group: &mut Vec<Put>,
    cursor: &db::Cursor,
    tx: &mpsc::Sender<Fetched>,
    out: &mut Fetching,
) -> anyhow::Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let stored = record_puts(ctx, run, def, std::mem::take(group), Some(cursor)).await?;
    let next = cursor.next.as_ref().map(|n| n.to_string());
    WatermarkAdvanced {
        connection: &ctx.connection,
        stream: &def.key(),
        next: next.as_deref(),
    }
    .emit();
    for page in stored {
        out.pages += 1;
        out.last_page = Some(page.page.id);
        if tx.send(Fetched { page }).await.is_err() {
            anyhow::bail!("the loader stopped");
        }
    }
    Ok(())
}

/// Fails when the run lost its lease: a fetcher stops before its next write;
/// and when `run` is shutting down: it asks for no new page.
fn still_leased(ctx: &Ctx, run: &Run<'_>, key: &str) -> anyhow::Result<()> {
    if ctx.shutdown.as_ref().is_some_and(Shutdown::at_checkpoint) {
        return Err(Stopped.into());
    }
    match run.lease.lost() {
        Some(why) => Err(connector_core::Error::LeaseLost {
            scope: format!("{}/{key}", ctx.connection),
            detail: why,
        }
        .into()),
        None => Ok(()),
    }
}

/// A detail stream's pull ([`connector_core::Details`]): the ids in the
/// records of the stream it details that were stored after its mark (the
/// last of that stream's raw pages it covered), asked for a batch at a time.
/// The mark moves only once every batch is stored, so a run that fails asks
/// for all of them again (content-hash dedupe absorbs the repeats). A detail
/// stream only sees what changed: it is never swept.
async fn fetch_details(
    ctx: &Ctx,
    http: &HttpClient,
    run: &Run<'_>,
    def: &StreamDef,
    d: connector_core::Details,
    tx: mpsc::Sender<Fetched>,
    out: &mut Fetching,
) -> anyhow::Result<()> {
    let key = def.key();
    let mut cursor = db::watermark(&ctx.pool, &ctx.connection, &key)
        .await?
        .unwrap_or_default();
    let after = cursor
        .state
        .as_ref()
        .and_then(|s| s["after_page"].as_i64())
        .unwrap_or(0);
    let parent = ctx
        .connector
        .streams()
        .into_iter()
        .find(|s| s.name == d.of && s.partition == def.partition)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "stream {key} details the records of stream {}, which the connector does not have",
                d.of
            )
        })?;
    let pages = db::pages_after(&ctx.pool, &ctx.connection, &parent.key(), after).await?;
    // The mark may move to the last page read; a page whose object is lost
    // stops it just before (its ids are asked for once it is readable again).
    // A page that was never a page is dead-lettered as such: passed over.
    let mut last = None;
    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut stopped = false;
    for (p, state) in &pages {
        if p.parse_error.is_some() {
            last = Some(p.id);
            continue;
        }
        let body = match ctx.store.get_verified(&p.object_key).await? {
            Ok(b) if state == "stored" => b,
            _ => {
                tracing::warn!(
                    event = "details_stopped", connection = %ctx.connection, stream = %key,
                    raw_page = p.id, "raw page {} of {} cannot be read: the details of its ids \
                     and of later pages are asked for again next time", p.id, d.of
                );
                stopped = true;
                break;
            }
        };
        let text = connector_core::records::readable(&body, p.content_type.as_deref());
        let Ok(split) = connector_core::records::split_records(&text, &p.record_path, None) else {
            last = Some(p.id);
            continue;
        };
        for r in split.records {
            if parent
                .deleted
                .as_ref()
                .is_some_and(|rule| connector_core::records::is_tombstone(r, rule))
            {
                continue;
            }
            let id = connector_core::records::string_at(r, d.id_at)
                .ok()
                .flatten()
                .filter(|s| !s.is_empty());
            if let Some(id) = id
                && seen.insert(id.clone())
            {
                ids.push(id);
            }
        }
        last = Some(p.id);
    }
    tracing::info!(
        event = "details_pull", connection = %ctx.connection, stream = %key, of = d.of,
        ids = ids.len(), pages = pages.len(), "asking for the details of {} ids", ids.len()
    );
    for batch in ids.chunks(d.batch) {
        let mut pager = Pager::new(
            http.clone(),
            def.clone(),
            def.pagination.first(),
            None,
            ctx.fetch_concurrency,
        )
        .with_ids(batch.to_vec());
        loop {
            still_leased(ctx, run, &key)?;
            let Some(page) = pager.next_page().await else {
                break;
            };
            let mut page = page.map_err(|e| anyhow::Error::new(e).context("fetching details"))?;
            if page.unparseable.is_some() {
                out.unreadable += 1;
            }
            // The batch is kept with the page: a lost object is asked for again with it.
            page.since = Some(serde_json::to_string(batch)?);
            let stored = store_page(ctx, http, run, def, &page, None).await?;
            out.pages += 1;
            if tx.send(Fetched { page: stored }).await.is_err() {
                anyhow::bail!("the loader stopped");
            }
            if let Some(why) = page.stuck {
                anyhow::bail!("{why}; the next sync asks for this batch again");
            }
        }
    }
    // Every batch is stored and readable: the mark moves past the pages
    // they came from. (An unreadable detail page keeps it: its ids are
    // asked for again.)
    if let Some(last) = last
        && out.unreadable == 0
    {
        cursor.state = Some(serde_json::json!({ "after_page": last }));
        cursor.completed_at = Some(Utc::now());
        let mut wtx = ctx.pool.begin().await?;
        run.lease.check(&mut wtx).await?;
        db::set_watermark(
            &mut wtx,
            &ctx.connection,
            &key,
            &cursor,
            Some(run.id),
            "sync",
            None,
        )
        .await?;
        wtx.commit().await?;
    }
    out.complete = !stopped && out.unreadable == 0;
    out.from_start = false;
    Ok(())
}

async fn load_stream(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    mut rx: mpsc::Receiver<Fetched>,
    summary: &mut Summary,
    mut seen: Option<&mut crate::sweep::Seen>,
    fields: &mut crate::drift::Seen,
) -> anyhow::Result<u64> {
    let mut pages = 0u64;
    // A page that would have made the last batch too large starts the next.
    let mut pending: Option<Fetched> = None;
    let opts = LoadOpts::default();
    // Two batches in flight: while one is written in its transaction, the
    // next is received, split, hashed and mapped (`prepare`), so the
    // daemon's work overlaps Postgres's and transactions stay short.
    let mut ahead: Option<(Vec<PageBody>, Prepared)> = None;
    loop {
        let (batch, prep) = match ahead.take() {
            Some(b) => b,
            None => match next_batch(&mut rx, &mut pending, None).await {
                Some(batch) => {
                    let prep = prepare(&ctx.pool, lctx, &batch, opts, &HashSet::new()).await?;
                    (batch, prep)
                }
                None => break,
            },
        };
        // The batch's fields are read beside its load (schema drift).
        let scan: Vec<crate::drift::PageToScan> = batch
            .iter()
            .filter(|p| p.page.parse_error.is_none())
            .map(|p| {
                (
                    p.page.id,
                    p.body.clone(),
                    p.page.record_path.clone(),
                    p.page.content_type.clone(),
                )
            })
            .collect();
        let scan = tokio::task::spawn_blocking(move || crate::drift::Seen::scan(&scan));
        let in_flight = prep.ids();
        // The next batch gathers pages until it is full or this one is
        // written, whichever comes first.
        let written = tokio::sync::Notify::new();
        let (loaded, next) = tokio::join!(
            async {
                let r = load_and_count(
                    ctx,
                    lctx,
                    &batch,
                    summary,
                    Load::first(prep),
                    seen.as_deref_mut(),
                )
                .await;
                written.notify_one();
                r
            },
            async {
                match next_batch(&mut rx, &mut pending, Some(&written)).await {
                    Some(next) => {
                        let prep = prepare(&ctx.pool, lctx, &next, opts, &in_flight).await?;
                        anyhow::Ok(Some((next, prep)))
                    }
                    None => Ok(None),
                }
            }
        );
        pages += loaded?;
        ahead = next?;
        if let Ok(s) = scan.await {
            fields.merge(s);
        }
    }
    Ok(pages)
}

/// How long the next batch goes on gathering pages after the batch before
/// it is written, when the fetcher is slower than the loader (a re-sync of
/// unchanged pages): fewer, fuller transactions, at most this much later.
const GATHER: Duration = Duration::from_millis(50);

/// The next batch from the fetcher, up to [`BATCH_PAGES`] pages and
/// [`BATCH_RECORDS`] records: the pages queued now, and, while `until` (the
/// batch being written) has not fired, and for [`GATHER`] from the start,
/// the pages that arrive meanwhile. `None` once the fetcher is done and
/// everything is taken.
async fn next_batch(
    rx: &mut mpsc::Receiver<Fetched>,
    pending: &mut Option<Fetched>,
    mut until: Option<&tokio::sync::Notify>,
) -> Option<Vec<PageBody>> {
    let started = tokio::time::Instant::now();
    let first = match pending.take() {
        Some(f) => f,
        None => rx.recv().await?,
    };
    let mut records = i64::from(first.page.page.record_count);
    let mut batch = vec![first.page];
    let gathering = until.is_some();
    while batch.len() < BATCH_PAGES && records < BATCH_RECORDS {
        let got = match until {
            None if gathering => tokio::select! {
                biased;
                f = rx.recv() => f,
                () = tokio::time::sleep_until(started + GATHER) => None,
            },
            None => rx.try_recv().ok(),
            Some(written) => tokio::select! {
                biased;
                f = rx.recv() => f,
                () = written.notified() => {
                    until = None;
                    continue;
                }
            },
        };
        match got {
            Some(f) if records + i64::from(f.page.page.record_count) > BATCH_RECORDS => {
                *pending = Some(f);
                break;
            }
            Some(f) => {
                records += i64::from(f.page.page.record_count);
                batch.push(f.page);
            }
            None => break,
        }
    }
    Some(batch)
}

/// Attempts of one batch's transaction when Postgres fails transiently.
const LOAD_ATTEMPTS: u32 = 4;

/// Names the batch in an error: connection, stream and raw page ids.
fn batch_context(lctx: &LoadCtx<'_>, batch: &[PageBody]) -> String {
    let ids: Vec<String> = batch.iter().map(|p| p.page.id.to_string()).collect();
    format!(
        "loading connection {:?}, stream {}, raw pages {}",
        lctx.connection,
        lctx.stream,
        ids.join(", ")
    )
}

/// The outer transaction again, for one more use.
fn reborrow<'a>(
    outer: &'a mut Option<&mut Transaction<'static, Postgres>>,
) -> Option<&'a mut Transaction<'static, Postgres>> {
    outer.as_mut().map(|t| &mut **t)
}

/// How [`load_and_count`] loads a batch.
#[derive(Default)]
struct Load<'t> {
    /// A replay: the field-level diff is reported.
    replay: bool,
    /// A dry run's transaction: the batch loads in a savepoint of it.
    outer: Option<&'t mut Transaction<'static, Postgres>>,
    /// The batch already prepared with the same options, for the first
    /// attempt (a retry prepares it again).
    prep: Option<Prepared>,
}

impl Load<'_> {
    fn first(prep: Prepared) -> Self {
        Self {
            prep: Some(prep),
            ..Self::default()
        }
    }
}

/// One load of `batch`: in its own transaction, or, for a dry run, in a
/// savepoint of `outer`. With `probe`, the transaction is always rolled back.
/// `prep`: the batch as [`prepare`]d with `opts`.
async fn load_once(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    opts: LoadOpts<'_>,
    outer: Option<&mut Transaction<'static, Postgres>>,
    probe: bool,
    prep: Option<Prepared>,
) -> anyhow::Result<crate::load::BatchOutcome> {
    let mut tx = match outer {
        Some(t) => t.begin().await?,
        None => ctx.pool.begin().await?,
    };
    let mut out = match prep {
        Some(prep) => apply(&mut tx, lctx, prep, opts).await,
        None => load_batch(&mut tx, lctx, batch, opts).await,
    };
    if probe && out.is_ok() {
        // What commit would check (deferred constraints) is checked now.
        if let Err(e) = sqlx::query("set constraints all immediate")
            .execute(&mut *tx)
            .await
        {
            out = Err(e.into());
        }
    }
    match (&out, probe) {
        (Ok(_), false) => tx.commit().await?,
        _ => tx.rollback().await?,
    }
    out
}

/// Loads one batch, adding its counts to `summary` once committed. A
/// transient Postgres error (serialization failure, deadlock, lost
/// connection) retries the whole transaction: nothing of a failed attempt
/// was committed or counted. A data error Postgres raises despite the
/// checks before it (a value a column refuses) isolates the records it
/// refuses by bisection; they are dead-lettered and the rest loads. A
/// `replay` also reports the field-level diff.
async fn load_and_count(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    summary: &mut Summary,
    load: Load<'_>,
    seen: Option<&mut crate::sweep::Seen>,
) -> anyhow::Result<u64> {
    let Load {
        replay,
        mut outer,
        mut prep,
    } = load;
    let scrubber = ctx.scrubber();
    let lctx = &LoadCtx {
        scrubber: Some(&scrubber),
        ..*lctx
    };
    let mut attempt = 1;
    let mut quarantine: Option<HashMap<RecordKey, String>> = None;
    loop {
        let opts = LoadOpts {
            diff: replay,
            replay,
            quarantine: quarantine.as_ref(),
            only: None,
        };
        let result = load_once(
            ctx,
            lctx,
            batch,
            opts,
            reborrow(&mut outer),
            false,
            prep.take(),
        )
        .await;
        match result {
            Ok(out) => {
                // Counted once committed: a retried or rolled-back attempt
                // dead-lettered nothing.
                if outer.is_none() {
                    RecordsDeadLettered {
                        connection: &ctx.connection,
                        stream: lctx.stream,
                        count: out.total.dead as u64,
                    }
                    .emit();
                }
                let pages = batch.len() as u64;
                if let Some(seen) = seen {
                    seen.ids.extend_from_slice(&out.seen);
                    seen.anonymous += out.anonymous;
                }
                summary.absorb(out, pages, replay, ctx);
                return Ok(pages);
            }
            Err(e) if outer.is_none() && attempt < LOAD_ATTEMPTS && is_transient_db(&e) => {
                tracing::warn!(event = "load_retry", connection = %ctx.connection, attempt, "{e:#}");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(e) if quarantine.is_none() && data_error(&e).is_some() => {
                tracing::warn!(
                    event = "batch_refused", connection = %ctx.connection, stream = lctx.stream,
                    "{}: {e:#}; isolating the records it refuses", batch_context(lctx, batch)
                );
                let bad = isolate(ctx, lctx, batch, reborrow(&mut outer)).await?;
                if bad.is_empty() {
                    return Err(e.context(format!(
                        "{}: Postgres refused the batch but no single record of it",
                        batch_context(lctx, batch)
                    )));
                }
                quarantine = Some(bad);
            }
            Err(e) => return Err(e.context(batch_context(lctx, batch))),
        }
    }
}

/// The records of `batch` that Postgres refuses, with why: found by loading
/// halves of the batch in transactions that are rolled back, down to single
/// records. Empty when the batch fails without any of its records (the
/// failure is not a record's).
async fn isolate(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    mut outer: Option<&mut Transaction<'static, Postgres>>,
) -> anyhow::Result<HashMap<RecordKey, String>> {
    let mut bad = HashMap::new();
    let none = HashSet::new();
    let probe = LoadOpts {
        only: Some(&none),
        ..LoadOpts::default()
    };
    if let Err(e) = load_once(ctx, lctx, batch, probe, reborrow(&mut outer), true, None).await {
        return match data_error(&e) {
            Some(_) => Ok(bad),
            None => Err(e),
        };
    }
    let mut stack = vec![record_keys(batch)];
    while let Some(set) = stack.pop() {
        if set.is_empty() {
            continue;
        }
        let only: HashSet<RecordKey> = set.iter().copied().collect();
        let opts = LoadOpts {
            only: Some(&only),
            ..LoadOpts::default()
        };
        match load_once(ctx, lctx, batch, opts, reborrow(&mut outer), true, None).await {
            Ok(_) => {}
            Err(e) => match data_error(&e) {
                Some(why) if set.len() == 1 => {
                    bad.insert(set[0], why);
                }
                Some(_) => {
                    let (a, b) = set.split_at(set.len() / 2);
                    stack.push(b.to_vec());
                    stack.push(a.to_vec());
                }
                None => return Err(e),
            },
        }
    }
    Ok(bad)
}

impl Summary {
    /// Adds a committed batch's counts (and reports progress).
    fn absorb(&mut self, out: crate::load::BatchOutcome, pages: u64, diff: bool, ctx: &Ctx) {
        self.changed += out.total.changed;
        self.unchanged += out.total.unchanged;
        self.dead_lettered += out.total.dead;
        self.superseded += out.total.superseded;
        self.pages_loaded += pages;
        if diff {
            self.diff
                .get_or_insert_with(DiffReport::default)
                .add(&out.diff);
        }
        if let Some(p) = &ctx.progress {
            p(self.pages_loaded, self.records() as u64);
        }
    }
}

/// Reads the bodies of `pages`. A page whose object is missing or corrupt is
/// marked in the ledger and returned apart; a failing store is an error.
async fn read_bodies(
    ctx: &Ctx,
    pages: &[PageRef],
) -> anyhow::Result<(Vec<PageBody>, Vec<PageRef>)> {
    async fn read_one(
        store: RawStore,
        page: PageRef,
    ) -> anyhow::Result<(PageRef, Result<Bytes, ObjectProblem>)> {
        let got = store.get_verified(&page.object_key).await?;
        Ok((page, got))
    }
    // Owned futures (a named async fn over owned values): the whole run's
    // future stays `Send` for any lifetime, so it can be spawned.
    let reads: Vec<_> = pages
        .iter()
        .map(|p| read_one(ctx.store.clone(), p.clone()))
        .collect();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let results: Vec<anyhow::Result<(PageRef, Result<Bytes, ObjectProblem>)>> =
        futures::stream::iter(reads).buffered(4).collect().await;
    for r in results {
        match r? {
            (page, Ok(body)) => ok.push(PageBody { page, body }),
            (page, Err(problem)) => {
                tracing::warn!(
                    event = "raw_object_lost", connection = %ctx.connection, raw_page = page.id,
                    object = %page.object_key, "the raw object {problem}"
                );
                db::mark_object(&ctx.pool, page.id, problem.as_str()).await?;
                bad.push(page);
            }
        }
    }
    // A page set aside before whose object reads fine again (repaired by a
    // later fetch of the same body) is no longer reported.
    let fine: Vec<i64> = ok.iter().map(|p| p.page.id).collect();
    db::mark_stored(&ctx.pool, &fine).await?;
    Ok((ok, bad))
}

/// Reloads every stored page of the connection through the current mappers,
/// without any source call. Pages whose object is missing or corrupt are
/// skipped and counted. With `dry_run`, reports what would change and writes
/// nothing (all batches share one transaction that is rolled back).
pub async fn replay(
    ctx: &Ctx,
    only_stream: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    ledgered_run(
        ctx,
        only_stream,
        Work::Replay {
            dry_run,
            pages: None,
        },
    )
    .await
}

/// Replays only `pages` (the raw pages of dead letters an operator
/// retries) through the current mappers, without calling the source: a
/// record that loads now resolves its dead letter; one that fails again
/// keeps it open with the new reason.
pub async fn replay_pages(
    ctx: &Ctx,
    pages: &std::collections::HashSet<i64>,
) -> anyhow::Result<Summary> {
    ledgered_run(
        ctx,
        None,
        Work::Replay {
            dry_run: false,
            pages: Some(pages),
        },
    )
    .await
}

async fn replay_streams(
    ctx: &Ctx,
    run: &Run<'_>,
    defs: &[StreamDef],
    dry_run: bool,
    only: Option<&std::collections::HashSet<i64>>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    summary.diff = Some(DiffReport::default());
    for def in defs {
        let model = ctx.model(def.name)?;
        let key = def.key();
        let mapping_id = db::register_mapping(&ctx.pool, model.mapper.mapping()).await?;
        let lctx = LoadCtx {
            stream: &key,
            ..LoadCtx::new(
                &ctx.connection,
                def,
                model,
                mapping_id,
                (!dry_run).then_some(run.lease),
            )
        };
        // A dry run loads every batch in one transaction and rolls it back,
        // so later batches see what earlier ones would have written.
        let mut dry = match dry_run {
            true => Some(ctx.pool.begin().await?),
            false => None,
        };
        // The stream's pages, a slice of the ledger at a time (memory does
        // not grow with the pages stored).
        let mut after = 0;
        loop {
            let mut all = db::pages_from(
                &ctx.pool,
                &ctx.connection,
                lctx.stream,
                after,
                LEDGER_SLICE,
                false,
            )
            .await?;
            let Some(last) = all.last() else {
                break;
            };
            after = last.id;
            if let Some(only) = only {
                all.retain(|p| only.contains(&p.id));
            }
            match dry.as_mut() {
                Some(dry) => replay_dry(ctx, &lctx, &all, dry, summary).await?,
                None => replay_pages_ahead(ctx, &lctx, &all, summary).await?,
            }
        }
        if let Some(tx) = dry {
            tx.rollback().await?;
        }
    }
    if !dry_run {
        summary.balance = crate::balance::check_entries(&ctx.pool, &ctx.connection).await?;
    }
    Ok(())
}

/// Raw pages read from the ledger at a time by a replay.
const LEDGER_SLICE: i64 = 2_000;

/// Replays `pages` in batches inside the dry run's transaction.
async fn replay_dry(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    pages: &[PageRef],
    dry: &mut Transaction<'static, Postgres>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    for chunk in batches(pages) {
        let (bodies, bad) = read_bodies(ctx, chunk).await?;
        summary.pages_missing += bad.len() as u64;
        if bodies.is_empty() {
            continue;
        }
        let load = Load {
            replay: true,
            outer: Some(&mut *dry),
            prep: None,
        };
        load_and_count(ctx, lctx, &bodies, summary, load, None).await?;
    }
    Ok(())
}

/// Replays `pages` as a sync loads: the next batch is read and prepared
/// while one is written.
async fn replay_pages_ahead(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    pages: &[PageRef],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let opts = LoadOpts {
        diff: true,
        replay: true,
        ..LoadOpts::default()
    };
    let read_and_prepare = |chunk: &[PageRef], in_flight: HashSet<String>| {
        let chunk = chunk.to_vec();
        async move {
            let (bodies, bad) = read_bodies(ctx, &chunk).await?;
            let prep = if bodies.is_empty() {
                None
            } else {
                Some(prepare(&ctx.pool, lctx, &bodies, opts, &in_flight).await?)
            };
            anyhow::Ok((bodies, bad.len() as u64, prep))
        }
    };
    let mut chunks = batches(pages).into_iter();
    let mut ahead = match chunks.next() {
        Some(c) => Some(read_and_prepare(c, HashSet::new()).await?),
        None => None,
    };
    while let Some((bodies, missing, prep)) = ahead.take() {
        summary.pages_missing += missing;
        let Some(prep) = prep else {
            if let Some(c) = chunks.next() {
                ahead = Some(read_and_prepare(c, HashSet::new()).await?);
            }
            continue;
        };
        let in_flight = prep.ids();
        let load = Load {
            replay: true,
            outer: None,
            prep: Some(prep),
        };
        let next = chunks.next();
        let (loaded, next) = tokio::join!(
            load_and_count(ctx, lctx, &bodies, summary, load, None),
            async {
                match next {
                    Some(c) => read_and_prepare(c, in_flight).await.map(Some),
                    None => Ok(None),
                }
            }
        );
        loaded?;
        ahead = next?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(id: i64, record_count: i32) -> PageRef {
        PageRef {
            id,
            object_key: String::new(),
            body_sha256: String::new(),
            record_path: "/data".into(),
            record_count,
            parse_error: None,
            page_token: serde_json::Value::Null,
            since: None,
            content_type: None,
        }
    }

    #[test]
    fn batches_are_cut_by_pages_and_by_records() {
        let sizes =
            |pages: &[PageRef]| -> Vec<usize> { batches(pages).iter().map(|b| b.len()).collect() };
        let small: Vec<PageRef> = (0..25).map(|i| page(i, 100)).collect();
        assert_eq!(sizes(&small), vec![10, 10, 5]);
        let big: Vec<PageRef> = (0..5).map(|i| page(i, 6_000)).collect();
        assert_eq!(
            sizes(&big),
            vec![1, 1, 1, 1, 1],
            "10,000 records at most past the first page"
        );
        let huge = vec![page(0, 100_000), page(1, 10)];
        assert_eq!(sizes(&huge), vec![1, 1]);
        assert!(batches(&[]).is_empty());
    }
}
