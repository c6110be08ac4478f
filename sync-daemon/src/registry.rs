//! The explicit list of connectors this daemon knows. Adding a source is one
//! line here (and one dependency line in Cargo.toml).

use connector_core::{ConnectorFactory, DynConnector, Factory};
use std::sync::Arc;

use crate::config::ConnectionConfig;

pub fn connectors() -> Vec<Box<dyn ConnectorFactory>> {
    vec![Box::new(Factory::<workday::Workday>::new())]
}

/// Builds the connector of a configured connection; an unknown connector name
/// is an error listing the valid ones.
pub fn build(conn: &ConnectionConfig) -> anyhow::Result<Arc<dyn DynConnector>> {
    let all = connectors();
    let factory = all
        .iter()
        .find(|f| f.name() == conn.connector)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|f| f.name()).collect();
            anyhow::anyhow!(
                "connection {:?}: unknown connector {:?} (available: {})",
                conn.name,
                conn.connector,
                names.join(", ")
            )
        })?;
    factory
        .build(conn.settings.clone())
        .map_err(|e| anyhow::anyhow!("connection {:?}: {e}", conn.name))
}
