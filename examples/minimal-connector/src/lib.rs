//! Peoplebox, a fictional HR API: `GET /v1/employees?updated_since=…` answers
//! `{"employees": […], "next": "<link>"}`. Auth, retries, paging, storage: the core's.
pub mod mapper;

use canonical_model::{EntityKind::Worker, Modeled, StreamModel};
use connector_core::{BaseUrl, Connector, Error, LinkAt, Pagination, Records, StreamDef, SyncMode};
use std::{sync::Arc, time::Duration};

#[derive(Debug)]
pub struct Peoplebox(url::Url);

impl Connector for Peoplebox {
    const NAME: &'static str = "peoplebox";
    type Config = BaseUrl;
    fn new(config: BaseUrl) -> Result<Self, Error> {
        Ok(Self(config.base_url))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<StreamDef> {
        vec![StreamDef {
            query: vec![("per_page".into(), "2".into())],
            records: Records::Array("/employees"),
            pagination: Pagination::NextLink(LinkAt::Pointer("/next")),
            cursor: Some("/updated_at"),
            mode: SyncMode::since("updated_since", Duration::from_secs(60)),
            ..StreamDef::get("employees", "v1/employees")
        }]
    }
}

impl Modeled for Peoplebox {
    fn models(&self) -> Vec<StreamModel> {
        let mapper = Arc::new(mapper::EmployeesMapper::new());
        vec![StreamModel {
            stream: "employees",
            entity: Worker,
            mapper,
        }]
    }
}
