//! `status`: per connection and stream, the last run, pages, records, watermark, dead letters.

use serde::Serialize;
use sqlx::{PgPool, Row};

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStatus {
    pub connection: String,
    pub stream: String,
    /// The last run of the stream that could write (dry runs are apart).
    pub last_run_id: Option<i64>,
    /// `full`, `incremental` (a sync) or `replay`.
    pub last_run_mode: Option<String>,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run_finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run_error: Option<String>,
    /// What the last run did with the records it saw.
    pub last_run_counts: Option<RunCounts>,
    /// Pages the last run fetched (a sync) or loaded (a replay).
    pub last_run_pages: Option<i64>,
    /// A deferred last run: when the next sync may resume.
    pub resume_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last `replay --dry-run`, which wrote nothing.
    pub last_dry_run_id: Option<i64>,
    pub last_dry_run_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Records of the stream's canonical entity type from this connection in
    /// the canonical model now (deleted ones, and references to records not
    /// loaded yet, not counted; a partition, `name@code`, counts the rows its
    /// own pages wrote last); `None` for a stream the config does not describe.
    pub records_in_model: Option<i64>,
    pub dead_letters_open: i64,
    /// The stored watermark, as stored.
    pub watermark: Option<serde_json::Value>,
    /// The watermark in words.
    pub watermark_text: String,
    /// Now: stored pages not loaded yet.
    pub pages_unloaded: i64,
    /// Now: pages whose raw object was found missing or corrupt.
    pub pages_missing: i64,
    pub pages_corrupt: i64,
    /// Now: unreadable pages whose dead letter is open (not read since).
    pub pages_unreadable: i64,
    /// Totals over every run of the stream, for the record.
    pub lifetime: Lifetime,
    /// When the last successful sync of the stream ended.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Who runs the stream now (an unexpired lease), and until when.
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Schema drift events recorded for the stream (`drift` lists them).
    pub drift_events: i64,
    /// `run`'s schedule: when the stream is next due, and its failures in a row.
    pub next_run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub schedule_failures: Option<i32>,
    /// The last run's outcome for this stream: a run of every stream of the
    /// connection that failed on another stream is `succeeded` for one whose
    /// pull ran before (streams run in turn), `not_run` for the rest.
    pub stream_outcome: Option<String>,
}

/// Totals over the whole life of a stream.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Lifetime {
    pub runs: i64,
    pub pages_stored: i64,
    pub bytes_stored: i64,
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
    /// The state saved when the last run ended (`updated_at`).
    pub state: String,
    /// The state now: an open breaker whose cool-down is over is
    /// `half_open` (the next call probes the host).
    pub state_now: String,
    pub consecutive_failures: i32,
    pub times_opened: i64,
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The database's clock when the status was read; ages count from it.
    pub generated_at: chrono::DateTime<chrono::Utc>,
    pub streams: Vec<StreamStatus>,
    pub circuit_breakers: Vec<BreakerStatus>,
    /// Per connection: live journal entries whose lines do not balance per
    /// currency (`journal_entry.imbalance`); connections without any absent.
    pub unbalanced_journal_entries: std::collections::BTreeMap<String, i64>,
}

/// A connection of the config and its streams (empty when its connector
/// cannot be built: it is still listed).
#[derive(Debug, Clone, Default)]
pub struct Configured {
    pub connection: String,
    pub streams: Vec<String>,
    /// The canonical entity type each stream's records are, by stream name
    /// (what `RECORDS` counts); a stream without one shows no count.
    pub entities: std::collections::BTreeMap<String, String>,
}

/// Every stream of the ledger and of `configured`: a configured connection
/// that never stored a page still shows, with its last run and its error.
pub async fn status(pool: &PgPool, configured: &[Configured]) -> anyhow::Result<Status> {
    let streams = streams(pool, configured).await?;
    let generated_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select now()").fetch_one(pool).await?;
    let circuit_breakers = sqlx::query(
        "select connection, host, state, consecutive_failures, times_opened, retry_at, updated_at
         from circuit_breaker order by 1, 2",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| {
        let state: String = r.get(2);
        let retry_at: Option<chrono::DateTime<chrono::Utc>> = r.get(5);
        let state_now = if state == "open" && retry_at.is_none_or(|t| t <= generated_at) {
            "half_open".to_owned()
        } else {
            state.clone()
        };
        BreakerStatus {
            connection: r.get(0),
            host: r.get(1),
            state,
            state_now,
            consecutive_failures: r.get(3),
            times_opened: r.get(4),
            retry_at,
            updated_at: r.get(6),
        }
    })
    .collect();
    let unbalanced_journal_entries = sqlx::query_as::<_, (String, i64)>(
        "select s.connection, count(*) from journal_entry e
         join source_link s on s.entity_type = 'journal_entry' and s.canonical_id = e.id
         where e.imbalance is not null and e.deleted_at is null
         group by 1",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(Status {
        generated_at,
        streams,
        circuit_breakers,
        unbalanced_journal_entries,
    })
}

/// The stream name shown for a connection whose streams are unknown.
pub const ANY_STREAM: &str = "-";

async fn streams(pool: &PgPool, configured: &[Configured]) -> anyhow::Result<Vec<StreamStatus>> {
    let mut conns = Vec::new();
    let mut names = Vec::new();
    let mut entities: Vec<Option<String>> = Vec::new();
    for c in configured {
        if c.streams.is_empty() {
            conns.push(c.connection.clone());
            names.push(ANY_STREAM.to_owned());
            entities.push(None);
        }
        for s in &c.streams {
            conns.push(c.connection.clone());
            names.push(s.clone());
            entities.push(c.entities.get(s).cloned());
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
         select s.connection, s.stream, r.id, r.mode, r.status, r.started_at, r.finished_at, r.error,
                r.resume_at, r.pages,
                -- A sync: each stream's own counts (its pages of the run).
                case when r.id is null then null when r.mode = 'replay'
                     then r.records_seen else ps.c + ps.u + ps.d + ps.sp end,
                case when r.mode = 'replay' then r.records_changed else ps.c end,
                case when r.mode = 'replay' then r.records_unchanged else ps.u end,
                case when r.mode = 'replay' then r.records_dead else ps.d end,
                case when r.mode = 'replay' then r.records_superseded else ps.sp end,
                dry.id, dry.started_at,
                case when e.entity is not null then
                  (select count(*) from source_link l where l.entity_type = e.entity
                     and l.connection = s.connection and l.deleted_at is null
                     and l.row_hash is not null
                     -- A partition (`name@code`) counts the rows its own pages wrote.
                     and (position('@' in s.stream) = 0 or exists (
                         select 1 from raw_page rp where rp.id = l.raw_page_id and rp.stream = s.stream))) end,
                (select count(*) from dead_letter x where x.connection = s.connection
                   and x.stream = s.stream and x.status = 'open'),
                w.cursor,
                p.unloaded, p.missing, p.corrupt,
                (select count(*) from dead_letter x where x.connection = s.connection
                   and x.stream = s.stream and x.record_ordinal is null and x.status = 'open'),
                (select count(*) from sync_run r2 where r2.connection = s.connection
                   and (r2.stream is null or r2.stream = s.stream) and not r2.dry_run),
                p.pages, p.bytes, now(),
                (select max(r3.finished_at) from sync_run r3 where r3.connection = s.connection
                   and (r3.stream is null or r3.stream = s.stream or r3.stream = split_part(s.stream, '@', 1))
                   and r3.mode <> 'replay' and r3.status = 'succeeded' and not r3.dry_run),
                ls.holder, ls.expires_at,
                (select count(*) from drift_event d where d.connection = s.connection and d.stream = s.stream),
                sc.next_at, sc.failures,
                r.stream, (select count(*) from raw_page q where q.run_id = r.id and q.stream = s.stream)
         from streams s
         left join sync_lease ls on ls.connection = s.connection and ls.stream = s.stream
                and ls.expires_at > now()
         left join sync_schedule sc on sc.connection = s.connection
                and sc.stream = split_part(s.stream, '@', 1)
         left join unnest($1::text[], $2::text[], $4::text[]) as e(connection, stream, entity)
                on e.connection = s.connection and e.stream = s.stream
         left join watermark w on w.connection = s.connection and w.stream = s.stream
         left join lateral (select count(*) as pages, coalesce(sum(body_bytes), 0)::bigint as bytes,
                                   count(*) filter (where loaded_at is null and object_state = 'stored') as unloaded,
                                   count(*) filter (where object_state = 'missing') as missing,
                                   count(*) filter (where object_state = 'corrupt') as corrupt
                            from raw_page p where p.connection = s.connection and p.stream = s.stream) p on true
         left join lateral (select * from sync_run r where r.connection = s.connection
                            and (r.stream is null or r.stream = s.stream
                                 or r.stream = split_part(s.stream, '@', 1)) and not r.dry_run
                            order by r.id desc limit 1) r on true
         left join lateral (select * from sync_run r where r.connection = s.connection
                            and (r.stream is null or r.stream = s.stream
                                 or r.stream = split_part(s.stream, '@', 1)) and r.dry_run
                            order by r.id desc limit 1) dry on true
         left join lateral (select coalesce(sum(q.records_changed), 0)::bigint as c,
                                   coalesce(sum(q.records_unchanged), 0)::bigint as u,
                                   coalesce(sum(q.records_dead), 0)::bigint as d,
                                   coalesce(sum(q.records_superseded), 0)::bigint as sp
                            from raw_page q where q.run_id = r.id and q.connection = s.connection
                              and q.stream = s.stream) ps on true
         order by 1, 2",
    )
    .bind(&conns)
    .bind(&names)
    .bind(ANY_STREAM)
    .bind(&entities)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let watermark: Option<serde_json::Value> = r.get(19);
            let now: chrono::DateTime<chrono::Utc> = r.get(27);
            StreamStatus {
                connection: r.get(0),
                stream: r.get(1),
                last_run_id: r.get(2),
                last_run_mode: r.get(3),
                last_run_status: r.get(4),
                last_run_started_at: r.get(5),
                last_run_finished_at: r.get(6),
                last_run_error: r.get(7),
                resume_at: r.get(8),
                last_run_pages: r.get::<Option<i32>, _>(9).map(i64::from),
                last_run_counts: r.get::<Option<i64>, _>(10).map(|seen| RunCounts {
                    seen,
                    changed: r.get(11),
                    unchanged: r.get(12),
                    dead: r.get(13),
                    superseded: r.get(14),
                }),
                last_dry_run_id: r.get(15),
                last_dry_run_started_at: r.get(16),
                records_in_model: r.get(17),
                dead_letters_open: r.get(18),
                watermark_text: watermark_text(watermark.as_ref(), now),
                watermark,
                pages_unloaded: r.get(20),
                pages_missing: r.get(21),
                pages_corrupt: r.get(22),
                pages_unreadable: r.get(23),
                lifetime: Lifetime {
                    runs: r.get(24),
                    pages_stored: r.get(25),
                    bytes_stored: r.get(26),
                },
                last_success_at: r.get(28),
                lease_holder: r.get(29),
                lease_expires_at: r.get(30),
                drift_events: r.get(31),
                next_run_at: r.get(32),
                schedule_failures: r.get(33),
                stream_outcome: None,
            }
            .with_outcome(r.get(34), r.get(35))
        })
        .collect())
}

impl StreamStatus {
    /// Sets [`StreamStatus::stream_outcome`] from the last run's stream
    /// (`None`: every stream) and this stream's pages in it.
    fn with_outcome(mut self, run_stream: Option<String>, pages_in_run: i64) -> Self {
        self.stream_outcome = self.last_run_status.clone();
        if run_stream.is_none()
            && self.last_run_status.as_deref() == Some("failed")
            && let Some(other) = self.failed_on()
            && other != self.stream
            && other != self.stream.split('@').next().unwrap_or_default()
        {
            self.stream_outcome = Some(if pages_in_run > 0 {
                "succeeded".into()
            } else {
                "not_run".into()
            });
        }
        self
    }

    /// The stream a failed run's error names (`connection "C", stream S: …`).
    fn failed_on(&self) -> Option<String> {
        let e = self.last_run_error.as_deref()?;
        crate::pipeline::failed_stream(&self.connection, e).map(str::to_owned)
    }
}

/// A watermark in words: where the next pull of the stream starts.
pub fn watermark_text(w: Option<&serde_json::Value>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(w) = w else {
        return "none yet (the next sync pulls everything)".into();
    };
    let Ok(c) = serde_json::from_value::<crate::db::Cursor>(w.clone()) else {
        return format!("unreadable: {w}");
    };
    // What the source wrote is shown up to 40 characters a value.
    let cap = |t: &str| {
        let shown: String = t.chars().take(40).collect();
        let more = if t.chars().count() > 40 { "…" } else { "" };
        format!("{shown}{more}")
    };
    let token = c.state.as_ref().map(|s| match s {
        serde_json::Value::String(s) => format!("the source's {}", cap(s)),
        // A keyset state: (modified, id).
        serde_json::Value::Object(o) if o.contains_key("modified") => match o.get("id") {
            Some(serde_json::Value::String(id)) => {
                // The source's own time text: say so when it has no zone.
                let m = o["modified"].as_str().unwrap_or("?");
                let zone = if chrono::DateTime::parse_from_rfc3339(m).is_ok() {
                    ""
                } else {
                    " (the source's local time)"
                };
                format!("{}{zone} after id {}", cap(m), cap(id))
            }
            _ => cap(o["modified"].as_str().unwrap_or("?")),
        },
        other => cap(&other.to_string()),
    });
    let mut text = match (&c.next, c.high_water, c.completed_at) {
        // The server's own token (BambooHR `latest`, a delta token).
        (None, _, _) if token.is_some() => {
            format!("changes since {}", token.unwrap_or_default())
        }
        (Some(next), _, _) => format!(
            "mid-pull, resumes at {next}{}",
            c.pull_started_at
                .map(|t| format!(" (pull started {})", age(t, now)))
                .unwrap_or_default()
        ),
        (None, Some(hw), _) => format!("changes since {}", hw.format("%Y-%m-%d %H:%M UTC")),
        (None, None, Some(done)) => format!("complete, {}", age(done, now)),
        (None, None, None) => "complete".into(),
    };
    if c.pull_skipped_pages > 0 {
        text.push_str(&format!(
            "; {} unreadable page(s) skipped, asked for again",
            c.pull_skipped_pages
        ));
    }
    text
}

/// `3 s ago`, `4 min ago`, `2 h ago`, `5 d ago`.
pub fn age(then: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (now - then).num_seconds();
    if secs < 0 {
        return format!("in {}", span(-secs));
    }
    format!("{} ago", span(secs))
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// The table `status` prints: one line per stream, then what needs attention.
pub fn render(status: &Status) -> String {
    let now = status.generated_at;
    let rows = &status.streams;
    if rows.is_empty() {
        return "no connection is configured or has been synced yet\n".into();
    }
    let breaker = |conn: &str| {
        let mine: Vec<&BreakerStatus> = status
            .circuit_breakers
            .iter()
            .filter(|b| b.connection == conn)
            .collect();
        if let Some(b) = mine.iter().find(|b| b.state_now == "open") {
            let left = b.retry_at.map(|t| span((t - now).num_seconds().max(0)));
            format!("open ({} left)", left.unwrap_or_else(|| "?".into()))
        } else if mine.iter().any(|b| b.state_now == "half_open") {
            "half-open".into()
        } else {
            "closed".into()
        }
    };
    let mut table = vec![
        [
            "CONNECTION",
            "STREAM",
            "LAST RUN",
            "OUTCOME",
            "LAST SUCCESS",
            "RECORDS",
            "CHANGED/SAME/DEAD",
            "DEAD LETTERS",
            "WATERMARK",
            "LEASE",
            "DRIFT",
            "BREAKER",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut notes = Vec::new();
    for s in rows {
        let name = format!("{}/{}", s.connection, s.stream);
        // A finished run's age counts from its end; a running one's from its start.
        let last = match (s.last_run_id, &s.last_run_mode, s.last_run_started_at) {
            (Some(id), Some(mode), Some(started)) => format!(
                "#{id} {}, {}",
                if mode == "replay" { "replay" } else { "sync" },
                match s.last_run_finished_at {
                    Some(ended) => age(ended, now),
                    None => format!("started {}", age(started, now)),
                }
            ),
            _ => "never".into(),
        };
        let counts = s
            .last_run_counts
            .map(|c| format!("{}/{}/{}", c.changed, c.unchanged, c.dead))
            .unwrap_or_else(|| "-".into());
        table.push(vec![
            s.connection.clone(),
            s.stream.clone(),
            last,
            s.stream_outcome.clone().unwrap_or_else(|| "-".into()),
            s.last_success_at
                .map_or_else(|| "never".to_owned(), |t| age(t, now)),
            s.records_in_model
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            counts,
            s.dead_letters_open.to_string(),
            s.watermark_text.clone(),
            s.lease_holder.clone().unwrap_or_else(|| "-".into()),
            s.drift_events.to_string(),
            breaker(&s.connection),
        ]);
        if let Some(next) = s.next_run_at.filter(|_| s.lease_holder.is_none()) {
            notes.push(format!(
                "{name}: scheduled, {}{}",
                if next <= now {
                    "due now (a replica runs it when it gets the connection)".to_owned()
                } else {
                    format!("next due {}", age(next, now))
                },
                match s.schedule_failures {
                    Some(f) if f > 0 => format!(" (backing off after {f} failed run(s) in a row)"),
                    _ => String::new(),
                }
            ));
        }
        if let (Some(id), Some(e)) = (s.last_run_id, &s.last_run_error) {
            if s.stream_outcome != s.last_run_status {
                // The run failed on another stream: said on that stream's line.
                notes.push(format!(
                    "{name}: run #{id} failed on stream {}; this stream {}",
                    s.failed_on().unwrap_or_default(),
                    if s.stream_outcome.as_deref() == Some("not_run") {
                        "was not run (the next sync runs it)"
                    } else {
                        "was synced before it"
                    }
                ));
            } else {
                notes.push(format!(
                    "{name}: run #{id} {}: {e}",
                    s.last_run_status.as_deref().unwrap_or("ended")
                ));
            }
        }
        if let Some(at) = s
            .resume_at
            .filter(|_| s.last_run_status.as_deref() == Some("deferred"))
        {
            notes.push(format!(
                "{name}: deferred; the next sync resumes at or after {} ({})",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                age(at, now)
            ));
        }
        if let Some(c) = s.last_run_counts.filter(|c| c.superseded > 0) {
            notes.push(format!(
                "{name}: run #{}: {} seen = {} changed + {} unchanged + {} dead-lettered + {} superseded (a later record with the same id won)",
                s.last_run_id.unwrap_or_default(),
                c.seen,
                c.changed,
                c.unchanged,
                c.dead,
                c.superseded
            ));
        }
        if s.pages_unloaded > 0 {
            notes.push(format!(
                "{name}: {} stored page(s) not loaded yet; the next sync or replay loads them first",
                s.pages_unloaded
            ));
        }
        if s.pages_missing + s.pages_corrupt > 0 {
            notes.push(format!(
                "{name}: {} raw object(s) missing and {} corrupt; replay skips them, and a page not loaded yet is fetched again",
                s.pages_missing, s.pages_corrupt
            ));
        }
        if s.pages_unreadable > 0 {
            notes.push(format!(
                "{name}: {} page(s) could not be read (dead-lettered as pages)",
                s.pages_unreadable
            ));
        }
    }
    for (conn, n) in &status.unbalanced_journal_entries {
        notes.push(format!(
            "{conn}: {n} journal {} per currency (journal_entry.imbalance has the difference)",
            if *n == 1 {
                "entry does not balance"
            } else {
                "entries do not balance"
            }
        ));
    }
    for b in &status.circuit_breakers {
        let when = b.updated_at.format("%H:%M:%S UTC");
        match b.state_now.as_str() {
            "open" => notes.push(format!(
                "{}: circuit for {} open since the run that ended at {when}, after {} failures in a row; calls fail fast until {}",
                b.connection,
                b.host,
                b.consecutive_failures,
                b.retry_at
                    .map(|t| format!("{} ({})", t.format("%H:%M:%S UTC"), age(t, now)))
                    .unwrap_or_else(|| "its cool-down ends".into())
            )),
            "half_open" => notes.push(format!(
                "{}: circuit for {} was open when the run ended at {when} ({} failures in a row); its cool-down is over, so the next call probes the host",
                b.connection, b.host, b.consecutive_failures
            )),
            _ => {}
        }
    }
    let dry = rows
        .iter()
        .filter_map(|s| s.last_dry_run_id.zip(s.last_dry_run_started_at))
        .max();
    let mut out = String::new();
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers right-aligned, text left-aligned; the last column unpadded.
    let numeric = [4, 5, 6];
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if numeric.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    if let Some((id, at)) = dry {
        out.push_str(&format!(
            "\nDry runs wrote nothing and are not counted above (the last: #{id}, {}).\n",
            age(at, now)
        ));
    }
    out.push_str(
        "RECORDS: in the canonical model now; CHANGED/SAME/DEAD: the stream's records in the last run; DEAD LETTERS: open now\n(lifetime totals: status --json)\n",
    );
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_run_that_failed_on_another_stream_is_not_this_streams_failure() {
        let at = |stream: &str, pages: i64, run_stream: Option<&str>| {
            StreamStatus {
                connection: "bamboo".into(),
                stream: stream.into(),
                last_run_status: Some("failed".into()),
                last_run_error: Some(format!(
                    "{}: fetching: HTTP 400",
                    crate::pipeline::stream_context("bamboo", "employee_changes")
                )),
                ..Default::default()
            }
            .with_outcome(run_stream.map(str::to_owned), pages)
            .stream_outcome
        };
        assert_eq!(at("employees", 1, None).as_deref(), Some("succeeded"));
        assert_eq!(at("employees", 0, None).as_deref(), Some("not_run"));
        assert_eq!(at("employee_changes", 1, None).as_deref(), Some("failed"));
        assert_eq!(
            at("employees", 1, Some("employees")).as_deref(),
            Some("failed"),
            "a run of this stream alone failed with it"
        );
    }

    use super::*;

    /// A keyset state says where the next pull starts in full: the
    /// source's own time (and that it has no zone) and the id after it.
    #[test]
    fn a_keyset_watermark_names_its_time_and_id_whole() {
        let now = chrono::Utc::now();
        let w = serde_json::json!({
            "state": {"modified": "2025-12-31 23:30:00", "id": "9107|1"},
            "completed_at": now,
        });
        let t = watermark_text(Some(&w), now);
        assert!(
            t.starts_with(
                "changes since 2025-12-31 23:30:00 (the source's local time) after id 9107|1"
            ),
            "{t}"
        );
        let long = serde_json::json!({"state": "x".repeat(100), "completed_at": now});
        let t = watermark_text(Some(&long), now);
        assert!(t.contains(&format!("{}…", "x".repeat(40))), "{t}");
    }
}
