//! Helpers shared by the integration tests of the HTTP stack.
#![allow(dead_code)]

use connector_core::{
    AuthConfig, ClientParts, HttpClient, HttpSettings, Pagination, Records, StreamDef, auth, http,
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

/// A full-refresh stream `items` at `/items`, records at `/data`, keyed by `/id`.
pub fn stream(pagination: Pagination) -> StreamDef {
    StreamDef {
        records: Records::Array("/data"),
        pagination,
        ..StreamDef::get("items", "items")
    }
}
