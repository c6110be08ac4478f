//! Mapping versions, field rules and the pure [`Mapper`] trait.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use crate::{CanonValue, Entity, EntityKind, FieldType, Transform};

/// Where one canonical field comes from: JSON pointer(s) into the source record
/// (the first that is present and non-null wins) and the transform applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldRule {
    pub entity: EntityKind,
    pub field: &'static str,
    pub pointers: Vec<String>,
    pub transform: Transform,
}

impl FieldRule {
    pub fn new(
        entity: EntityKind,
        field: &'static str,
        pointers: &[&str],
        transform: Transform,
    ) -> Self {
        Self {
            entity,
            field,
            pointers: pointers.iter().map(|p| (*p).to_owned()).collect(),
            transform,
        }
    }

    /// The first pointer that yields a value in `record`, with that value:
    /// not null, and not blank under the rule's transform (a blank
    /// `SupplierFullName` falls through to `SupplierName`).
    pub fn locate<'r>(&self, record: &'r Value) -> Option<(&str, &'r Value)> {
        self.pointers.iter().find_map(|p| {
            record
                .pointer(p)
                .filter(|v| !v.is_null() && !self.transform.is_blank(v))
                .map(|v| (p.as_str(), v))
        })
    }
}

/// The value at `pointer` in `record`, non-null. A pointer of a transform
/// that reads every pointer (or of `localized`'s list) may name
/// alternatives, `/A|/B`: the first that holds a value (an OData property
/// name never contains `|`). Returns the pointer that held it.
pub fn resolve<'p, 'v>(record: &'v Value, pointer: &'p str) -> Option<(&'p str, &'v Value)> {
    pointer
        .split('|')
        .find_map(|p| record.pointer(p).filter(|v| !v.is_null()).map(|v| (p, v)))
}

/// A named, versioned set of field rules. Its code hash covers every rule, so a
/// change to any pointer or transform without a version bump is detected when
/// the version is registered.
#[derive(Clone, Debug)]
pub struct MappingVersion {
    pub mapper: String,
    pub version: String,
    rules: Vec<FieldRule>,
    index: HashMap<(EntityKind, &'static str), usize>,
    code_hash: String,
}

impl MappingVersion {
    /// Builds a mapping version; fails if a rule names an unknown field, a field
    /// has two rules, a pointer is not a JSON pointer, or the transform does not
    /// produce the field's type.
    pub fn new(mapper: &str, version: &str, rules: Vec<FieldRule>) -> Result<Self, String> {
        let mut index = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let def = r.entity.field(r.field).ok_or_else(|| {
                format!(
                    "mapping {mapper} {version}: {} has no field {:?}",
                    r.entity, r.field
                )
            })?;
            let alternatives_ok = |p: &str| {
                p.split('|').all(|a| a.starts_with('/'))
                    && (!p.contains('|')
                        || r.transform.reads_all_pointers()
                        || matches!(r.transform, Transform::Localized(_)))
            };
            if r.pointers.is_empty() || r.pointers.iter().any(|p| !alternatives_ok(p)) {
                return Err(format!(
                    "mapping {mapper} {version}: rule for {}.{} needs JSON pointers starting with '/'",
                    r.entity, r.field
                ));
            }
            let fits = matches!(
                (def.ty, r.transform),
                (
                    FieldType::Text,
                    Transform::Text
                        | Transform::TextOrBlank
                        | Transform::Lowercase
                        | Transform::Uppercase
                        | Transform::Key
                        | Transform::Localized(_)
                ) | (FieldType::Bool, Transform::Bool | Transform::Flag)
                    | (FieldType::Date, Transform::Date | Transform::DateOrBlank)
                    | (
                        FieldType::Timestamp,
                        Transform::Timestamp | Transform::TimestampIn(_)
                    )
                    | (
                        FieldType::Decimal | FieldType::Money(_),
                        Transform::Decimal | Transform::SignedBy | Transform::DebitMinusCredit
                    )
                    | (FieldType::Currency, Transform::Currency)
            ) || matches!((def.ty, r.transform),
                    (FieldType::Ref(a), Transform::Ref(b) | Transform::KeyRef(b)) if a == b);
            let arity = match r.transform {
                Transform::SignedBy | Transform::DebitMinusCredit | Transform::Localized(_) => {
                    Some(2)
                }
                _ => None,
            };
            if arity.is_some_and(|n| r.pointers.len() != n) {
                return Err(format!(
                    "mapping {mapper} {version}: transform {} of {}.{} reads exactly two pointers",
                    r.transform.name(),
                    r.entity,
                    r.field
                ));
            }
            if !fits {
                return Err(format!(
                    "mapping {mapper} {version}: transform {} does not produce {}.{} ({:?})",
                    r.transform.name(),
                    r.entity,
                    r.field,
                    def.ty
                ));
            }
            if index.insert((r.entity, r.field), i).is_some() {
                return Err(format!(
                    "mapping {mapper} {version}: two rules for {}.{}",
                    r.entity, r.field
                ));
            }
        }
        let mut h = Sha256::new();
        h.update(mapper);
        h.update([0]);
        for r in &rules {
            h.update(serde_json::to_vec(r).unwrap_or_default());
            h.update([0]);
        }
        let code_hash = hex::encode(h.finalize());
        Ok(Self {
            mapper: mapper.to_owned(),
            version: version.to_owned(),
            rules,
            index,
            code_hash,
        })
    }

    pub fn rules(&self) -> &[FieldRule] {
        &self.rules
    }

    pub fn rule(&self, entity: EntityKind, field: &str) -> Option<&FieldRule> {
        self.index.get(&(entity, field)).map(|&i| &self.rules[i])
    }

    /// Hex SHA-256 of the mapper name and every rule.
    pub fn code_hash(&self) -> &str {
        &self.code_hash
    }

    /// Returns a copy with one rule replaced (or added) under a new version: how a
    /// mapping maintainer changes one field.
    pub fn with_rule(&self, version: &str, rule: FieldRule) -> Result<Self, String> {
        let mut rules = self.rules.clone();
        match rules
            .iter_mut()
            .find(|r| r.entity == rule.entity && r.field == rule.field)
        {
            Some(slot) => *slot = rule,
            None => rules.push(rule),
        }
        Self::new(&self.mapper, version, rules)
    }

    /// A reader that extracts fields of `record` through this version's rules.
    pub fn reader<'a>(&'a self, record: &'a Value) -> RecordReader<'a> {
        RecordReader {
            mapping: self,
            record,
        }
    }
}

/// Why a record could not be mapped: the entity, field and pointer concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{entity}.{field} at {pointer}: {message}")]
    BadValue {
        entity: EntityKind,
        field: String,
        pointer: String,
        message: String,
    },
    #[error("{entity}.{field} is required but {pointers} is absent or null")]
    Missing {
        entity: EntityKind,
        field: String,
        pointers: String,
    },
    #[error("record is not a JSON object")]
    NotAnObject,
    #[error("mapping has no rule for {entity}.{field}")]
    NoRule { entity: EntityKind, field: String },
}

impl MapError {
    /// The canonical field concerned, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            MapError::BadValue { field, .. }
            | MapError::Missing { field, .. }
            | MapError::NoRule { field, .. } => Some(field),
            MapError::NotAnObject => None,
        }
    }

    /// The JSON pointer(s) into the record concerned, when known.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            MapError::BadValue { pointer, .. } => Some(pointer),
            MapError::Missing { pointers, .. } => Some(pointers),
            _ => None,
        }
    }
}

/// Reads typed field values from one record through a mapping version's rules.
#[derive(Debug, Clone, Copy)]
pub struct RecordReader<'a> {
    mapping: &'a MappingVersion,
    record: &'a Value,
}

impl<'a> RecordReader<'a> {
    /// The transformed value of `entity.field`, `None` when absent or null.
    pub fn value(&self, entity: EntityKind, field: &str) -> Result<Option<CanonValue>, MapError> {
        let rule = self
            .mapping
            .rule(entity, field)
            .ok_or_else(|| MapError::NoRule {
                entity,
                field: field.to_owned(),
            })?;
        if let Transform::Localized(_) = rule.transform {
            // The list, then the text within the entry of the language.
            let (Some(list_at), Some(text_at)) = (rule.pointers.first(), rule.pointers.get(1))
            else {
                return Ok(None);
            };
            let Some((list_at, (at, entry))) = resolve(self.record, list_at)
                .and_then(|(p, l)| rule.transform.pick_language(l).map(|e| (p, e)))
            else {
                return Ok(None);
            };
            let Some(v) = entry.pointer(text_at).filter(|v| !v.is_null()) else {
                return Ok(None);
            };
            if Transform::TextOrBlank.is_blank(v) {
                return Ok(None);
            }
            return Transform::Text
                .apply(v)
                .map(Some)
                .map_err(|e| MapError::BadValue {
                    entity,
                    field: field.to_owned(),
                    pointer: format!("{list_at}{at}{text_at}"),
                    message: e.message,
                });
        }
        if rule.transform.reads_all_pointers() {
            let values: Vec<Option<&Value>> = rule
                .pointers
                .iter()
                .map(|p| resolve(self.record, p).map(|(_, v)| v))
                .collect();
            return rule
                .transform
                .apply_all(&values)
                .map_err(|e| MapError::BadValue {
                    entity,
                    field: field.to_owned(),
                    pointer: rule.pointers.join(", "),
                    message: e.message,
                });
        }
        let Some((pointer, v)) = rule.locate(self.record) else {
            return Ok(None);
        };
        if rule.transform.is_blank(v) {
            return Ok(None);
        }
        rule.transform
            .apply(v)
            .map(Some)
            .map_err(|e| MapError::BadValue {
                entity,
                field: field.to_owned(),
                pointer: pointer.to_owned(),
                message: e.message,
            })
    }

    /// True when the rule for `entity.field` exists and locates a non-null value.
    pub fn present(&self, entity: EntityKind, field: &str) -> bool {
        self.mapping
            .rule(entity, field)
            .is_some_and(|r| r.locate(self.record).is_some())
    }

    pub fn required_text(&self, entity: EntityKind, field: &str) -> Result<String, MapError> {
        self.text(entity, field)?.ok_or_else(|| MapError::Missing {
            entity,
            field: field.to_owned(),
            pointers: self
                .mapping
                .rule(entity, field)
                .map(|r| r.pointers.join(" | "))
                .unwrap_or_default(),
        })
    }

    /// The value of a `Currency` field (an ISO 4217 code).
    pub fn currency(&self, entity: EntityKind, field: &str) -> Result<Option<String>, MapError> {
        self.text(entity, field)
    }

    pub fn text(&self, entity: EntityKind, field: &str) -> Result<Option<String>, MapError> {
        Ok(self.value(entity, field)?.map(|v| match v {
            CanonValue::Text(s) | CanonValue::Ref(s) => s,
            other => other.to_canonical_string(),
        }))
    }

    pub fn bool(&self, entity: EntityKind, field: &str) -> Result<Option<bool>, MapError> {
        Ok(self.value(entity, field)?.and_then(|v| match v {
            CanonValue::Bool(b) => Some(b),
            _ => None,
        }))
    }

    pub fn date(&self, entity: EntityKind, field: &str) -> Result<Option<NaiveDate>, MapError> {
        Ok(self.value(entity, field)?.and_then(|v| match v {
            CanonValue::Date(d) => Some(d),
            _ => None,
        }))
    }

    pub fn timestamp(
        &self,
        entity: EntityKind,
        field: &str,
    ) -> Result<Option<DateTime<Utc>>, MapError> {
        Ok(self.value(entity, field)?.and_then(|v| match v {
            CanonValue::Timestamp(t) => Some(t),
            _ => None,
        }))
    }

    pub fn decimal(&self, entity: EntityKind, field: &str) -> Result<Option<Decimal>, MapError> {
        Ok(self.value(entity, field)?.and_then(|v| match v {
            CanonValue::Decimal(d) => Some(d),
            _ => None,
        }))
    }
}

/// Turns one source record into canonical entities.
///
/// # Contract
/// - Pure and deterministic: the same record and mapping version always give the
///   same entities (no clock, no I/O, no randomness). Replay relies on it.
/// - Every field value is read through [`Mapper::mapping`]'s rules (use
///   [`MappingVersion::reader`]), so the stored rules explain every value.
/// - An error means the record is dead-lettered with the error's message; the
///   rest of the page still loads. Absent optional fields and unknown extra
///   fields are not errors.
/// - The first entity is the record's own entity (its source id is the record's
///   primary key); the others are entities the record references.
pub trait Mapper: Send + Sync + std::fmt::Debug {
    fn mapping(&self) -> &MappingVersion;
    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mv() -> MappingVersion {
        MappingVersion::new(
            "t",
            "1",
            vec![
                FieldRule::new(EntityKind::Worker, "source_id", &["/id"], Transform::Text),
                FieldRule::new(
                    EntityKind::Worker,
                    "work_email",
                    &["/email", "/altEmail"],
                    Transform::Lowercase,
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn first_non_null_pointer_wins() {
        let m = mv();
        let r = json!({"id": "1", "email": null, "altEmail": " A@B.com "});
        assert_eq!(
            m.reader(&r)
                .text(EntityKind::Worker, "work_email")
                .unwrap()
                .as_deref(),
            Some("a@b.com")
        );
        assert_eq!(
            m.rule(EntityKind::Worker, "work_email")
                .unwrap()
                .locate(&r)
                .unwrap()
                .0,
            "/altEmail"
        );
    }

    #[test]
    fn a_blank_value_falls_through_to_the_next_pointer() {
        let m = MappingVersion::new(
            "t",
            "1",
            vec![FieldRule::new(
                EntityKind::Supplier,
                "legal_name",
                &["/SupplierFullName", "/SupplierName"],
                Transform::TextOrBlank,
            )],
        )
        .unwrap();
        let r = json!({"SupplierFullName": " ", "SupplierName": "Gulf Logistics WLL"});
        assert_eq!(
            m.reader(&r)
                .text(EntityKind::Supplier, "legal_name")
                .unwrap()
                .as_deref(),
            Some("Gulf Logistics WLL")
        );
        let none = json!({"SupplierFullName": "", "SupplierName": ""});
        assert_eq!(
            m.reader(&none)
                .text(EntityKind::Supplier, "legal_name")
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_values_name_entity_field_and_pointer() {
        let m = mv();
        let r = json!({"id": 7});
        let e = m
            .reader(&r)
            .required_text(EntityKind::Worker, "source_id")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker.source_id at /id: expected a string, found a number"
        );
        let e = m
            .reader(&json!({}))
            .required_text(EntityKind::Worker, "source_id")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker.source_id is required but /id is absent or null"
        );
    }

    #[test]
    fn invalid_rules_are_refused() {
        let bad_field = FieldRule::new(EntityKind::Worker, "salary", &["/x"], Transform::Text);
        assert!(
            MappingVersion::new("t", "1", vec![bad_field])
                .unwrap_err()
                .contains("no field")
        );
        let bad_type = FieldRule::new(EntityKind::Worker, "hire_date", &["/x"], Transform::Text);
        assert!(
            MappingVersion::new("t", "1", vec![bad_type])
                .unwrap_err()
                .contains("does not produce")
        );
        let bad_ptr = FieldRule::new(EntityKind::Worker, "display_name", &["x"], Transform::Text);
        assert!(MappingVersion::new("t", "1", vec![bad_ptr]).is_err());
    }

    #[test]
    fn code_hash_changes_with_any_rule() {
        let a = mv();
        let b = a
            .with_rule(
                "2",
                FieldRule::new(
                    EntityKind::Worker,
                    "work_email",
                    &["/email"],
                    Transform::Lowercase,
                ),
            )
            .unwrap();
        assert_ne!(a.code_hash(), b.code_hash());
        assert_eq!(a.code_hash(), mv().code_hash());
    }
}
