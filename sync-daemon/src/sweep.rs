//! Mark and sweep for full-refresh streams: after a complete, successful
//! pull from the first page, the stream's live rows the pull did not see
//! are soft-deleted (DESIGN §7, docs/architecture.md "Deletes").
//!
//! "Seen" costs no write: the loader hands back a 64-bit hash of every
//! source id it read ([`crate::load::id_hash`]), 8 bytes per record held
//! until the sweep. A collision can only make an unseen id look seen, so it
//! can keep a row alive one run longer, never delete a row that was seen.
//! The sweep reads the stream's live crosswalk rows once (those whose last
//! write came from this stream) and deletes the missing in one transaction
//! under the run's lease, unless they are more than the connection's
//! `max_sweep_share` of the live rows: then nothing is deleted and the run
//! fails with the figures, so a source that suddenly answers an empty list
//! cannot wipe the model.

use futures::TryStreamExt;
use sqlx::Row;

use crate::load::id_hash;
use crate::pipeline::{Ctx, Run};

/// What the loader saw of one pull.
#[derive(Debug, Default)]
pub struct Seen {
    pub ids: Vec<u64>,
    /// Records without a usable id, and unreadable pages: with any, the
    /// pull cannot tell whom it missed, and nothing is swept.
    pub anonymous: i64,
}

impl Seen {
    /// Adds what another partition of the same stream saw.
    pub fn merge(&mut self, other: Seen) {
        self.ids.extend(other.ids);
        self.anonymous += other.anonymous;
    }
}

/// Soft-deletes the live rows of the entity in the connection whose last
/// write came from one of `keys` (a stream, or every partition of one) and
/// that `seen` does not hold. Returns how many were deleted.
///
/// The swept link's version moves past every record of the run's pull
/// (the run's last page of those streams, at the end of it), like a
/// tombstone's: a replay of older pages cannot bring the row back, and a
/// record fetched later does.
pub async fn sweep(
    ctx: &Ctx,
    run: &Run<'_>,
    keys: &[String],
    entity: canonical_model::EntityKind,
    mut seen: Seen,
) -> anyhow::Result<u64> {
    let stream = keys
        .first()
        .map(|k| k.split('@').next().unwrap_or(k))
        .unwrap_or("");
    if seen.anonymous > 0 {
        tracing::warn!(
            event = "sweep_skipped", connection = %ctx.connection, stream,
            anonymous = seen.anonymous,
            "the pull held records without an id or pages that could not be read; nothing is swept"
        );
        return Ok(0);
    }
    seen.ids.sort_unstable();
    seen.ids.dedup();
    let mut live = 0u64;
    // (source id, the stream of its last write)
    let mut missing: Vec<(String, String)> = Vec::new();
    {
        let mut rows = sqlx::query(
            "select s.source_id, d.stream
             from source_link s join derivation d on d.id = s.derivation_id
             where s.entity_type = $1 and s.connection = $2 and d.stream = any($3)
               and s.deleted_at is null",
        )
        .bind(entity.as_str())
        .bind(&ctx.connection)
        .bind(keys)
        .fetch(&ctx.pool);
        while let Some(r) = rows.try_next().await? {
            live += 1;
            let sid: String = r.get(0);
            if seen.ids.binary_search(&id_hash(&sid)).is_err() {
                missing.push((sid, r.get(1)));
            }
        }
    }
    if missing.is_empty() {
        return Ok(0);
    }
    let share = ctx.max_sweep_share;
    if missing.len() as f64 > share * live as f64 {
        let stream = keys.join(", ");
        let example: Vec<&str> = missing.iter().take(5).map(|m| m.0.as_str()).collect();
        anyhow::bail!(
            "the complete pull of {stream} no longer lists {} of its {live} live {entity} rows \
             ({:.0}%), more than max_sweep_share = {share} allows; nothing was deleted (e.g. {}). \
             If the source really dropped them, raise max_sweep_share for one run",
            missing.len(),
            100.0 * missing.len() as f64 / live as f64,
            example.join(", ")
        );
    }
    let mut tx = ctx.pool.begin().await?;
    run.lease.check(&mut tx).await?;
    let last_page: Option<i64> = sqlx::query_scalar(
        "select max(id) from raw_page where run_id = $1 and connection = $2 and stream = any($3)",
    )
    .bind(run.id)
    .bind(&ctx.connection)
    .bind(keys)
    .fetch_one(&mut *tx)
    .await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "update source_link s set deleted_at = now(), deleted_run_id = $4,
                deleted_page_id = null, deleted_ordinal = null, deleted_stream = u.stream,
                raw_page_id = coalesce($5, s.raw_page_id), record_ordinal = 2147483647
         from unnest($3::text[], $6::text[]) as u(sid, stream)
         where s.entity_type = $1 and s.connection = $2 and s.source_id = u.sid
           and s.deleted_at is null
         returning s.canonical_id",
    )
    .bind(entity.as_str())
    .bind(&ctx.connection)
    .bind(missing.iter().map(|m| m.0.as_str()).collect::<Vec<_>>())
    .bind(run.id)
    .bind(last_page)
    .bind(missing.iter().map(|m| m.1.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    // Table names come from the closed EntityKind catalogue.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update {} set deleted_at = now(), updated_at = now() where id = any($1)",
        entity.as_str()
    )))
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        event = "rows_swept", connection = %ctx.connection, stream, deleted = ids.len(), live,
        "soft-deleted the rows the complete pull no longer lists"
    );
    Ok(ids.len() as u64)
}
