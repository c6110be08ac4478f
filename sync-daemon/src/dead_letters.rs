//! `dead-letters list | show | discard`: what could not be loaded, and an
//! operator's decision about it. A dead letter is never deleted: it is
//! `open` until its record loads (`resolved`, by a later sync or replay) or
//! an operator discards it (`discarded`, with who, when and why).

use serde::Serialize;
use sqlx::{PgPool, Row};

use connector_core::RawStore;

/// One open dead letter, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub connection: String,
    pub stream: String,
    pub source_id: Option<String>,
    /// `mapping`, `value`, `no_primary_key`, `page`, …
    pub error_class: String,
    pub field: Option<String>,
    pub pointer: Option<String>,
    pub message: String,
    pub times_seen: i32,
    pub first_seen_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
}

/// One dead letter whole, as `show` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub letter: DeadLetter,
    pub status: String,
    pub raw_page_id: i64,
    /// The record's position on its page; `None` for a page that could not be read.
    pub record_position: Option<i32>,
    pub raw_object_key: String,
    /// `mapper version` of the mapping that refused it.
    pub mapping: Option<String>,
    /// The record as the source sent it (the page, when the page itself
    /// was unreadable: `None`); `raw_object_problem` says why it cannot be read.
    pub record: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_object_problem: Option<String>,
    pub discarded_at: Option<chrono::DateTime<chrono::Utc>>,
    pub discarded_by: Option<String>,
    pub discard_reason: Option<String>,
}

const COLUMNS: &str =
    "d.id, d.connection, d.stream, d.source_id, d.error_class, d.field, d.pointer,
                       d.message, d.times_seen, d.first_seen_at, d.last_seen_at";

fn letter(r: &sqlx::postgres::PgRow) -> DeadLetter {
    DeadLetter {
        id: r.get(0),
        connection: r.get(1),
        stream: r.get(2),
        source_id: r.get(3),
        error_class: r.get(4),
        field: r.get(5),
        pointer: r.get(6),
        message: r.get(7),
        times_seen: r.get(8),
        first_seen_at: r.get(9),
        last_seen_at: r.get(10),
    }
}

/// The open dead letters, of one connection and stream when given, oldest first.
pub async fn list(
    pool: &PgPool,
    connection: Option<&str>,
    stream: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from dead_letter d
         where d.status = 'open' and ($1::text is null or d.connection = $1)
           and ($2::text is null or d.stream = $2)
         order by d.id"
    )))
    .bind(connection)
    .bind(stream)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(letter).collect())
}

/// One dead letter with its raw record.
pub async fn show(pool: &PgPool, store: &RawStore, id: i64) -> anyhow::Result<Detail> {
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS}, d.status, d.raw_page_id, d.record_ordinal, p.object_key, p.record_path,
                m.mapper || ' ' || m.version, d.discarded_at, d.discarded_by, d.discard_reason
         from dead_letter d join raw_page p on p.id = d.raw_page_id
         left join mapping_version m on m.id = d.mapping_version_id
         where d.id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| crate::UsageError(format!("no dead letter {id}")))?;
    let key: String = r.get(14);
    let record_path: String = r.get(15);
    let ordinal: Option<i32> = r.get(13);
    let (record, raw_object_problem) = match store.get_verified(&key).await? {
        Ok(body) => (
            ordinal.and_then(|o| crate::explain::record_at(&body, &record_path, o)),
            None,
        ),
        Err(problem) => (None, Some(problem.as_str().to_owned())),
    };
    Ok(Detail {
        letter: letter(&r),
        status: r.get(11),
        raw_page_id: r.get(12),
        record_position: ordinal,
        raw_object_key: key,
        mapping: r.get(16),
        record,
        raw_object_problem,
        discarded_at: r.get(17),
        discarded_by: r.get(18),
        discard_reason: r.get(19),
    })
}

/// Discards an open dead letter, recording who and why. It stays in the
/// table; the same failure of the same record (class, field, mapping
/// version) is not opened again by a later load.
pub async fn discard(pool: &PgPool, id: i64, reason: &str, by: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(crate::UsageError("discard needs a --reason".into()).into());
    }
    let done: Option<i64> = sqlx::query_scalar(
        "update dead_letter set status = 'discarded', discarded_at = now(), discarded_by = $2,
                discard_reason = $3
         where id = $1 and status = 'open' returning id",
    )
    .bind(id)
    .bind(by)
    .bind(reason)
    .fetch_optional(pool)
    .await?;
    if done.is_none() {
        let status: Option<String> =
            sqlx::query_scalar("select status from dead_letter where id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        return Err(crate::UsageError(match status {
            None => format!("no dead letter {id}"),
            Some(s) => format!("dead letter {id} is {s}, not open: nothing to discard"),
        })
        .into());
    }
    Ok(())
}

/// The OS user, for `--by`'s default: `USER` or `LOGNAME`, else the name
/// of the process's user id in `/etc/passwd` (services and containers
/// often set neither variable), else `uid N`.
pub fn os_user() -> String {
    if let Some(u) = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
    {
        return u;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) {
            let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
                })
            });
            return name.unwrap_or_else(|| format!("uid {uid}"));
        }
    }
    "unknown".into()
}

/// `list` as a table.
pub fn render_list(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no open dead letters\n".into();
    }
    let mut out = String::new();
    for d in letters {
        out.push_str(&format!(
            "#{} {} {} {}: {} ({}{}); seen {}×, last {}\n",
            d.id,
            d.connection,
            d.stream,
            d.source_id.as_deref().unwrap_or("(no id)"),
            d.message,
            d.error_class,
            d.field
                .as_deref()
                .map(|f| format!(", field {f}"))
                .unwrap_or_default(),
            d.times_seen,
            d.last_seen_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    out
}

/// `show` as text.
pub fn render_detail(d: &Detail) -> String {
    let l = &d.letter;
    let mut out = format!(
        "dead letter #{} ({}) of {} stream {}, source id {}\n  reason: {} ({})\n",
        l.id,
        d.status,
        l.connection,
        l.stream,
        l.source_id.as_deref().unwrap_or("(none)"),
        l.message,
        l.error_class
    );
    if let Some(f) = &l.field {
        out.push_str(&format!(
            "  field: {f}{}\n",
            l.pointer
                .as_deref()
                .map(|p| format!(" at {p}"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "  mapping: {}\n  raw page {}, record {} (object {})\n  seen {}×, first {}, last {}\n",
        d.mapping
            .as_deref()
            .unwrap_or("(none: the page could not be read)"),
        d.raw_page_id,
        d.record_position
            .map(|p| format!("#{p}"))
            .unwrap_or_else(|| "(the whole page)".into()),
        d.raw_object_key,
        l.times_seen,
        l.first_seen_at.format("%Y-%m-%d %H:%M UTC"),
        l.last_seen_at.format("%Y-%m-%d %H:%M UTC")
    ));
    if let (Some(at), Some(by)) = (d.discarded_at, &d.discarded_by) {
        out.push_str(&format!(
            "  discarded {} by {by}: {}\n",
            at.format("%Y-%m-%d %H:%M UTC"),
            d.discard_reason.as_deref().unwrap_or("")
        ));
    }
    match (&d.record, &d.raw_object_problem) {
        (Some(r), _) => out.push_str(&format!(
            "  record: {}\n",
            serde_json::to_string_pretty(r)
                .unwrap_or_default()
                .replace('\n', "\n  ")
        )),
        (None, Some(p)) => out.push_str(&format!("  record: the raw object is {p}\n")),
        (None, None) => {}
    }
    out
}

/// What a retry did.
#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    /// The dead letters retried.
    pub retried: Vec<i64>,
    /// Those whose record loads now.
    pub resolved: Vec<i64>,
    /// Those still refused, with the new reason.
    pub still_open: Vec<DeadLetter>,
    /// The replay run that retried them (its pages, counts, balance check).
    pub run: crate::pipeline::Summary,
}

/// Retries open dead letters of `ctx`'s connection (`ids`, or all of them):
/// their raw pages are replayed through the current mappers, without any
/// source call. A record that loads now resolves its dead letter; one that
/// fails again keeps it open with the new reason. Other records of those
/// pages are loaded as a replay loads them (unchanged ones write nothing).
pub async fn retry(ctx: &crate::pipeline::Ctx, ids: &[i64]) -> anyhow::Result<Retried> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "select id, raw_page_id from dead_letter
         where connection = $1 and status = 'open' and (cardinality($2::bigint[]) = 0 or id = any($2))
         order by id",
    )
    .bind(&ctx.connection)
    .bind(ids)
    .fetch_all(&ctx.pool)
    .await?;
    if let Some(missing) = ids.iter().find(|i| !rows.iter().any(|r| r.0 == **i)) {
        return Err(crate::UsageError(format!(
            "dead letter {missing} is not an open dead letter of connection {:?} (see `dead-letters list`)",
            ctx.connection
        ))
        .into());
    }
    let retried: Vec<i64> = rows.iter().map(|r| r.0).collect();
    if retried.is_empty() {
        return Ok(Retried {
            retried,
            resolved: Vec::new(),
            still_open: Vec::new(),
            run: crate::pipeline::Summary::default(),
        });
    }
    let pages: std::collections::HashSet<i64> = rows.iter().map(|r| r.1).collect();
    let run = crate::pipeline::replay_pages(ctx, &pages).await?;
    let open: std::collections::HashSet<i64> =
        sqlx::query_scalar("select id from dead_letter where id = any($1) and status = 'open'")
            .bind(&retried)
            .fetch_all(&ctx.pool)
            .await?
            .into_iter()
            .collect();
    // A record that fails again updates its open dead letter in place (the
    // new reason, the new mapping version).
    let still_open: Vec<DeadLetter> = list(&ctx.pool, Some(&ctx.connection), None)
        .await?
        .into_iter()
        .filter(|d| open.contains(&d.id))
        .collect();
    let resolved = retried
        .iter()
        .copied()
        .filter(|i| !open.contains(i))
        .collect();
    Ok(Retried {
        retried,
        resolved,
        still_open,
        run,
    })
}
