//! Peoplebox, a small fictional HR API: `GET /v1/employees?updated_since=…`
//! answers `{"employees": [...], "next": "<link>"}`. Auth (OAuth2 client
//! credentials), retries, rate limits, paging, raw storage and watermarks are
//! the core's; this file is the whole connector but its mapper.
mod mapper;

use canonical_model::EntityKind;
use connector_core::{Connector, Error, Pagination, StreamDef, SyncMode};
use std::{sync::Arc, time::Duration};
use url::Url;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub base_url: Url,
}

#[derive(Debug)]
pub struct Peoplebox {
    base_url: Url,
}

impl Connector for Peoplebox {
    const NAME: &'static str = "peoplebox";
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        let mut base_url = config.base_url;
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        Ok(Self { base_url })
    }

    fn base_url(&self) -> &Url {
        &self.base_url
    }

    fn streams(&self) -> Vec<StreamDef> {
        vec![StreamDef {
            name: "employees",
            path: "v1/employees".into(),
            query: vec![("per_page".into(), "2".into())],
            records_at: "/employees",
            pagination: Pagination::NextLink(connector_core::LinkAt::Pointer("/next")),
            primary_key: "/id",
            cursor: Some("/updated_at"),
            mode: SyncMode::Incremental {
                since_param: "updated_since",
                lag: Duration::from_secs(60),
            },
            entity: EntityKind::Worker,
            mapper: Arc::new(mapper::EmployeesMapper::new()),
        }]
    }
}
