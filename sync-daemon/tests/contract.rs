//! The connector contract v2 through the daemon: fan-out by partition (each
//! partition its own watermark, raw objects and bound) and POST requests.

mod common;

use common::*;
use connector_core::{
    AuthConfig, Connector, Error, Pagination, RawStore, Records, RequestHook, StreamDef, SyncMode,
};
use serde_json::json;
use std::time::Duration;
use sync_daemon::{pipeline, registry::Built};
use wiremock::matchers::{path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A source whose `workers` stream runs once per company code.
#[derive(Debug)]
struct PerCompany(url::Url);

impl Connector for PerCompany {
    const NAME: &'static str = "per_company";
    type Config = url::Url;
    fn new(base: url::Url) -> Result<Self, Error> {
        Ok(Self(base))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<StreamDef> {
        StreamDef {
            records: Records::Array("/data"),
            pagination: Pagination::Single,
            cursor: Some("/lastModified"),
            mode: SyncMode::since("since", Duration::from_secs(0)),
            request: Some(RequestHook::new(|req, page| {
                let code = page.partition.unwrap_or("none");
                req.url.query_pairs_mut().append_pair("company", code);
                Ok(())
            })),
            ..StreamDef::get("workers", "workers")
        }
        .partitions(&["1000", "2000"])
    }
}

impl canonical_model::Modeled for PerCompany {
    fn models(&self) -> Vec<canonical_model::StreamModel> {
        workers_model()
    }
}

fn page(code: &str, modified: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"data": [
        {"id": format!("{code}-1"), "descriptor": format!("Worker of {code}"), "lastModified": modified}
    ]}))
}

#[tokio::test]
async fn each_partition_keeps_its_own_watermark_raw_objects_and_bound() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    for (code, modified) in [
        ("1000", "2026-01-01T10:00:00Z"),
        ("2000", "2026-02-01T10:00:00Z"),
    ] {
        Mock::given(path("/workers"))
            .and(query_param("company", code))
            .and(query_param_is_missing("since"))
            .respond_with(page(code, modified))
            .mount(&srv)
            .await;
        Mock::given(path("/workers"))
            .and(query_param("company", code))
            .and(query_param("since", modified))
            .respond_with(page(code, modified))
            .mount(&srv)
            .await;
    }
    let built = Built::new(PerCompany(url::Url::parse(&srv.uri()).unwrap())).unwrap();
    let store = RawStore::in_memory();
    let c = ctx_built(&pool, &store, built, &AuthConfig::None);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.pages_fetched, s.changed), (2, 2));
    let marks: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select stream, cursor -> 'high_water' from watermark order by stream")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        marks,
        vec![
            ("workers@1000".to_owned(), json!("2026-01-01T10:00:00Z")),
            ("workers@2000".to_owned(), json!("2026-02-01T10:00:00Z")),
        ]
    );
    let keys: Vec<String> = sqlx::query_scalar("select object_key from raw_page order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        keys[0].contains("/workers@1000/") && keys[1].contains("/workers@2000/"),
        "{keys:?}"
    );
    // The second run sends each partition its own bound (only those requests match).
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.pages_fetched, s.unchanged), (2, 2), "{s:?}");
    // One partition alone.
    let s = pipeline::sync(&c, Some("workers@2000")).await.unwrap();
    assert_eq!(s.pages_fetched, 1);
}
