//! `explain`: where every field of a canonical row came from.

use canonical_model::{EntityKind, FieldType};
use connector_core::RawStore;
use serde::Serialize;
use sqlx::{PgPool, Row};

/// The provenance of one field.
#[derive(Debug, Clone, Serialize)]
pub struct FieldExplain {
    pub field: String,
    pub value: serde_json::Value,
    pub connection: String,
    pub raw_object_key: String,
    pub raw_page_id: i64,
    pub record_position: i32,
    /// The rule's pointer that yielded the value, relative to the record.
    pub json_pointer: Option<String>,
    /// The same pointer from the root of the raw object.
    pub object_pointer: Option<String>,
    pub source_value: Option<serde_json::Value>,
    /// Set when the raw object can no longer be read (`missing`, `corrupt`):
    /// the provenance stands, the source value cannot be shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_object_problem: Option<String>,
    pub transform: Option<String>,
    pub mapping: String,
    pub mapping_version: String,
    pub fetched_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub entity: String,
    pub id: i64,
    pub source_id: String,
    /// Set when the row is (or was) soft-deleted: what said so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
    /// A journal entry whose live lines do not sum to zero: the sums per
    /// currency (`journal_entry.imbalance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imbalance: Option<serde_json::Value>,
    pub fields: Vec<FieldExplain>,
}

/// The provenance of a deletion: a tombstone (the raw page and position
/// that said so) or a sweep (the complete run that no longer listed it).
#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    /// `None` when a newer record revived the row since.
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub connection: String,
    /// `tombstone` or `sweep`.
    pub by: &'static str,
    pub stream: Option<String>,
    pub raw_page_id: Option<i64>,
    pub record_position: Option<i32>,
    pub raw_object_key: Option<String>,
    pub run_id: Option<i64>,
}

/// Checks the entity type and field a command line names, before anything
/// is read: a mistake there is a usage error naming the valid ones.
pub fn check_usage(entity: &str, field: Option<&str>) -> Result<(), String> {
    let kind: EntityKind = entity.parse()?;
    if let Some(f) = field
        && kind.field(f).is_none()
    {
        let names: Vec<_> = kind.fields().iter().map(|f| f.name).collect();
        return Err(format!(
            "{kind} has no field {f:?} (fields: {})",
            names.join(", ")
        ));
    }
    Ok(())
}

/// Explains `entity` `id` (canonical id or the source's own id), all fields or one.
pub async fn explain(
    pool: &PgPool,
    store: &RawStore,
    entity: &str,
    id: &str,
    field: Option<&str>,
) -> anyhow::Result<Explanation> {
    explain_in(pool, store, entity, id, field, None).await
}

/// Like [`explain`]; with `connection`, `id` is that connection's source id.
pub async fn explain_in(
    pool: &PgPool,
    store: &RawStore,
    entity: &str,
    id: &str,
    field: Option<&str>,
    connection: Option<&str>,
) -> anyhow::Result<Explanation> {
    check_usage(entity, field).map_err(anyhow::Error::msg)?;
    let kind: EntityKind = entity.parse().map_err(anyhow::Error::msg)?;
    let table = kind.as_str();
    let row = match connection {
        None => sqlx::query(sqlx::AssertSqlSafe(format!(
            "select to_jsonb(t) from {table} t where t.id::text = $1
             union all
             select to_jsonb(t) from {table} t join source_link l on l.canonical_id = t.id and l.entity_type = $2
             where l.source_id = $1 and t.id::text <> $1
             limit 2"
        )))
        .bind(id)
        .bind(table)
        .fetch_all(pool)
        .await?,
        Some(c) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "select to_jsonb(t) from {table} t join source_link l on l.canonical_id = t.id and l.entity_type = $2
             where l.source_id = $1 and l.connection = $3"
        )))
        .bind(id)
        .bind(table)
        .bind(c)
        .fetch_all(pool)
        .await?,
    };
    let row: serde_json::Value = match row.len() {
        0 if connection.is_some() => anyhow::bail!(
            "no {kind} with source id {id:?} in connection {:?}",
            connection.unwrap_or_default()
        ),
        0 => anyhow::bail!("no {kind} with canonical or source id {id:?}"),
        1 => row[0].get(0),
        _ => {
            let mut matches: Vec<String> = sqlx::query_scalar(
                "select 'connection ' || l.connection || ': canonical id ' || l.canonical_id
                 from source_link l where l.entity_type = $2 and l.source_id = $1 order by 1",
            )
            .bind(id)
            .bind(table)
            .fetch_all(pool)
            .await?;
            if id.parse::<i64>().is_ok() {
                matches.insert(0, format!("canonical id {id}"));
            }
            anyhow::bail!(
                "{id:?} matches several {kind} rows ({}); use the canonical id, or name the \
                 source's connection with --connection",
                matches.join("; ")
            )
        }
    };
    let canonical_id = row["id"].as_i64().unwrap_or_default();
    let contributors: Vec<i64> =
        serde_json::from_value(row["prov_contributors"].clone()).unwrap_or_default();
    let field_src: Option<Vec<Option<i16>>> =
        serde_json::from_value(row["prov_field_src"].clone()).ok();
    let mut fields = Vec::new();
    let mut record_cache: std::collections::HashMap<
        (i64, i32),
        Result<Option<serde_json::Value>, String>,
    > = Default::default();
    for (i, def) in kind.fields().iter().enumerate() {
        if field.is_some_and(|f| f != def.name) {
            continue;
        }
        let value = row
            .get(def.column())
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if value.is_null() && field.is_none() {
            continue;
        }
        let k = field_src
            .as_ref()
            .and_then(|v| v.get(i).copied().flatten())
            .unwrap_or(0) as usize;
        let Some(&deriv) = contributors.get(k) else {
            continue;
        };
        let d = sqlx::query(
            "select d.connection, d.raw_page_id, d.record_ordinal, p.object_key, p.record_path, p.fetched_at,
                    m.mapper, m.version, r.pointers, r.transform
             from derivation d join raw_page p on p.id = d.raw_page_id
             join mapping_version m on m.id = d.mapping_version_id
             left join mapping_field_rule r on r.mapping_version_id = m.id and r.entity_type = $2 and r.field = $3
             where d.id = $1",
        )
        .bind(deriv)
        .bind(table)
        .bind(def.name)
        .fetch_one(pool)
        .await?;
        let page_id: i64 = d.get(1);
        let ordinal: i32 = d.get(2);
        let key: String = d.get(3);
        let record_path: String = d.get(4);
        let pointers: Option<Vec<String>> = d.get(8);
        if let std::collections::hash_map::Entry::Vacant(slot) =
            record_cache.entry((page_id, ordinal))
        {
            slot.insert(match store.get_verified(&key).await? {
                Ok(body) => Ok(record_at(&body, &record_path, ordinal)),
                Err(problem) => Err(problem.as_str().to_owned()),
            });
        }
        let (record, raw_object_problem) = match &record_cache[&(page_id, ordinal)] {
            Ok(v) => (v.as_ref(), None),
            Err(p) => (None, Some(p.clone())),
        };
        let transform: Option<String> = d.get(9);
        let located = locate(
            record,
            pointers.as_deref().unwrap_or_default(),
            transform.as_deref(),
        );
        let shown = match (def.ty, &value) {
            (FieldType::Ref(target), serde_json::Value::Number(n)) => {
                serde_json::json!({"canonical_id": n, "entity": target.as_str()})
            }
            _ => value,
        };
        fields.push(FieldExplain {
            field: def.name.to_owned(),
            value: shown,
            connection: d.get(0),
            raw_object_key: key,
            raw_page_id: page_id,
            record_position: ordinal,
            object_pointer: located.as_ref().and_then(|(p, _)| {
                let p = p.split(", ").next().unwrap_or(p);
                // Records of an array sit at their position; a body that is
                // the record at the root; keyed records under a key.
                if record_path == "body:" {
                    Some(p.to_owned())
                } else if record_path.starts_with("values:") {
                    None
                } else {
                    Some(format!("{record_path}/{ordinal}{p}"))
                }
            }),
            json_pointer: located
                .as_ref()
                .map(|(p, _)| p.clone())
                .or_else(|| pointers.as_ref().map(|p| p.join(" | "))),
            source_value: located.map(|(_, v)| v),
            raw_object_problem,
            transform,
            mapping: d.get(6),
            mapping_version: d.get(7),
            fetched_at: d.get(5),
        });
    }
    if let Some(f) = field
        && fields.is_empty()
    {
        anyhow::bail!("{kind} {id}: field {f} has no provenance");
    }
    let source_id = row["source_id"].as_str().unwrap_or_default().to_owned();
    let deletion = sqlx::query(
        "select l.connection, l.deleted_at, l.deleted_page_id, l.deleted_ordinal, l.deleted_run_id,
                p.object_key, coalesce(l.deleted_stream, p.stream, r.stream)
         from source_link l
         left join raw_page p on p.id = l.deleted_page_id
         left join sync_run r on r.id = l.deleted_run_id
         where l.canonical_id = $1 and l.entity_type = $2
           and (l.deleted_page_id is not null or l.deleted_run_id is not null)
         order by l.deleted_at desc nulls last limit 1",
    )
    .bind(canonical_id)
    .bind(table)
    .fetch_optional(pool)
    .await?
    .map(|d| Deletion {
        connection: d.get(0),
        deleted_at: d.get(1),
        by: if d.get::<Option<i64>, _>(2).is_some() {
            "tombstone"
        } else {
            "sweep"
        },
        raw_page_id: d.get(2),
        record_position: d.get(3),
        run_id: d.get(4),
        raw_object_key: d.get(5),
        stream: d.get(6),
    });
    Ok(Explanation {
        entity: table.to_owned(),
        id: canonical_id,
        source_id,
        deletion,
        imbalance: row.get("imbalance").filter(|v| !v.is_null()).cloned(),
        fields,
    })
}

/// Record `ordinal` of a stored page body, whatever the page's shape (an
/// array at a pointer, an object keyed by id, the body itself).
pub(crate) fn record_at(body: &[u8], record_path: &str, ordinal: i32) -> Option<serde_json::Value> {
    let text = connector_core::records::readable(body, None);
    let split = connector_core::records::split_records(&text, record_path, None).ok()?;
    let raw = split.records.get(usize::try_from(ordinal).ok()?)?;
    serde_json::from_str(raw.get()).ok()
}

impl std::fmt::Display for Explanation {
    /// Fields grouped under the raw record they came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {} (source id {})",
            self.entity, self.id, self.source_id
        )?;
        if let Some(d) = &self.deletion {
            let what = match (d.by, d.raw_page_id, d.run_id) {
                ("tombstone", Some(page), _) => format!(
                    "a tombstone from {} stream {}: record #{} of raw page {page} (object {})",
                    d.connection,
                    d.stream.as_deref().unwrap_or("?"),
                    d.record_position.unwrap_or(0),
                    d.raw_object_key.as_deref().unwrap_or("?"),
                ),
                (_, _, Some(run)) => format!(
                    "the sweep of run {run} ({} stream {}): its complete pull no longer listed it",
                    d.connection,
                    d.stream.as_deref().unwrap_or("?"),
                ),
                _ => "a deletion".to_owned(),
            };
            match d.deleted_at {
                Some(at) => writeln!(
                    f,
                    "  DELETED {} by {what}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )?,
                None => writeln!(
                    f,
                    "  revived: deleted earlier by {what}; a newer record wrote it again"
                )?,
            }
        }
        if let Some(off) = &self.imbalance {
            writeln!(
                f,
                "  UNBALANCED: its live lines sum to {off} (non-zero sums per currency), not zero"
            )?;
        }
        let width = self.fields.iter().map(|x| x.field.len()).max().unwrap_or(0);
        let mut last = None;
        for x in &self.fields {
            let from = (
                &x.connection,
                x.raw_page_id,
                x.record_position,
                &x.mapping,
                &x.mapping_version,
            );
            if last != Some(from) {
                writeln!(
                    f,
                    "  from {}, record #{} of raw page {} (object {}), fetched {}, mapping {} v{}",
                    x.connection,
                    x.record_position,
                    x.raw_page_id,
                    x.raw_object_key,
                    x.fetched_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    x.mapping,
                    x.mapping_version,
                )?;
                last = Some(from);
            }
            write!(
                f,
                "    {:width$} = {}  <- {} ({})",
                x.field,
                x.value,
                x.json_pointer.as_deref().unwrap_or("?"),
                x.transform.as_deref().unwrap_or("?"),
            )?;
            match (&x.source_value, &x.raw_object_problem) {
                (_, Some(p)) => writeln!(f, ", source value unavailable (raw object {p})")?,
                (Some(v), None) if *v != x.value => writeln!(f, ", source value {v}")?,
                _ => writeln!(f)?,
            }
        }
        Ok(())
    }
}

/// Where a field's value is in its record, as `(pointer, source value)`: the
/// first rule pointer that holds a value; every pointer and the value at each
/// (an array) for a transform that reads them all (a compound key, a signed
/// amount); the entry of the configured language for a localized text.
fn locate(
    record: Option<&serde_json::Value>,
    pointers: &[String],
    transform: Option<&str>,
) -> Option<(String, serde_json::Value)> {
    let record = record?;
    let t = transform.and_then(|t| t.parse::<canonical_model::Transform>().ok());
    match t {
        Some(t @ canonical_model::Transform::Localized(_)) => {
            let (list, text) = (pointers.first()?, pointers.get(1)?);
            let (list, l) = canonical_model::resolve(record, list)?;
            let (at, entry) = t.pick_language(l)?;
            let v = entry.pointer(text).filter(|v| !v.is_null())?;
            Some((format!("{list}{at}{text}"), v.clone()))
        }
        Some(t) if t.reads_all_pointers() => {
            let values: Vec<serde_json::Value> = pointers
                .iter()
                .map(|p| {
                    canonical_model::resolve(record, p)
                        .map_or(serde_json::Value::Null, |(_, v)| v.clone())
                })
                .collect();
            // Each pointer as it resolved (the alternative that held a value).
            let used: Vec<&str> = pointers
                .iter()
                .map(|p| canonical_model::resolve(record, p).map_or(p.as_str(), |(at, _)| at))
                .collect();
            values
                .iter()
                .any(|v| !v.is_null())
                .then(|| (used.join(", "), serde_json::Value::Array(values)))
        }
        _ => pointers.iter().find_map(|p| {
            record
                .pointer(p)
                .filter(|v| !v.is_null() && !t.is_some_and(|t| t.is_blank(v)))
                .map(|v| (p.clone(), v.clone()))
        }),
    }
}
