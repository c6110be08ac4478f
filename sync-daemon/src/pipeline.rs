//! Sync (fetch → raw store → ledger → load) and replay (ledger → load).
//!
//! Fetch and load run concurrently with a bounded queue between them: a slow
//! Postgres slows the fetcher, and memory stays flat whatever the data size.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use connector_core::events::{Emit, PageStored, RecordsDeadLettered, WatermarkAdvanced};
use connector_core::{DynConnector, ErrorClass, HttpClient, Pager, RawStore, StreamDef, SyncMode};
use futures::stream::StreamExt;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::db::{self, Counts, NewPage, PageRef};
use crate::load::{DiffReport, LoadCtx, PageBody, load_batch};

/// Pages queued between fetch and load.
const QUEUE_PAGES: usize = 16;
/// Pages loaded per transaction, at most.
const BATCH_PAGES: usize = 10;

/// Everything one connection's sync or replay needs.
#[derive(Clone)]
pub struct Ctx {
    pub pool: PgPool,
    pub store: RawStore,
    pub tenant: String,
    pub connection: String,
    pub connector: Arc<dyn DynConnector>,
    pub http: Option<HttpClient>,
    pub fetch_concurrency: usize,
    /// Called after each loaded batch with (pages, records) so far.
    pub progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("connection", &self.connection)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub run_id: i64,
    pub pages_fetched: u64,
    pub pages_loaded: u64,
    pub changed: i64,
    pub unchanged: i64,
    pub dead_lettered: i64,
    pub elapsed_secs: f64,
    pub diff: Option<DiffReport>,
    /// `succeeded` or `deferred` (failures are errors).
    pub outcome: &'static str,
    /// A deferred run: when to resume (the source's wait, from now).
    pub resume_at: Option<DateTime<Utc>>,
}

impl Summary {
    pub fn counts(&self) -> Counts {
        Counts {
            changed: self.changed,
            unchanged: self.unchanged,
            dead: self.dead_lettered,
        }
    }
    pub fn records(&self) -> i64 {
        self.changed + self.unchanged + self.dead_lettered
    }
    pub fn records_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.records() as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

/// Holds the connection's sync lock (a session-level advisory lock on its own
/// connection): one sync or replay per connection at a time, released when
/// the process dies.
struct SyncLock(sqlx::pool::PoolConnection<sqlx::Postgres>);

async fn lock(pool: &PgPool, connection: &str) -> anyhow::Result<SyncLock> {
    let mut conn = pool.acquire().await?;
    let got: bool =
        sqlx::query_scalar("select pg_try_advisory_lock(hashtextextended('sync:' || $1, 0))")
            .bind(connection)
            .fetch_one(&mut *conn)
            .await?;
    if !got {
        anyhow::bail!("connection {connection:?} is being synced or replayed by another process");
    }
    Ok(SyncLock(conn))
}

impl SyncLock {
    async fn release(mut self, connection: &str) {
        let _ = sqlx::query("select pg_advisory_unlock(hashtextextended('sync:' || $1, 0))")
            .bind(connection)
            .execute(&mut *self.0)
            .await;
    }
}

fn streams(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<Vec<StreamDef>> {
    let all = ctx.connector.streams();
    match only {
        None => Ok(all),
        Some(s) => {
            let names: Vec<_> = all.iter().map(|d| d.name).collect();
            let found: Vec<_> = all.into_iter().filter(|d| d.name == s).collect();
            if found.is_empty() {
                anyhow::bail!(
                    "connection {:?} has no stream {s:?} (streams: {})",
                    ctx.connection,
                    names.join(", ")
                );
            }
            Ok(found)
        }
    }
}

/// Runs `body` as one ledgered run of the connection: takes the connection's
/// lock, closes runs a dead process left open, records the run, and finishes
/// it with its counts and outcome whatever `body` returns.
async fn ledgered_run(
    ctx: &Ctx,
    only_stream: Option<&str>,
    mode: &str,
    dry_run: bool,
    body: impl AsyncFnOnce(i64, &mut Summary) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    db::ensure_connection(&ctx.pool, &ctx.connection, ctx.connector.name()).await?;
    let guard = lock(&ctx.pool, &ctx.connection).await?;
    db::close_abandoned_runs(&ctx.pool, &ctx.connection).await?;
    let run = db::start_run(&ctx.pool, &ctx.connection, only_stream, mode, dry_run).await?;
    let mut summary = Summary {
        run_id: run,
        ..Default::default()
    };
    let mut result = body(run, &mut summary).await;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    let err = result.as_ref().err().map(|e| format!("{e:#}"));
    let status = match &result {
        Ok(()) => "succeeded",
        Err(e) if is_needs_reauth(e) => "needs_reauth",
        Err(e) => match deferred_wait(e) {
            // Deferred is not a failure: the watermark holds the place to resume.
            Some(wait) => {
                summary.resume_at = Some(Utc::now() + chrono::Duration::from_std(wait)?);
                result = Ok(());
                "deferred"
            }
            None => "failed",
        },
    };
    summary.outcome = status;
    if let Some(http) = &ctx.http {
        db::save_breaker(&ctx.pool, &ctx.connection, &http.breaker()).await?;
    }
    let pages = if mode == "replay" {
        summary.pages_loaded
    } else {
        summary.pages_fetched
    } as i64;
    db::finish_run(
        &ctx.pool,
        run,
        status,
        pages,
        summary.counts(),
        err.as_deref(),
        summary.resume_at,
    )
    .await?;
    guard.release(&ctx.connection).await;
    result.map(|()| summary)
}

/// Fetches every page of the connection's streams into the raw store and loads them.
pub async fn sync(ctx: &Ctx, only_stream: Option<&str>) -> anyhow::Result<Summary> {
    ledgered_run(ctx, only_stream, "full", false, async |run, summary| {
        for def in streams(ctx, only_stream)? {
            sync_stream(ctx, run, &def, summary).await?;
        }
        Ok(())
    })
    .await
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

async fn sync_stream(
    ctx: &Ctx,
    run: i64,
    def: &StreamDef,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let http = ctx
        .http
        .clone()
        .ok_or_else(|| anyhow::anyhow!("sync needs an HTTP client"))?;
    let mapping_id = db::register_mapping(&ctx.pool, def.mapper.mapping()).await?;
    // Pages fetched by an earlier, interrupted run are loaded first, in fetch order.
    let leftovers = db::pages(&ctx.pool, &ctx.connection, def.name, true).await?;
    let (tx, rx) = mpsc::channel::<Fetched>(QUEUE_PAGES);
    let fetch = fetch_stream(ctx, &http, run, def, tx);
    let load = load_stream(ctx, def, mapping_id, leftovers, rx, summary);
    // The loader drains whatever the fetcher stored even when the fetcher fails.
    let (fetched, loaded) = tokio::join!(fetch, load);
    loaded?;
    summary.pages_fetched += fetched?;
    Ok(())
}

async fn fetch_stream(
    ctx: &Ctx,
    http: &HttpClient,
    run: i64,
    def: &StreamDef,
    tx: mpsc::Sender<Fetched>,
) -> anyhow::Result<u64> {
    let mut cursor = db::watermark(&ctx.pool, &ctx.connection, def.name)
        .await?
        .unwrap_or_default();
    let start = cursor
        .next
        .clone()
        .unwrap_or_else(|| def.pagination.first());
    if cursor.next.is_none() {
        cursor.pull_started_at = None;
        cursor.pull_max_cursor = None;
    }
    let since = match def.mode {
        SyncMode::Incremental { .. } => cursor
            .high_water
            .map(|h| h.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        SyncMode::FullRefresh => None,
    };
    let mut pager = Pager::new(
        http.clone(),
        def.clone(),
        start,
        since,
        ctx.fetch_concurrency,
    );
    let mut pages = 0u64;
    while let Some(page) = pager.next_page().await {
        // Keep the typed error in the chain: the run's outcome is decided from it.
        let page = page.map_err(|e| {
            let at = pager
                .failed_page()
                .map(|t| format!(", {t}"))
                .unwrap_or_default();
            anyhow::Error::new(e).context(format!(
                "connection {:?}, stream {}{at}",
                ctx.connection, def.name
            ))
        })?;
        let fetched_at = Utc::now();
        let server_now: DateTime<Utc> = page
            .response
            .meta
            .server_date()
            .map(DateTime::<Utc>::from)
            .unwrap_or(fetched_at);
        // Raw first: the object is durably put before the ledger row and the watermark.
        let body = page.response.body;
        let obj = ctx
            .store
            .put(
                &ctx.tenant,
                &ctx.connection,
                def.name,
                fetched_at,
                body.clone(),
            )
            .await?;
        let token = page.token.to_string();
        PageStored {
            connection: &ctx.connection,
            stream: def.name,
            page: &token,
            records: page.facts.records,
            bytes: obj.bytes as u64,
        }
        .emit();
        cursor.pull_started_at.get_or_insert(server_now);
        cursor.pull_max_cursor = cursor.pull_max_cursor.max(page.max_cursor);
        if page.next.is_none() {
            let pull_started = cursor.pull_started_at.take();
            cursor.completed_at = pull_started;
            if let (SyncMode::Incremental { lag, .. }, Some(started)) = (def.mode, pull_started) {
                // High water = min(max seen, server now − lag); a pull that saw
                // nothing keeps the old mark.
                let cap = started - chrono::Duration::from_std(lag)?;
                if let Some(seen) = cursor.pull_max_cursor.take() {
                    cursor.high_water = Some(seen.min(cap));
                }
            }
        }
        cursor.next = page.next.clone();
        let page_id = db::record_page(
            &ctx.pool,
            &NewPage {
                run,
                connection: &ctx.connection,
                stream: def.name,
                token: &page.token,
                object_key: &obj.key,
                sha256: &obj.sha256,
                bytes: obj.bytes,
                fetched_at,
                meta: &page.response.meta,
                record_path: def.records_at,
                record_count: page.facts.records,
            },
            &cursor,
        )
        .await?;
        let next = page.next.as_ref().map(|n| n.to_string());
        WatermarkAdvanced {
            connection: &ctx.connection,
            stream: def.name,
            next: next.as_deref(),
        }
        .emit();
        pages += 1;
        let page = PageBody {
            page: PageRef {
                id: page_id,
                object_key: obj.key,
                record_path: def.records_at.to_owned(),
            },
            body,
        };
        if tx.send(Fetched { page }).await.is_err() {
            anyhow::bail!("the loader stopped");
        }
    }
    Ok(pages)
}

async fn load_stream(
    ctx: &Ctx,
    def: &StreamDef,
    mapping_id: i32,
    leftovers: Vec<PageRef>,
    mut rx: mpsc::Receiver<Fetched>,
    summary: &mut Summary,
) -> anyhow::Result<u64> {
    let lctx = LoadCtx::new(&ctx.connection, def, mapping_id);
    let mut pages = 0u64;
    for chunk in leftovers.chunks(BATCH_PAGES) {
        let bodies = read_bodies(&ctx.store, chunk).await?;
        pages += load_and_count(ctx, &lctx, &bodies, summary, false).await?;
    }
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first.page];
        while batch.len() < BATCH_PAGES {
            match rx.try_recv() {
                Ok(f) => batch.push(f.page),
                Err(_) => break,
            }
        }
        pages += load_and_count(ctx, &lctx, &batch, summary, false).await?;
    }
    Ok(pages)
}

/// Attempts of one batch's transaction when Postgres fails transiently.
const LOAD_ATTEMPTS: u32 = 4;

/// Loads one batch in its own transaction. A transient Postgres error
/// (serialization failure, deadlock, lost connection) retries the whole
/// transaction: nothing of a failed attempt was committed or counted.
async fn load_and_count(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    summary: &mut Summary,
    diff: bool,
) -> anyhow::Result<u64> {
    let mut attempt = 1;
    loop {
        let mut scratch = Summary::default();
        let result = async {
            let mut tx = ctx.pool.begin().await?;
            let pages = load_in(&mut tx, lctx, batch, &mut scratch, diff).await?;
            tx.commit().await?;
            anyhow::Ok(pages)
        }
        .await;
        match result {
            Ok(pages) => {
                // Counted once committed: a retried or rolled-back attempt
                // dead-lettered nothing.
                RecordsDeadLettered {
                    connection: &ctx.connection,
                    stream: lctx.stream,
                    count: scratch.dead_lettered as u64,
                }
                .emit();
                summary.absorb(&scratch, Some(ctx));
                return Ok(pages);
            }
            Err(e) if attempt < LOAD_ATTEMPTS && is_transient_db(&e) => {
                tracing::warn!(event = "load_retry", connection = %ctx.connection, attempt, "{e:#}");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Loads a batch in `tx`, adding what it did to `summary`.
async fn load_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    summary: &mut Summary,
    diff: bool,
) -> anyhow::Result<u64> {
    let out = load_batch(tx, lctx, batch, diff).await?;
    let pages = batch.len() as u64;
    let add = Summary {
        pages_loaded: pages,
        changed: out.total.changed,
        unchanged: out.total.unchanged,
        dead_lettered: out.total.dead,
        diff: diff.then_some(out.diff),
        ..Summary::default()
    };
    summary.absorb(&add, None);
    Ok(pages)
}

impl Summary {
    /// Adds a batch's counts (and reports progress).
    fn absorb(&mut self, b: &Summary, ctx: Option<&Ctx>) {
        self.changed += b.changed;
        self.unchanged += b.unchanged;
        self.dead_lettered += b.dead_lettered;
        self.pages_loaded += b.pages_loaded;
        if let Some(d) = &b.diff {
            self.diff.get_or_insert_with(DiffReport::default).add(d);
        }
        if let Some(p) = ctx.and_then(|c| c.progress.as_ref()) {
            p(self.pages_loaded, self.records() as u64);
        }
    }
}

async fn read_bodies(store: &RawStore, pages: &[PageRef]) -> anyhow::Result<Vec<PageBody>> {
    let reads = pages.iter().map(|p| async move {
        let body: Bytes = store.get(&p.object_key).await?;
        anyhow::Ok(PageBody {
            page: p.clone(),
            body,
        })
    });
    futures::stream::iter(reads)
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Reloads every stored page of the connection through the current mappers,
/// without any source call. With `dry_run`, reports what would change and
/// writes nothing (all batches share one transaction that is rolled back).
pub async fn replay(
    ctx: &Ctx,
    only_stream: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    ledgered_run(
        ctx,
        only_stream,
        "replay",
        dry_run,
        async |_run, summary| {
            summary.diff = Some(DiffReport::default());
            for def in streams(ctx, only_stream)? {
                let mapping_id = db::register_mapping(&ctx.pool, def.mapper.mapping()).await?;
                let lctx = LoadCtx::new(&ctx.connection, &def, mapping_id);
                let all = db::pages(&ctx.pool, &ctx.connection, def.name, false).await?;
                // A dry run loads every batch in one transaction and rolls it back, so
                // later batches see what earlier ones would have written.
                let mut dry = if dry_run {
                    Some(ctx.pool.begin().await?)
                } else {
                    None
                };
                for chunk in all.chunks(BATCH_PAGES) {
                    let bodies = read_bodies(&ctx.store, chunk).await?;
                    match dry.as_mut() {
                        Some(tx) => load_in(tx, &lctx, &bodies, summary, true).await?,
                        None => load_and_count(ctx, &lctx, &bodies, summary, true).await?,
                    };
                }
                if let Some(tx) = dry {
                    tx.rollback().await?;
                }
            }
            Ok(())
        },
    )
    .await
}
