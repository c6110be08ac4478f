//! Loading raw pages into canonical rows with provenance, set-based.
//!
//! One batch of pages is one transaction: derivations, crosswalk, entity rows,
//! dead letters and the pages' "loaded" marks commit together, so a crash
//! inside a load rolls the whole batch back and it is loaded again.
//!
//! Per record: unchanged (same record hash and mapping version as last
//! written: nothing is mapped or written), or mapped; a mapped entity whose
//! row hash equals the stored one writes nothing either, and a stored version
//! newer than the record's (source-modified time, then fetch order) is never
//! overwritten. Records that cannot be mapped are dead-lettered with the reason.

use bytes::Bytes;
use canonical_model::{CanonValue, CanonicalRow, EntityKind, FieldType, Mapper};
use chrono::{DateTime, Utc};
use connector_core::records::split_records;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeMap, HashMap};

use crate::db::{Counts, PageRef};

/// What a load needs to know about the stream.
#[derive(Debug, Clone, Copy)]
pub struct LoadCtx<'a> {
    pub connection: &'a str,
    pub stream: &'a str,
    pub primary_key: &'a str,
    pub entity: EntityKind,
    pub mapper: &'a dyn Mapper,
    pub mapping_id: i32,
}

impl<'a> LoadCtx<'a> {
    pub fn new(connection: &'a str, def: &'a connector_core::StreamDef, mapping_id: i32) -> Self {
        Self {
            connection,
            stream: def.name,
            primary_key: def.primary_key,
            entity: def.entity,
            mapper: def.mapper.as_ref(),
            mapping_id,
        }
    }
}

/// A stored page and its body.
#[derive(Debug, Clone)]
pub struct PageBody {
    pub page: PageRef,
    pub body: Bytes,
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

struct Rec<'a> {
    page_id: i64,
    ordinal: i32,
    hash: [u8; 32],
    /// The record's verbatim JSON; parsed only when the record must be mapped.
    raw: &'a str,
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
}

struct Cand {
    row: CanonicalRow,
    row_hash: [u8; 32],
    rec: usize,
    version: Version,
}

struct Dead {
    page_id: i64,
    ordinal: i32,
    source_id: Option<String>,
    class: &'static str,
    message: String,
}

struct Link {
    canonical_id: i64,
    row_hash: Option<Vec<u8>>,
    record_hash: Option<Vec<u8>>,
    mapping_id: Option<i32>,
    version: Option<Version>,
    /// Not stored yet: inserted by this batch.
    is_new: bool,
}

/// Result of one batch: counts per page (in input order) and the diff.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub per_page: Vec<(i64, Counts)>,
    pub total: Counts,
    pub diff: DiffReport,
}

/// The record's primary key (a non-empty string or a number), read without
/// parsing the rest of the record: unchanged records are never parsed whole.
fn primary_key(raw: &RawValue, ptr: &str) -> Option<String> {
    let v = connector_core::records::pointer(raw, ptr).ok()??;
    match serde_json::from_str::<serde_json::Value>(v.get()).ok()? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Loads a batch of pages inside `tx`; the caller commits (or, for a dry run,
/// rolls back) so that the batch and its pages' "loaded" marks land together.
pub async fn load_batch(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &LoadCtx<'_>,
    pages: &[PageBody],
    want_diff: bool,
) -> anyhow::Result<BatchOutcome> {
    // 1. Split pages into records; hash each record's verbatim bytes.
    let mut recs: Vec<Rec> = Vec::new();
    let mut dead: Vec<Dead> = Vec::new();
    let mut page_of: Vec<(i64, usize, usize)> = Vec::new(); // page id, first rec, end rec
    for p in pages {
        let split = split_records(&p.body, &p.page.record_path, None)
            .map_err(|e| anyhow::anyhow!("raw page {} ({}): {e}", p.page.id, p.page.object_key))?;
        let first = recs.len();
        for (i, raw) in split.records.iter().enumerate() {
            let hash: [u8; 32] = Sha256::digest(raw.get().as_bytes()).into();
            let source_id = primary_key(raw, ctx.primary_key);
            let status = if source_id.is_some() {
                Status::Pending
            } else {
                Status::Dead
            };
            if source_id.is_none() {
                dead.push(Dead {
                    page_id: p.page.id,
                    ordinal: i as i32,
                    source_id: None,
                    class: "no_primary_key",
                    message: format!(
                        "record has no string or number primary key at {}",
                        ctx.primary_key
                    ),
                });
            }
            recs.push(Rec {
                page_id: p.page.id,
                ordinal: i as i32,
                hash,
                raw: raw.get(),
                source_id: source_id.unwrap_or_default(),
                status,
                modified: None,
            });
        }
        page_of.push((p.page.id, first, recs.len()));
    }

    // 2. Records identical to what was last loaded under this mapping: skip.
    let ids: Vec<String> = recs
        .iter()
        .filter(|r| r.status == Status::Pending)
        .map(|r| r.source_id.clone())
        .collect();
    let known: HashMap<String, (Option<Vec<u8>>, Option<i32>)> = sqlx::query(
        // One primary-key probe per id (the lateral `offset 0` keeps the planner
        // from flattening it): with `= any($3)` and stale or missing statistics
        // (autovacuum may be off) Postgres scans the whole (type, connection)
        // prefix and compares each row with the array, quadratic in practice.
        "select s.source_id, s.record_hash, s.mapping_version_id
         from unnest($3::text[]) as u(sid),
         lateral (select * from source_link s
                  where s.entity_type = $1 and s.connection = $2 and s.source_id = u.sid offset 0) s",
    )
    .bind(ctx.entity.as_str())
    .bind(ctx.connection)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    for r in recs.iter_mut().filter(|r| r.status == Status::Pending) {
        if let Some((Some(h), Some(m))) = known.get(&r.source_id)
            && h.as_slice() == r.hash
            && *m == ctx.mapping_id
        {
            r.status = Status::Unchanged;
        }
    }

    // 3. Map the rest; keep, per entity, the newest version in the batch.
    let mut mapped: Vec<String> = Vec::new();
    let mut cands: HashMap<(EntityKind, String), Cand> = HashMap::new();
    for (i, r) in recs.iter_mut().enumerate() {
        if r.status != Status::Pending {
            continue;
        }
        // The raw text is valid JSON (it was split out of a parsed page).
        let value: serde_json::Value = serde_json::from_str(r.raw)?;
        match ctx.mapper.map(&value) {
            Err(e) => {
                r.status = Status::Dead;
                dead.push(Dead {
                    page_id: r.page_id,
                    ordinal: r.ordinal,
                    source_id: Some(r.source_id.clone()),
                    class: "mapping",
                    message: e.to_string(),
                });
            }
            Ok(entities) => {
                let rows: Vec<CanonicalRow> = entities.into_iter().map(|e| e.into_row()).collect();
                r.modified = rows
                    .first()
                    .and_then(|row| match row.get("source_modified_at") {
                        Some(CanonValue::Timestamp(t)) => Some(*t),
                        _ => None,
                    });
                let version = (r.modified, r.page_id, r.ordinal);
                for row in rows {
                    let key = (row.kind, row.source_id().to_owned());
                    let row_hash = row.row_hash();
                    let newer = cands.get(&key).is_none_or(|c| c.version <= version);
                    if newer {
                        cands.insert(
                            key,
                            Cand {
                                row,
                                row_hash,
                                rec: i,
                                version,
                            },
                        );
                    }
                }
                r.status = Status::Unchanged; // until one of its entities is written
                mapped.push(r.source_id.clone());
            }
        }
    }

    // 4. Crosswalk: lock the links this batch may update; give every entity and
    //    reference without one a canonical id (stored with the upsert in step 8,
    //    so a new link is written once).
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
    let kinds: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let sids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let mut links: HashMap<(EntityKind, String), Link> = HashMap::new();
    for r in sqlx::query(
        "select s.entity_type, s.source_id, s.canonical_id, s.row_hash, s.record_hash, s.mapping_version_id,
                s.source_modified_at, s.raw_page_id, s.record_ordinal
         from unnest($2::text[], $3::text[]) as u(et, sid)
         join source_link s on s.connection = $1 and s.entity_type = u.et and s.source_id = u.sid
         order by s.entity_type, s.source_id for update of s",
    )
    .bind(ctx.connection)
    .bind(&kinds)
    .bind(&sids)
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
                is_new: false,
            },
        );
    }

    let missing: Vec<&(EntityKind, String)> =
        keys.iter().filter(|k| !links.contains_key(*k)).collect();
    let new_ids: Vec<i64> =
        sqlx::query_scalar("select nextval('canonical_id_seq') from generate_series(1, $1)")
            .bind(missing.len() as i32)
            .fetch_all(&mut **tx)
            .await?;
    for (k, id) in missing.into_iter().zip(new_ids) {
        links.insert(
            k.clone(),
            Link {
                canonical_id: id,
                row_hash: None,
                record_hash: None,
                mapping_id: None,
                version: None,
                is_new: true,
            },
        );
    }

    // 5. Decide: write, bookkeep (same output, new record hash or mapping), or skip.
    let mut writes: Vec<&Cand> = Vec::new();
    let mut bookkeep: Vec<&Cand> = Vec::new();
    for (key, c) in &cands {
        let link = &links[key];
        if link.version.is_some_and(|v| v > c.version) {
            continue; // a newer version of this entity is already stored
        }
        if link.row_hash.as_deref() == Some(&c.row_hash[..]) {
            let rec_hash = recs[c.rec].hash;
            if link.mapping_id != Some(ctx.mapping_id)
                || link.record_hash.as_deref() != Some(&rec_hash[..])
            {
                bookkeep.push(c);
            }
        } else {
            writes.push(c);
        }
    }
    for c in &writes {
        recs[c.rec].status = Status::Changed;
    }

    // 6. One derivation per changed record.
    let changed: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i].status == Status::Changed)
        .collect();
    let deriv_ids: Vec<i64> =
        sqlx::query_scalar("select nextval('derivation_id_seq') from generate_series(1, $1)")
            .bind(changed.len() as i32)
            .fetch_all(&mut **tx)
            .await?;
    let deriv_of: HashMap<usize, i64> = changed
        .iter()
        .copied()
        .zip(deriv_ids.iter().copied())
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
        .bind(&deriv_ids)
        .bind(changed.iter().map(|&i| recs[i].page_id).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].ordinal).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].hash.to_vec()).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].source_id.clone()).collect::<Vec<_>>())
        .bind(changed.iter().map(|&i| recs[i].modified).collect::<Vec<_>>())
        .bind(ctx.mapping_id)
        .execute(&mut **tx)
        .await?;
    }

    // 7. Entity rows, set-based per kind; the diff is computed against the stored rows first.
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
        if want_diff {
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
        upsert_rows(tx, kind, &of_kind, &links, &deriv_of, ctx.mapping_id).await?;
    }

    // 8. Crosswalk state in one upsert: new links (entities and references) are
    //    inserted with their ids; written entities get their new version and
    //    provenance; unchanged ones only their record hash and mapping version.
    struct LinkWrite<'c> {
        key: (EntityKind, &'c str),
        cand: Option<&'c Cand>,
        full: bool,
    }
    let mut upd: Vec<LinkWrite> = writes
        .iter()
        .map(|c| LinkWrite {
            key: (c.row.kind, c.row.source_id()),
            cand: Some(*c),
            full: true,
        })
        .chain(bookkeep.iter().map(|c| LinkWrite {
            key: (c.row.kind, c.row.source_id()),
            cand: Some(*c),
            full: false,
        }))
        .collect();
    let written: std::collections::HashSet<(EntityKind, &str)> =
        upd.iter().map(|w| w.key).collect();
    for (k, l) in &links {
        if l.is_new && !written.contains(&(k.0, k.1.as_str())) {
            upd.push(LinkWrite {
                key: (k.0, k.1.as_str()),
                cand: None,
                full: false,
            });
        }
    }
    if !upd.is_empty() {
        let link = |w: &LinkWrite| &links[&(w.key.0, w.key.1.to_owned())];
        sqlx::query(
            "insert into source_link as s (entity_type, connection, source_id, canonical_id, record_hash, mapping_version_id,
                                           row_hash, derivation_id, source_modified_at, raw_page_id, record_ordinal)
             select u.et, $1, u.sid, u.cid, u.rh, u.mv, u.row_hash, u.deriv, u.modified, u.page, u.ord
             from unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::int[], $7::bytea[], $8::bigint[],
                         $9::timestamptz[], $10::bigint[], $11::int[])
                  as u(et, sid, cid, rh, mv, row_hash, deriv, modified, page, ord)
             on conflict (entity_type, connection, source_id) do update set
                record_hash = coalesce(excluded.record_hash, s.record_hash),
                mapping_version_id = coalesce(excluded.mapping_version_id, s.mapping_version_id),
                row_hash = case when excluded.derivation_id is not null then excluded.row_hash else s.row_hash end,
                derivation_id = coalesce(excluded.derivation_id, s.derivation_id),
                source_modified_at = case when excluded.derivation_id is not null then excluded.source_modified_at else s.source_modified_at end,
                raw_page_id = coalesce(excluded.raw_page_id, s.raw_page_id),
                record_ordinal = coalesce(excluded.record_ordinal, s.record_ordinal)",
        )
        .bind(ctx.connection)
        .bind(upd.iter().map(|w| w.key.0.as_str()).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.key.1).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| link(w).canonical_id).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.map(|c| recs[c.rec].hash.to_vec())).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.map(|_| ctx.mapping_id)).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.filter(|_| w.full).map(|c| c.row_hash.to_vec())).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.filter(|_| w.full).map(|c| deriv_of[&c.rec])).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.filter(|_| w.full).and_then(|c| c.version.0)).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.filter(|_| w.full).map(|c| c.version.1)).collect::<Vec<_>>())
        .bind(upd.iter().map(|w| w.cand.filter(|_| w.full).map(|c| c.version.2)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }

    // 9. Dead letters: records that map now close their open dead letters (a fixed
    //    mapping or source), then this batch's failures are recorded, once per
    //    record and mapping version.
    if !mapped.is_empty() {
        sqlx::query(
            "update dead_letter set status = 'resolved'
             where status = 'open' and connection = $1 and stream = $2 and source_id = any($3)",
        )
        .bind(ctx.connection)
        .bind(ctx.stream)
        .bind(&mapped)
        .execute(&mut **tx)
        .await?;
    }
    if !dead.is_empty() {
        sqlx::query(
            "insert into dead_letter (connection, stream, raw_page_id, record_ordinal, source_id, error_class, message, mapping_version_id)
             select $1, $2, page, ord, sid, class, msg, $8
             from unnest($3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[]) as u(page, ord, sid, class, msg)
             on conflict do nothing",
        )
        .bind(ctx.connection)
        .bind(ctx.stream)
        .bind(dead.iter().map(|d| d.page_id).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.ordinal).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.source_id.clone()).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.class).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
        .bind(ctx.mapping_id)
        .execute(&mut **tx)
        .await?;
    }

    // 10. Pages are loaded, with counts that add up.
    let mut out = BatchOutcome {
        diff,
        ..Default::default()
    };
    for (page_id, a, b) in page_of {
        let mut c = Counts::default();
        for r in &recs[a..b] {
            match r.status {
                Status::Changed => c.changed += 1,
                Status::Dead => c.dead += 1,
                Status::Unchanged | Status::Pending => c.unchanged += 1,
            }
        }
        out.total.add(c);
        out.per_page.push((page_id, c));
    }
    sqlx::query(
        "update raw_page p set loaded_at = now(), records_changed = u.c, records_unchanged = u.u, records_dead = u.d
         from unnest($1::bigint[], $2::int[], $3::int[], $4::int[]) as u(id, c, u, d) where p.id = u.id",
    )
    .bind(out.per_page.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(out.per_page.iter().map(|p| p.1.changed as i32).collect::<Vec<_>>())
    .bind(out.per_page.iter().map(|p| p.1.unchanged as i32).collect::<Vec<_>>())
    .bind(out.per_page.iter().map(|p| p.1.dead as i32).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(out)
}

/// The SQL type of a field's column.
fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "text",
        FieldType::Bool => "boolean",
        FieldType::Date => "date",
        FieldType::Timestamp => "timestamptz",
        FieldType::Decimal => "numeric",
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

/// Writes entity rows of one kind in one statement: one text array per column,
/// cast to the column's type (cheaper for Postgres than a JSON document).
async fn upsert_rows(
    tx: &mut Transaction<'_, Postgres>,
    kind: EntityKind,
    rows: &[&Cand],
    links: &HashMap<(EntityKind, String), Link>,
    deriv_of: &HashMap<usize, i64>,
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
            prov_field_src = null, row_hash = excluded.row_hash,
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
                .map(|c| column_text(f.ty, &c.row.values[i], links))
                .collect::<Vec<_>>(),
        );
    }
    q.bind(rows.iter().map(|c| deriv_of[&c.rec]).collect::<Vec<_>>())
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
