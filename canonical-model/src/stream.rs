//! Where a source's streams meet the model: which canonical entity each
//! stream feeds and through which mapper. Connector crates implement
//! [`Modeled`] beside `connector_core::Connector`; the daemon pairs the two
//! by stream name, so the connector core never depends on the model.

use serde_json::Value;
use std::sync::Arc;

use crate::{Entity, EntityKind, Mapper};

/// What one stream feeds.
#[derive(Clone, Debug)]
pub struct StreamModel {
    /// The stream's name (`StreamDef::name`).
    pub stream: &'static str,
    /// The canonical entity a record of the stream is (its mapper's first
    /// output, and the entity its tombstones delete).
    pub entity: EntityKind,
    pub mapper: Arc<dyn Mapper>,
}

/// A source whose streams feed the canonical model.
///
/// # Contract
/// - Every stream of the connector has exactly one model (the daemon refuses
///   a connector with a stream it cannot map).
/// - `models` does no I/O and is cheap: it is called when a connection is built.
pub trait Modeled {
    fn models(&self) -> Vec<StreamModel>;
}

/// One record's mapping as a conformance suite's golden file shows it, after
/// checking provenance: every field that has a value has a rule in the
/// mapping version, and one of the rule's pointers resolves in the record
/// (invariant 4). A mapping error is a line too (a dead letter).
pub fn golden_line(mapper: &dyn Mapper, record: &Value) -> Result<String, String> {
    match mapper.map(record) {
        Ok(entities) => {
            for e in &entities {
                provenance_covers(mapper, e, record)?;
                // The loader refuses a row outside the canonical domain (an
                // amount finer than its currency) as a dead letter too.
                if let Err((field, message)) = e.clone().into_row().check() {
                    return Ok(format!("dead letter: {}.{field}: {message}", e.kind()));
                }
            }
            Ok(format!("{entities:?}"))
        }
        Err(e) => Ok(format!("dead letter: {e}")),
    }
}

fn provenance_covers(mapper: &dyn Mapper, e: &Entity, record: &Value) -> Result<(), String> {
    let mv = mapper.mapping();
    let row = e.clone().into_row();
    for (field, value) in row.kind.fields().iter().zip(&row.values) {
        if value.is_none() {
            continue;
        }
        let rule = mv.rule(row.kind, field.name).ok_or_else(|| {
            format!(
                "{:?}.{} has a value but no field rule",
                row.kind, field.name
            )
        })?;
        let found = rule
            .pointers
            .iter()
            .any(|p| crate::mapping::resolve(record, p).is_some());
        if !found {
            return Err(format!(
                "{:?}.{}: none of {:?} resolves in the record",
                row.kind, field.name, rule.pointers
            ));
        }
    }
    Ok(())
}
