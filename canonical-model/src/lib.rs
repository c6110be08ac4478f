//! The canonical model: strongly-typed HR entities, the values they hold, and the
//! declarative mapping rules that say where every field comes from.
//!
//! This crate is pure: no I/O, no async. A [`Mapper`] turns one raw source record
//! (a `serde_json::Value`) into canonical entities, reading every field *through*
//! a [`FieldRule`] of its [`MappingVersion`]; so the rules stored as design-time
//! lineage are exactly the code that produced the value, never a description of it.
//!
//! ```
//! use canonical_model::{EntityKind, FieldRule, MappingVersion, Transform};
//! use serde_json::json;
//!
//! let mapping = MappingVersion::new("demo", "1", vec![
//!     FieldRule::new(EntityKind::Worker, "source_id", &["/id"], Transform::Text),
//!     FieldRule::new(EntityKind::Worker, "hire_date", &["/hireDate"], Transform::Date),
//! ]).unwrap();
//! let record = json!({"id": "w1", "hireDate": "2021-03-01-08:00"});
//! let reader = mapping.reader(&record);
//! assert_eq!(reader.text(EntityKind::Worker, "source_id").unwrap().as_deref(), Some("w1"));
//! assert_eq!(reader.date(EntityKind::Worker, "hire_date").unwrap().unwrap().to_string(), "2021-03-01");
//! ```

mod entity;
mod mapping;
mod money;
mod stream;
mod transform;

pub use entity::{
    CanonicalRow, CostCenter, Entity, EntityKind, FieldDef, FieldType, GlAccount, JournalEntry,
    JournalLine, Location, OrgUnit, Supplier, Worker,
};
pub use mapping::{FieldRule, MapError, Mapper, MappingVersion, RecordReader, resolve};
pub use money::{Currency, Money, MoneyError};
pub use stream::{Modeled, StreamModel, golden_line};
pub use transform::{
    CanonValue, Language, MAX_ID_BYTES, MAX_TEXT_BYTES, Transform, TransformError, join_key,
};
