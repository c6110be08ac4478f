//! `status`: per connection and stream, the last run, pages, records, watermark, dead letters.

use serde::Serialize;
use sqlx::{PgPool, Row};

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub connection: String,
    pub stream: String,
    pub last_run_id: Option<i64>,
    pub last_run_mode: Option<String>,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run_error: Option<String>,
    pub pages: i64,
    pub pages_unloaded: i64,
    /// Pages whose raw object was found missing or corrupt.
    pub pages_missing: i64,
    pub pages_corrupt: i64,
    /// Unreadable pages whose dead letter is open (not read since).
    pub pages_unreadable: i64,
    pub records: i64,
    pub watermark: Option<serde_json::Value>,
    pub dead_letters_open: i64,
    /// A deferred last run: when the next sync may resume.
    pub resume_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What the last run did with the records it saw.
    pub last_run_counts: Option<RunCounts>,
}

/// A run's records: `seen = changed + unchanged + dead + superseded`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RunCounts {
    pub seen: i64,
    pub changed: i64,
    pub unchanged: i64,
    pub dead: i64,
    /// Records another record with the same source id won over (a later
    /// occurrence on the same page, or a newer version).
    pub superseded: i64,
}

/// The last known circuit breaker state of a connection's host.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    pub connection: String,
    pub host: String,
    pub state: String,
    pub consecutive_failures: i32,
    pub times_opened: i64,
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub streams: Vec<StreamStatus>,
    pub circuit_breakers: Vec<BreakerStatus>,
}

/// A connection of the config and its streams (empty when its connector
/// cannot be built: it is still listed).
#[derive(Debug, Clone)]
pub struct Configured {
    pub connection: String,
    pub streams: Vec<String>,
}

/// Every stream of the ledger and of `configured`: a configured connection
/// that never stored a page still shows, with its last run and its error.
pub async fn status(pool: &PgPool, configured: &[Configured]) -> anyhow::Result<Status> {
    let streams = streams(pool, configured).await?;
    let circuit_breakers = sqlx::query(
        "select connection, host, state, consecutive_failures, times_opened, retry_at, updated_at
         from circuit_breaker order by 1, 2",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| BreakerStatus {
        connection: r.get(0),
        host: r.get(1),
        state: r.get(2),
        consecutive_failures: r.get(3),
        times_opened: r.get(4),
        retry_at: r.get(5),
        updated_at: r.get(6),
    })
    .collect();
    Ok(Status {
        streams,
        circuit_breakers,
    })
}

/// The stream name shown for a connection whose streams are unknown.
pub const ANY_STREAM: &str = "-";

async fn streams(pool: &PgPool, configured: &[Configured]) -> anyhow::Result<Vec<StreamStatus>> {
    let mut conns = Vec::new();
    let mut names = Vec::new();
    for c in configured {
        if c.streams.is_empty() {
            conns.push(c.connection.clone());
            names.push(ANY_STREAM.to_owned());
        }
        for s in &c.streams {
            conns.push(c.connection.clone());
            names.push(s.clone());
        }
    }
    let rows = sqlx::query(
        "with known as (
            select distinct connection, stream from raw_page
            union select connection, stream from watermark
            union select connection, stream from sync_run where stream is not null
            union select * from unnest($1::text[], $2::text[])),
         streams as (
            select * from known where stream <> $3 or not exists (
                select 1 from known k where k.connection = known.connection and k.stream <> $3)
            union select distinct r.connection, $3 from sync_run r
                  where not exists (select 1 from known k where k.connection = r.connection))
         select s.connection, s.stream, r.id, r.mode, r.status, r.started_at, r.error, r.resume_at,
                p.pages, p.unloaded,
                (select count(distinct d.source_id) from derivation d where d.connection = s.connection and d.stream = s.stream),
                w.cursor,
                (select count(*) from dead_letter x where x.connection = s.connection and x.stream = s.stream and x.status = 'open'),
                p.missing, p.corrupt, p.unreadable,
                r.records_seen, r.records_changed, r.records_unchanged, r.records_dead, r.records_superseded
         from streams s
         left join watermark w on w.connection = s.connection and w.stream = s.stream
         left join lateral (select count(*) as pages,
                                   count(*) filter (where loaded_at is null and object_state = 'stored') as unloaded,
                                   count(*) filter (where object_state = 'missing') as missing,
                                   count(*) filter (where object_state = 'corrupt') as corrupt,
                                   (select count(*) from dead_letter x where x.connection = s.connection
                                      and x.stream = s.stream and x.record_ordinal is null
                                      and x.status = 'open') as unreadable
                            from raw_page p where p.connection = s.connection and p.stream = s.stream) p on true
         left join lateral (select * from sync_run r where r.connection = s.connection
                            and (r.stream is null or r.stream = s.stream) order by r.id desc limit 1) r on true
         order by 1, 2",
    )
    .bind(&conns)
    .bind(&names)
    .bind(ANY_STREAM)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StreamStatus {
            connection: r.get(0),
            stream: r.get(1),
            last_run_id: r.get(2),
            last_run_mode: r.get(3),
            last_run_status: r.get(4),
            last_run_started_at: r.get(5),
            last_run_error: r.get(6),
            resume_at: r.get(7),
            pages: r.get(8),
            pages_unloaded: r.get(9),
            records: r.get(10),
            watermark: r.get(11),
            dead_letters_open: r.get(12),
            pages_missing: r.get(13),
            pages_corrupt: r.get(14),
            pages_unreadable: r.get(15),
            last_run_counts: r.get::<Option<i64>, _>(16).map(|seen| RunCounts {
                seen,
                changed: r.get(17),
                unchanged: r.get(18),
                dead: r.get(19),
                superseded: r.get(20),
            }),
        })
        .collect())
}

pub fn render(status: &Status) -> String {
    let rows = &status.streams;
    if rows.is_empty() {
        return "no connection has been synced yet\n".into();
    }
    let mut out = String::new();
    for s in rows {
        let mut lost = Vec::new();
        for (n, what) in [
            (s.pages_unloaded, "unloaded"),
            (s.pages_missing, "object missing"),
            (s.pages_corrupt, "object corrupt"),
            (s.pages_unreadable, "unreadable"),
        ] {
            if n > 0 || what == "unloaded" {
                lost.push(format!("{n} {what}"));
            }
        }
        let counts = s
            .last_run_counts
            .filter(|c| c.seen > 0)
            .map(|c| {
                format!(
                    "; {} seen = {} changed + {} unchanged + {} dead-lettered + {} superseded",
                    c.seen, c.changed, c.unchanged, c.dead, c.superseded
                )
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{}/{}: last run {} ({} {}{}{}), pages {} ({}), records {}, dead letters {}, watermark {}\n",
            s.connection,
            s.stream,
            s.last_run_id.map(|i| format!("#{i}")).unwrap_or_else(|| "-".into()),
            s.last_run_mode.as_deref().unwrap_or("never run"),
            s.last_run_status.as_deref().unwrap_or("-"),
            counts,
            s.last_run_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default(),
            s.pages,
            lost.join(", "),
            s.records,
            s.dead_letters_open,
            s.watermark.as_ref().map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
        ));
        if let Some(at) = s
            .resume_at
            .filter(|_| s.last_run_status.as_deref() == Some("deferred"))
        {
            out.push_str(&format!(
                "  deferred: resumes at or after {}\n",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    }
    for b in &status.circuit_breakers {
        out.push_str(&format!(
            "{} circuit breaker for {}: {}{} (opened {} times, {} failures in a row; as of {})\n",
            b.connection,
            b.host,
            b.state,
            b.retry_at
                .filter(|_| b.state == "open")
                .map(|t| format!(" until {}", t.format("%H:%M:%S UTC")))
                .unwrap_or_default(),
            b.times_opened,
            b.consecutive_failures,
            b.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
    }
    out
}
