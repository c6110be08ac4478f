//! Postgres: pool, embedded migrations, mapping-version registration, the run ledger.

use canonical_model::MappingVersion;
use chrono::{DateTime, Utc};
use connector_core::CredentialStore;
use connector_core::{PageToken, RequestMeta};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::lease::Lease;

/// The project's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long connecting to Postgres may take before the command fails, naming the server.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a URL points, for messages: `user@host:port/database`, never a password.
pub fn describe(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let at = if host.starts_with('/') {
        format!("socket {host}")
    } else {
        format!("{host}:{}", options.get_port())
    };
    format!(
        "{}@{at}/{}",
        options.get_username(),
        options.get_database().unwrap_or(options.get_username())
    )
}

/// Connects to `url` and returns a pool. One connection is made first, within
/// [`CONNECT_TIMEOUT`], so a server that is down, a wrong port or a missing
/// database is one clear error naming the server, in seconds. With
/// `create_database`, a database that does not exist yet is created (`migrate`).
pub async fn connect(
    url: &str,
    max_connections: u32,
    create_database: bool,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("database.url is not a Postgres URL: {e}"))?;
    // A transaction left idle by a stopped process (SIGSTOP, a hung client)
    // would hold its locks, and the fence lock with them, for ever: the
    // server ends it after five minutes. No transaction of ours idles that long.
    let options = options.options([("idle_in_transaction_session_timeout", "300s")]);
    match try_connect(&options).await {
        Err(e) if create_database && sqlstate(&e) == Some("3D000") => {
            create(&options).await?;
            try_connect(&options).await?;
        }
        Err(e) => {
            let hint = match sqlstate(&e) {
                Some("3D000") => {
                    "; `sync-daemon migrate` creates it (or create it with createdb)".to_owned()
                }
                Some("28000" | "28P01") => {
                    "; check the user and password in database.url".to_owned()
                }
                _ if is_refused(&e) => "; is the server running and listening there?".to_owned(),
                _ => String::new(),
            };
            anyhow::bail!(
                "cannot connect to PostgreSQL at {}: {}{hint}",
                describe(&options),
                connect_error(&e)
            );
        }
        Ok(()) => {}
    }
    Ok(PgPoolOptions::new()
        // Fetch and load use one connection each; the lock has its own session.
        .max_connections(max_connections.max(3))
        .acquire_timeout(std::time::Duration::from_secs(60))
        .connect_lazy_with(options))
}

/// One connection, closed again; a timeout is an I/O error of kind `TimedOut`.
async fn try_connect(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(options)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| match c {
            std::borrow::Cow::Borrowed(s) => s,
            // Codes are static strings in practice; an owned one is not matched.
            std::borrow::Cow::Owned(_) => "",
        }),
        _ => None,
    }
}

fn is_refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// The error without sqlx's "error communicating with database:" preamble.
fn connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

/// Creates the database `options` names, connecting to the server's
/// `postgres` database to do it.
async fn create(options: &PgConnectOptions) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let name = options
        .get_database()
        .unwrap_or(options.get_username())
        .to_owned();
    let admin = options.clone().database("postgres");
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&admin)).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => anyhow::bail!(
                "database {name:?} does not exist, and it cannot be created through {}: {}",
                describe(&admin),
                connect_error(&e)
            ),
            Err(_) => anyhow::bail!(
                "database {name:?} does not exist, and {} does not answer",
                describe(&admin)
            ),
        };
    let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
    match conn.execute(sqlx::AssertSqlSafe(sql)).await {
        // Created meanwhile by a concurrent `migrate`: as good.
        Err(e) if sqlstate(&e) == Some("42P04") => {}
        Err(e) => anyhow::bail!(
            "database {name:?} does not exist, and creating it failed: {}",
            connect_error(&e)
        ),
        Ok(_) => eprintln!("created database {name:?} on {}", describe(&admin)),
    }
    let _ = conn.close().await;
    Ok(())
}

/// Applies pending migrations. sqlx holds a Postgres advisory lock while it
/// migrates, so concurrent `migrate` runs wait for each other; applied
/// migrations are skipped, so running it twice is harmless.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
}

/// Fails with what to do when the database has not been migrated to this
/// version of the daemon (instead of a Postgres error about a missing table).
pub async fn check_schema(pool: &PgPool, config: &std::path::Path) -> anyhow::Result<()> {
    let pending = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count() as i64;
    // No migrations table at all reads as none applied.
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
        .unwrap_or(0);
    if applied < pending {
        anyhow::bail!(
            "the database is not migrated to this version of sync-daemon: run `sync-daemon --config {} migrate` first",
            config.display()
        );
    }
    Ok(())
}

/// The cool-down left of a breaker an earlier run saved open for this
/// connection and host, with its failure counts; `None` when it is closed
/// or its cool-down is over.
pub async fn open_breaker(
    pool: &PgPool,
    connection: &str,
    host: &str,
) -> anyhow::Result<Option<(std::time::Duration, u32, u64)>> {
    let row: Option<(f64, i32, i64)> = sqlx::query_as(
        "select extract(epoch from retry_at - now())::float8, consecutive_failures, times_opened
         from circuit_breaker
         where connection = $1 and host = $2 and state = 'open' and retry_at > now()",
    )
    .bind(connection)
    .bind(host)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(secs, consecutive, opened)| {
        (
            std::time::Duration::from_secs_f64(secs.clamp(0.0, 7.0 * 86_400.0)),
            consecutive.max(0) as u32,
            opened.max(0) as u64,
        )
    }))
}

/// Registers a mapping version and its field rules; returns its id. The same
/// version with other rules is refused: a changed mapping needs a new version.
pub async fn register_mapping(pool: &PgPool, m: &MappingVersion) -> anyhow::Result<i32> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "insert into mapping_version (mapper, version, code_hash) values ($1, $2, $3)
         on conflict (mapper, version) do update set mapper = excluded.mapper
         returning id, code_hash",
    )
    .bind(&m.mapper)
    .bind(&m.version)
    .bind(m.code_hash())
    .fetch_one(&mut *tx)
    .await?;
    let id: i32 = row.get(0);
    let stored: String = row.get(1);
    if stored != m.code_hash() {
        anyhow::bail!(
            "mapping {} version {} is already registered with other rules; bump the version when a rule changes",
            m.mapper,
            m.version
        );
    }
    for r in m.rules() {
        sqlx::query(
            "insert into mapping_field_rule (mapping_version_id, entity_type, field, pointers, transform)
             values ($1, $2, $3, $4, $5) on conflict do nothing",
        )
        .bind(id)
        .bind(r.entity.as_str())
        .bind(r.field)
        .bind(&r.pointers)
        .bind(r.transform.name())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

pub async fn ensure_connection(pool: &PgPool, name: &str, connector: &str) -> anyhow::Result<()> {
    sqlx::query("insert into connection (name, connector) values ($1, $2) on conflict (name) do update set connector = excluded.connector")
        .bind(name)
        .bind(connector)
        .execute(pool)
        .await?;
    Ok(())
}

/// Counts of one run or page: every record seen ends as exactly one of
/// changed, unchanged, dead-lettered or superseded (another record with the
/// same source id won: a later one on its page, or a newer version).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub changed: i64,
    pub unchanged: i64,
    pub dead: i64,
    pub superseded: i64,
}

impl Counts {
    pub fn seen(&self) -> i64 {
        self.changed + self.unchanged + self.dead + self.superseded
    }
    pub fn add(&mut self, o: Counts) {
        self.changed += o.changed;
        self.unchanged += o.unchanged;
        self.dead += o.dead;
        self.superseded += o.superseded;
    }
}

pub async fn start_run(
    pool: &PgPool,
    connection: &str,
    stream: Option<&str>,
    mode: &str,
    dry_run: bool,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "insert into sync_run (connection, stream, mode, dry_run) values ($1, $2, $3, $4) returning id",
    )
    .bind(connection)
    .bind(stream)
    .bind(mode)
    .bind(dry_run)
    .fetch_one(pool)
    .await?)
}

/// Text a source or an error produced, made fit for a text column: U+0000
/// (which Postgres text refuses) becomes U+FFFD, and at most `max_chars`
/// characters are kept.
pub fn column_text(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// How a run ended and what it did, as the ledger records it.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub status: &'a str,
    /// Pages loaded (a replay); `None`: the pages the run stored, counted
    /// from the ledger (whatever path the run left by).
    pub pages: Option<i64>,
    pub pages_missing: i64,
    pub pages_unreadable: i64,
    pub counts: Counts,
    pub error: Option<&'a str>,
    pub resume_at: Option<DateTime<Utc>>,
}

pub async fn finish_run(pool: &PgPool, run: i64, end: &RunEnd<'_>) -> anyhow::Result<()> {
    let c = end.counts;
    sqlx::query(
        "update sync_run set status = $2, finished_at = now(),
         pages = coalesce($3, (select count(*) from raw_page where run_id = $1)), records_seen = $4,
         records_changed = $5, records_unchanged = $6, records_dead = $7, error = $8, resume_at = $9,
         records_superseded = $10, pages_missing = $11, pages_unreadable = $12
         where id = $1",
    )
    .bind(run)
    .bind(end.status)
    .bind(end.pages.map(|p| i32::try_from(p).unwrap_or(i32::MAX)))
    .bind(c.seen())
    .bind(c.changed)
    .bind(c.unchanged)
    .bind(c.dead)
    .bind(end.error.map(|e| column_text(e, 4000)))
    .bind(end.resume_at)
    .bind(c.superseded)
    .bind(i32::try_from(end.pages_missing).unwrap_or(i32::MAX))
    .bind(i32::try_from(end.pages_unreadable).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Runs left `running` by a process that died are marked `interrupted`. Only
/// called while holding the connection's sync lock.
pub async fn close_abandoned_runs(pool: &PgPool, connection: &str) -> anyhow::Result<()> {
    // What it did is read from the ledger: the pages it stored, and the
    // records of those it loaded.
    sqlx::query(
        "update sync_run r set status = 'interrupted', finished_at = now(),
                error = 'the process running it stopped',
                pages = c.pages, records_changed = c.changed, records_unchanged = c.unchanged,
                records_dead = c.dead, records_superseded = c.superseded,
                records_seen = c.changed + c.unchanged + c.dead + c.superseded
         from (select r2.id,
                      (select count(*) from raw_page p where p.run_id = r2.id) as pages,
                      coalesce(sum(p.records_changed), 0) as changed,
                      coalesce(sum(p.records_unchanged), 0) as unchanged,
                      coalesce(sum(p.records_dead), 0) as dead,
                      coalesce(sum(p.records_superseded), 0) as superseded
               from sync_run r2 left join raw_page p on p.run_id = r2.id and p.loaded_at is not null
               where r2.connection = $1 and r2.status = 'running'
               group by r2.id) c
         where r.id = c.id",
    )
    .bind(connection)
    .execute(pool)
    .await?;
    Ok(())
}

/// The watermark of a stream: where the next pull starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The next page of a pull in progress; `None` when the last pull completed.
    pub next: Option<PageToken>,
    /// Server time (`Date` header) at the start of the last complete pull.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Server time at the first page of the pull in progress.
    #[serde(default)]
    pub pull_started_at: Option<DateTime<Utc>>,
    /// Snapshot streams: the moment every page of the pull in progress is
    /// answered as of (kept so that a resumed pull asks for the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_as_of: Option<DateTime<Utc>>,
    /// Incremental streams: the lower bound of the next pull
    /// (`min(max cursor seen, server now − lag)` of the last complete pull).
    #[serde(default)]
    pub high_water: Option<DateTime<Utc>>,
    /// Incremental streams: the latest record cursor seen by the pull in progress.
    #[serde(default)]
    pub pull_max_cursor: Option<DateTime<Utc>>,
    /// Pages of the pull in progress that could not be read and were
    /// skipped: a pull with any does not move the high-water mark (their
    /// records must be asked for again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pull_skipped_pages: u32,
    /// Incremental streams whose server issues the next state (`token_at`):
    /// the state the next pull sends, opaque to core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// The latest state the server issued during the pull in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_token: Option<String>,
    /// Keyset streams: the largest `(modified, id)` seen by the pull in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_max_key: Option<connector_core::fetch::KeysetKey>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub async fn watermark(
    pool: &PgPool,
    connection: &str,
    stream: &str,
) -> anyhow::Result<Option<Cursor>> {
    let v: Option<serde_json::Value> =
        sqlx::query_scalar("select cursor from watermark where connection = $1 and stream = $2")
            .bind(connection)
            .bind(stream)
            .fetch_optional(pool)
            .await?;
    v.map(|v| {
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("watermark of {connection}/{stream} is unreadable: {e}"))
    })
    .transpose()
}

/// A page whose object is durably stored, to be recorded in the ledger.
#[derive(Debug, Clone)]
pub struct NewPage<'a> {
    pub run: i64,
    pub connection: &'a str,
    pub stream: &'a str,
    /// The token as it may be stored (secrets in links masked).
    pub token: &'a PageToken,
    pub object_key: &'a str,
    pub sha256: &'a str,
    pub bytes: usize,
    pub fetched_at: DateTime<Utc>,
    pub meta: &'a RequestMeta,
    pub record_path: &'a str,
    pub record_count: usize,
    /// Why the body could not be read as a page, when it could not.
    pub parse_error: Option<&'a str>,
    /// The incremental lower bound the page was requested with.
    pub since: Option<&'a str>,
    /// The response's `Content-Type` (its charset decides how it is read).
    pub content_type: Option<&'a str>,
}

/// Records stored pages, in order, and moves the watermark over them (when
/// `cursor` is given), in one transaction that first checks the run's lease
/// (invariants 2 and 9: the cursor never covers a page that is not recorded
/// and stored, and a run that lost its lease writes nothing). Returns the
/// pages' ids.
pub async fn record_pages(
    pool: &PgPool,
    lease: &Lease,
    pages: &[NewPage<'_>],
    cursor: Option<&Cursor>,
) -> anyhow::Result<Vec<i64>> {
    let Some(first) = pages.first() else {
        return Ok(Vec::new());
    };
    let (holder, fence) = lease
        .fence(first.stream)
        .ok_or_else(|| anyhow::anyhow!("the run holds no lease on stream {}", first.stream))?;
    let mut tx = pool.begin().await?;
    lease.hold_fence(&mut tx).await?;
    let mut ids = Vec::with_capacity(pages.len());
    for p in pages {
        // The fence check is part of the insert: no row when the fence moved.
        let id: Option<i64> = sqlx::query_scalar(
            "with lease as (select 1 from sync_lease where connection = $2 and stream = $3
                              and holder = $14 and fence = $15)
             insert into raw_page (run_id, connection, stream, page_token, object_key, body_sha256, body_bytes,
                                   fetched_at, request, record_path, record_count, parse_error, since,
                                   content_type)
             select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $16 from lease returning id",
        )
        .bind(p.run)
        .bind(p.connection)
        .bind(p.stream)
        .bind(serde_json::to_value(p.token)?)
        .bind(p.object_key)
        .bind(p.sha256)
        .bind(i32::try_from(p.bytes)?)
        .bind(p.fetched_at)
        .bind(serde_json::to_value(p.meta)?)
        .bind(p.record_path)
        .bind(i32::try_from(p.record_count)?)
        .bind(p.parse_error.map(|e| column_text(e, 2000)))
        .bind(p.since)
        .bind(holder)
        .bind(fence)
        .bind(p.content_type.map(|c| column_text(c, 200)))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(lease.lost_on_write(p.stream).into());
        };
        ids.push(id);
    }
    if let Some(cursor) = cursor {
        set_watermark(
            &mut tx,
            first.connection,
            first.stream,
            cursor,
            Some(first.run),
            "sync",
            None,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ids)
}

pub async fn set_watermark(
    tx: &mut Transaction<'_, Postgres>,
    connection: &str,
    stream: &str,
    cursor: &Cursor,
    run: Option<i64>,
    changed_by: &str,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let new = serde_json::to_value(cursor)?;
    let old: Option<serde_json::Value> = sqlx::query_scalar(
        "select cursor from watermark where connection = $1 and stream = $2 for update",
    )
    .bind(connection)
    .bind(stream)
    .fetch_optional(&mut **tx)
    .await?;
    sqlx::query(
        "insert into watermark (connection, stream, cursor, run_id, updated_at) values ($1, $2, $3, $4, now())
         on conflict (connection, stream) do update set cursor = excluded.cursor, run_id = excluded.run_id, updated_at = now()",
    )
    .bind(connection)
    .bind(stream)
    .bind(&new)
    .bind(run)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "insert into watermark_history (connection, stream, old_cursor, new_cursor, run_id, changed_by, reason)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(connection)
    .bind(stream)
    .bind(old)
    .bind(new)
    .bind(run)
    .bind(changed_by)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A recorded page, as the loader needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PageRef {
    pub id: i64,
    pub object_key: String,
    pub body_sha256: String,
    pub record_path: String,
    pub record_count: i32,
    pub parse_error: Option<String>,
    pub page_token: serde_json::Value,
    pub since: Option<String>,
    pub content_type: Option<String>,
}

/// Every page of a stream, in fetch order (see [`pages_from`]).
pub async fn pages(
    pool: &PgPool,
    connection: &str,
    stream: &str,
    unloaded_only: bool,
) -> anyhow::Result<Vec<PageRef>> {
    pages_from(pool, connection, stream, 0, i64::MAX, unloaded_only).await
}

/// At most `limit` pages of `stream` after raw page `after`, in fetch
/// order: all of them, or (`unloaded_only`) only those still to load (not
/// loaded, and not set aside because their object is missing or corrupt).
pub async fn pages_from(
    pool: &PgPool,
    connection: &str,
    stream: &str,
    after: i64,
    limit: i64,
    unloaded_only: bool,
) -> anyhow::Result<Vec<PageRef>> {
    Ok(sqlx::query_as(
        "select id, object_key, body_sha256, record_path, record_count, parse_error, page_token, since,
                content_type
         from raw_page
         where connection = $1 and stream = $2 and id > $3
           and ($5 = false or (loaded_at is null and object_state = 'stored'))
         order by id limit $4",
    )
    .bind(connection)
    .bind(stream)
    .bind(after)
    .bind(limit)
    .bind(unloaded_only)
    .fetch_all(pool)
    .await?)
}

/// The pages of `stream` after raw page `after` that a detail stream reads
/// ids from, in fetch order: pages another fetch replaced are left out (their
/// replacement is among them).
pub async fn pages_after(
    pool: &PgPool,
    connection: &str,
    stream: &str,
    after: i64,
) -> anyhow::Result<Vec<(PageRef, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        page: PageRef,
        object_state: String,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select id, object_key, body_sha256, record_path, record_count, parse_error, page_token, since,
                content_type, object_state
         from raw_page
         where connection = $1 and stream = $2 and id > $3 and replaced_by is null order by id",
    )
    .bind(connection)
    .bind(stream)
    .bind(after)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.page, r.object_state)).collect())
}

/// Records what reading a page's object found: `missing` or `corrupt` (a
/// hash mismatch). Not a write of the run's data: no lease check.
pub async fn mark_object(pool: &PgPool, page: i64, state: &str) -> anyhow::Result<()> {
    sqlx::query("update raw_page set object_state = $2 where id = $1")
        .bind(page)
        .bind(state)
        .execute(pool)
        .await?;
    Ok(())
}

/// After a pull that read and loaded every page: closes the stream's open
/// dead letters of unreadable pages and of records without a usable id that
/// run `run` did not see again (the source serves those pages and records
/// differently now, or not at all). Letters keyed by a source id close when
/// that record loads.
pub async fn sweep_dead_letters(
    pool: &PgPool,
    lease: &Lease,
    connection: &str,
    stream: &str,
    run: i64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    lease.check(&mut tx).await?;
    sqlx::query(
        "update dead_letter set status = 'resolved'
         where connection = $1 and stream = $2 and status = 'open'
           and (dedupe_key like 'page:%' or dedupe_key like 'rec:%')
           and last_seen_at < (select started_at from sync_run where id = $3)",
    )
    .bind(connection)
    .bind(stream)
    .bind(run)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Marks pages whose object read fine as stored (again).
pub async fn mark_stored(pool: &PgPool, pages: &[i64]) -> anyhow::Result<()> {
    if pages.is_empty() {
        return Ok(());
    }
    sqlx::query("update raw_page set object_state = 'stored' where id = any($1) and object_state <> 'stored'")
        .bind(pages)
        .execute(pool)
        .await?;
    Ok(())
}

/// Links a page set aside to the page that re-fetched it.
pub async fn mark_replaced(pool: &PgPool, page: i64, by: i64) -> anyhow::Result<()> {
    sqlx::query("update raw_page set replaced_by = $2 where id = $1")
        .bind(page)
        .bind(by)
        .execute(pool)
        .await?;
    Ok(())
}

/// The daemon's [`CredentialStore`]: rotated refresh tokens in the
/// `credential` table. `save` returns after the commit, so the value is
/// durable before the provider uses the access token that came with it.
#[derive(Debug, Clone)]
pub struct PgCredentialStore {
    pub pool: PgPool,
    pub connection: String,
}

fn store_err(e: sqlx::Error) -> connector_core::Error {
    crate::pipeline::db_error(&e)
}

#[async_trait::async_trait]
impl CredentialStore for PgCredentialStore {
    async fn load(&self, key: &str) -> Result<Option<SecretString>, connector_core::Error> {
        let v: Option<String> = sqlx::query_scalar("select value from credential where key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(v.map(SecretString::from))
    }

    async fn save(&self, key: &str, value: &SecretString) -> Result<(), connector_core::Error> {
        sqlx::query(
            "insert into credential (key, connection, value) values ($1, $2, $3)
             on conflict (key) do update set value = excluded.value, updated_at = now()",
        )
        .bind(key)
        .bind(&self.connection)
        .bind(value.expose_secret())
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }
}

/// Saves the connection's breaker state for `status`.
pub async fn save_breaker(
    pool: &PgPool,
    connection: &str,
    b: &connector_core::breaker::BreakerSnapshot,
) -> anyhow::Result<()> {
    // A host the connection no longer calls (its base URL changed) has no
    // breaker any more: its row would only mislead `status`.
    sqlx::query("delete from circuit_breaker where connection = $1 and host <> $2")
        .bind(connection)
        .bind(&b.host)
        .execute(pool)
        .await?;
    sqlx::query(
        "insert into circuit_breaker (connection, host, state, consecutive_failures, times_opened, retry_at, updated_at)
         values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), now())
         on conflict (connection, host) do update set state = excluded.state,
           consecutive_failures = excluded.consecutive_failures, times_opened = excluded.times_opened,
           retry_at = excluded.retry_at, updated_at = now()",
    )
    .bind(connection)
    .bind(&b.host)
    .bind(b.state.as_str())
    .bind(b.consecutive_failures as i32)
    .bind(b.times_opened as i64)
    .bind(b.retry_in_secs.map(|s| s as f64))
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::column_text;

    #[test]
    fn column_text_has_no_nul_and_a_bound() {
        assert_eq!(column_text("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(column_text("abcdef", 3), "abc…");
        assert_eq!(column_text("abc", 3), "abc");
    }
}
