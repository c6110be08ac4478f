//! Helpers shared by the integration tests of the HTTP stack.
#![allow(dead_code)]

use canonical_model::{Entity, EntityKind, FieldRule, MapError, Mapper, MappingVersion, Transform};
use connector_core::{
    AuthConfig, ClientParts, HttpClient, HttpSettings, Pagination, StreamDef, SyncMode, auth, http,
};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A client of `base` with `auth_cfg` and settings `s` (an in-memory
/// credential store; token requests time out after `s.attempt_timeout`).
pub fn client_with(base: &str, auth_cfg: AuthConfig, s: HttpSettings) -> HttpClient {
    client_reading(base, auth_cfg, s, connector_core::read_nothing)
}

/// [`client_with`], with a connector's reading of error answers.
pub fn client_reading(
    base: &str,
    auth_cfg: AuthConfig,
    s: HttpSettings,
    read_error: connector_core::ReadError,
) -> HttpClient {
    let c = http::base_client("test").unwrap();
    let ctx = auth::AuthContext {
        connection: "test".into(),
        http: c.clone(),
        store: Arc::new(auth::MemoryCredentialStore::default()),
        timeout: s.attempt_timeout,
    };
    HttpClient::new(ClientParts {
        connection: "test".into(),
        connector: "test".into(),
        base: Url::parse(base).unwrap(),
        auth: auth::provider(&auth_cfg, ctx).unwrap(),
        credential: auth_cfg.identity(),
        http: c,
        settings: s,
        breaker: None,
        read_error,
    })
}

/// Settings for tests on the real clock: millisecond retries.
pub fn quick_settings(seed: u64) -> HttpSettings {
    let mut s = HttpSettings {
        attempt_timeout: Some(Duration::from_secs(10)),
        call_timeout: None,
        ..HttpSettings::default()
    };
    s.retry = s.retry.with_seed(seed);
    s.retry.base_delay = Duration::from_millis(1);
    s.retry.max_delay = Duration::from_millis(2);
    s
}

/// A mapper that maps nothing (for tests of paging only).
#[derive(Debug)]
struct Nothing(MappingVersion);

impl Mapper for Nothing {
    fn mapping(&self) -> &MappingVersion {
        &self.0
    }
    fn map(&self, _: &serde_json::Value) -> Result<Vec<Entity>, MapError> {
        Ok(Vec::new())
    }
}

/// A full-refresh stream `items` at `/items`, records at `/data`, keyed by `/id`.
pub fn stream(pagination: Pagination) -> StreamDef {
    let rules = vec![FieldRule::new(
        EntityKind::Worker,
        "source_id",
        &["/id"],
        Transform::Text,
    )];
    StreamDef {
        name: "items",
        path: "items".into(),
        query: Vec::new(),
        records_at: "/data",
        pagination,
        primary_key: "/id",
        cursor: None,
        mode: SyncMode::FullRefresh,
        entity: EntityKind::Worker,
        mapper: Arc::new(Nothing(MappingVersion::new("t", "1", rules).unwrap())),
    }
}
