//! Schema drift: each stream's records are compared with the fields seen
//! before (DESIGN.md §10; ADR 0012).
//!
//! While a sync loads a stream, the pages it fetched are scanned beside
//! the load (on a blocking thread, overlapping the database round trip):
//! every record's fields as JSON pointers (array positions as `*`) with
//! their JSON type. At the end of the stream's pull, one transaction
//! compares them with the stream's catalogue (`field_catalogue`) and
//! records drift events (`drift_event`) with the raw page that showed them:
//! - `added`: a pointer never seen before (or seen again after it was
//!   reported removed);
//! - `type_changed`: a pointer seen before carries a type it never had
//!   (null is not a type change: an optional field is often null);
//! - `removed`: a pointer that nearly every record had (a share of 90 %
//!   or more) is in none of this pull's records, when the pull read at
//!   least 5 records (1, when every record had it) and reached its last page.
//!
//! The first pull of a stream sets the baseline and records no event.
//! Nothing is dropped because of drift: the records load as they are. An
//! event on a pointer the stream's mapping reads is a warning in the run's
//! summary.

use crate::pipeline::Ctx;
use bytes::Bytes;
use canonical_model::MappingVersion;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The most distinct (pointer, type) pairs kept per stream and pull: a
/// source with ids as object keys cannot grow the catalogue without bound.
const MAX_FIELDS: usize = 2_000;
/// How deep records are walked.
const MAX_DEPTH: usize = 12;

/// What one pull's records showed.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per pointer, per JSON type ([`TYPES`]): records carrying it, first
    /// and last page.
    fields: HashMap<String, [Option<Stat>; 6]>,
    /// (pointer, type) pairs kept, at most [`MAX_FIELDS`].
    pairs: usize,
    records: u64,
    /// Records walked, read or not: the identity of the record being counted.
    walked: u64,
    last_page: Option<i64>,
    /// Pairs beyond [`MAX_FIELDS`] were not kept.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    records: u64,
    first_page: i64,
    last_page: i64,
    /// The last record counted (a pointer under an array is counted once a record).
    record: u64,
}

const TYPES: [&str; 6] = ["null", "boolean", "number", "string", "array", "object"];

/// One value of a record being read: counts its own (pointer, type), unless
/// it is the record itself (depth 0), then walks its members down to
/// [`MAX_DEPTH`] (array positions as `*`).
struct Walk<'s> {
    seen: &'s mut Seen,
    ptr: &'s mut String,
    page: i64,
    depth: usize,
}

impl Walk<'_> {
    /// Counts this value's (pointer, type `t`), unless it is the record.
    fn counted(self, t: usize) -> Self {
        if self.depth > 0 {
            self.seen.count(self.ptr, t, self.page);
        }
        self
    }

    fn leaf(self, t: usize) {
        self.counted(t);
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A member's name, appended to the pointer (escaped as RFC 6901 says).
struct Key<'s>(&'s mut String);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<(), E> {
        self.0.push('/');
        if k.contains(['~', '/']) {
            self.0.push_str(&k.replace('~', "~0").replace('/', "~1"));
        } else {
            self.0.push_str(k);
        }
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf(0);
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.leaf(0);
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.leaf(1);
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.leaf(2);
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.leaf(2);
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.leaf(2);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.leaf(3);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk {
            seen,
            ptr,
            page,
            depth,
        } = self.counted(4);
        if depth >= MAX_DEPTH {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let len = ptr.len();
        ptr.push_str("/*");
        while seq
            .next_element_seed(Walk {
                seen: &mut *seen,
                ptr: &mut *ptr,
                page,
                depth: depth + 1,
            })?
            .is_some()
        {}
        ptr.truncate(len);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk {
            seen,
            ptr,
            page,
            depth,
        } = self.counted(5);
        if depth >= MAX_DEPTH {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(());
        }
        let len = ptr.len();
        while map.next_key_seed(Key(&mut *ptr))?.is_some() {
            map.next_value_seed(Walk {
                seen: &mut *seen,
                ptr: &mut *ptr,
                page,
                depth: depth + 1,
            })?;
            ptr.truncate(len);
        }
        Ok(())
    }
}

/// A page to scan: its id, body, record path and content type.
pub type PageToScan = (i64, Bytes, String, Option<String>);

impl Seen {
    /// Scans pages (call it on a blocking thread).
    pub fn scan(pages: &[PageToScan]) -> Self {
        let mut s = Seen::default();
        let mut ptr = String::new();
        for (id, body, path, ctype) in pages {
            let text = connector_core::records::readable(body, ctype.as_deref());
            let Ok(split) = connector_core::records::split_records(&text, path, None) else {
                continue;
            };
            s.last_page = Some(s.last_page.map_or(*id, |l| l.max(*id)));
            for raw in split.records {
                // Walked as it is read: no tree of values is built.
                s.walked += 1;
                ptr.clear();
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let walk = Walk {
                    seen: &mut s,
                    ptr: &mut ptr,
                    page: *id,
                    depth: 0,
                };
                if serde::de::DeserializeSeed::deserialize(walk, &mut de).is_ok() {
                    s.records += 1;
                }
            }
        }
        s
    }

    /// Counts `ptr` with type `t` in the current record (once a record).
    fn count(&mut self, ptr: &str, t: usize, page: i64) {
        let record = self.walked;
        let fresh = Stat {
            records: 1,
            first_page: page,
            last_page: page,
            record,
        };
        let room = self.pairs < MAX_FIELDS;
        match self.fields.get_mut(ptr) {
            Some(slots) => match &mut slots[t] {
                Some(st) if st.record == record => {}
                Some(st) => {
                    st.records += 1;
                    st.record = record;
                    st.last_page = st.last_page.max(page);
                }
                slot @ None if room => {
                    *slot = Some(fresh);
                    self.pairs += 1;
                }
                None => self.truncated = true,
            },
            None if room => {
                let mut slots = [None; 6];
                slots[t] = Some(fresh);
                self.fields.insert(ptr.to_owned(), slots);
                self.pairs += 1;
            }
            None => self.truncated = true,
        }
    }

    /// Every (pointer, type, records, first page, last page) seen.
    fn pairs(&self) -> impl Iterator<Item = (&str, &'static str, u64, i64, i64)> + '_ {
        self.fields.iter().flat_map(|(p, slots)| {
            slots.iter().enumerate().filter_map(move |(t, st)| {
                st.map(|st| {
                    (
                        p.as_str(),
                        TYPES[t],
                        st.records,
                        st.first_page,
                        st.last_page,
                    )
                })
            })
        })
    }

    /// Adds what another batch of the same pull showed.
    pub fn merge(&mut self, other: Seen) {
        self.records += other.records;
        self.truncated |= other.truncated;
        self.last_page = match (self.last_page, other.last_page) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (p, slots) in other.fields {
            for (t, o) in slots.iter().enumerate() {
                let Some(o) = o else { continue };
                let room = self.pairs < MAX_FIELDS;
                let mine = self.fields.get_mut(&p).map(|s| &mut s[t]);
                match mine {
                    Some(Some(st)) => {
                        st.records += o.records;
                        st.first_page = st.first_page.min(o.first_page);
                        st.last_page = st.last_page.max(o.last_page);
                    }
                    Some(slot @ None) if room => {
                        *slot = Some(*o);
                        self.pairs += 1;
                    }
                    None if room => {
                        let mut s = [None; 6];
                        s[t] = Some(*o);
                        self.fields.insert(p.clone(), s);
                        self.pairs += 1;
                    }
                    _ => self.truncated = true,
                }
            }
        }
    }
}

/// A pointer in the catalogue's form: array positions as `*`.
fn normalized(p: &str) -> String {
    p.split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The pointers a mapping reads (and each of their parents), normalized.
fn mapped(mapping: &MappingVersion) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for r in mapping.rules() {
        for p in r.pointers.iter().flat_map(|p| p.split('|')) {
            let n = normalized(p);
            let what = format!("{}.{}", r.entity.as_str(), r.field);
            let mut at = n.as_str();
            loop {
                out.entry(at.to_owned()).or_insert_with(|| what.clone());
                match at.rfind('/') {
                    Some(0) | None => break,
                    Some(i) => at = &at[..i],
                }
            }
        }
    }
    out
}

/// Compares a pull's fields with the stream's catalogue, records the drift
/// events and updates the catalogue; returns the warnings for the run's
/// summary (events on pointers the mapping reads).
pub async fn record(
    ctx: &Ctx,
    stream: &str,
    run: i64,
    mapping: &MappingVersion,
    seen: Seen,
    complete: bool,
) -> anyhow::Result<Vec<String>> {
    if seen.records == 0 {
        return Ok(Vec::new());
    }
    let pool = &ctx.pool;
    let mut tx = pool.begin().await?;
    // One writer per stream holds the lease; this lock orders the rare
    // other writer (a dead-letter retry does not scan) all the same.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('drift:' || $1 || '/' || $2, 0))")
        .bind(&ctx.connection)
        .bind(stream)
        .execute(&mut *tx)
        .await?;
    let known_total: Option<i64> = sqlx::query_scalar(
        "select records_seen from field_catalogue_stream where connection = $1 and stream = $2",
    )
    .bind(&ctx.connection)
    .bind(stream)
    .fetch_optional(&mut *tx)
    .await?;
    // pointer → type → records seen, before this pull.
    let mut known: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in sqlx::query(
        "select pointer, json_type, records_seen from field_catalogue where connection = $1 and stream = $2",
    )
    .bind(&ctx.connection)
    .bind(stream)
    .fetch_all(&mut *tx)
    .await?
    {
        known
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), row.get(2));
    }
    // The last event per pointer: a pointer reported removed that comes
    // back is added again; one reported removed is not reported twice.
    let mut last_kind: HashMap<String, String> = HashMap::new();
    for row in sqlx::query(
        "select distinct on (pointer) pointer, kind from drift_event
         where connection = $1 and stream = $2 order by pointer, id desc",
    )
    .bind(&ctx.connection)
    .bind(stream)
    .fetch_all(&mut *tx)
    .await?
    {
        last_kind.insert(row.get(0), row.get(1));
    }
    let reads = mapped(mapping);
    let mut events: Vec<Event> = Vec::new();
    if known_total.is_some() && !known.is_empty() {
        // pointer → (types this pull, first page that showed a new one).
        let mut now: BTreeMap<&str, Vec<(&'static str, i64)>> = BTreeMap::new();
        for (p, t, _, first, _) in seen.pairs() {
            now.entry(p).or_default().push((t, first));
        }
        for (p, types) in &now {
            let before = known.get(*p);
            let removed_before = last_kind.get(*p).is_some_and(|k| k == "removed");
            match before {
                None => events.push(Event {
                    kind: "added",
                    pointer: (*p).to_owned(),
                    old: vec![],
                    new: sorted(types.iter().map(|t| t.0)),
                    page: types.iter().map(|t| t.1).min(),
                }),
                Some(_) if removed_before => events.push(Event {
                    kind: "added",
                    pointer: (*p).to_owned(),
                    old: vec![],
                    new: sorted(types.iter().map(|t| t.0)),
                    page: types.iter().map(|t| t.1).min(),
                }),
                Some(b) => {
                    let fresh: Vec<&(&str, i64)> = types
                        .iter()
                        .filter(|(t, _)| *t != "null" && !b.contains_key(*t))
                        .collect();
                    let had: Vec<&str> = b
                        .keys()
                        .map(String::as_str)
                        .filter(|t| *t != "null")
                        .collect();
                    if !fresh.is_empty() && !had.is_empty() {
                        events.push(Event {
                            kind: "type_changed",
                            pointer: (*p).to_owned(),
                            old: sorted(had.into_iter()),
                            new: sorted(fresh.iter().map(|t| t.0)),
                            page: fresh.iter().map(|t| t.1).min(),
                        });
                    }
                }
            }
        }
        let total = known_total.unwrap_or(0).max(1) as f64;
        // Only a pull that read to its end can say a field is gone.
        for (p, types) in known.iter().filter(|_| complete) {
            if now.contains_key(p.as_str()) || last_kind.get(p).is_some_and(|k| k == "removed") {
                continue;
            }
            // Records that carried it, null or not: the key itself is gone.
            let had: i64 = types.values().sum();
            let share = had as f64 / total;
            if (share >= 0.999 && seen.records >= 1) || (share >= 0.9 && seen.records >= 5) {
                events.push(Event {
                    kind: "removed",
                    pointer: p.clone(),
                    old: sorted(types.keys().map(String::as_str)),
                    new: vec![],
                    page: seen.last_page,
                });
            }
        }
    }
    let mut warnings = Vec::new();
    for e in &events {
        let reads = reads.get(&e.pointer);
        sqlx::query(
            "insert into drift_event (connection, stream, kind, pointer, old_types, new_types, raw_page_id, run_id, mapped)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&ctx.connection)
        .bind(stream)
        .bind(e.kind)
        .bind(&e.pointer)
        .bind(&e.old)
        .bind(&e.new)
        .bind(e.page)
        .bind(run)
        .bind(reads.is_some())
        .execute(&mut *tx)
        .await?;
        tracing::warn!(
            event = "schema_drift", connection = %ctx.connection, stream, kind = e.kind,
            pointer = %e.pointer, "{}", e.describe()
        );
        if let Some(field) = reads
            && e.kind != "added"
        {
            warnings.push(format!(
                "{stream}: {} (the mapping reads it for {field}; raw page {})",
                e.describe(),
                e.page.map_or("?".into(), |p| p.to_string())
            ));
        }
    }
    let mut pointers = Vec::new();
    let mut types = Vec::new();
    let mut counts = Vec::new();
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    for (p, t, n, first, last) in seen.pairs() {
        pointers.push(p);
        types.push(t);
        counts.push(i64::try_from(n).unwrap_or(i64::MAX));
        firsts.push(first);
        lasts.push(last);
    }
    sqlx::query(
        "insert into field_catalogue (connection, stream, pointer, json_type, records_seen, first_page_id, last_page_id)
         select $1, $2, u.p, u.t, u.n, u.f, u.l
         from unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) as u(p, t, n, f, l)
         on conflict (connection, stream, pointer, json_type) do update set
             records_seen = field_catalogue.records_seen + excluded.records_seen,
             last_seen_at = now(), last_page_id = excluded.last_page_id",
    )
    .bind(&ctx.connection)
    .bind(stream)
    .bind(&pointers)
    .bind(&types)
    .bind(&counts)
    .bind(&firsts)
    .bind(&lasts)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into field_catalogue_stream (connection, stream, records_seen, runs) values ($1, $2, $3, 1)
         on conflict (connection, stream) do update set
             records_seen = field_catalogue_stream.records_seen + excluded.records_seen,
             runs = field_catalogue_stream.runs + 1",
    )
    .bind(&ctx.connection)
    .bind(stream)
    .bind(i64::try_from(seen.records).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if seen.truncated {
        tracing::warn!(
            event = "field_catalogue_truncated", connection = %ctx.connection, stream,
            "the records carry more than {MAX_FIELDS} distinct fields; the catalogue keeps the first"
        );
    }
    Ok(warnings)
}

fn sorted<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let s: BTreeSet<&str> = it.collect();
    s.into_iter().map(str::to_owned).collect()
}

struct Event {
    kind: &'static str,
    pointer: String,
    old: Vec<String>,
    new: Vec<String>,
    page: Option<i64>,
}

impl Event {
    fn describe(&self) -> String {
        describe(self.kind, &self.pointer, &self.old, &self.new)
    }
}

/// An event in words, e.g. `field /x changed type: string -> number`.
fn describe(kind: &str, pointer: &str, old: &[String], new: &[String]) -> String {
    match kind {
        "added" => format!("new field {pointer} ({})", new.join(", ")),
        "removed" => format!("field {pointer} vanished (was {})", old.join(", ")),
        _ => format!(
            "field {pointer} changed type: {} -> {}",
            old.join(", "),
            new.join(", ")
        ),
    }
}

/// One drift event, as `drift` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DriftEvent {
    pub id: i64,
    pub connection: String,
    pub stream: String,
    pub kind: String,
    pub pointer: String,
    pub old_types: Vec<String>,
    pub new_types: Vec<String>,
    pub raw_page_id: Option<i64>,
    pub run_id: Option<i64>,
    /// The stream's mapping reads the pointer.
    pub mapped: bool,
    pub detected_at: chrono::DateTime<chrono::Utc>,
}

/// The drift events, newest first.
pub async fn list(
    pool: &PgPool,
    connection: Option<&str>,
    stream: Option<&str>,
) -> anyhow::Result<Vec<DriftEvent>> {
    Ok(sqlx::query_as(
        "select id, connection, stream, kind, pointer, old_types, new_types, raw_page_id, run_id,
                mapped, detected_at
         from drift_event
         where ($1::text is null or connection = $1)
           and ($2::text is null or stream = $2 or split_part(stream, '@', 1) = $2)
         order by id desc limit 1000",
    )
    .bind(connection)
    .bind(stream)
    .fetch_all(pool)
    .await?)
}

/// One field of a stream's catalogue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Field {
    pub connection: String,
    pub stream: String,
    pub pointer: String,
    pub json_type: String,
    /// The share of the stream's scanned records that carried it with this type.
    pub share: f64,
    pub records_seen: i64,
    pub first_seen_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub first_page_id: Option<i64>,
    pub last_page_id: Option<i64>,
}

/// The field catalogue, by stream and pointer.
pub async fn fields(
    pool: &PgPool,
    connection: Option<&str>,
    stream: Option<&str>,
) -> anyhow::Result<Vec<Field>> {
    Ok(sqlx::query_as(
        "select f.connection, f.stream, f.pointer, f.json_type,
                (f.records_seen::float8 / greatest(s.records_seen, 1)) as share, f.records_seen,
                f.first_seen_at, f.last_seen_at, f.first_page_id, f.last_page_id
         from field_catalogue f
         join field_catalogue_stream s on s.connection = f.connection and s.stream = f.stream
         where ($1::text is null or f.connection = $1)
           and ($2::text is null or f.stream = $2 or split_part(f.stream, '@', 1) = $2)
         order by 1, 2, 3, 4",
    )
    .bind(connection)
    .bind(stream)
    .fetch_all(pool)
    .await?)
}

/// `fields` as text.
pub fn render_fields(fields: &[Field]) -> String {
    use std::fmt::Write as _;
    if fields.is_empty() {
        return "no fields catalogued yet (a sync catalogues its records' fields)\n".into();
    }
    let mut s = String::new();
    for f in fields {
        let _ = writeln!(
            s,
            "{}/{} {} {} {:.1}% (last seen {}, raw page {})",
            f.connection,
            f.stream,
            f.pointer,
            f.json_type,
            f.share * 100.0,
            f.last_seen_at.format("%Y-%m-%d %H:%M UTC"),
            f.last_page_id.map_or("?".into(), |p| p.to_string())
        );
    }
    s
}

/// `list` as text.
pub fn render(events: &[DriftEvent]) -> String {
    use std::fmt::Write as _;
    if events.is_empty() {
        return "no schema drift recorded\n".into();
    }
    let mut s = String::new();
    for e in events {
        let what = describe(&e.kind, &e.pointer, &e.old_types, &e.new_types);
        let _ = writeln!(
            s,
            "#{} {} {}/{}: {what}{}; raw page {}, run #{}",
            e.id,
            e.detected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.connection,
            e.stream,
            if e.mapped {
                " [read by the mapping]"
            } else {
                ""
            },
            e.raw_page_id.map_or("?".into(), |p| p.to_string()),
            e.run_id.map_or("?".into(), |r| r.to_string()),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(id: i64, body: &str) -> PageToScan {
        (id, Bytes::from(body.to_owned()), "/data".into(), None)
    }

    #[test]
    fn fields_are_pointers_with_types_and_shares() {
        let s = Seen::scan(&[page(
            7,
            r#"{"data":[{"id":1,"name":"a","tags":["x"],"addr":{"city":"B"}},
                        {"id":"2","name":null,"tags":[],"a/b":true}]}"#,
        )]);
        assert_eq!(s.records, 2);
        let get = |p: &str, t: &'static str| {
            s.pairs()
                .find(|(pp, tt, ..)| *pp == p && *tt == t)
                .map(|e| e.2)
        };
        assert_eq!(get("/id", "number"), Some(1));
        assert_eq!(get("/id", "string"), Some(1));
        assert_eq!(get("/name", "null"), Some(1));
        assert_eq!(get("/tags", "array"), Some(2));
        assert_eq!(get("/tags/*", "string"), Some(1));
        assert_eq!(get("/addr/city", "string"), Some(1));
        assert_eq!(get("/a~1b", "boolean"), Some(1));
        assert_eq!(s.last_page, Some(7));
    }

    #[test]
    fn a_record_with_ids_as_keys_cannot_grow_the_catalogue_without_bound() {
        let mut body = String::from(r#"{"data":[{"#);
        for i in 0..5000 {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#""k{i}":{i}"#));
        }
        body.push_str("}]}");
        let s = Seen::scan(&[page(1, &body)]);
        assert_eq!(s.pairs().count(), MAX_FIELDS);
        assert!(s.truncated);
    }

    #[test]
    fn mapped_pointers_cover_parents_and_array_positions() {
        assert_eq!(normalized("/emails/0/address"), "/emails/*/address");
        let mapping = MappingVersion::new(
            "t",
            "1",
            vec![canonical_model::FieldRule::new(
                canonical_model::EntityKind::Worker,
                "work_email",
                &["/emails/0/address"],
                canonical_model::Transform::Text,
            )],
        )
        .unwrap();
        let m = mapped(&mapping);
        for p in ["/emails/*/address", "/emails/*", "/emails"] {
            assert!(m.contains_key(p), "{p}");
        }
        assert!(!m.contains_key("/name"));
    }
}
