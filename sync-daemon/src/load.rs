//! Loading raw pages into canonical rows with provenance, set-based.
//!
//! One batch of pages is one transaction: derivations, crosswalk, entity rows,
//! dead letters and the pages' "loaded" marks commit together, so a crash
//! inside a load rolls the whole batch back and it is loaded again. The
//! transaction first checks the run's lease ([`crate::lease::Lease::check`]).
//!
//! Decide, then do: [`split`] and [`map_records`] are pure (which records a
//! batch holds, which are superseded by a later one with the same source id,
//! which fail to parse, map or fit their columns); the rest is SQL.
//!
//! Per record: unchanged (same record hash and mapping version as last
//! written: nothing is mapped or written), superseded (a later record on its
//! page has the same source id, or a newer version of its entity is stored),
//! dead-lettered (the reason names the field and pointer), or mapped; a
//! mapped entity whose row hash equals the stored one writes nothing either,
//! and a stored version newer than the record's (source-modified time, then
//! fetch order) is never overwritten.
//!
//! Concurrency: a canonical row is only ever written under the id its
//! crosswalk row holds. New links are claimed in one insert (`on conflict do
//! nothing … returning`) before any entity row; a key a concurrent loader
//! inserted first is read back under lock and decided again, so two loaders
//! racing on a new source id both write the winner's id and neither can
//! create a second entity.

use bytes::Bytes;
use canonical_model::{CanonValue, CanonicalRow, EntityKind, FieldType, MAX_ID_BYTES, Mapper};
use chrono::{DateTime, Utc};
use connector_core::records::split_records;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::db::{Counts, PageRef};
use crate::lease::Lease;

/// What a load needs to know about the stream and the run.
#[derive(Debug, Clone, Copy)]
pub struct LoadCtx<'a> {
    pub connection: &'a str,
    pub stream: &'a str,
    pub primary_key: &'a str,
    pub entity: EntityKind,
    pub mapper: &'a std::sync::Arc<dyn Mapper>,
    pub mapping_id: i32,
    /// How the stream says a record was deleted.
    pub deleted: Option<connector_core::Deleted>,
    /// Checked first in every load transaction (none for a dry run).
    pub lease: Option<&'a Lease>,
    /// Scrubs dead-letter messages (they quote what the source sent).
    pub scrubber: Option<&'a connector_core::secret::Scrubber>,
}

impl<'a> LoadCtx<'a> {
    pub fn new(
        connection: &'a str,
        def: &'a connector_core::StreamDef,
        model: &'a canonical_model::StreamModel,
        mapping_id: i32,
        lease: Option<&'a Lease>,
    ) -> Self {
        Self {
            connection,
            stream: def.name,
            primary_key: def.primary_key,
            entity: model.entity,
            mapper: &model.mapper,
            mapping_id,
            deleted: def.deleted,
            lease,
            scrubber: None,
        }
    }
}

/// What [`prepare`]'s work off the runtime needs of a [`LoadCtx`], owned.
struct OwnedCtx {
    connection: String,
    stream: String,
    primary_key: String,
    entity: EntityKind,
    mapper: std::sync::Arc<dyn Mapper>,
    mapping_id: i32,
    deleted: Option<connector_core::Deleted>,
}

impl OwnedCtx {
    fn of(ctx: &LoadCtx<'_>) -> Self {
        Self {
            connection: ctx.connection.to_owned(),
            stream: ctx.stream.to_owned(),
            primary_key: ctx.primary_key.to_owned(),
            entity: ctx.entity,
            mapper: ctx.mapper.clone(),
            mapping_id: ctx.mapping_id,
            deleted: ctx.deleted,
        }
    }

    fn ctx(&self) -> LoadCtx<'_> {
        LoadCtx {
            connection: &self.connection,
            stream: &self.stream,
            primary_key: &self.primary_key,
            entity: self.entity,
            mapper: &self.mapper,
            mapping_id: self.mapping_id,
            deleted: self.deleted,
            lease: None,
            scrubber: None,
        }
    }
}

/// A stored page and its body.
#[derive(Debug, Clone)]
pub struct PageBody {
    pub page: PageRef,
    pub body: Bytes,
}

/// A record of a batch: (raw page id, position on the page).
pub type RecordKey = (i64, i32);

/// How a batch is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOpts<'a> {
    /// Compute the field-level diff against the stored rows.
    pub diff: bool,
    /// Records dead-lettered with the given reason instead of loaded: the
    /// ones Postgres refused when the batch was isolated.
    pub quarantine: Option<&'a HashMap<RecordKey, String>>,
    /// A probe: only these records are loaded, no page is marked (the caller
    /// rolls the transaction back).
    pub only: Option<&'a HashSet<RecordKey>>,
    /// A replay: pages found unreadable when fetched are not dead-lettered again.
    pub replay: bool,
}

/// What would change or changed: rows per entity and fields per `entity.field`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffReport {
    pub rows_new: BTreeMap<String, u64>,
    pub rows_changed: BTreeMap<String, u64>,
    pub fields_changed: BTreeMap<String, u64>,
}

impl DiffReport {
    pub fn add(&mut self, o: &DiffReport) {
        for (a, b) in [
            (&mut self.rows_new, &o.rows_new),
            (&mut self.rows_changed, &o.rows_changed),
            (&mut self.fields_changed, &o.fields_changed),
        ] {
            for (k, v) in b {
                *a.entry(k.clone()).or_default() += v;
            }
        }
    }
    pub fn rows(&self) -> u64 {
        self.rows_new.values().sum::<u64>() + self.rows_changed.values().sum::<u64>()
    }
}

type Version = (Option<DateTime<Utc>>, i64, i32);

/// True when version `a` is newer than `b`: by source-modified time when
/// both have one (and they differ), else by fetch order (raw page, then
/// position). A version without a time is never older than one with a time
/// just for lacking it: a source that sends no time for a deletion, or a
/// record whose time is blank, is placed by when it was fetched.
fn newer(a: Version, b: Version) -> bool {
    match (a.0, b.0) {
        (Some(x), Some(y)) if x != y => x > y,
        _ => (a.1, a.2) > (b.1, b.2),
    }
}

#[derive(Debug)]
struct Rec {
    page_id: i64,
    ordinal: i32,
    hash: [u8; 32],
    /// The record's verbatim JSON (a view of its page's text); parsed only
    /// when the record must be mapped.
    raw: Bytes,
    source_id: String,
    status: Status,
    modified: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Pending,
    Unchanged,
    Changed,
    Dead,
    Superseded,
    /// Left out of a probe: neither loaded nor counted.
    Ignored,
    /// A tombstone: the source says the record's entity was deleted.
    Tombstone,
}

struct Cand {
    row: CanonicalRow,
    row_hash: [u8; 32],
    rec: usize,
    version: Version,
}

/// A dead letter about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dead {
    /// The record's index in the batch (`None` for a page, or a record
    /// without a usable id).
    rec: Option<usize>,
    page_id: i64,
    /// `None`: the whole page.
    ordinal: Option<i32>,
    source_id: Option<String>,
    /// One open dead letter per key: `id:<source id>`, `rec:<record hash>`
    /// or `page:<page token>`.
    key: String,
    class: &'static str,
    field: Option<String>,
    pointer: Option<String>,
    message: String,
}

struct Link {
    canonical_id: i64,
    row_hash: Option<Vec<u8>>,
    record_hash: Option<Vec<u8>>,
    mapping_id: Option<i32>,
    version: Option<Version>,
    /// The entity is soft-deleted: a record of it revives it (a write).
    deleted: bool,
}

impl Link {
    /// A link this batch is about to create, under a freshly allocated id.
    fn fresh(canonical_id: i64) -> Self {
        Self {
            canonical_id,
            row_hash: None,
            record_hash: None,
            mapping_id: None,
            version: None,
            deleted: false,
        }
    }
}

/// What a batch does with its candidate entities.
struct Plan<'c> {
    /// Entities whose row is written.
    writes: Vec<&'c Cand>,
    /// Same output, new record hash or mapping version: only the link is updated.
    bookkeep: Vec<&'c Cand>,
    /// Records whose entity has a newer version stored.
    stale: HashSet<usize>,
}

/// Decides, per candidate entity, against its link: skip when a newer
/// version is stored, bookkeep when its row is the same, write otherwise.
fn decide<'c>(
    cands: &'c HashMap<(EntityKind, String), Cand>,
    links: &HashMap<(EntityKind, String), Link>,
    recs: &[Rec],
    mapping_id: i32,
) -> Plan<'c> {
    let mut plan = Plan {
        writes: Vec::new(),
        bookkeep: Vec::new(),
        stale: HashSet::new(),
    };
    for (key, c) in cands {
        let link = &links[key];
        // A deleted entity's record is placed against the deletion by fetch
        // order alone (whether it exists is the source's word when it answered).
        let stale = link.version.is_some_and(|v| {
            if link.deleted {
                (v.1, v.2) > (c.version.1, c.version.2)
            } else {
                newer(v, c.version)
            }
        });
        if stale {
            plan.stale.insert(c.rec);
            continue;
        }
        if link.row_hash.as_deref() == Some(&c.row_hash[..]) && !link.deleted {
            let rec_hash = recs[c.rec].hash;
            if link.mapping_id != Some(mapping_id)
                || link.record_hash.as_deref() != Some(&rec_hash[..])
            {
                plan.bookkeep.push(c);
            }
        } else {
            plan.writes.push(c);
        }
    }
    plan
}

/// Result of one batch: counts per page (in input order) and the diff.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub per_page: Vec<(i64, Counts)>,
    pub total: Counts,
    pub diff: DiffReport,
    /// Hashes of the source ids the batch's records carry (for mark and sweep).
    pub seen: Vec<u64>,
    /// Records without a usable id (a sweep cannot tell whom they were).
    pub anonymous: i64,
}

/// The hash of a source id in a sweep's "seen" set ([`BatchOutcome::seen`]).
pub fn id_hash(source_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    source_id.hash(&mut h);
    h.finish()
}

/// The record's primary key (a non-empty string or a number), read without
/// parsing the rest of the record: unchanged records are never parsed whole.
/// `Err` says why the record has no usable key.
fn primary_key(raw: &RawValue, ptr: &str) -> Result<String, String> {
    let missing = || format!("record has no string or number primary key at {ptr}");
    let id = match connector_core::records::key_at(raw, ptr) {
        Ok(Some(s)) if !s.is_empty() => s,
        Ok(_) | Err(_) => return Err(missing()),
    };
    if id.contains('\0') {
        return Err(format!(
            "primary key at {ptr} contains a NUL character (U+0000)"
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "primary key at {ptr} is {} bytes long, over the limit of {MAX_ID_BYTES}",
            id.len()
        ));
    }
    Ok(id)
}

/// The records of a batch, split and classified without the database.
#[derive(Debug, Default)]
struct Split {
    recs: Vec<Rec>,
    dead: Vec<Dead>,
    /// Per page: id, first record, end record, and the records a page-level
    /// dead letter stands for (an unreadable page).
    pages: Vec<(i64, usize, usize, i64)>,
}

/// Splits pages into records; an unreadable page becomes one page-level
/// dead letter; records without a usable primary key are dead-lettered;
/// within a page, an earlier record with the same source id as a later one
/// is superseded (the last occurrence wins, in source order).
fn split(ctx: &LoadCtx<'_>, pages: &[PageBody], texts: &[Bytes], opts: &LoadOpts<'_>) -> Split {
    let mut out = Split::default();
    for (p, text) in pages.iter().zip(texts) {
        let first = out.recs.len();
        let unreadable = match &p.page.parse_error {
            Some(e) => Err(e.clone()),
            None => split_records(text, &p.page.record_path, None).map(|s| s.records),
        };
        let records = match unreadable {
            Ok(r) => r,
            Err(message) => {
                // A replay finds again what the fetch found (its dead
                // letter is on record, or resolved by a complete pull since).
                let known_at_fetch = opts.replay && p.page.parse_error.is_some();
                if opts.only.is_none() && !known_at_fetch {
                    out.dead.push(Dead {
                        rec: None,
                        page_id: p.page.id,
                        ordinal: None,
                        source_id: None,
                        key: page_key(&p.page),
                        class: "unreadable_page",
                        field: None,
                        pointer: Some(p.page.record_path.clone()),
                        message: format!(
                            "{}/{} raw page {} ({}) could not be read as a page: {message}",
                            ctx.connection, ctx.stream, p.page.id, p.page.object_key
                        ),
                    });
                }
                out.pages
                    .push((p.page.id, first, first, i64::from(p.page.record_count)));
                continue;
            }
        };
        for (i, raw) in records.iter().enumerate() {
            let ordinal = i32::try_from(i).unwrap_or(i32::MAX);
            let key = (p.page.id, ordinal);
            let hash: [u8; 32] = Sha256::digest(raw.get().as_bytes()).into();
            let mut rec = Rec {
                page_id: p.page.id,
                ordinal,
                hash,
                raw: view(text, raw.get().as_bytes()),
                source_id: String::new(),
                status: Status::Pending,
                modified: None,
            };
            if opts.only.is_some_and(|o| !o.contains(&key)) {
                rec.status = Status::Ignored;
            }
            match primary_key(raw, ctx.primary_key) {
                Ok(id) => {
                    rec.source_id = id;
                    if rec.status == Status::Pending
                        && ctx
                            .deleted
                            .as_ref()
                            .is_some_and(|d| connector_core::records::is_tombstone(raw, d))
                    {
                        // Presence is placed by fetch order: a tombstone
                        // carries no version time (see step 9b).
                        rec.status = Status::Tombstone;
                    }
                }
                Err(message) => {
                    if rec.status != Status::Ignored {
                        rec.status = Status::Dead;
                        out.dead.push(Dead {
                            rec: None,
                            page_id: p.page.id,
                            ordinal: Some(ordinal),
                            source_id: None,
                            key: format!("rec:{}", hex::encode(hash)),
                            class: "no_primary_key",
                            field: Some("source_id".into()),
                            pointer: Some(ctx.primary_key.to_owned()),
                            message: format!(
                                "{}/{} raw page {} record {ordinal}: {message}",
                                ctx.connection, ctx.stream, p.page.id
                            ),
                        });
                    }
                }
            }
            out.recs.push(rec);
        }
        // The last occurrence of a source id on the page wins.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for i in first..out.recs.len() {
            if !out.recs[i].source_id.is_empty() {
                last.insert(out.recs[i].source_id.as_str(), i);
            }
        }
        let winners: HashSet<usize> = last.into_values().collect();
        for r in (first..out.recs.len()).filter(|i| !winners.contains(i)) {
            let rec = &mut out.recs[r];
            if !rec.source_id.is_empty()
                && matches!(rec.status, Status::Pending | Status::Tombstone)
            {
                rec.status = Status::Superseded;
            }
        }
        out.pages.push((p.page.id, first, out.recs.len(), 0));
    }
    if let Some(q) = opts.quarantine {
        for (i, r) in out.recs.iter_mut().enumerate() {
            if r.status != Status::Pending {
                continue;
            }
            if let Some(why) = q.get(&(r.page_id, r.ordinal)) {
                r.status = Status::Dead;
                out.dead
                    .push(dead_record(i, r, ctx, "database", None, why.clone()));
            }
        }
    }
    out
}

fn dead_record(
    rec: usize,
    r: &Rec,
    ctx: &LoadCtx<'_>,
    class: &'static str,
    field_pointer: Option<(String, Option<String>)>,
    message: String,
) -> Dead {
    let (field, pointer) = field_pointer.map_or((None, None), |(f, p)| (Some(f), p));
    Dead {
        rec: Some(rec),
        page_id: r.page_id,
        ordinal: Some(r.ordinal),
        source_id: Some(r.source_id.clone()),
        key: format!("id:{}", r.source_id),
        class,
        field,
        pointer,
        message: format!(
            "{}/{} raw page {} record {} ({}): {message}",
            ctx.connection, ctx.stream, r.page_id, r.ordinal, r.source_id
        ),
    }
}

/// The dead-letter key of an unreadable page: its position (token), so a
/// page that fails again (with another body, e.g. an error page with a
/// request id) updates the same dead letter. At most 268 bytes.
fn page_key(page: &PageRef) -> String {
    if page.page_token.is_null() {
        return format!("page:{}", page.body_sha256);
    }
    let token = page.page_token.to_string();
    // Keys are indexed: a long token (a next link) is keyed by its hash.
    if token.len() <= 256 {
        format!("page:{token}")
    } else {
        format!(
            "page:sha256:{}",
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    }
}

/// A mapped record: its rows, the first being the record's own entity.
struct Mapped {
    rec: usize,
    rows: Vec<CanonicalRow>,
}

/// Parses and maps every pending record, checking each row against the
/// canonical domain: a record that fails to parse (a number out of range,
/// nesting past the parser's limit), to map, or to fit its columns is
/// dead-lettered with the field and pointer, and nothing of it is written.
fn map_records(ctx: &LoadCtx<'_>, recs: &mut [Rec], dead: &mut Vec<Dead>) -> Vec<Mapped> {
    let mut out = Vec::new();
    for (i, r) in recs.iter_mut().enumerate() {
        if r.status != Status::Pending {
            continue;
        }
        let parsed = std::str::from_utf8(&r.raw)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(t).map_err(|e| e.to_string()));
        let value: serde_json::Value = match parsed {
            Ok(v) => v,
            Err(e) => {
                r.status = Status::Dead;
                dead.push(dead_record(
                    i,
                    r,
                    ctx,
                    "parse",
                    None,
                    format!("the record cannot be parsed: {e}"),
                ));
                continue;
            }
        };
        // A mapper that panics on one record must not fail every load of
        // its page: the record is dead-lettered like a mapping error.
        let mapped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.mapper.map(&value)));
        let rows: Vec<CanonicalRow> = match mapped {
            Err(panic) => {
                r.status = Status::Dead;
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                dead.push(dead_record(
                    i,
                    r,
                    ctx,
                    "mapper_panic",
                    None,
                    format!("the mapper panicked on this record (a bug in the mapper): {msg}"),
                ));
                continue;
            }
            Ok(Ok(entities)) => entities.into_iter().map(|e| e.into_row()).collect(),
            Ok(Err(e)) => {
                r.status = Status::Dead;
                let fp = e
                    .field()
                    .map(|f| (f.to_owned(), e.pointer().map(str::to_owned)));
                dead.push(dead_record(i, r, ctx, "mapping", fp, e.to_string()));
                continue;
            }
        };
        let bad = rows.iter().find_map(|row| {
            row.check().err().map(|(field, m)| {
                let pointer = ctx.mapper.mapping().rule(row.kind, field).map(|rule| {
                    // Pointers read together (a signed amount), or the first of.
                    let sep = if rule.transform.reads_all_pointers() {
                        ", "
                    } else {
                        " | "
                    };
                    rule.pointers.join(sep)
                });
                (row.kind, field, pointer, m)
            })
        });
        if let Some((kind, field, pointer, m)) = bad {
            r.status = Status::Dead;
            let at = pointer
                .as_deref()
                .map(|p| format!(" at {p}"))
                .unwrap_or_default();
            dead.push(dead_record(
                i,
                r,
                ctx,
                "value",
                Some((field.to_owned(), pointer.clone())),
                format!("{kind}.{field}{at}: {m}"),
            ));
            continue;
        }
        r.modified = rows
            .first()
            .and_then(|row| match row.get("source_modified_at") {
                Some(CanonValue::Timestamp(t)) => Some(*t),
                _ => None,
            });
        out.push(Mapped { rec: i, rows });
    }
    out
}

/// A batch split, hashed and mapped, before its transaction: the work a
/// batch needs without writing (see [`prepare`]).
pub struct Prepared {
    recs: Vec<Rec>,
    dead: Vec<Dead>,
    page_of: Vec<(i64, usize, usize, i64)>,
    known: HashMap<String, Known>,
    /// Ids of the stream's entity the crosswalk did not hold when asked.
    absent: HashSet<String>,
    mapped: Vec<Mapped>,
    /// Ids whose stored state was read while an earlier batch that also
    /// holds them was still loading: read again inside the transaction.
    recheck: Vec<String>,
}

/// What the crosswalk holds of a record's id: its record hash (none when
/// deleted), mapping version, and the raw page and position last written.
type Known = (Option<Vec<u8>>, Option<i32>, Option<i64>, Option<i32>);

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("records", &self.recs.len())
            .field("mapped", &self.mapped.len())
            .field("dead", &self.dead.len())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Records found unchanged (skipped by hash), and records mapped.
    pub fn decided(&self) -> (usize, usize) {
        let unchanged = self
            .recs
            .iter()
            .filter(|r| r.status == Status::Unchanged)
            .count();
        (unchanged, self.mapped.len())
    }

    /// The source ids of the batch's records.
    pub fn ids(&self) -> HashSet<String> {
        self.recs
            .iter()
            .filter(|r| !r.source_id.is_empty())
            .map(|r| r.source_id.clone())
            .collect()
    }
}

/// Splits, hashes and maps a batch, reading the crosswalk through `db`
/// without locking or writing anything: unchanged records (same record hash
/// and mapping version as stored) are marked and not mapped.
///
/// Run beside the previous batch's transaction (a sync or replay overlaps
/// the two), `in_flight` holds that batch's ids: what the crosswalk says of
/// them may change when it commits, so they are never skipped by hash here,
/// and [`apply`] reads their stored state again inside its transaction.
pub async fn prepare<'e>(
    db: impl sqlx::PgExecutor<'e>,
    ctx: &LoadCtx<'_>,
    pages: &[PageBody],
    opts: LoadOpts<'_>,
    in_flight: &HashSet<String>,
) -> anyhow::Result<Prepared> {
    // The CPU work runs on a blocking thread when it can (no probe or
    // quarantine borrowed from the caller): beside another batch's
    // transaction, it then takes the other core instead of this task's.
    let off_runtime = opts.quarantine.is_none() && opts.only.is_none();
    let owned = off_runtime.then(|| std::sync::Arc::new(OwnedCtx::of(ctx)));

    // 1. Split pages into records; hash each record's verbatim bytes.
    let Split {
        mut recs,
        mut dead,
        pages: page_of,
    } = match &owned {
        Some(o) => {
            let (o, pages, replay) = (o.clone(), pages.to_vec(), opts.replay);
            tokio::task::spawn_blocking(move || {
                let opts = LoadOpts {
                    replay,
                    ..LoadOpts::default()
                };
                split(&o.ctx(), &pages, &readable_bodies(&pages), &opts)
            })
            .await?
        }
        None => split(ctx, pages, &readable_bodies(pages), &opts),
    };

    // 2. Records identical to what was last loaded under this mapping: skip.
    let ids: Vec<String> = recs
        .iter()
        .filter(|r| r.status == Status::Pending)
        .map(|r| r.source_id.clone())
        .collect();
    let known = known_state(db, ctx, &ids).await?;
    let absent: HashSet<String> = ids
        .into_iter()
        .filter(|id| !known.contains_key(id))
        .collect();
    // An id on more than one page of the batch is never skipped by hash: the
    // version rule must choose among all its copies, or a copy that differs
    // from the stored one would win over the stored one's twin (a flip on
    // every re-sync).
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for r in recs.iter().filter(|r| r.status == Status::Pending) {
        *seen.entry(r.source_id.as_str()).or_default() += 1;
    }
    let repeated: HashSet<String> = seen
        .into_iter()
        .filter(|(id, n)| *n > 1 || in_flight.contains(*id))
        .map(|(id, _)| id.to_owned())
        .collect();
    let recheck: Vec<String> = repeated
        .iter()
        .filter(|id| in_flight.contains(*id))
        .cloned()
        .collect();
    for r in recs.iter_mut().filter(|r| r.status == Status::Pending) {
        if repeated.contains(&r.source_id) {
            continue;
        }
        if let Some((Some(h), Some(m), _, _)) = known.get(&r.source_id)
            && h.as_slice() == r.hash
            && *m == ctx.mapping_id
        {
            r.status = Status::Unchanged;
        }
    }

    // 3. Map the rest.
    let mapped = match owned {
        Some(o) => {
            let (r, d, m) = tokio::task::spawn_blocking(move || {
                let mapped = map_records(&o.ctx(), &mut recs, &mut dead);
                (recs, dead, mapped)
            })
            .await?;
            recs = r;
            dead = d;
            m
        }
        None => map_records(ctx, &mut recs, &mut dead),
    };
    Ok(Prepared {
        recs,
        dead,
        page_of,
        known,
        absent,
        mapped,
        recheck,
    })
}

/// The crosswalk's state of `ids` (of the stream's own entity).
async fn known_state<'e>(
    db: impl sqlx::PgExecutor<'e>,
    ctx: &LoadCtx<'_>,
    ids: &[String],
) -> anyhow::Result<HashMap<String, Known>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(sqlx::query(
        // One primary-key probe per id (the lateral `offset 0` keeps the planner
        // from flattening it): with `= any($3)` and stale or missing statistics
        // (autovacuum may be off) Postgres scans the whole (type, connection)
        // prefix and compares each row with the array, quadratic in practice.
        // A deleted entity's record is never "unchanged": it revives it.
        "select s.source_id, case when s.deleted_at is null then s.record_hash end,
                s.mapping_version_id, s.raw_page_id, s.record_ordinal
         from unnest($3::text[]) as u(sid),
         lateral (select * from source_link s
                  where s.entity_type = $1 and s.connection = $2 and s.source_id = u.sid offset 0) s",
    )
    .bind(ctx.entity.as_str())
    .bind(ctx.connection)
    .bind(ids)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
    .collect())
}

/// Loads a batch of pages inside `tx`; the caller commits (or, for a dry run
/// or a probe, rolls back) so that the batch and its pages' "loaded" marks
/// land together.
pub async fn load_batch(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &LoadCtx<'_>,
    pages: &[PageBody],
    opts: LoadOpts<'_>,
) -> anyhow::Result<BatchOutcome> {
    // `apply` checks the lease first.
    let prep = prepare(&mut **tx, ctx, pages, opts, &HashSet::new()).await?;
    apply(tx, ctx, prep, opts).await
}

/// Writes a prepared batch inside `tx` (the second half of [`load_batch`]),
/// after checking the run's lease.
pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &LoadCtx<'_>,
    prep: Prepared,
    opts: LoadOpts<'_>,
) -> anyhow::Result<BatchOutcome> {
    if let Some(lease) = ctx.lease {
        lease.check(tx).await?;
    }
    let Prepared {
        mut recs,
        mut dead,
        page_of,
        mut known,
        mut absent,
        mapped,
        recheck,
    } = prep;
    if !recheck.is_empty() {
        let now = known_state(&mut **tx, ctx, &recheck).await?;
        absent.retain(|id| !now.contains_key(id));
        known.extend(now);
    }

    // 3. Keep, per entity, the newest version in the batch.
    let mut cands: HashMap<(EntityKind, String), Cand> = HashMap::new();
    let mut own: Vec<(usize, (EntityKind, String))> = Vec::new();
    for m in mapped {
        let r = &mut recs[m.rec];
        let version = (r.modified, r.page_id, r.ordinal);
        r.status = Status::Unchanged; // until one of its entities is written
        for (n, row) in m.rows.into_iter().enumerate() {
            let key = (row.kind, row.source_id().to_owned());
            if n == 0 {
                own.push((m.rec, key.clone()));
            }
            let row_hash = row.row_hash();
            if cands.get(&key).is_none_or(|c| !newer(c.version, version)) {
                cands.insert(
                    key,
                    Cand {
                        row,
                        row_hash,
                        rec: m.rec,
                        version,
                    },
                );
            }
        }
    }

    // 4. Crosswalk: read (and lock) the links of every entity and reference
    //    of the batch; the ones that do not exist yet get fresh ids, claimed
    //    in step 6.
    let mut keys: Vec<(EntityKind, String)> = cands.keys().cloned().collect();
    for c in cands.values() {
        for (def, v) in c.row.kind.fields().iter().zip(&c.row.values) {
            if let (FieldType::Ref(kind), Some(CanonValue::Ref(sid))) = (def.ty, v) {
                keys.push((kind, sid.clone()));
            }
        }
    }
    keys.sort();
    keys.dedup();
    // Links of the stream's entity that did not exist when the batch was
    // prepared are not read again: they are claimed in step 6, where one a
    // concurrent loader inserted since is found and read under lock.
    let to_read: Vec<(EntityKind, String)> = keys
        .iter()
        .filter(|k| k.0 != ctx.entity || !absent.contains(&k.1))
        .cloned()
        .collect();
    let mut links = read_links(tx, ctx.connection, &to_read).await?;
    let mut new_keys: Vec<(EntityKind, String)> = keys
        .iter()
        .filter(|k| !links.contains_key(*k))
        .cloned()
        .collect();
    let new_ids: Vec<i64> =
        sqlx::query_scalar("select nextval('canonical_id_seq') from generate_series(1, $1)")
            .bind(i32::try_from(new_keys.len())?)
            .fetch_all(&mut **tx)
            .await?;
    for (k, id) in new_keys.iter().zip(new_ids) {
        links.insert(k.clone(), Link::fresh(id));
    }

    // 5. Decide: write, bookkeep (same output, new record hash or mapping), or skip.
    let mut plan = decide(&cands, &links, &recs, ctx.mapping_id);
    // Derivation ids of the records that write, allocated up front (deciding
    // again after a lost race can only take writes away).
    let mut writing: Vec<usize> = plan.writes.iter().map(|c| c.rec).collect();
    writing.sort_unstable();
    writing.dedup();
    let ids: Vec<i64> =
        sqlx::query_scalar("select nextval('derivation_id_seq') from generate_series(1, $1)")
            .bind(i32::try_from(writing.len())?)
            .fetch_all(&mut **tx)
            .await?;
    let deriv_ids: HashMap<usize, i64> = writing.into_iter().zip(ids).collect();
    let deriv_of = |rec: usize| deriv_ids[&rec];

    // 6. Claim the new links in one insert, complete for the entities this
    //    batch writes. A key another loader inserted since step 4 is not
    //    claimed (`on conflict do nothing`): its link is read under lock and
    //    its entity decided again against it, so an entity is only ever
    //    written under the id its crosswalk row holds (docs/architecture.md,
    //    "Invariants and where they hold", 9). The derivations the links
    //    name are written in step 7, in the same transaction.
    if !new_keys.is_empty() {
        let write_of: HashMap<(EntityKind, &str), &Cand> = plan
            .writes
            .iter()
            .map(|c| ((c.row.kind, c.row.source_id()), *c))
            .collect();
        let of = |k: &(EntityKind, String)| write_of.get(&(k.0, k.1.as_str())).copied();
        let claimed: HashSet<(String, String)> = sqlx::query(
            "insert into source_link as s (entity_type, connection, source_id, canonical_id, record_hash,
                                           mapping_version_id, row_hash, derivation_id, source_modified_at,
                                           raw_page_id, record_ordinal)
             select u.et, $1, u.sid, u.cid, u.rh, u.mv, u.row_hash, u.deriv, u.modified, u.page, u.ord
             from unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::int[], $7::bytea[], $8::bigint[],
                         $9::timestamptz[], $10::bigint[], $11::int[])
                  with ordinality as u(et, sid, cid, rh, mv, row_hash, deriv, modified, page, ord, n)
             order by u.n
             on conflict (entity_type, connection, source_id) do nothing
             returning s.entity_type, s.source_id",
        )
        .bind(ctx.connection)
        .bind(new_keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| links[k].canonical_id).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|c| recs[c.rec].hash.to_vec())).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|_| ctx.mapping_id)).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|c| c.row_hash.to_vec())).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|c| deriv_of(c.rec))).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).and_then(|c| c.version.0)).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|c| c.version.1)).collect::<Vec<_>>())
        .bind(new_keys.iter().map(|k| of(k).map(|c| c.version.2)).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let lost: Vec<(EntityKind, String)> = new_keys
            .iter()
            .filter(|k| !claimed.contains(&(k.0.as_str().to_owned(), k.1.clone())))
            .cloned()
            .collect();
        if !lost.is_empty() {
            let winners = read_links(tx, ctx.connection, &lost).await?;
            if let Some(k) = lost.iter().find(|k| !winners.contains_key(*k)) {
                anyhow::bail!(
                    "crosswalk row of {} {:?} vanished during the load",
                    k.0,
                    k.1
                );
            }
            links.extend(winners);
            new_keys.retain(|k| !lost.contains(k));
            plan = decide(&cands, &links, &recs, ctx.mapping_id);
        }
    }
    let claimed: HashSet<(EntityKind, &str)> =
        new_keys.iter().map(|k| (k.0, k.1.as_str())).collect();
    let Plan {
        writes,
        bookkeep,
        stale,
    } = plan;
    for c in &writes {
        recs[c.rec].status = Status::Changed;
    }
    // A record whose own entity was won by another record (a newer version
    // in the batch or in store) is superseded.
    for (i, key) in &own {
        let won_elsewhere = cands.get(key).is_some_and(|c| c.rec != *i);
        let stored_newer = stale.contains(i) && cands.get(key).is_some_and(|c| c.rec == *i);
        if recs[*i].status == Status::Unchanged && (won_elsewhere || stored_newer) {
            recs[*i].status = Status::Superseded;
        }
    }

    // 7. One derivation per changed record.
    let changed: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i].status == Status::Changed)
        .collect();
    if !changed.is_empty() {
        sqlx::query(
            "insert into derivation (id, connection, stream, raw_page_id, record_ordinal, record_hash, source_id,
                                     source_modified_at, mapping_version_id)
             select id, $1, $2, page, ord, hash, sid, modified, $9
             from unnest($3::bigint[], $4::bigint[], $5::int[], $6::bytea[], $7::text[], $8::timestamptz[])
                  as u(id, page, ord, hash, sid, modified)",
        )
        .bind(ctx.connection)
        .bind(ctx.stream)
        .bind(changed.iter().map(|&i| deriv_of(i)).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].page_id).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].ordinal).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].hash.to_vec()).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].source_id.clone()).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].modified).collect::<Vec<_>>())
        .bind(ctx.mapping_id)
        .execute(&mut **tx)
        .await?;
    }

    // 8. Entity rows, set-based per kind; the diff is computed against the stored rows first.
    let mut diff = DiffReport::default();
    for kind in EntityKind::ALL {
        let of_kind: Vec<&Cand> = writes
            .iter()
            .copied()
            .filter(|c| c.row.kind == kind)
            .collect();
        if of_kind.is_empty() {
            continue;
        }
        if opts.diff {
            // Rows not stored before are new; only stored rows are compared field by field.
            let (stored, new): (Vec<&Cand>, Vec<&Cand>) = of_kind.iter().partition(|c| {
                links[&(kind, c.row.source_id().to_owned())]
                    .row_hash
                    .is_some()
            });
            if !new.is_empty() {
                *diff.rows_new.entry(kind.as_str().into()).or_default() += new.len() as u64;
            }
            if !stored.is_empty() {
                let rows: Vec<serde_json::Value> =
                    stored.iter().map(|c| row_json(c, &links)).collect();
                entity_diff(tx, kind, &serde_json::Value::Array(rows), &mut diff).await?;
            }
        }
        upsert_rows(tx, kind, &of_kind, &links, &deriv_ids, ctx.mapping_id).await?;
    }

    // 9. Crosswalk state of links that existed before this batch: written
    //    entities get their new version and provenance; unchanged ones only
    //    their record hash and mapping version.
    let upd: Vec<(&Cand, bool)> = writes
        .iter()
        .map(|c| (*c, true))
        .chain(bookkeep.iter().map(|c| (*c, false)))
        .filter(|(c, _)| !claimed.contains(&(c.row.kind, c.row.source_id())))
        .collect();
    if !upd.is_empty() {
        sqlx::query(
            "update source_link s set
                record_hash = u.rh,
                mapping_version_id = u.mv,
                row_hash = case when u.deriv is not null then u.row_hash else s.row_hash end,
                derivation_id = coalesce(u.deriv, s.derivation_id),
                source_modified_at = case when u.deriv is not null then u.modified else s.source_modified_at end,
                raw_page_id = coalesce(u.page, s.raw_page_id),
                record_ordinal = coalesce(u.ord, s.record_ordinal),
                deleted_at = case when u.deriv is not null then null else s.deleted_at end
             from unnest($2::text[], $3::text[], $4::bytea[], $5::int[], $6::bytea[], $7::bigint[],
                         $8::timestamptz[], $9::bigint[], $10::int[])
                  as u(et, sid, rh, mv, row_hash, deriv, modified, page, ord)
             where s.entity_type = u.et and s.connection = $1 and s.source_id = u.sid",
        )
        .bind(ctx.connection)
        .bind(upd.iter().map(|(c, _)| c.row.kind.as_str()).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, _)| c.row.source_id()).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, _)| recs[c.rec].hash.to_vec()).collect::<Vec<_>>())
        .bind(upd.iter().map(|_| ctx.mapping_id).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, full)| full.then(|| c.row_hash.to_vec())).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, full)| full.then(|| deriv_of(c.rec))).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, full)| if *full { c.version.0 } else { None }).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, full)| full.then_some(c.version.1)).collect::<Vec<_>>())
        .bind(upd.iter().map(|(c, full)| full.then_some(c.version.2)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }

    // 9b. Tombstones: the entity is soft-deleted, with the page and position
    //     that said so, unless a record of it fetched after the tombstone is
    //     stored (or written by this batch): then the tombstone is
    //     superseded. Whether a record exists is the source's word at the
    //     time it answered, so tombstones and records are placed by fetch
    //     order, not by the record's modified time (a record restored as it
    //     was, with its old time, is live again). The link's position moves
    //     to the tombstone's, so a record fetched before it cannot revive it
    //     (a replay), and one fetched after does.
    let seen: Vec<u64> = recs
        .iter()
        .filter(|r| !r.source_id.is_empty() && r.status != Status::Tombstone)
        .map(|r| id_hash(&r.source_id))
        .collect();
    let anonymous = recs.iter().filter(|r| r.source_id.is_empty()).count() as i64
        + page_of.iter().map(|p| p.3).sum::<i64>();
    let tombs: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i].status == Status::Tombstone)
        .collect();
    if !tombs.is_empty() {
        let keys: Vec<(EntityKind, String)> = tombs
            .iter()
            .map(|&i| (ctx.entity, recs[i].source_id.clone()))
            .collect();
        let now = read_links(tx, ctx.connection, &keys).await?;
        // The latest position of a record of each id in this batch, whatever
        // became of it (written, unchanged by hash, older than what is
        // stored): the source said it exists at that point of the fetch.
        let mut present: HashMap<&str, (i64, i32)> = HashMap::new();
        for r in recs.iter().filter(|r| {
            !r.source_id.is_empty() && !matches!(r.status, Status::Tombstone | Status::Ignored)
        }) {
            let e = present
                .entry(r.source_id.as_str())
                .or_insert((r.page_id, r.ordinal));
            *e = (*e).max((r.page_id, r.ordinal));
        }
        let present: HashMap<String, (i64, i32)> = present
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut apply: Vec<usize> = Vec::new();
        for &i in &tombs {
            let r = &recs[i];
            let mine = (r.modified, r.page_id, r.ordinal);
            let listed_after = present
                .get(&r.source_id)
                .is_some_and(|at| *at > (r.page_id, r.ordinal));
            recs[i].status = match now.get(&(ctx.entity, r.source_id.clone())) {
                None => Status::Unchanged,
                Some(_) if listed_after => Status::Superseded,
                Some(l) if l.deleted => Status::Unchanged,
                Some(l) => {
                    if l.version.is_some_and(|v| newer(v, mine)) {
                        Status::Superseded
                    } else {
                        apply.push(i);
                        Status::Changed
                    }
                }
            };
        }
        if !apply.is_empty() {
            let ids: Vec<i64> = sqlx::query_scalar(
                "update source_link s set deleted_at = now(), deleted_page_id = u.page,
                        deleted_ordinal = u.ord, deleted_run_id = null, deleted_stream = $7,
                        raw_page_id = u.page,
                        record_ordinal = u.ord,
                        source_modified_at = coalesce(u.modified, s.source_modified_at)
                 from unnest($3::text[], $4::bigint[], $5::int[], $6::timestamptz[])
                      as u(sid, page, ord, modified)
                 where s.entity_type = $1 and s.connection = $2 and s.source_id = u.sid
                 returning s.canonical_id",
            )
            .bind(ctx.entity.as_str())
            .bind(ctx.connection)
            .bind(
                apply
                    .iter()
                    .map(|&i| recs[i].source_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(apply.iter().map(|&i| recs[i].page_id).collect::<Vec<_>>())
            .bind(apply.iter().map(|&i| recs[i].ordinal).collect::<Vec<_>>())
            .bind(apply.iter().map(|&i| recs[i].modified).collect::<Vec<_>>())
            .bind(ctx.stream)
            .fetch_all(&mut **tx)
            .await?;
            // Table names come from the closed EntityKind catalogue.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "update {} set deleted_at = now(), updated_at = now() where id = any($1)",
                ctx.entity.as_str()
            )))
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
        }
    }

    // 10. Dead letters. A failing record older than a version of the same id
    //     that loads (later in this batch, or stored from a later position)
    //     was superseded anyway: it is counted so, not dead-lettered (a
    //     replay of old pages does not reopen what newer ones fixed).
    let mut newest_ok: HashMap<&str, (i64, i32)> = HashMap::new();
    for r in &recs {
        if matches!(
            r.status,
            Status::Changed | Status::Unchanged | Status::Superseded
        ) && !r.source_id.is_empty()
        {
            let e = newest_ok
                .entry(r.source_id.as_str())
                .or_insert((r.page_id, r.ordinal));
            *e = (*e).max((r.page_id, r.ordinal));
        }
    }
    let mut outdated = Vec::new();
    for (n, d) in dead.iter().enumerate() {
        let (Some(i), Some(sid)) = (d.rec, d.source_id.as_deref()) else {
            continue;
        };
        let at = (d.page_id, recs[i].ordinal);
        let stored_later = known
            .get(sid)
            .and_then(|k| k.2.map(|p| (p, k.3.unwrap_or(0))))
            .is_some_and(|pos| pos > at);
        if newest_ok.get(sid).is_some_and(|pos| *pos > at) || stored_later {
            outdated.push(n);
        }
    }
    for n in outdated.into_iter().rev() {
        let d = dead.remove(n);
        if let Some(i) = d.rec {
            recs[i].status = Status::Superseded;
        }
    }
    //     Records that load now (written, or unchanged: the stored version is
    //     theirs) close their open dead letters (a fixed mapping or source);
    //     then this batch's failures are recorded: one open dead letter per
    //     record, a record failing again updates it.
    let mapped_ids: Vec<String> = recs
        .iter()
        .filter(|r| matches!(r.status, Status::Changed | Status::Unchanged))
        .filter(|r| !r.source_id.is_empty())
        .map(|r| format!("id:{}", r.source_id))
        .collect();
    if !mapped_ids.is_empty() {
        sqlx::query(
            "update dead_letter set status = 'resolved', last_seen_at = now()
             where status = 'open' and connection = $1 and stream = $2 and dedupe_key = any($3)",
        )
        .bind(ctx.connection)
        .bind(ctx.stream)
        .bind(&mapped_ids)
        .execute(&mut **tx)
        .await?;
    }
    record_dead_letters(tx, ctx, dead).await?;

    // 11. Pages are loaded, with counts that add up.
    let mut out = BatchOutcome {
        diff,
        seen,
        anonymous,
        ..Default::default()
    };
    for (page_id, a, b, page_dead) in page_of {
        let mut c = Counts {
            dead: page_dead,
            ..Counts::default()
        };
        for r in &recs[a..b] {
            match r.status {
                Status::Changed => c.changed += 1,
                Status::Dead => c.dead += 1,
                Status::Superseded => c.superseded += 1,
                Status::Unchanged | Status::Pending | Status::Tombstone => c.unchanged += 1,
                Status::Ignored => {}
            }
        }
        out.total.add(c);
        out.per_page.push((page_id, c));
    }
    if opts.only.is_some() {
        return Ok(out);
    }
    sqlx::query(
        "update raw_page p set loaded_at = now(), records_changed = u.c, records_unchanged = u.u,
                records_dead = u.d, records_superseded = u.s
         from unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::int[]) as u(id, c, u, d, s)
         where p.id = u.id",
    )
    .bind(out.per_page.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(
        out.per_page
            .iter()
            .map(|p| p.1.changed as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        out.per_page
            .iter()
            .map(|p| p.1.unchanged as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        out.per_page
            .iter()
            .map(|p| p.1.dead as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        out.per_page
            .iter()
            .map(|p| p.1.superseded as i32)
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(out)
}

/// The crosswalk rows of `keys`, locked until the transaction ends.
async fn read_links(
    tx: &mut Transaction<'_, Postgres>,
    connection: &str,
    keys: &[(EntityKind, String)],
) -> anyhow::Result<HashMap<(EntityKind, String), Link>> {
    let mut links = HashMap::new();
    if keys.is_empty() {
        return Ok(links);
    }
    for r in sqlx::query(
        // A primary-key probe per key (see the `known` query and ADR 0003).
        "select s.entity_type, s.source_id, s.canonical_id, s.row_hash, s.record_hash, s.mapping_version_id,
                s.source_modified_at, s.raw_page_id, s.record_ordinal, s.deleted_at is not null
         from unnest($2::text[], $3::text[]) as u(et, sid),
         lateral (select * from source_link s
                  where s.entity_type = u.et and s.connection = $1 and s.source_id = u.sid offset 0) s
         order by s.entity_type, s.source_id for update of s",
    )
    .bind(connection)
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?
    {
        let kind: String = r.get(0);
        let kind: EntityKind = kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let page: Option<i64> = r.get(7);
        let ord: Option<i32> = r.get(8);
        links.insert(
            (kind, r.get(1)),
            Link {
                canonical_id: r.get(2),
                row_hash: r.get(3),
                record_hash: r.get(4),
                mapping_id: r.get(5),
                version: page.map(|p| (r.get(6), p, ord.unwrap_or(0))),
                deleted: r.get(9),
            },
        );
    }
    Ok(links)
}

/// Records dead letters: one open dead letter per (connection, stream, key);
/// a record that fails again updates it (newest page, times seen).
async fn record_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &LoadCtx<'_>,
    dead: Vec<Dead>,
) -> anyhow::Result<()> {
    if dead.is_empty() {
        return Ok(());
    }
    // One row per key in the statement (the last failure wins, the others count).
    let mut by_key: BTreeMap<String, (Dead, i32)> = BTreeMap::new();
    for d in dead {
        let e = by_key.entry(d.key.clone()).or_insert((d.clone(), 0));
        e.0 = d;
        e.1 += 1;
    }
    let rows: Vec<(Dead, i32)> = by_key.into_values().collect();
    sqlx::query(
        "insert into dead_letter (connection, stream, raw_page_id, record_ordinal, source_id, dedupe_key,
                                  error_class, field, pointer, message, mapping_version_id, times_seen)
         select $1, $2, page, ord, sid, key, class, field, ptr, msg, $11, n
         from unnest($3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $12::int[])
              as u(page, ord, sid, key, class, field, ptr, msg, n)
         -- The same failure (class, field, mapping version) of a record an
         -- operator discarded stays discarded.
         where not exists (
             select 1 from dead_letter x
             where x.status = 'discarded' and x.connection = $1 and x.stream = $2
               and x.dedupe_key = u.key and x.error_class = u.class
               and x.field is not distinct from u.field
               and x.mapping_version_id is not distinct from $11)
         on conflict (connection, stream, dedupe_key) where status = 'open' do update set
            raw_page_id = excluded.raw_page_id, record_ordinal = excluded.record_ordinal,
            source_id = excluded.source_id, error_class = excluded.error_class, field = excluded.field,
            pointer = excluded.pointer, message = excluded.message,
            mapping_version_id = excluded.mapping_version_id,
            times_seen = dead_letter.times_seen + excluded.times_seen, last_seen_at = now()",
    )
    .bind(ctx.connection)
    .bind(ctx.stream)
    .bind(rows.iter().map(|d| d.0.page_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.ordinal).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.source_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.key.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.class).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.field.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.0.pointer.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|d| {
                let m = match ctx.scrubber {
                    Some(s) => s.scrub(&d.0.message),
                    None => d.0.message.clone(),
                };
                crate::db::column_text(&m, 2000)
            })
            .collect::<Vec<_>>(),
    )
    .bind(ctx.mapping_id)
    .bind(rows.iter().map(|d| d.1).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The bodies as JSON text ([`connector_core::records::readable`]): the
/// body itself, or its decoded copy.
fn readable_bodies(pages: &[PageBody]) -> Vec<Bytes> {
    pages
        .iter()
        .map(
            |p| match connector_core::records::readable(&p.body, p.page.content_type.as_deref()) {
                Cow::Borrowed(b) => view(&p.body, b),
                Cow::Owned(v) => Bytes::from(v),
            },
        )
        .collect()
}

/// `part` as a view of `whole` when it lies inside it (no copy), else a copy.
fn view(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    if start <= whole.len() && part.len() <= whole.len() - start {
        whole.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// The keys of every record in `pages` (for isolating the ones Postgres refuses).
pub fn record_keys(pages: &[PageBody]) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    for (p, text) in pages.iter().zip(readable_bodies(pages)) {
        if p.page.parse_error.is_some() {
            continue;
        }
        if let Ok(s) = split_records(&text, &p.page.record_path, None) {
            keys.extend(
                (0..s.records.len()).map(|i| (p.page.id, i32::try_from(i).unwrap_or(i32::MAX))),
            );
        }
    }
    keys
}

/// The SQL type of a field's column.
fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "text",
        FieldType::Bool => "boolean",
        FieldType::Date => "date",
        FieldType::Timestamp => "timestamptz",
        FieldType::Decimal | FieldType::Money(_) => "numeric",
        FieldType::Currency => "char(3)",
        FieldType::Ref(_) => "bigint",
    }
}

/// A field value as the text Postgres parses into its column (references
/// resolved to canonical ids).
fn column_text(
    ty: FieldType,
    v: &Option<CanonValue>,
    links: &HashMap<(EntityKind, String), Link>,
) -> Option<String> {
    match (ty, v) {
        (_, None) => None,
        (FieldType::Ref(kind), Some(CanonValue::Ref(sid))) => links
            .get(&(kind, sid.clone()))
            .map(|l| l.canonical_id.to_string()),
        (_, Some(v)) => Some(v.to_canonical_string()),
    }
}

/// An amount at the minor-unit scale of its currency (checked by the row
/// check before; as it is when the currency is unknown).
fn money_text(amount: rust_decimal::Decimal, currency: Option<&CanonValue>) -> String {
    match currency.map(|c| canonical_model::Currency::parse(&c.to_canonical_string())) {
        Some(Ok(cur)) => canonical_model::Money::new(amount, cur)
            .map(|m| m.amount.to_string())
            .unwrap_or_else(|_| amount.to_string()),
        _ => amount.to_string(),
    }
}

/// Writes entity rows of one kind in one statement: one text array per column,
/// cast to the column's type (cheaper for Postgres than a JSON document).
/// `deriv_ids` holds each writing record's derivation id, by record index.
async fn upsert_rows(
    tx: &mut Transaction<'_, Postgres>,
    kind: EntityKind,
    rows: &[&Cand],
    links: &HashMap<(EntityKind, String), Link>,
    deriv_ids: &HashMap<usize, i64>,
    mapping_id: i32,
) -> anyhow::Result<()> {
    let fields = kind.fields();
    let n = fields.len();
    let cols: Vec<String> = fields.iter().map(|f| f.column()).collect();
    let sql = format!(
        "insert into {t} (id, {cols}, prov_contributors, prov_field_src, row_hash, mapping_version_id, updated_at)
         select u.id, {casts}, array[u.deriv], null, u.row_hash, ${mv}, now()
         from unnest($1::bigint[], {params}, ${d}::bigint[], ${h}::bytea[]) as u(id, {names}, deriv, row_hash)
         on conflict (id) do update set {set}, prov_contributors = excluded.prov_contributors,
            prov_field_src = null, row_hash = excluded.row_hash, deleted_at = null,
            mapping_version_id = excluded.mapping_version_id, updated_at = now()",
        t = kind.as_str(),
        cols = cols.join(", "),
        casts = fields.iter().enumerate().map(|(i, f)| format!("u.c{i}::{}", sql_type(f.ty))).collect::<Vec<_>>().join(", "),
        params = (0..n).map(|i| format!("${}::text[]", i + 2)).collect::<Vec<_>>().join(", "),
        names = (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "),
        set = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", "),
        d = n + 2,
        h = n + 3,
        mv = n + 4,
    );
    // Table and column names come from the closed EntityKind catalogue.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(
        rows.iter()
            .map(|c| links[&(kind, c.row.source_id().to_owned())].canonical_id)
            .collect::<Vec<_>>(),
    );
    for (i, f) in fields.iter().enumerate() {
        q = q.bind(
            rows.iter()
                .map(|c| match (f.ty, &c.row.values[i]) {
                    // Money at its currency's scale (75.10 EUR, 150000 JPY).
                    (FieldType::Money(cur), Some(CanonValue::Decimal(d))) => {
                        Some(money_text(*d, c.row.get(cur)))
                    }
                    _ => column_text(f.ty, &c.row.values[i], links),
                })
                .collect::<Vec<_>>(),
        );
    }
    q.bind(rows.iter().map(|c| deriv_ids[&c.rec]).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row_hash.to_vec()).collect::<Vec<_>>())
        .bind(mapping_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A row's canonical id and field columns as JSON, for [`entity_diff`].
fn row_json(c: &Cand, links: &HashMap<(EntityKind, String), Link>) -> serde_json::Value {
    use serde_json::Value as J;
    let mut m = serde_json::Map::new();
    m.insert(
        "id".into(),
        J::from(links[&(c.row.kind, c.row.source_id().to_owned())].canonical_id),
    );
    for (def, v) in c.row.kind.fields().iter().zip(&c.row.values) {
        // jsonb_populate_recordset parses each JSON string with the column's input function.
        m.insert(
            def.column(),
            column_text(def.ty, v, links)
                .map(J::String)
                .unwrap_or(J::Null),
        );
    }
    J::Object(m)
}

/// Compares the rows about to be written with the stored ones, field by field,
/// in Postgres's own representation of each column.
async fn entity_diff(
    tx: &mut Transaction<'_, Postgres>,
    kind: EntityKind,
    rows: &serde_json::Value,
    diff: &mut DiffReport,
) -> anyhow::Result<()> {
    let cols: Vec<String> = kind.fields().iter().map(|f| f.column()).collect();
    let sql = format!(
        "select o.id is null, array(select e.key from jsonb_each(to_jsonb(n)) e
                 where e.key = any($2) and e.value is distinct from (to_jsonb(o) -> e.key))
         from jsonb_populate_recordset(null::{t}, $1) n left join {t} o on o.id = n.id",
        t = kind.as_str()
    );
    for r in sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows)
        .bind(&cols)
        .fetch_all(&mut **tx)
        .await?
    {
        let is_new: bool = r.get(0);
        let fields: Vec<String> = r.get(1);
        if is_new {
            *diff.rows_new.entry(kind.as_str().into()).or_default() += 1;
            continue;
        }
        if fields.is_empty() {
            continue;
        }
        *diff.rows_changed.entry(kind.as_str().into()).or_default() += 1;
        for f in fields {
            let name = f
                .strip_suffix("_id")
                .filter(|n| kind.field(n).is_some())
                .unwrap_or(&f)
                .to_owned();
            *diff
                .fields_changed
                .entry(format!("{kind}.{name}"))
                .or_default() += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn page_keys_are_short_whatever_the_token() {
        let page = |token: serde_json::Value| PageRef {
            id: 1,
            object_key: String::new(),
            body_sha256: "ab".into(),
            record_path: "/data".into(),
            record_count: 0,
            parse_error: None,
            page_token: token,
            since: None,
            content_type: None,
        };
        assert_eq!(
            page_key(&page(serde_json::json!({"kind": "offset", "offset": 100}))),
            "page:{\"kind\":\"offset\",\"offset\":100}"
        );
        let long = serde_json::json!({"kind": "link", "url": format!("https://h/p?x={}", "y".repeat(5000))});
        assert!(page_key(&page(long)).len() <= 268);
        assert_eq!(page_key(&page(serde_json::Value::Null)), "page:ab");
    }
}
