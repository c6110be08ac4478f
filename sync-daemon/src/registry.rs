//! The explicit list of connectors this daemon knows. Adding a source is one
//! entry in [`connectors`] plus the dependency on its crate
//! (docs/writing-a-connector.md, step 5).

use canonical_model::{Modeled, StreamModel};
use connector_core::{Connector, ConnectorFactory, DynConnector, Error, Factory};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::config::{CORE_KEYS, Config, ConnectionConfig};

/// Every connector this daemon knows: one line per source.
pub fn connectors() -> Vec<Box<dyn Source>> {
    vec![
        Box::new(Registered::<workday::Workday>::new()),
        Box::new(Registered::<bamboohr::BambooHr>::new()),
        Box::new(Registered::<sap_s4hana::SapS4Hana>::new()),
        Box::new(Registered::<netsuite::NetSuite>::new()),
    ]
}

/// A connection's connector and what each of its streams feeds.
#[derive(Debug, Clone)]
pub struct Built {
    pub connector: Arc<dyn DynConnector>,
    pub models: Vec<StreamModel>,
}

impl Built {
    /// Pairs a connector with its models, refusing a stream without one.
    pub fn new<C: Connector + Modeled>(connector: C) -> Result<Self, Error> {
        let models = connector.models();
        let mut keys = std::collections::HashSet::new();
        for s in Connector::streams(&connector) {
            if !keys.insert(s.key()) {
                return Err(Error::Config(format!(
                    "connector {}: stream {} is declared twice (a partition listed twice?)",
                    C::NAME,
                    s.key()
                )));
            }
            if !models.iter().any(|m| m.stream == s.name) {
                return Err(Error::Config(format!(
                    "connector {}: stream {} feeds no canonical entity (no StreamModel)",
                    C::NAME,
                    s.name
                )));
            }
        }
        Ok(Self {
            connector: Arc::new(connector),
            models,
        })
    }
}

/// A connector the daemon can build from config: core's factory plus the
/// models the connector crate wires to its streams.
pub trait Source: Send + Sync {
    fn factory(&self) -> &dyn ConnectorFactory;
    fn build(&self, settings: serde_json::Value) -> Result<Built, Error>;
}

/// The [`Source`] of a connector type that is [`Modeled`].
#[derive(Debug)]
pub struct Registered<C>(Factory<C>, PhantomData<fn() -> C>);

impl<C> Registered<C> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Factory::new(), PhantomData)
    }
}

impl<C: Connector + Modeled> Source for Registered<C> {
    fn factory(&self) -> &dyn ConnectorFactory {
        &self.0
    }
    fn build(&self, settings: serde_json::Value) -> Result<Built, Error> {
        let typed: C::Config = serde_json::from_value(settings)
            .map_err(|e| Error::Config(format!("connector {}: {e}", C::NAME)))?;
        let connector = C::new(typed)?;
        for s in Connector::streams(&connector) {
            s.validate()
                .map_err(|e| Error::Config(format!("connector {}: {e}", C::NAME)))?;
        }
        Built::new(connector)
    }
}

fn factory<'a>(
    all: &'a [Box<dyn Source>],
    conn: &ConnectionConfig,
) -> anyhow::Result<&'a dyn Source> {
    all.iter()
        .find(|f| f.factory().name() == conn.connector)
        .map(|f| f.as_ref())
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|f| f.factory().name()).collect();
            let nearest = names
                .iter()
                .map(|n| (strsim::jaro_winkler(&conn.connector.to_lowercase(), n), *n))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, n)| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "connection {:?}: unknown connector {:?}{nearest} (available: {})",
                conn.name,
                conn.connector,
                names.join(", ")
            )
        })
}

/// Builds the connector of a configured connection; an unknown connector name
/// is an error listing the valid ones.
pub fn build(conn: &ConnectionConfig) -> anyhow::Result<Built> {
    let all = connectors();
    factory(&all, conn)?
        .build(conn.settings.clone())
        .map_err(|e| anyhow::anyhow!("connection {:?}: {e}", conn.name))
}

/// Checks every connection of the config, whatever the command: its connector
/// exists, and each of its keys is one the core or the connector knows. A typo
/// is named with the nearest valid key and the list of all of them.
pub fn check(cfg: &Config, path: &std::path::Path) -> anyhow::Result<()> {
    check_keys(cfg).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    // Values too (a required key missing, a bad URL), unless they come from
    // variables that are not set: the commands that need them say so.
    for conn in &cfg.connections {
        if conn.require_env(crate::config::Need::Connector).is_ok() {
            build(conn).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn check_keys(cfg: &Config) -> anyhow::Result<()> {
    let all = connectors();
    for conn in &cfg.connections {
        let f = factory(&all, conn)?;
        let own = f.factory().settings_keys();
        if own.is_empty() {
            continue; // Unknown shape: the connector's own parsing checks it.
        }
        let Some(keys) = conn.settings.as_object() else {
            continue;
        };
        for key in keys.keys() {
            if own.contains(&key.as_str()) {
                continue;
            }
            let nearest = CORE_KEYS
                .iter()
                .chain(own)
                .map(|k| (strsim::jaro_winkler(key, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            anyhow::bail!(
                "connection {:?}: unknown key `{key}`{nearest}; a {} connection's keys are {} \
                 (every connection) and {} ({})",
                conn.name,
                conn.connector,
                CORE_KEYS.join(", "),
                own.join(", "),
                conn.connector
            );
        }
    }
    Ok(())
}

/// The streams of `connection` that `only` selects: every one, a stream's
/// name (all its partitions), or one partition (`name@code`). None
/// matching is a usage error listing the streams.
pub fn select_streams(
    connection: &str,
    all: Vec<connector_core::StreamDef>,
    only: Option<&str>,
) -> Result<Vec<connector_core::StreamDef>, crate::UsageError> {
    let Some(s) = only else { return Ok(all) };
    let names: Vec<String> = all.iter().map(connector_core::StreamDef::key).collect();
    let found: Vec<_> = all
        .into_iter()
        .filter(|d| d.name == s || d.key() == s)
        .collect();
    if found.is_empty() {
        return Err(crate::UsageError(format!(
            "connection {connection:?} has no stream {s:?} (its streams: {})",
            names.join(", ")
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example config parses and every connection in it builds.
    #[test]
    fn the_example_configs_parse_and_build() {
        let env = |k: &str| {
            Some(if k.ends_with("_URL") {
                "http://127.0.0.1:1".to_owned()
            } else if k.ends_with("_DIR") {
                "/tmp/raw".to_owned()
            } else {
                format!("<{k}>")
            })
        };
        for name in [
            "workday.toml",
            "bamboohr.toml",
            "sap-s4hana.toml",
            "netsuite.toml",
            "fixtures.toml",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            let cfg = Config::parse(&text, name, &env).unwrap();
            check(&cfg, &path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            for c in &cfg.connections {
                let built = build(c).unwrap();
                assert!(!built.connector.streams().is_empty());
            }
        }
    }
}
