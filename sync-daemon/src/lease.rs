//! One writer per stream, for the whole run (docs/architecture.md, "Invariants
//! and where they hold", 9; ADR 0004).
//!
//! Two mechanisms, each covering the other's gap:
//! - the connection's **advisory lock**, held on a session of its own, says
//!   who may *take* the run's leases. Postgres releases it when that session
//!   ends, so a killed process never blocks the next run;
//! - the **lease rows** (`sync_lease`, one per stream) carry a fencing token
//!   that grows with every taking. Every write transaction of the run first
//!   takes the connection's fence lock in shared mode (a transaction-scoped
//!   advisory lock), then checks its tokens ([`Lease::check`]); a taking
//!   takes the fence lock exclusively. So a taker waits for in-flight writes
//!   to commit, and a process whose lock session died (idle timeout, server
//!   restart, network blip) and whose leases were taken over fails its next
//!   write instead of writing beside the new holder. (Row locks `FOR SHARE`
//!   would do the same, but each one writes WAL, and the fetcher's and the
//!   loader's concurrent ones create multixacts.)
//!
//! A heartbeat renews the rows and pings the lock session; when the session
//! is gone it tries to take the lock again, and marks the lease lost if
//! another process holds it, so the run stops at its next checkpoint.

use connector_core::Error as CoreError;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a lease row is good for without a renewal (shown by `status`).
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often the heartbeat renews the rows and checks the lock session.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The leases of one run over some streams of a connection.
#[derive(Debug, Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    connection: String,
    holder: String,
    streams: Vec<String>,
    fences: Vec<i64>,
    /// The session holding the connection's advisory lock: detached from
    /// the pool, so it is closed (and the lock released) whenever it is
    /// dropped, never handed to another user still holding the lock.
    session: tokio::sync::Mutex<Option<PgConnection>>,
    /// Why the lease was lost, once it is.
    lost: Mutex<Option<String>>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// This process's part of every holder name it writes (`host:pid:`): its
/// leases are the rows whose holder starts with it.
pub fn process_prefix() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:", std::process::id())
}

/// A name for one run of this process in `sync_lease.holder`.
fn holder_name() -> String {
    format!("{}{:08x}", process_prefix(), fastrand::u32(..))
}

const LOCK_SQL: &str = "select pg_try_advisory_lock(hashtextextended('sync:' || $1, 0))";
/// The fence lock of a connection, per transaction: shared by every write,
/// exclusive for a taking.
const FENCE_SHARED_SQL: &str =
    "select pg_advisory_xact_lock_shared(hashtextextended('fence:' || $1, 0))";
const FENCE_EXCLUSIVE_SQL: &str =
    "select pg_advisory_xact_lock(hashtextextended('fence:' || $1, 0))";

async fn try_lock(conn: &mut PgConnection, connection: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(LOCK_SQL)
        .bind(connection)
        .fetch_one(conn)
        .await
}

/// The connection is being synced or replayed by another process (or by
/// another run of this one).
#[derive(Debug, thiserror::Error)]
#[error("connection {connection:?} is being synced or replayed by another process{holder}")]
pub struct Busy {
    pub connection: String,
    /// `: holder (run #N)`, when known.
    pub holder: String,
}

/// Takes the connection's advisory lock on a session of its own; fails at
/// once with [`Busy`], naming the holder, when another process has it.
pub async fn lock(pool: &PgPool, connection: &str) -> anyhow::Result<PgConnection> {
    let mut conn = pool.acquire().await?.detach();
    if !try_lock(&mut conn, connection).await? {
        let holder: Option<String> = sqlx::query_scalar(
            "select holder || ' (run #' || coalesce(run_id::text, '?') || ')' from sync_lease
             where connection = $1 order by renewed_at desc limit 1",
        )
        .bind(connection)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        return Err(Busy {
            connection: connection.to_owned(),
            holder: holder.map(|h| format!(": {h}")).unwrap_or_default(),
        }
        .into());
    }
    Ok(conn)
}

impl Lease {
    /// Takes the leases of `streams` for run `run`, holding the connection's
    /// advisory lock (`session`, from [`lock`]): whoever held them before is
    /// dead or lost its lock, so they are taken over, each with a new fence.
    pub async fn take(
        pool: &PgPool,
        session: PgConnection,
        connection: &str,
        streams: &[&str],
        run: i64,
    ) -> anyhow::Result<Self> {
        let holder = holder_name();
        let mut tx = pool.begin().await?;
        // Waits for the previous holder's in-flight writes to commit, a
        // minute at most (a stopped process's transaction is ended by the
        // server's idle timeout; see `db::connect`).
        sqlx::query("set local lock_timeout = '60s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(FENCE_EXCLUSIVE_SQL)
            .bind(connection)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connection {connection:?}: a process that lost its lock is still writing; try again later ({e})"
                )
            })?;
        let mut fences = Vec::new();
        for stream in streams {
            let fence: i64 = sqlx::query_scalar(
                "insert into sync_lease (connection, stream, holder, run_id, fence, expires_at)
                 values ($1, $2, $3, $4, 1, now() + make_interval(secs => $5))
                 on conflict (connection, stream) do update set holder = excluded.holder,
                    run_id = excluded.run_id, fence = sync_lease.fence + 1, acquired_at = now(),
                    renewed_at = now(), expires_at = excluded.expires_at
                 returning fence",
            )
            .bind(connection)
            .bind(stream)
            .bind(&holder)
            .bind(run)
            .bind(LEASE_TTL.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
            fences.push(fence);
        }
        tx.commit().await?;
        let lease = Lease {
            inner: Arc::new(Inner {
                pool: pool.clone(),
                connection: connection.to_owned(),
                holder,
                streams: streams.iter().map(|s| (*s).to_owned()).collect(),
                fences,
                session: tokio::sync::Mutex::new(Some(session)),
                lost: Mutex::new(None),
                heartbeat: Mutex::new(None),
            }),
        };
        let weak = Arc::downgrade(&lease.inner);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(inner) = weak.upgrade() else { return };
                Lease { inner }.beat().await;
            }
        });
        if let Ok(mut h) = lease.inner.heartbeat.lock() {
            *h = Some(task);
        }
        Ok(lease)
    }

    fn scope(&self) -> String {
        format!("{}/{}", self.inner.connection, self.inner.streams.join(","))
    }

    fn mark_lost(&self, why: String) {
        if let Ok(mut l) = self.inner.lost.lock()
            && l.is_none()
        {
            tracing::error!(event = "lease_lost", connection = %self.inner.connection, "{why}");
            *l = Some(why);
        }
    }

    /// Takes the connection's fence lock in shared mode until `tx` ends: a
    /// taker ([`Lease::take`]) takes it exclusively, so it waits for this
    /// write to commit, and a fence read *after* this statement sees any
    /// taking that committed before it. No row is locked: nothing is
    /// written to WAL for it, and writers never contend with each other.
    pub async fn hold_fence(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), CoreError> {
        if let Some(why) = self.lost() {
            return Err(self.lost_error(why));
        }
        sqlx::query(FENCE_SHARED_SQL)
            .bind(&self.inner.connection)
            .execute(&mut **tx)
            .await
            .map_err(|e| crate::pipeline::db_error(&e))?;
        Ok(())
    }

    /// This run's holder name and fence on `stream`, for writes that check
    /// the lease in their own statement.
    pub fn fence(&self, stream: &str) -> Option<(&str, i64)> {
        let i = self.inner.streams.iter().position(|s| s == stream)?;
        Some((&self.inner.holder, self.inner.fences[i]))
    }

    /// The error of a write that found its lease gone (see [`Lease::check`]).
    pub fn lost_on_write(&self, stream: &str) -> CoreError {
        let why = format!("stream {stream} was taken over by another process");
        self.mark_lost(why.clone());
        self.lost_error(why)
    }

    /// Why the lease is lost, if it is (a run stops at its next checkpoint).
    pub fn lost(&self) -> Option<String> {
        self.inner.lost.lock().ok().and_then(|l| l.clone())
    }

    fn lost_error(&self, why: String) -> CoreError {
        CoreError::LeaseLost {
            scope: self.scope(),
            detail: why,
        }
    }

    /// Fails with [`CoreError::LeaseLost`] unless this run still holds every
    /// lease, with its fence, holding the fence lock until `tx` ends
    /// ([`Lease::hold_fence`]): call it first in every write transaction of
    /// the run.
    pub async fn check(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), CoreError> {
        self.hold_fence(tx).await?;
        let rows = sqlx::query(
            "select stream, fence, holder from sync_lease
             where connection = $1 and stream = any($2) order by stream",
        )
        .bind(&self.inner.connection)
        .bind(&self.inner.streams)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| crate::pipeline::db_error(&e))?;
        let inner_holder = self.inner.holder.clone();
        for (stream, fence) in self.inner.streams.iter().zip(&self.inner.fences) {
            let now = rows
                .iter()
                .find(|r| r.get::<String, _>(0) == *stream)
                .map(|r| (r.get::<i64, _>(1), r.get::<String, _>(2)));
            if now.as_ref().map(|n| (n.0, n.1.as_str())) != Some((*fence, &inner_holder)) {
                let why = match now {
                    Some((_, holder)) => format!("stream {stream} was taken over by {holder}"),
                    None => format!("the lease row of stream {stream} is gone"),
                };
                self.mark_lost(why.clone());
                return Err(self.lost_error(why));
            }
        }
        Ok(())
    }

    /// One heartbeat: the lock session must be alive (or the lock taken
    /// again), and the rows still ours.
    async fn beat(&self) {
        let inner = &*self.inner;
        // The rows first: a run whose leases were taken over must not take
        // the lock again (it would keep every other run out until its next
        // write fails); it lets the lock go at once.
        if self.lost().is_none()
            && let Ok(n) = self.expire_in(LEASE_TTL).await
            && (n as usize) < inner.streams.len()
        {
            self.mark_lost("another process took the lease over".into());
        }
        let mut session = inner.session.lock().await;
        if self.lost().is_some() {
            if let Some(c) = session.take() {
                let _ = sqlx::Connection::close(c).await;
            }
            return;
        }
        let alive = match session.as_mut() {
            Some(c) => sqlx::query("select 1").execute(c).await.is_ok(),
            None => false,
        };
        if !alive {
            *session = None;
            // An unreachable database (an error either way) is left to the
            // next beat: the run's next write fails on it anyway.
            if let Ok(mut c) = inner.pool.acquire().await.map(|c| c.detach()) {
                match try_lock(&mut c, &inner.connection).await {
                    Ok(true) => *session = Some(c),
                    Ok(false) => self.mark_lost(
                        "the lock session ended and another process holds the lock now".into(),
                    ),
                    Err(_) => {}
                }
            }
        }
    }

    /// Sets this run's rows (those it still holds) to expire `ttl` from now;
    /// returns how many it still holds.
    async fn expire_in(&self, ttl: Duration) -> sqlx::Result<u64> {
        let inner = &*self.inner;
        let r = sqlx::query(
            "update sync_lease set renewed_at = now(), expires_at = now() + make_interval(secs => $5)
             from unnest($2::text[], $3::bigint[]) as u(stream, fence)
             where sync_lease.connection = $1 and sync_lease.stream = u.stream
               and sync_lease.fence = u.fence and sync_lease.holder = $4",
        )
        .bind(&inner.connection)
        .bind(&inner.streams)
        .bind(&inner.fences)
        .bind(&inner.holder)
        .bind(ttl.as_secs_f64())
        .execute(&inner.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Ends the run's hold: the rows it still owns expire now and the
    /// advisory lock is released. Never fails (a dead session released it).
    pub async fn release(&self) {
        if let Some(h) = self.inner.heartbeat.lock().ok().and_then(|mut h| h.take()) {
            h.abort();
        }
        let inner = &*self.inner;
        // The rows stay (expired), so fences only ever grow.
        let _ = self.expire_in(Duration::ZERO).await;
        if let Some(c) = inner.session.lock().await.take() {
            // Closing the session releases its advisory lock.
            let _ = sqlx::Connection::close(c).await;
        }
    }
}
