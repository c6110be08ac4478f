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
    pub records: i64,
    pub watermark: Option<serde_json::Value>,
    pub dead_letters_open: i64,
    /// A deferred last run: when the next sync may resume.
    pub resume_at: Option<chrono::DateTime<chrono::Utc>>,
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

pub async fn status(pool: &PgPool) -> anyhow::Result<Status> {
    let streams = streams(pool).await?;
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

async fn streams(pool: &PgPool) -> anyhow::Result<Vec<StreamStatus>> {
    let rows = sqlx::query(
        "with streams as (
            select distinct connection, stream from raw_page
            union select connection, stream from watermark)
         select s.connection, s.stream, r.id, r.mode, r.status, r.started_at, r.error, r.resume_at,
                (select count(*) from raw_page p where p.connection = s.connection and p.stream = s.stream),
                (select count(*) from raw_page p where p.connection = s.connection and p.stream = s.stream and p.loaded_at is null),
                (select count(distinct d.source_id) from derivation d where d.connection = s.connection and d.stream = s.stream),
                w.cursor,
                (select count(*) from dead_letter x where x.connection = s.connection and x.stream = s.stream and x.status = 'open')
         from streams s
         left join watermark w on w.connection = s.connection and w.stream = s.stream
         left join lateral (select * from sync_run r where r.connection = s.connection
                            and (r.stream is null or r.stream = s.stream) order by r.id desc limit 1) r on true
         order by 1, 2",
    )
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
        out.push_str(&format!(
            "{}/{}: last run {} ({} {}{}), pages {} ({} unloaded), records {}, dead letters {}, watermark {}\n",
            s.connection,
            s.stream,
            s.last_run_id.map(|i| format!("#{i}")).unwrap_or_else(|| "-".into()),
            s.last_run_mode.as_deref().unwrap_or("-"),
            s.last_run_status.as_deref().unwrap_or("-"),
            s.last_run_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default(),
            s.pages,
            s.pages_unloaded,
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
