//! Crash safety, malformed input and secrecy.

mod common;

use common::*;
use connector_core::{AuthConfig, RawStore};
use std::sync::Arc;
use sync_daemon::pipeline;
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn page(offset: usize) -> String {
    std::fs::read_to_string(fixture_dir().join(format!("{offset}.json"))).unwrap()
}

fn bearer() -> AuthConfig {
    AuthConfig::Bearer {
        token: "static-tok".to_owned().into(),
    }
}

async fn serve_page(srv: &MockServer, offset: usize, resp: ResponseTemplate) {
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .and(query_param("offset", offset.to_string()))
        .respond_with(resp)
        .mount(srv)
        .await;
}

#[tokio::test]
async fn a_sync_failing_mid_way_then_rerun_loses_and_duplicates_nothing() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    serve_page(&srv, 0, ResponseTemplate::new(200).set_body_string(page(0))).await;
    serve_page(
        &srv,
        100,
        ResponseTemplate::new(200).set_body_string(page(100)),
    )
    .await;
    let store = RawStore::in_memory();
    let c = ctx(&pool, &store, Arc::new(workday(&srv.uri())), &bearer());
    let c = pipeline::Ctx {
        fetch_concurrency: 1,
        ..c
    };
    let e = pipeline::sync(&c, None).await.unwrap_err();
    assert!(format!("{e:#}").contains("offset 200"), "{e:#}");
    // The watermark covers exactly the stored pages, and every recorded object exists.
    let next: serde_json::Value = sqlx::query_scalar("select cursor -> 'next' from watermark")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(next, serde_json::json!({"kind": "offset", "offset": 200}));
    for key in sqlx::query_scalar::<_, String>("select object_key from raw_page")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        assert!(store.exists(&key).await.unwrap(), "{key}");
    }
    assert_eq!(count(&pool, "select count(*) from worker").await, 200);
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_run where status = 'failed'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "select pages::bigint from sync_run where status = 'failed'"
        )
        .await,
        2,
        "a failed run records the pages it stored"
    );

    serve_page(
        &srv,
        200,
        ResponseTemplate::new(200).set_body_string(page(200)),
    )
    .await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.pages_fetched, 1, "resumed at the watermark");
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
    assert_eq!(
        count(&pool, "select count(distinct source_id) from worker").await,
        260
    );
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        260,
        "each worker written once"
    );
}

#[tokio::test]
async fn malformed_pages_are_dead_lettered_and_bad_records_too() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let mut body: serde_json::Value = serde_json::from_str(&page(0)).unwrap();
    body["total"] = serde_json::json!(100);
    body["data"][5]["hireDate"] = serde_json::json!(20200101);
    body["data"][6]["isManager"] = serde_json::json!("maybe");
    serve_page(&srv, 0, ResponseTemplate::new(200).set_body_json(&body)).await;
    let store = RawStore::in_memory();
    let c = ctx(&pool, &store, Arc::new(workday(&srv.uri())), &bearer());
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.dead_lettered), (98, 2));
    let msgs: Vec<String> =
        sqlx::query_scalar("select message from dead_letter order by record_ordinal")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        msgs[0].starts_with("wd/workers raw page ")
            && msgs[0].contains(" record 5 (")
            && msgs[0]
                .ends_with("worker.hire_date at /hireDate: expected a string, found a number"),
        "{msgs:?}"
    );
    assert!(msgs[1].contains("is_manager"), "{msgs:?}");
    let (field, pointer): (String, String) =
        sqlx::query_as("select field, pointer from dead_letter order by record_ordinal limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (field.as_str(), pointer.as_str()),
        ("hire_date", "/hireDate")
    );

    // A body cut short on every attempt, then a complete one that is not a
    // page: each is stored verbatim and dead-lettered as a page, and the
    // offset tells the next page (here the last, empty).
    let end = ResponseTemplate::new(200).set_body_string("{\"total\": 0, \"data\": []}");
    for (conn, body, says, requests) in [
        (
            "wd2",
            "{\"total\": 3, \"data\": [{\"id\": \"a\"},",
            "ended early on every attempt",
            5,
        ),
        ("wd3", "<html>maintenance</html>", "not JSON", 2),
    ] {
        let srv = MockServer::start().await;
        serve_page(&srv, 0, ResponseTemplate::new(200).set_body_string(body)).await;
        serve_page(&srv, 100, end.clone()).await;
        let c = pipeline::Ctx {
            connection: conn.into(),
            ..ctx(&pool, &store, Arc::new(workday(&srv.uri())), &bearer())
        };
        let s = pipeline::sync(&c, None).await.unwrap();
        assert_eq!((s.pages_unreadable, s.pulls_incomplete), (1, 1), "{conn}");
        assert_eq!(
            srv.received_requests().await.unwrap().len(),
            requests,
            "{conn}: a cut body is asked for 3 times and once more to be stored; a wrong one once"
        );
        let (ordinal, class, msg): (Option<i32>, String, String) = sqlx::query_as(
            "select record_ordinal, error_class, message from dead_letter where connection = $1",
        )
        .bind(conn)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((ordinal, class.as_str()), (None, "unreadable_page"));
        assert!(msg.contains(says) && msg.contains(conn), "{msg}");
    }
    // With a cursor, the page after an unreadable one is unknown: the run
    // fails saying so, and the next sync asks for the same page again.
    let srv = MockServer::start().await;
    Mock::given(path("/workers"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&srv)
        .await;
    let c = pipeline::Ctx {
        connection: "wd4".into(),
        ..ctx(
            &pool,
            &store,
            Arc::new(Cursored(
                url::Url::parse(&format!("{}/", srv.uri())).unwrap(),
            )),
            &bearer(),
        )
    };
    let e = format!("{:#}", pipeline::sync(&c, None).await.unwrap_err());
    assert!(
        e.contains("could not be read") && e.contains("first page") && e.contains("not JSON"),
        "{e}"
    );
    let next: serde_json::Value =
        sqlx::query_scalar("select cursor -> 'next' from watermark where connection = 'wd4'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(next, serde_json::json!({"kind": "start"}));
}

/// A cursor-paginated source of workers (the next page is in the body).
#[derive(Debug)]
struct Cursored(url::Url);

impl connector_core::DynConnector for Cursored {
    fn name(&self) -> &'static str {
        "cursored"
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<connector_core::StreamDef> {
        vec![connector_core::StreamDef {
            records: connector_core::Records::Array("/data"),
            pagination: connector_core::Pagination::cursor("cursor", "/next"),
            ..connector_core::StreamDef::get("workers", "workers")
        }]
    }
}

#[tokio::test]
async fn secrets_never_reach_the_ledger_the_raw_store_or_errors() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (base, _srv) = fixture_source().await;
    let dir = tempfile::tempdir().unwrap();
    let store =
        RawStore::from_url(&url::Url::from_directory_path(dir.path()).unwrap(), &[]).unwrap();
    let c = ctx(
        &pool,
        &store,
        Arc::new(workday(&base)),
        &refresh_auth(&base, REFRESH_TOKEN),
    );
    pipeline::sync(&c, None).await.unwrap();
    // A refused refresh token: the error names the problem, not the secret.
    let bad = ctx(
        &pool,
        &store,
        Arc::new(workday(&base)),
        &refresh_auth(&base, "rt-wrong-5ecret"),
    );
    let e = format!(
        "{:#} {:?}",
        pipeline::sync(&bad, None).await.unwrap_err(),
        bad.http
    );
    assert!(
        e.contains("re-authorization") && e.contains("invalid_grant"),
        "{e}"
    );

    let mut haystack = e;
    for table in [
        "sync_run",
        "raw_page",
        "watermark",
        "watermark_history",
        "dead_letter",
        "derivation",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select t::text from {table} t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        haystack.push_str(&rows.join("\n"));
    }
    for f in walk(dir.path()) {
        haystack.push_str(&std::fs::read_to_string(f).unwrap());
    }
    assert!(haystack.contains("\"offset\""), "the ledger was read");
    for secret in [
        CLIENT_SECRET,
        REFRESH_TOKEN,
        "rt-wrong-5ecret",
        "fx-",
        "Bearer",
    ] {
        assert!(!haystack.contains(secret), "{secret} leaked");
    }
    let status: String = sqlx::query_scalar("select status from sync_run order by id desc limit 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "needs_reauth");
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn a_record_that_maps_again_resolves_its_dead_letter() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let mut body: serde_json::Value = serde_json::from_str(&page(0)).unwrap();
    body["total"] = serde_json::json!(100);
    let good = body.clone();
    body["data"][5]["hireDate"] = serde_json::json!("not a date");
    let bad_once = Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&body))
        .up_to_n_times(1);
    srv.register(bad_once).await;
    serve_page(&srv, 0, ResponseTemplate::new(200).set_body_json(&good)).await;
    let store = RawStore::in_memory();
    let c = ctx(&pool, &store, Arc::new(workday(&srv.uri())), &bearer());
    assert_eq!(pipeline::sync(&c, None).await.unwrap().dead_lettered, 1);
    let open = "select count(*) from dead_letter where status = 'open'";
    assert_eq!(count(&pool, open).await, 1);
    // The source fixed the record: the next sync loads it and closes the dead letter.
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.dead_lettered), (1, 0));
    assert_eq!(count(&pool, open).await, 0);
    assert_eq!(
        count(
            &pool,
            "select count(*) from dead_letter where status = 'resolved'"
        )
        .await,
        1
    );
}

/// A refresh token rotated by the source is in Postgres before the access
/// token that came with it is used: a process that dies right after the
/// refresh (here: the data call never succeeds) restarts from the new one.
#[tokio::test]
async fn a_rotated_refresh_token_is_saved_before_use_and_survives_a_restart() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    use connector_core::auth::{self, AuthContext};
    use wiremock::matchers::body_string_contains;
    let srv = MockServer::start().await;
    // rt-0 (the config's) → rt-1; only rt-1 is accepted afterwards.
    Mock::given(wiremock::matchers::method("POST"))
        .and(body_string_contains("refresh_token=rt-0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"})))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    Mock::given(wiremock::matchers::method("POST"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-2", "token_type": "Bearer", "expires_in": 3600})))
        .mount(&srv)
        .await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})),
        )
        .mount(&srv)
        .await;
    sync_daemon::db::ensure_connection(&pool, "wd", "workday")
        .await
        .unwrap();
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "oauth2_refresh_token", "token_url": format!("{}/token", srv.uri()),
        "client_id": "c", "client_secret": "s", "refresh_token": "rt-0"}))
    .unwrap();
    let provider = || {
        auth::provider(
            &cfg,
            AuthContext {
                connection: "wd".into(),
                http: reqwest::Client::new(),
                store: Arc::new(sync_daemon::db::PgCredentialStore {
                    pool: pool.clone(),
                    connection: "wd".into(),
                }),
                timeout: None,
            },
        )
        .unwrap()
    };
    let url = url::Url::parse(&srv.uri()).unwrap();
    let first = provider();
    first.credentials("GET", &url, &[]).await.unwrap();
    let saved: String = sqlx::query_scalar("select value from credential")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        saved, "rt-1",
        "saved by the time the access token is handed out"
    );
    drop(first); // the process dies before using at-1
    let restarted = provider();
    let c = restarted
        .credentials("GET", &url, &[])
        .await
        .expect("the restart uses rt-1, not the spent rt-0");
    assert!(format!("{c:?}").contains("authorization"));
}

/// A source that asks for a wait beyond the run's limits defers the run: it
/// checkpoints, ends `deferred` with a resume time, and is not a failure.
#[tokio::test]
async fn a_long_retry_after_defers_the_run_at_its_checkpoint() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    serve_page(&srv, 0, ResponseTemplate::new(200).set_body_string(page(0))).await;
    serve_page(
        &srv,
        100,
        ResponseTemplate::new(429).insert_header("Retry-After", "7200"),
    )
    .await;
    let store = RawStore::in_memory();
    let c = pipeline::Ctx {
        fetch_concurrency: 1,
        ..ctx(&pool, &store, Arc::new(workday(&srv.uri())), &bearer())
    };
    let s = pipeline::sync(&c, None)
        .await
        .expect("deferred is not a failure");
    assert_eq!(s.outcome, "deferred");
    assert!(
        s.resume_at
            .is_some_and(|t| t > chrono::Utc::now() + chrono::Duration::minutes(100))
    );
    let (status, resume): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select status, resume_at from sync_run")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), resume.is_some()), ("deferred", true));
    let next: serde_json::Value = sqlx::query_scalar("select cursor -> 'next' from watermark")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        next,
        serde_json::json!({"kind": "offset", "offset": 100}),
        "checkpointed at the deferred page"
    );
    assert_eq!(
        s.changed + s.dead_lettered,
        100,
        "the stored page was loaded"
    );
}
