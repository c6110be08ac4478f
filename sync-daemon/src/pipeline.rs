//! Sync (fetch → raw store → ledger → load) and replay (ledger → load).
//!
//! Fetch and load run concurrently with a bounded queue between them: a slow
//! Postgres slows the fetcher, and memory stays flat whatever the data size.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use connector_core::records::split_records;
use connector_core::{DynConnector, HttpClient, PageFacts, PageToken, RawStore, StreamDef};
use futures::stream::{FuturesOrdered, StreamExt};
use sqlx::PgPool;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
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
    let result = body(run, &mut summary).await;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    let status = match &result {
        Ok(()) => "succeeded",
        Err(e) if is_needs_reauth(e) => "needs_reauth",
        Err(_) => "failed",
    };
    let err = result.as_ref().err().map(|e| format!("{e:#}"));
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
    }
    let endpoint = format!("{} GET {}", ctx.connector.name(), def.path);
    let mut queue: VecDeque<PageToken> = VecDeque::from([start]);
    let mut inflight = FuturesOrdered::new();
    let mut inflight_tokens: VecDeque<PageToken> = VecDeque::new();
    let mut seen: HashSet<PageToken> = HashSet::new();
    let mut pages = 0u64;
    loop {
        while inflight.len() < ctx.fetch_concurrency.max(1) {
            let Some(token) = queue.pop_front() else {
                break;
            };
            if !seen.insert(token.clone()) {
                return Err(connector_core::Error::PaginationLoop {
                    endpoint,
                    token: token.to_string(),
                }
                .into());
            }
            let url = page_url(http, def, &token)?;
            let http = http.clone();
            inflight_tokens.push_back(token.clone());
            inflight.push_back(async move { (token, http.get(url).await) });
        }
        let Some((token, resp)) = inflight.next().await else {
            break;
        };
        inflight_tokens.pop_front();
        // Keep the typed error in the chain: the run's outcome is decided from it.
        let resp = resp.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "connection {:?}, stream {}, {token}",
                ctx.connection, def.name
            ))
        })?;
        let fetched_at = Utc::now();
        let server_now: DateTime<Utc> = resp
            .meta
            .server_date()
            .map(DateTime::<Utc>::from)
            .unwrap_or(fetched_at);
        let split =
            split_records(&resp.body, def.records_at, def.pagination.total_at()).map_err(|m| {
                connector_core::Error::Body {
                    endpoint: format!("{endpoint} ({token})"),
                    message: m,
                }
            })?;
        let facts = PageFacts {
            records: split.records.len(),
            total: split.total,
        };
        drop(split);
        // Raw first: the object is durably put before the ledger row and the watermark.
        let obj = ctx
            .store
            .put(
                &ctx.tenant,
                &ctx.connection,
                def.name,
                fetched_at,
                resp.body.clone(),
            )
            .await?;
        let next = def.pagination.next(&token, facts);
        cursor.pull_started_at.get_or_insert(server_now);
        if next.is_none() {
            cursor.completed_at = cursor.pull_started_at.take();
        }
        cursor.next = next.clone();
        let page_id = db::record_page(
            &ctx.pool,
            &NewPage {
                run,
                connection: &ctx.connection,
                stream: def.name,
                token: &token,
                object_key: &obj.key,
                sha256: &obj.sha256,
                bytes: obj.bytes,
                fetched_at,
                meta: &resp.meta,
                record_path: def.records_at,
                record_count: facts.records,
            },
            &cursor,
        )
        .await?;
        pages += 1;
        tracing::debug!(event = "page_stored", connection = %ctx.connection, stream = def.name, page = %token, records = facts.records);
        let page = PageBody {
            page: PageRef {
                id: page_id,
                object_key: obj.key,
                record_path: def.records_at.to_owned(),
            },
            body: resp.body,
        };
        if tx.send(Fetched { page }).await.is_err() {
            anyhow::bail!("the loader stopped");
        }
        let Some(next) = next else { break };
        // Keep requests in flight only while they are the pages that follow.
        if inflight_tokens.front() != Some(&next) {
            inflight = FuturesOrdered::new();
            inflight_tokens.clear();
            let ahead = def.pagination.predictable_after(&token, facts.total);
            queue = if ahead.first() == Some(&next) {
                ahead.into()
            } else {
                VecDeque::from([next])
            };
        }
    }
    Ok(pages)
}

fn page_url(http: &HttpClient, def: &StreamDef, token: &PageToken) -> anyhow::Result<url::Url> {
    let mut url = http
        .base_url()
        .join(&def.path)
        .map_err(|e| anyhow::anyhow!("stream {}: bad path {:?}: {e}", def.name, def.path))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &def.query {
            q.append_pair(k, v);
        }
        for (k, v) in def.pagination.params(token) {
            q.append_pair(k, &v);
        }
    }
    Ok(url)
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

/// Loads one batch in its own transaction.
async fn load_and_count(
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    summary: &mut Summary,
    diff: bool,
) -> anyhow::Result<u64> {
    let mut tx = ctx.pool.begin().await?;
    let pages = load_in(&mut tx, ctx, lctx, batch, summary, diff).await?;
    tx.commit().await?;
    Ok(pages)
}

async fn load_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ctx: &Ctx,
    lctx: &LoadCtx<'_>,
    batch: &[PageBody],
    summary: &mut Summary,
    diff: bool,
) -> anyhow::Result<u64> {
    let out = load_batch(tx, lctx, batch, diff).await?;
    summary.changed += out.total.changed;
    summary.unchanged += out.total.unchanged;
    summary.dead_lettered += out.total.dead;
    if diff {
        summary
            .diff
            .get_or_insert_with(DiffReport::default)
            .add(&out.diff);
    }
    let pages = batch.len() as u64;
    if let Some(p) = &ctx.progress {
        p(summary.pages_loaded + pages, summary.records() as u64);
    }
    summary.pages_loaded += pages;
    Ok(pages)
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
                        Some(tx) => load_in(tx, ctx, &lctx, &bodies, summary, true).await?,
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
