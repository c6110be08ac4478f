//! Workday connector: the `workers` stream of Workday's REST API.
//!
//! `GET {base_url}/{api_path}/{tenant}/workers?limit=L&offset=O` answers
//! `{"total": N, "data": [...]}`. The REST resource has no "changed since"
//! filter, so by default the stream is a full pull diffed by content hash
//! (unchanged workers write nothing) and swept after a complete pull. Where
//! the tenant serves the workers through an endpoint that filters by
//! `lastModified` (a RaaS report with `Updated_From` / `Updated_Through`
//! prompts, a gateway to `Get_Workers`' transaction log criteria),
//! `changed_since_param` names the lower bound's parameter and `as_of_param`
//! the moment the pull is answered as of, and the stream becomes incremental:
//! the bound is `min(latest lastModified seen, server Date − lag, the last
//! pull's moment)`, sent inclusive, the overlap absorbed by content-hash
//! dedupe; every page of a pull carries the same moment, so offsets page over
//! one snapshot. Each
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
use connector_core::{Connector, Error, Pagination, Records, RequestHook, StreamDef, SyncMode};
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
        let full = StreamDef {
            records: Records::Array("/data"),
            pagination: Pagination::offset_limit(self.config.page_size),
            ..StreamDef::get("workers", self.config.workers_path())
        };
        let Some(param) = self.config.changed_since_param.clone() else {
            // No change filter: a full pull, diffed by hash and swept after a
            // complete run (workers it no longer lists are soft-deleted).
            return vec![full];
        };
        // The parameters' names are configured, so the hook sends them (the
        // first pull, without a bound, asks for every worker). Offsets
        // page over the snapshot as of the pull's moment: a worker changed
        // during the pull shifts no page (it comes with the next pull).
        let through = self.config.as_of_param.clone();
        vec![StreamDef {
            cursor: Some("/lastModified"),
            snapshot: true,
            mode: SyncMode::Incremental {
                since_param: None,
                token_at: None,
                keyset: false,
                lag: std::time::Duration::from_secs(self.config.changed_since_lag_secs),
            },
            request: Some(RequestHook::new(move |req, page| {
                let mut q = req.url.query_pairs_mut();
                if let Some(since) = page.since_text() {
                    q.append_pair(&param, &since);
                }
                if let Some(as_of) = page.as_of_text() {
                    q.append_pair(&through, &as_of);
                }
                Ok(())
            })),
            ..full
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

#[cfg(test)]
mod tests {
    use super::*;

    fn workday(extra: serde_json::Value) -> Result<Workday, Error> {
        let mut cfg = serde_json::json!({"base_url": "https://wd5.example.com", "tenant": "acme"});
        cfg.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Workday::new(serde_json::from_value(cfg).unwrap())
    }

    #[test]
    fn workers_are_a_full_pull_unless_a_changed_since_parameter_is_named() {
        let full = workday(serde_json::json!({})).unwrap();
        assert_eq!(full.streams()[0].mode, SyncMode::FullRefresh);
        assert_eq!(full.streams()[0].cursor, None);

        let incr = workday(serde_json::json!({"changed_since_param": "updatedFrom"})).unwrap();
        let def = &incr.streams()[0];
        assert!(matches!(
            def.mode,
            SyncMode::Incremental { since_param: None, lag, .. } if lag.as_secs() == 300
        ));
        assert_eq!(def.cursor, Some("/lastModified"));
        assert!(def.snapshot, "offsets page over the pull's moment");
        def.validate().unwrap();
        let base = Url::parse("https://wd5.example.com/").unwrap();
        let since = serde_json::json!("2025-06-01T00:00:00Z");
        let as_of = chrono::DateTime::parse_from_rfc3339("2025-06-02T10:00:00Z")
            .unwrap()
            .to_utc();
        let page = connector_core::PageCtx {
            since: Some(&since),
            as_of: Some(as_of),
            ..Default::default()
        };
        let url = def
            .request(&base, &def.pagination.first(), &page)
            .unwrap()
            .url;
        assert_eq!(
            url.query(),
            Some(
                "limit=100&offset=0&updatedFrom=2025-06-01T00%3A00%3A00Z\
                 &updatedThrough=2025-06-02T10%3A00%3A00Z"
            )
        );
    }

    #[test]
    fn a_changed_since_parameter_must_be_a_plain_name() {
        for bad in ["", "updated from", "a&b=c", "x#"] {
            let e = workday(serde_json::json!({"changed_since_param": bad})).unwrap_err();
            assert!(e.to_string().contains("changed_since_param"), "{e}");
        }
        let e = workday(
            serde_json::json!({"changed_since_param": "u", "changed_since_lag_secs": 10_000_000}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("changed_since_lag_secs"), "{e}");
    }
}
