//! Raw objects deleted or corrupted between runs never stop a later sync or
//! replay: the page is marked in the ledger, skipped by replay with a count,
//! fetched again when it was not loaded yet, and reported by `status`. Next
//! links that carry secrets are stored masked.

mod common;

use common::*;
use connector_core::{AuthConfig, Connector, Error, LinkAt, Pagination, RawStore, StreamDef};
use serde_json::json;
use std::sync::Arc;
use sync_daemon::pipeline;
use url::Url;
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn file_store(dir: &std::path::Path) -> RawStore {
    RawStore::from_url(&Url::from_directory_path(dir).unwrap(), &[]).unwrap()
}

async fn object_of(pool: &sqlx::PgPool, page: i64) -> String {
    sqlx::query_scalar("select object_key from raw_page where id = $1")
        .bind(page)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn object_states(pool: &sqlx::PgPool) -> Vec<(i64, String)> {
    sqlx::query_as(
        "select id, object_state from raw_page where object_state <> 'stored' order by id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The recorded workers synced into a file raw store in a temporary folder.
async fn synced_into_files(
    pool: &sqlx::PgPool,
) -> (
    pipeline::Ctx,
    RawStore,
    tempfile::TempDir,
    tokio::task::JoinHandle<()>,
) {
    let (base, srv) = fixture_source().await;
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let c = ctx(
        pool,
        &store,
        Arc::new(workday(&base)),
        &refresh_auth(&base, REFRESH_TOKEN),
    );
    pipeline::sync(&c, None).await.unwrap();
    (c, store, dir, srv)
}

#[tokio::test]
async fn lost_objects_are_marked_skipped_by_replay_and_reported() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (c, store, dir, _srv) = synced_into_files(&pool).await;
    std::fs::remove_file(dir.path().join(object_of(&pool, 2).await)).unwrap();
    std::fs::write(
        dir.path().join(object_of(&pool, 3).await),
        b"{\"data\": []}",
    )
    .unwrap();

    let r = pipeline::replay(&c, None, false)
        .await
        .expect("replay goes on");
    assert_eq!((r.pages_loaded, r.pages_missing), (1, 2));
    assert_eq!(
        object_states(&pool).await,
        vec![(2, "missing".to_owned()), (3, "corrupt".to_owned())]
    );
    let run_missing: i32 = sqlx::query_scalar("select pages_missing from sync_run where id = $1")
        .bind(r.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(run_missing, 2);
    let status = sync_daemon::status::status(&pool, &[]).await.unwrap();
    let s = &status.streams[0];
    assert_eq!((s.pages_missing, s.pages_corrupt), (1, 1));
    // `explain` still shows the provenance of a value whose raw object is gone.
    let id: String =
        sqlx::query_scalar("select d.source_id from derivation d where d.raw_page_id = 2 limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let x = sync_daemon::explain::explain(&pool, &store, "worker", &id, Some("display_name"))
        .await
        .unwrap();
    assert_eq!(x.fields[0].raw_object_problem.as_deref(), Some("missing"));
    assert!(x.to_string().contains("raw object missing"), "{x}");
    // A dry run skips them too, and the next sync is not held back.
    let d = pipeline::replay(&c, None, true).await.unwrap();
    assert_eq!(d.pages_missing, 2);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.pages_fetched, 3);
}

#[tokio::test]
async fn an_unloaded_page_whose_object_is_lost_is_fetched_again() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (c, _store, dir, _srv) = synced_into_files(&pool).await;
    let live = state(&pool).await;
    // As if the process had died after storing page 2 and before loading it,
    // and the object had been lost since.
    unload_page(&pool, 2).await;
    std::fs::remove_file(dir.path().join(object_of(&pool, 2).await)).unwrap();

    let s = pipeline::sync(&c, Some("workers")).await.unwrap();
    assert_eq!((s.pages_missing, s.pages_refetched), (1, 1));
    let replaced: Option<i64> = sqlx::query_scalar("select replaced_by from raw_page where id = 2")
        .fetch_one(&pool)
        .await
        .unwrap();
    let new_page = replaced.expect("the lost page names the page that replaced it");
    let loaded: bool =
        sqlx::query_scalar("select loaded_at is not null from raw_page where id = $1")
            .bind(new_page)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(loaded);
    assert_eq!(state(&pool).await, live);
}

/// A link-paginated source (next link in the body), for secrets in links.
#[derive(Debug)]
struct Linked {
    base: Url,
}

#[derive(Debug, serde::Deserialize)]
struct LinkedConfig {
    base_url: Url,
}

impl Connector for Linked {
    const NAME: &'static str = "linked";
    type Config = LinkedConfig;
    fn new(c: LinkedConfig) -> Result<Self, Error> {
        Ok(Self { base: c.base_url })
    }
    fn base_url(&self) -> &Url {
        &self.base
    }
    fn streams(&self) -> Vec<StreamDef> {
        vec![StreamDef {
            records: connector_core::Records::Array("/data"),
            pagination: Pagination::NextLink(LinkAt::Pointer("/next")),
            ..StreamDef::get("workers", "workers")
        }]
    }
}

#[tokio::test]
async fn secrets_in_next_links_are_never_stored_and_a_lost_page_is_set_aside() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let base = srv.uri();
    let w = workers()[..100].to_vec();
    let bodies = [
        json!({"data": &w[0..40], "next": format!("{base}/workers?page=2&sig=S1G-5ecret&api_key=K3Y-5ecret")}),
        json!({"data": &w[40..80], "next": format!("{base}/workers?page=3&signature=S2G-5ecret&q=%00")}),
        json!({"data": &w[80..100]}),
    ];
    for (i, b) in bodies.iter().enumerate() {
        let m = Mock::given(path("/workers"));
        let m = if i == 0 {
            m.and(wiremock::matchers::query_param_is_missing("page"))
        } else {
            m.and(query_param("page", (i + 1).to_string()))
        };
        m.respond_with(ResponseTemplate::new(200).set_body_json(b))
            .mount(&srv)
            .await;
    }
    let auth: AuthConfig = serde_json::from_value(
        json!({"strategy": "api_key", "key": "K3Y-5ecret", "query_param": "api_key"}),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let linked = Linked::new(LinkedConfig {
        base_url: Url::parse(&format!("{base}/")).unwrap(),
    })
    .unwrap();
    let c = ctx(&pool, &store, Arc::new(linked), &auth);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.changed, 100);
    // The key is sent once per request even when a link echoes it.
    for req in srv.received_requests().await.unwrap() {
        let keys = req
            .url
            .query_pairs()
            .filter(|(k, _)| k == "api_key")
            .count();
        assert_eq!(keys, 1, "{}", req.url);
    }
    let mut ledger = String::new();
    for table in ["raw_page", "watermark", "watermark_history", "sync_run"] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select t::text from {table} t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        ledger.push_str(&rows.join("\n"));
    }
    assert!(ledger.contains("page=2"), "the ledger was read");
    assert!(
        !ledger.contains("5ecret"),
        "a secret reached the ledger: {ledger}"
    );

    // A lost page whose stored link is masked cannot be asked for again: it
    // is set aside, and the sync goes on.
    unload_page(&pool, 2).await;
    std::fs::remove_file(dir.path().join(object_of(&pool, 2).await)).unwrap();
    let s = pipeline::sync(&c, None).await.expect("not held back");
    assert_eq!(
        (s.pages_missing, s.pages_refetched, s.pages_fetched),
        (1, 0, 3)
    );
    assert_eq!(object_states(&pool).await, vec![(2, "missing".to_owned())]);
    let skipped: i64 =
        sqlx::query_scalar("select count(*) from watermark_history where changed_by = 'recovery'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(skipped, 1, "the incomplete pull is on record");
}
