//! Canonical entities and their field catalogue.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::CanonValue;

/// The kinds of canonical entity. Each has one table of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Worker,
    OrgUnit,
    Location,
}

/// The type of a canonical field, which is also its column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Bool,
    Date,
    Timestamp,
    Decimal,
    /// A canonical id of another entity (column `<name>_id bigint`).
    Ref(EntityKind),
}

/// One field of an entity: its name (as in mapping rules and `explain`) and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
}

impl FieldDef {
    const fn new(name: &'static str, ty: FieldType) -> Self {
        Self { name, ty }
    }

    /// The column that stores the field: the name, or `<name>_id` for references.
    pub fn column(&self) -> String {
        match self.ty {
            FieldType::Ref(_) => format!("{}_id", self.name),
            _ => self.name.to_owned(),
        }
    }
}

use FieldType as T;

const WORKER_FIELDS: &[FieldDef] = &[
    FieldDef::new("source_id", T::Text),
    FieldDef::new("worker_number", T::Text),
    FieldDef::new("display_name", T::Text),
    FieldDef::new("work_email", T::Text),
    FieldDef::new("work_phone", T::Text),
    FieldDef::new("business_title", T::Text),
    FieldDef::new("is_manager", T::Bool),
    FieldDef::new("worker_type", T::Text),
    FieldDef::new("job_profile", T::Text),
    FieldDef::new("time_type", T::Text),
    FieldDef::new("hire_date", T::Date),
    FieldDef::new("termination_date", T::Date),
    FieldDef::new("employment_status", T::Text),
    FieldDef::new("fte", T::Decimal),
    FieldDef::new("company", T::Text),
    FieldDef::new("cost_center", T::Text),
    FieldDef::new("org_unit", T::Ref(EntityKind::OrgUnit)),
    FieldDef::new("location", T::Ref(EntityKind::Location)),
    FieldDef::new("manager", T::Ref(EntityKind::Worker)),
    FieldDef::new("source_modified_at", T::Timestamp),
];

const ORG_UNIT_FIELDS: &[FieldDef] = &[
    FieldDef::new("source_id", T::Text),
    FieldDef::new("name", T::Text),
    FieldDef::new("org_type", T::Text),
];

const LOCATION_FIELDS: &[FieldDef] = &[
    FieldDef::new("source_id", T::Text),
    FieldDef::new("name", T::Text),
    FieldDef::new("country", T::Text),
];

impl EntityKind {
    pub const ALL: [EntityKind; 3] = [
        EntityKind::Worker,
        EntityKind::OrgUnit,
        EntityKind::Location,
    ];

    /// The name used in tables, the ledger and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntityKind::Worker => "worker",
            EntityKind::OrgUnit => "org_unit",
            EntityKind::Location => "location",
        }
    }

    /// Every canonical field of this kind, in column order. `source_id` is first.
    pub fn fields(&self) -> &'static [FieldDef] {
        match self {
            EntityKind::Worker => WORKER_FIELDS,
            EntityKind::OrgUnit => ORG_UNIT_FIELDS,
            EntityKind::Location => LOCATION_FIELDS,
        }
    }

    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields().iter().find(|f| f.name == name)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = EntityKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown entity {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// A person who works for the organisation (employee or contingent worker).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub source_id: String,
    pub worker_number: Option<String>,
    pub display_name: Option<String>,
    pub work_email: Option<String>,
    pub work_phone: Option<String>,
    pub business_title: Option<String>,
    pub is_manager: Option<bool>,
    pub worker_type: Option<String>,
    pub job_profile: Option<String>,
    pub time_type: Option<String>,
    pub hire_date: Option<NaiveDate>,
    /// The last day of employment of a terminated worker (a terminated
    /// worker is not deleted: deletion is the source removing the record).
    pub termination_date: Option<NaiveDate>,
    /// The source's employment status as it writes it (`Active`, `Inactive`).
    pub employment_status: Option<String>,
    /// Full-time equivalent as an exact fraction (1 = full time).
    pub fte: Option<Decimal>,
    pub company: Option<String>,
    pub cost_center: Option<String>,
    /// Source id of the worker's primary organisation.
    pub org_unit: Option<String>,
    /// Source id of the worker's primary location.
    pub location: Option<String>,
    /// Source id of the worker's manager (another worker).
    pub manager: Option<String>,
    pub source_modified_at: Option<DateTime<Utc>>,
}

/// An organisational unit (supervisory organisation, department, team).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUnit {
    pub source_id: String,
    pub name: Option<String>,
    pub org_type: Option<String>,
}

/// A work location (site, office).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub source_id: String,
    pub name: Option<String>,
    pub country: Option<String>,
}

/// Any canonical entity a mapper can produce.
#[allow(clippy::large_enum_variant)] // short-lived, turned into a row at once
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    Worker(Worker),
    OrgUnit(OrgUnit),
    Location(Location),
}

/// An entity as a row: values aligned with [`EntityKind::fields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRow {
    pub kind: EntityKind,
    pub values: Vec<Option<CanonValue>>,
}

fn text(v: Option<String>) -> Option<CanonValue> {
    v.map(CanonValue::Text)
}
fn reference(v: Option<String>) -> Option<CanonValue> {
    v.map(CanonValue::Ref)
}

impl Entity {
    pub fn kind(&self) -> EntityKind {
        match self {
            Entity::Worker(_) => EntityKind::Worker,
            Entity::OrgUnit(_) => EntityKind::OrgUnit,
            Entity::Location(_) => EntityKind::Location,
        }
    }

    /// The entity's row form, the one that is hashed and stored.
    pub fn into_row(self) -> CanonicalRow {
        let kind = self.kind();
        let values = match self {
            Entity::Worker(w) => vec![
                Some(CanonValue::Text(w.source_id)),
                text(w.worker_number),
                text(w.display_name),
                text(w.work_email),
                text(w.work_phone),
                text(w.business_title),
                w.is_manager.map(CanonValue::Bool),
                text(w.worker_type),
                text(w.job_profile),
                text(w.time_type),
                w.hire_date.map(CanonValue::Date),
                w.termination_date.map(CanonValue::Date),
                text(w.employment_status),
                w.fte.map(CanonValue::Decimal),
                text(w.company),
                text(w.cost_center),
                reference(w.org_unit),
                reference(w.location),
                reference(w.manager),
                w.source_modified_at.map(CanonValue::Timestamp),
            ],
            Entity::OrgUnit(o) => vec![
                Some(CanonValue::Text(o.source_id)),
                text(o.name),
                text(o.org_type),
            ],
            Entity::Location(l) => vec![
                Some(CanonValue::Text(l.source_id)),
                text(l.name),
                text(l.country),
            ],
        };
        debug_assert_eq!(values.len(), kind.fields().len());
        CanonicalRow { kind, values }
    }
}

impl CanonicalRow {
    pub fn source_id(&self) -> &str {
        match &self.values[0] {
            Some(CanonValue::Text(s)) => s,
            _ => "",
        }
    }

    pub fn get(&self, field: &str) -> Option<&CanonValue> {
        let i = self.kind.fields().iter().position(|f| f.name == field)?;
        self.values[i].as_ref()
    }

    /// Checks every value against the canonical domain ([`CanonValue::check`]);
    /// the source id must be a non-empty id. The error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (def, v) in self.kind.fields().iter().zip(&self.values) {
            if let Some(v) = v {
                v.check().map_err(|m| (def.name, m))?;
            }
        }
        let id = self.source_id();
        if id.is_empty() {
            return Err(("source_id", "the source id is empty".into()));
        }
        if id.len() > crate::MAX_ID_BYTES {
            return Err((
                "source_id",
                format!(
                    "the source id is {} bytes long, over the limit of {}",
                    id.len(),
                    crate::MAX_ID_BYTES
                ),
            ));
        }
        Ok(())
    }

    /// SHA-256 over the row's canonical values: equal rows hash equal, whatever
    /// mapping version produced them.
    pub fn row_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.kind.as_str());
        for v in &self.values {
            match v {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    let s = v.to_canonical_string();
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s);
                }
            }
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_align_with_the_catalogue() {
        for e in [
            Entity::Worker(Worker {
                source_id: "w".into(),
                ..Default::default()
            }),
            Entity::OrgUnit(OrgUnit {
                source_id: "o".into(),
                ..Default::default()
            }),
            Entity::Location(Location {
                source_id: "l".into(),
                ..Default::default()
            }),
        ] {
            let row = e.into_row();
            assert_eq!(row.values.len(), row.kind.fields().len());
            assert_eq!(row.kind.fields()[0].name, "source_id");
            assert!(!row.source_id().is_empty());
        }
    }

    #[test]
    fn row_hash_sees_every_field_and_null() {
        let a = Entity::Worker(Worker {
            source_id: "w".into(),
            ..Default::default()
        })
        .into_row();
        let b = Entity::Worker(Worker {
            source_id: "w".into(),
            display_name: Some(String::new()),
            ..Default::default()
        })
        .into_row();
        assert_ne!(
            a.row_hash(),
            b.row_hash(),
            "null and empty string must differ"
        );
        assert_eq!(a.row_hash(), a.clone().row_hash());
    }

    #[test]
    fn rows_outside_the_canonical_domain_name_the_field() {
        let bad = |w: Worker| Entity::Worker(w).into_row().check().unwrap_err();
        let base = || Worker {
            source_id: "w".into(),
            ..Default::default()
        };
        let e = bad(Worker {
            work_email: Some("a\u{0}@b".into()),
            ..base()
        });
        assert_eq!(e.0, "work_email");
        assert!(e.1.contains("NUL"), "{e:?}");
        let e = bad(Worker {
            hire_date: NaiveDate::from_ymd_opt(0, 1, 1),
            ..base()
        });
        assert_eq!(e.0, "hire_date");
        let e = bad(Worker {
            source_id: "x".repeat(513),
            ..base()
        });
        assert_eq!(e.0, "source_id");
        let e = bad(Worker {
            manager: Some("m\u{0}".into()),
            ..base()
        });
        assert_eq!(e.0, "manager");
        Entity::Worker(base()).into_row().check().unwrap();
    }

    #[test]
    fn unknown_entity_lists_the_valid_ones() {
        let e = "wrker".parse::<EntityKind>().unwrap_err();
        assert!(e.contains("worker, org_unit, location"), "{e}");
    }
}
