//! Workday connector: the `workers` stream of Workday's REST API.
//!
//! `GET {base_url}/{api_path}/{tenant}/workers?limit=L&offset=O` answers
//! `{"total": N, "data": [...]}`. Workers carry no change stamp, so the stream is
//! a full pull diffed by content hash (unchanged workers write nothing). Each
//! worker maps to a canonical `worker`, plus the `org_unit` of its primary
//! supervisory organisation and its `location` when present.
//!
//! ```
//! use connector_core::Connector;
//! let cfg = serde_json::from_value(serde_json::json!({
//!     "base_url": "https://wd5-impl-services1.workday.com", "tenant": "acme"
//! })).unwrap();
//! let wd = workday::Workday::new(cfg).unwrap();
//! assert_eq!(wd.streams()[0].path, "ccx/api/common/v1/acme/workers");
//! ```

mod config;
pub mod mapper;

use canonical_model::{EntityKind, Mapper, Modeled, StreamModel};
use connector_core::{Connector, Error, Pagination, Records, StreamDef};
use std::sync::Arc;
use url::Url;

pub use config::{MAX_PAGE_SIZE, WorkdayConfig};
pub use mapper::WorkersMapper;

/// A Workday connection.
#[derive(Debug, Clone)]
pub struct Workday {
    config: WorkdayConfig,
    base_url: Url,
    workers_mapper: Arc<dyn Mapper>,
}

impl Workday {
    /// Replaces the workers mapper (a new mapping version), e.g. before a replay.
    pub fn with_workers_mapper(mut self, mapper: Arc<dyn Mapper>) -> Self {
        self.workers_mapper = mapper;
        self
    }
}

impl Connector for Workday {
    const NAME: &'static str = "workday";
    type Config = WorkdayConfig;

    fn new(config: WorkdayConfig) -> Result<Self, Error> {
        config
            .validate()
            .map_err(|e| Error::Config(format!("connector workday: {e}")))?;
        let mut base_url = config.base_url.clone();
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        Ok(Self {
            config,
            base_url,
            workers_mapper: Arc::new(WorkersMapper::new()),
        })
    }

    fn base_url(&self) -> &Url {
        &self.base_url
    }

    fn streams(&self) -> Vec<StreamDef> {
        // No change stamp: a full pull, diffed by hash and swept after a
        // complete run (workers it no longer lists are soft-deleted).
        vec![StreamDef {
            records: Records::Array("/data"),
            pagination: Pagination::offset_limit(self.config.page_size),
            ..StreamDef::get("workers", self.config.workers_path())
        }]
    }
}

impl Modeled for Workday {
    fn models(&self) -> Vec<StreamModel> {
        vec![StreamModel {
            stream: "workers",
            entity: EntityKind::Worker,
            mapper: self.workers_mapper.clone(),
        }]
    }
}
