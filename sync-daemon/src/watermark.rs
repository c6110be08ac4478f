//! `sync-daemon watermark show | set | rewind`: an operator reads or moves a
//! stream's watermark (DESIGN.md §7).
//!
//! A value is checked against the shape of the stream's state:
//! - **time** (an incremental stream bounded by record times): a timestamp,
//!   stored as the high-water mark;
//! - **server token** (the source issues the next state, e.g. BambooHR's
//!   `latest`): the token as text; a token that is a timestamp can be rewound;
//! - **keyset** (`(modified, id)`, e.g. NetSuite): a timestamp, which asks
//!   again for every record modified at or after it;
//! - **details** (ids read from another stream's pages): a raw page id of
//!   that stream, or a rewind to a time (its pages stored since are read
//!   again);
//! - **full refresh**: no bound; every run reads everything, so there is
//!   nothing to set.
//!
//! A change restarts the pull in progress from the new bound, is refused
//! while a run holds the connection or the stream's lease, and is recorded
//! in `watermark_history` with who and why.

use crate::db::{self, Cursor};
use crate::pipeline::Ctx;
use chrono::{DateTime, Datelike, Utc};
use connector_core::{StreamDef, SyncMode};
use serde::Serialize;

/// The shape of a stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Time,
    ServerToken,
    Keyset,
    Details,
    FullRefresh,
}

impl Shape {
    pub fn of(def: &StreamDef) -> Self {
        if def.details.is_some() {
            return Shape::Details;
        }
        match def.mode {
            SyncMode::FullRefresh => Shape::FullRefresh,
            SyncMode::Incremental {
                token_at: Some(_), ..
            } => Shape::ServerToken,
            SyncMode::Incremental { keyset: true, .. } => Shape::Keyset,
            SyncMode::Incremental { .. } => Shape::Time,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Shape::Time => "time",
            Shape::ServerToken => "server token",
            Shape::Keyset => "keyset",
            Shape::Details => "details",
            Shape::FullRefresh => "full refresh",
        }
    }
}

/// One stream's watermark, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub connection: String,
    pub stream: String,
    pub shape: Shape,
    /// The bound the next pull starts from (none: from the beginning).
    pub value: Option<String>,
    /// A pull in progress resumes at its next page.
    pub pull_in_progress: bool,
    pub last_complete_pull: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub changed_by: Option<String>,
    pub reason: Option<String>,
}

/// The bound of `c` in the stream's shape, as text.
fn value_of(shape: Shape, c: &Cursor) -> Option<String> {
    match shape {
        Shape::Time => c
            .high_water
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        Shape::ServerToken | Shape::Keyset | Shape::Details => c.state.as_ref().map(|s| match s {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }),
        Shape::FullRefresh => None,
    }
}

/// The watermarks of the connection's streams (`only`: a stream name or
/// partition key).
pub async fn show(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<Vec<Shown>> {
    let mut out = Vec::new();
    for def in selected(ctx, only)? {
        let key = def.key();
        let shape = Shape::of(&def);
        let row: Option<(serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "select cursor, updated_at from watermark where connection = $1 and stream = $2",
        )
        .bind(&ctx.connection)
        .bind(&key)
        .fetch_optional(&ctx.pool)
        .await?;
        let last: Option<(String, Option<String>)> = sqlx::query_as(
            "select changed_by, reason from watermark_history where connection = $1 and stream = $2
             order by id desc limit 1",
        )
        .bind(&ctx.connection)
        .bind(&key)
        .fetch_optional(&ctx.pool)
        .await?;
        let cursor: Option<Cursor> = row
            .as_ref()
            .map(|(v, _)| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|e| {
                anyhow::anyhow!("watermark of {}/{key} is unreadable: {e}", ctx.connection)
            })?;
        out.push(Shown {
            connection: ctx.connection.clone(),
            stream: key,
            shape,
            value: cursor.as_ref().and_then(|c| value_of(shape, c)),
            pull_in_progress: cursor.as_ref().is_some_and(|c| c.next.is_some()),
            last_complete_pull: cursor.as_ref().and_then(|c| c.completed_at),
            updated_at: row.map(|r| r.1),
            changed_by: last.as_ref().map(|l| l.0.clone()),
            reason: last.and_then(|l| l.1),
        });
    }
    Ok(out)
}

fn selected(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<Vec<StreamDef>> {
    Ok(crate::registry::select_streams(
        &ctx.connection,
        ctx.connector.streams(),
        only,
    )?)
}

/// What an operator asks.
#[derive(Debug, Clone)]
pub enum Change {
    /// `set`: the new bound, as text in the stream's shape.
    Set(String),
    /// `rewind`: back by a duration from the current bound, or to a time
    /// before it.
    Rewind(String),
}

/// One stream's change, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub connection: String,
    pub stream: String,
    pub old: Option<String>,
    pub new: String,
}

/// Applies `change` to every selected stream (a stream name selects all its
/// partitions), recorded with `by` and `reason`.
pub async fn change(
    ctx: &Ctx,
    stream: &str,
    change: &Change,
    by: &str,
    reason: &str,
) -> anyhow::Result<Vec<Changed>> {
    let defs = selected(ctx, Some(stream))?;
    if reason.trim().is_empty() {
        return Err(crate::UsageError("give the reason with --reason \"…\"".into()).into());
    }
    db::ensure_connection(&ctx.pool, &ctx.connection, ctx.connector.name()).await?;
    // No run may hold the connection while its watermark moves.
    let session = crate::lease::lock(&ctx.pool, &ctx.connection)
        .await
        .map_err(|e| anyhow::anyhow!("refused: {e}; try again when it ends"))?;
    let result = apply(ctx, &defs, change, by, reason).await;
    let _ = sqlx::Connection::close(session).await;
    result
}

async fn apply(
    ctx: &Ctx,
    defs: &[StreamDef],
    change: &Change,
    by: &str,
    reason: &str,
) -> anyhow::Result<Vec<Changed>> {
    let mut tx = ctx.pool.begin().await?;
    let mut out = Vec::new();
    for def in defs {
        let key = def.key();
        // A lease that has not expired: a process that died mid-run (its
        // lock is gone) may still be within its lease.
        let leased: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "select holder, expires_at from sync_lease
             where connection = $1 and stream = $2 and expires_at > now()",
        )
        .bind(&ctx.connection)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((holder, until)) = leased {
            anyhow::bail!(
                "refused: stream {key} of {:?} is leased by {holder} until {}; try again after",
                ctx.connection,
                until.format("%H:%M:%S UTC")
            );
        }
        let old: Option<Cursor> = db::watermark(&ctx.pool, &ctx.connection, &key).await?;
        let shape = Shape::of(def);
        let mut cursor = old.clone().unwrap_or_default();
        let old_value = old.as_ref().and_then(|c| value_of(shape, c));
        let at = |m: String| anyhow::anyhow!("stream {key} ({} watermark): {m}", shape.label());
        let now = Utc::now();
        match (shape, change) {
            (Shape::FullRefresh, _) => {
                return Err(at(
                    "a full-refresh stream reads everything at every run; it has no bound to set or rewind".into(),
                ));
            }
            (Shape::Time, Change::Set(v)) => {
                let t = parse_time(v).map_err(at)?;
                cursor.high_water = Some(t);
            }
            (Shape::Time, Change::Rewind(v)) => {
                let cur = cursor
                    .high_water
                    .ok_or_else(|| at("no bound yet: the next sync reads everything".into()))?;
                cursor.high_water = Some(rewound(cur, v).map_err(at)?);
            }
            (Shape::ServerToken, Change::Set(v)) => {
                if v.trim().is_empty() {
                    return Err(at("the token is empty".into()));
                }
                // The source's tokens are times (BambooHR's `latest`): a new
                // one must be a time too, or the next request is refused.
                let was_time = old_value
                    .as_deref()
                    .is_some_and(|o| DateTime::parse_from_rfc3339(o).is_ok());
                if was_time && let Err(m) = parse_time(v) {
                    return Err(at(format!("the source's token is a time: {m}")));
                }
                // A token that reads as a time is stored in the source's
                // own form (RFC 3339, UTC).
                let v = parse_time(v)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|_| v.trim().to_owned());
                cursor.state = Some(serde_json::Value::String(v));
            }
            (Shape::ServerToken, Change::Rewind(v)) => {
                let cur = old_value
                    .as_deref()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| {
                        at(
                            "the source's token is not a time: give a new one with `watermark set`"
                                .into(),
                        )
                    })?;
                let t = rewound(cur, v).map_err(at)?;
                cursor.state = Some(serde_json::Value::String(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ));
            }
            (Shape::Keyset, Change::Set(v)) => {
                let t = parse_time(v).map_err(at)?;
                cursor.state = Some(keyset_at(t));
            }
            (Shape::Keyset, Change::Rewind(v)) => {
                let cur = cursor
                    .state
                    .as_ref()
                    .and_then(|s| s.get("modified")?.as_str().map(str::to_owned))
                    .and_then(|m| def.cursor_time(&m))
                    .ok_or_else(|| at("no bound yet: the next sync reads everything".into()))?;
                cursor.state = Some(keyset_at(rewound(cur, v).map_err(at)?));
            }
            (Shape::Details, Change::Set(v)) => {
                let id: i64 = v.trim().parse().map_err(|_| {
                    at(format!(
                        "{v:?} is not a raw page id of stream {}",
                        def.details.map_or("?", |d| d.of)
                    ))
                })?;
                let of = detail_of(def);
                let ok: bool = sqlx::query_scalar(
                    "select exists (select 1 from raw_page where id = $1 and connection = $2 and stream = $3)",
                )
                .bind(id)
                .bind(&ctx.connection)
                .bind(&of)
                .fetch_one(&mut *tx)
                .await?;
                if !ok {
                    return Err(at(format!("raw page {id} is not a page of stream {of}")));
                }
                cursor.state = Some(serde_json::json!({ "after_page": id }));
            }
            (Shape::Details, Change::Rewind(v)) => {
                let of = detail_of(def);
                let after = cursor
                    .state
                    .as_ref()
                    .and_then(|s| s.get("after_page")?.as_i64())
                    .ok_or_else(|| at("no bound yet: the next sync reads everything".into()))?;
                let cur: Option<DateTime<Utc>> =
                    sqlx::query_scalar("select fetched_at from raw_page where id = $1")
                        .bind(after)
                        .fetch_optional(&mut *tx)
                        .await?;
                let t = rewound(cur.unwrap_or(now), v).map_err(at)?;
                let id: Option<i64> = sqlx::query_scalar(
                    "select max(id) from raw_page where connection = $1 and stream = $2 and fetched_at < $3",
                )
                .bind(&ctx.connection)
                .bind(&of)
                .bind(t)
                .fetch_one(&mut *tx)
                .await?;
                cursor.state = Some(serde_json::json!({ "after_page": id.unwrap_or(0) }));
            }
        }
        // The pull in progress started from the old bound: the next one
        // starts over from the new.
        cursor.next = None;
        cursor.pull_started_at = None;
        cursor.pull_max_cursor = None;
        cursor.pull_max_key = None;
        cursor.pull_token = None;
        cursor.pull_skipped_pages = 0;
        let new = value_of(shape, &cursor).unwrap_or_default();
        db::set_watermark(
            &mut tx,
            &ctx.connection,
            &key,
            &cursor,
            None,
            by,
            Some(reason),
        )
        .await?;
        out.push(Changed {
            connection: ctx.connection.clone(),
            stream: key,
            old: old_value,
            new,
        });
    }
    tx.commit().await?;
    Ok(out)
}

fn detail_of(def: &StreamDef) -> String {
    let of = def.details.map_or("", |d| d.of);
    match &def.partition {
        Some(p) => format!("{of}@{p}"),
        None => of.to_owned(),
    }
}

/// A keyset state that asks for every record modified at or after `t`.
fn keyset_at(t: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "modified": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "id": null,
    })
}

/// A timestamp (RFC 3339, or a date for its midnight UTC), not in the future.
fn parse_time(v: &str) -> Result<DateTime<Utc>, String> {
    let v = v.trim();
    let t = DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            format!("{v:?} is not a timestamp: give RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01)")
        })?;
    if t > Utc::now() {
        return Err(format!(
            "{v} is in the future: the pull would skip what changes until then"
        ));
    }
    Ok(t)
}

/// `cur` moved back by a duration (`2h`, `7d`), or to a timestamp before it.
fn rewound(cur: DateTime<Utc>, v: &str) -> Result<DateTime<Utc>, String> {
    let t = v.trim();
    // Digits and a unit letter: a duration, whatever else it is wrong about.
    if t.len() > 1
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && t.as_bytes()[t.len() - 1].is_ascii_alphabetic()
    {
        let d = connector_core::parse_duration(t)?;
        if d.is_zero() {
            return Err(format!("{t:?} moves nothing: give a positive duration"));
        }
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return cur
            .checked_sub_signed(d)
            .filter(|t| t.year() >= 1)
            .ok_or_else(|| format!("{v} before {cur} is out of range"));
    }
    let t = parse_time(v)
        .map_err(|e| format!("{e}; or a duration to go back by, e.g. \"2h\" or \"7d\""))?;
    if t > cur {
        return Err(format!(
            "{} is after the current bound {}: that is not a rewind (use `watermark set`)",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cur.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(t)
}

/// `show` as a table.
pub fn render(rows: &[Shown]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "{}/{} ({}): {}{}",
            r.connection,
            r.stream,
            r.shape.label(),
            match (&r.value, r.shape) {
                (_, Shape::FullRefresh) => "no bound (reads everything)".to_owned(),
                (Some(v), _) => v.clone(),
                (None, _) => "none yet (the next pull reads everything)".to_owned(),
            },
            if r.pull_in_progress {
                "; a pull in progress resumes at its next page"
            } else {
                ""
            }
        );
        if let (Some(at), Some(by)) = (r.updated_at, &r.changed_by) {
            let _ = writeln!(
                s,
                "    last changed {} by {by}{}",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.reason
                    .as_ref()
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default()
            );
        }
    }
    if rows.is_empty() {
        s.push_str("no streams\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_rewind_goes_back_by_a_duration_or_to_an_earlier_time_only() {
        let cur = at("2026-11-20T12:00:00Z");
        assert_eq!(rewound(cur, "2h").unwrap(), at("2026-11-20T10:00:00Z"));
        assert_eq!(rewound(cur, "7d").unwrap(), at("2026-11-13T12:00:00Z"));
        assert_eq!(
            rewound(cur, "2026-11-01").unwrap(),
            at("2026-11-01T00:00:00Z")
        );
        let e = rewound(cur, "2026-11-21T00:00:00Z").unwrap_err();
        assert!(e.contains("not a rewind"), "{e}");
        let e = rewound(cur, "yesterday").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("duration"), "{e}");
        let e = rewound(cur, "99999d").unwrap_err();
        assert!(e.contains("hundred years"), "{e}");
        let e = rewound(cur, "0d").unwrap_err();
        assert!(e.contains("moves nothing"), "{e}");
    }

    #[test]
    fn a_set_time_must_be_a_timestamp_not_in_the_future() {
        assert_eq!(
            parse_time("2026-01-02T03:04:05+01:00").unwrap(),
            at("2026-01-02T02:04:05Z")
        );
        assert!(parse_time("2999-01-01").unwrap_err().contains("future"));
        assert!(parse_time("01/02/2026").unwrap_err().contains("RFC 3339"));
    }
}
