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

/// A change feed (`changes`: ids, one deleted) and the worker details it
/// names (`workers`, asked for two ids at a time).
#[derive(Debug)]
struct FeedAndDetails(url::Url);

impl Connector for FeedAndDetails {
    const NAME: &'static str = "feed_and_details";
    type Config = url::Url;
    fn new(base: url::Url) -> Result<Self, Error> {
        Ok(Self(base))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<StreamDef> {
        vec![
            StreamDef {
                records: Records::Array("/changes"),
                deleted: Some(connector_core::Deleted::When {
                    pointer: "/action",
                    values: &["deleted"],
                }),
                ..StreamDef::get("changes", "changes")
            },
            StreamDef {
                records: Records::Array("/data"),
                details: Some(connector_core::Details {
                    of: "changes",
                    id_at: "/id",
                    batch: 2,
                }),
                request: Some(RequestHook::new(|req, page| {
                    let ids = page.ids.unwrap_or_default().join(",");
                    req.url.query_pairs_mut().append_pair("ids", &ids);
                    Ok(())
                })),
                ..StreamDef::get("workers", "workers")
            },
        ]
    }
}

/// Maps nothing: the feed's entries only name what changed.
#[derive(Debug)]
struct Nothing(canonical_model::MappingVersion);

impl canonical_model::Mapper for Nothing {
    fn mapping(&self) -> &canonical_model::MappingVersion {
        &self.0
    }
    fn map(
        &self,
        _: &serde_json::Value,
    ) -> Result<Vec<canonical_model::Entity>, canonical_model::MapError> {
        Ok(Vec::new())
    }
}

impl canonical_model::Modeled for FeedAndDetails {
    fn models(&self) -> Vec<canonical_model::StreamModel> {
        use canonical_model::{EntityKind, FieldRule, MappingVersion, Transform};
        let rules = vec![FieldRule::new(
            EntityKind::Worker,
            "source_id",
            &["/id"],
            Transform::Text,
        )];
        let mut m = workers_model();
        m.push(canonical_model::StreamModel {
            stream: "changes",
            entity: EntityKind::Worker,
            mapper: std::sync::Arc::new(Nothing(
                MappingVersion::new("feed.changes", "1", rules).unwrap(),
            )),
        });
        m
    }
}

fn worker(id: &str) -> serde_json::Value {
    json!({"id": id, "descriptor": format!("Worker {id}")})
}

#[tokio::test]
async fn a_detail_stream_asks_for_the_ids_another_stream_named_in_batches_once() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    Mock::given(path("/changes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"changes": [
            {"id": "a"}, {"id": "b"}, {"id": "x", "action": "deleted"}, {"id": "a"}, {"id": "c"}
        ]})))
        .mount(&srv)
        .await;
    Mock::given(path("/workers"))
        .and(query_param("ids", "a,b"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [worker("a"), worker("b")]})),
        )
        .mount(&srv)
        .await;
    // The second batch fails at first: the run fails, and nothing of the
    // feed's pages is marked as covered.
    Mock::given(path("/workers"))
        .and(query_param("ids", "c"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    Mock::given(path("/workers"))
        .and(query_param("ids", "c"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [worker("c")]})))
        .mount(&srv)
        .await;
    let built = Built::new(FeedAndDetails(url::Url::parse(&srv.uri()).unwrap())).unwrap();
    let store = RawStore::in_memory();
    let c = ctx_built(&pool, &store, built, &AuthConfig::None);
    assert!(pipeline::sync(&c, None).await.is_err());
    assert_eq!(count(&pool, "select count(*) from worker").await, 2);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(
        count(&pool, "select count(*) from worker").await,
        3,
        "{s:?}"
    );
    let asked: Vec<String> = srv
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/workers")
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "ids")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    // Run 1: a,b then c (failed); run 2: both feed pages' ids again, once each.
    assert_eq!(asked, ["a,b", "c", "a,b", "c"]);
    // Covered: a third run asks only for what the feed's new page names.
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.outcome, "succeeded");
    let after: Vec<String> = srv
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/workers")
        .skip(4)
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "ids")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert_eq!(after, ["a,b", "c"], "only the new feed page's ids");
}

/// A source ordered and filtered by (modified, id): its state is the pair.
#[derive(Debug)]
struct Keyset(url::Url);

impl Connector for Keyset {
    const NAME: &'static str = "keyset";
    type Config = url::Url;
    fn new(base: url::Url) -> Result<Self, Error> {
        Ok(Self(base))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<StreamDef> {
        vec![StreamDef {
            records: Records::Array("/data"),
            cursor: Some("/lastModified"),
            mode: SyncMode::Incremental {
                since_param: None,
                token_at: None,
                keyset: true,
                lag: Duration::from_secs(0),
            },
            // An OData-like filter, formatted the source's way.
            request: Some(RequestHook::new(|req, page| {
                if let Some(s) = page.since {
                    let m = s["modified"].as_str().unwrap_or_default();
                    let f = match s["id"].as_str() {
                        Some(id) => format!(
                            "LastChange gt datetimeoffset'{m}' or (LastChange eq datetimeoffset'{m}' and ID gt '{id}')"
                        ),
                        None => format!("LastChange ge datetimeoffset'{m}'"),
                    };
                    req.url.query_pairs_mut().append_pair("$filter", &f);
                }
                Ok(())
            })),
            ..StreamDef::get("workers", "workers")
        }]
    }
}

impl canonical_model::Modeled for Keyset {
    fn models(&self) -> Vec<canonical_model::StreamModel> {
        workers_model()
    }
}

#[tokio::test]
async fn a_keyset_state_is_the_largest_modified_and_id_and_the_hook_formats_it() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let w = |id: &str, m: &str| json!({"id": id, "descriptor": id, "lastModified": m});
    Mock::given(path("/workers"))
        .and(query_param_is_missing("$filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            w("1", "2026-01-01T10:00:00Z"), w("10", "2026-01-02T10:00:00Z"), w("9", "2026-01-02T10:00:00Z")
        ]})))
        .mount(&srv)
        .await;
    let want = "LastChange gt datetimeoffset'2026-01-02T10:00:00Z' or \
                (LastChange eq datetimeoffset'2026-01-02T10:00:00Z' and ID gt '10')";
    Mock::given(path("/workers"))
        .and(query_param("$filter", want))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&srv)
        .await;
    let built = Built::new(Keyset(url::Url::parse(&srv.uri()).unwrap())).unwrap();
    let store = RawStore::in_memory();
    let c = ctx_built(&pool, &store, built, &AuthConfig::None);
    pipeline::sync(&c, None).await.unwrap();
    let state: serde_json::Value =
        sqlx::query_scalar("select cursor -> 'state' from watermark where stream = 'workers'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        state,
        json!({"modified": "2026-01-02T10:00:00Z", "id": "10"}),
        "ids compared as numbers: 10 > 9"
    );
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.pages_fetched, 1, "the second pull sent the keyset filter");
    let state2: serde_json::Value =
        sqlx::query_scalar("select cursor -> 'state' from watermark where stream = 'workers'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state2, state, "an empty answer keeps the state");
}
