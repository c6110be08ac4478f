//! Hostile and unlucky input through the whole pipeline: poison records,
//! unreadable pages, values Postgres refuses, duplicates, repeated failures,
//! absurd answers and panics. No stalled stream, no lost or duplicated
//! record, every run ends in a terminal state, and the counts add up.

mod common;

use common::*;
use connector_core::{AuthConfig, RawStore};
use serde_json::{Value, json};
use std::sync::Arc;
use sync_daemon::pipeline;
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn bearer() -> AuthConfig {
    AuthConfig::Bearer {
        token: "tok-5ecret-9d2f".to_owned().into(),
    }
}

/// Serves `pages` (verbatim bodies) at offsets `limit` apart.
async fn serve(srv: &MockServer, limit: usize, pages: &[String]) {
    for (i, body) in pages.iter().enumerate() {
        Mock::given(path("/ccx/api/common/v1/acme/workers"))
            .and(query_param("offset", (i * limit).to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_string(body.clone()))
            .mount(srv)
            .await;
    }
}

/// A page body with a total, its records given as JSON text.
fn page_text(total: usize, records: &[String]) -> String {
    format!("{{\"total\": {total}, \"data\": [{}]}}", records.join(", "))
}

fn ctx_for(pool: &sqlx::PgPool, srv: &MockServer, page_size: u32) -> pipeline::Ctx {
    let store = RawStore::in_memory();
    pipeline::Ctx {
        fetch_concurrency: 2,
        ..ctx(
            pool,
            &store,
            Arc::new(workday_sized(&srv.uri(), page_size)),
            &bearer(),
        )
    }
}

/// Every run ended, and the ledger's counts add up per page and per run.
async fn assert_ledger_consistent(pool: &sqlx::PgPool) {
    assert_eq!(
        count(
            pool,
            "select count(*) from sync_run where status = 'running'"
        )
        .await,
        0,
        "a run was left running"
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from raw_page where loaded_at is null and object_state = 'stored'"
        )
        .await,
        0,
        "pages stuck unloaded"
    );
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_the_rest_of_the_page_loads() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let base = workers();
    let rec = |i: usize, f: &dyn Fn(&mut Value)| {
        let mut r = base[i].clone();
        f(&mut r);
        serde_json::to_string(&r).unwrap()
    };
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let records = vec![
        rec(0, &|_| {}),
        rec(1, &|r| r["descriptor"] = json!("Ann\u{0}e")),
        rec(2, &|r| r["hireDate"] = json!("0000-01-01")),
        rec(3, &|r| r["unused"] = json!("@@BIG@@")).replace("\"@@BIG@@\"", "1e400"),
        rec(4, &|r| r["unused"] = json!("@@DEEP@@")).replace("\"@@DEEP@@\"", &deep),
        rec(5, &|r| r["descriptor"] = json!("@@SURROGATE@@")).replace("@@SURROGATE@@", "\\ud800"),
        rec(6, &|r| r["id"] = json!("a\u{0}b")),
        rec(7, &|r| r["id"] = json!("x".repeat(600))),
        rec(8, &|r| r["location"]["id"] = json!("loc\u{0}")),
        rec(9, &|r| r["lastModified"] = json!("/Date(253402300800000)/")),
        rec(10, &|r| r["id"] = json!("@@ID@@")).replace("\"@@ID@@\"", "5e400"),
        rec(11, &|r| r["businessTitle"] = json!("t".repeat(1_100_000))),
        rec(12, &|_| {}),
    ];
    let srv = MockServer::start().await;
    serve(&srv, 100, &[page_text(13, &records)]).await;
    let c = ctx_for(&pool, &srv, 100);
    let s = pipeline::sync(&c, None).await.expect("the run succeeds");
    // A number beyond f64 in a field no mapping uses does not matter (the
    // record's numbers are kept as written); everything else here is a dead
    // letter.
    assert_eq!((s.changed, s.dead_lettered, s.superseded), (3, 10, 0));
    assert_eq!(
        count(
            &pool,
            "select count(*) from worker where source_id = 'a38462746892d473b766ca85187904c8'"
        )
        .await,
        1
    );
    assert_ledger_consistent(&pool).await;
    let dead: Vec<(i32, String, Option<String>, String)> = sqlx::query_as(
        "select record_ordinal, error_class, field, message from dead_letter order by record_ordinal",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let by_ord = |o: i32| dead.iter().find(|d| d.0 == o).unwrap();
    for (ord, class, field, says) in [
        (1, "mapping", Some("display_name"), "NUL"),
        (2, "mapping", Some("hire_date"), "year 0"),
        (4, "parse", None, "recursion limit"),
        (5, "parse", None, "escape"),
        (6, "no_primary_key", Some("source_id"), "NUL"),
        (7, "no_primary_key", Some("source_id"), "600 bytes"),
        (8, "mapping", Some("location"), "NUL"),
        (9, "mapping", Some("source_modified_at"), "year 10000"),
        (10, "mapping", Some("source_id"), "expected a string"),
        (11, "mapping", Some("business_title"), "over the limit"),
    ] {
        let d = by_ord(ord);
        assert_eq!(d.1, class, "record {ord}: {d:?}");
        assert_eq!(d.2.as_deref(), field, "record {ord}: {d:?}");
        assert!(d.3.contains(says), "record {ord}: {d:?}");
    }
    // Messages name the connection, stream, raw page and record position.
    assert!(
        by_ord(1).3.starts_with("wd/workers raw page ") && by_ord(1).3.contains(" record 1 ("),
        "{}",
        by_ord(1).3
    );

    // The same bad records again: one open dead letter each, seen twice.
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.unchanged, s.dead_lettered), (0, 3, 10));
    assert_eq!(count(&pool, "select count(*) from dead_letter").await, 10);
    assert_eq!(
        count(
            &pool,
            "select count(*) from dead_letter where status = 'open' and times_seen = 2"
        )
        .await,
        10
    );
    assert_ledger_consistent(&pool).await;
}

#[tokio::test]
async fn a_value_postgres_still_refuses_is_isolated_and_the_rest_loads() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    // A rule the loader cannot know about (a DBA's check constraint).
    sqlx::query(
        "alter table worker add constraint no_poison check (display_name <> 'Poison Pill')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut all = workers();
    all[137]["descriptor"] = json!("Poison Pill");
    all[203]["descriptor"] = json!("Poison Pill");
    let pages: Vec<String> = all
        .chunks(100)
        .map(|c| {
            let recs: Vec<String> = c.iter().map(|r| r.to_string()).collect();
            page_text(260, &recs)
        })
        .collect();
    let srv = MockServer::start().await;
    serve(&srv, 100, &pages).await;
    let c = ctx_for(&pool, &srv, 100);
    let s = pipeline::sync(&c, None).await.expect("the run succeeds");
    assert_eq!((s.changed, s.dead_lettered), (258, 2));
    let msgs: Vec<String> = sqlx::query_scalar(
        "select message from dead_letter where error_class = 'database' order by id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0].contains("23514") && msgs[0].contains("no_poison"),
        "{msgs:?}"
    );
    assert_eq!(count(&pool, "select count(*) from worker").await, 258);
    assert_ledger_consistent(&pool).await;
}

#[tokio::test]
async fn an_unreadable_page_is_dead_lettered_and_the_stream_moves_on() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let all = workers();
    let page = |from: usize| {
        let recs: Vec<String> = all[from..from + 100]
            .iter()
            .map(|r| r.to_string())
            .collect();
        page_text(300, &recs)
    };
    // The middle page is not JSON (an error page with a fresh request id
    // each time); the total says more follow.
    let srv = MockServer::start().await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .and(query_param("offset", "100"))
        .respond_with(move |_: &wiremock::Request| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_string(format!(
                "<html>Service temporarily unavailable (request {i})</html>"
            ))
        })
        .mount(&srv)
        .await;
    let pages = [page(0), String::new(), page(100)];
    for (i, body) in pages.iter().enumerate().filter(|(i, _)| *i != 1) {
        Mock::given(path("/ccx/api/common/v1/acme/workers"))
            .and(query_param("offset", (i * 100).to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_string(body.clone()))
            .mount(&srv)
            .await;
    }
    let c = ctx_for(&pool, &srv, 100);
    let s = pipeline::sync(&c, None).await.expect("the run succeeds");
    assert_eq!((s.pages_fetched, s.changed), (3, 200));
    let (ord, class, msg): (Option<i32>, String, String) =
        sqlx::query_as("select record_ordinal, error_class, message from dead_letter")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((ord, class.as_str()), (None, "unreadable_page"));
    assert!(msg.contains("not JSON"), "{msg}");
    assert_ledger_consistent(&pool).await;
    // Again, with another body: the page dead letter (keyed by the page's
    // position) is the same one, seen twice.
    pipeline::sync(&c, None).await.unwrap();
    assert_eq!(
        count(
            &pool,
            "select sum(times_seen) from dead_letter where status = 'open'"
        )
        .await,
        2
    );
    assert_eq!(count(&pool, "select count(*) from dead_letter").await, 1);
    // The source recovers: a pull that reads every page resolves it.
    let srv2 = MockServer::start().await;
    let last = page(100).replace("\"total\": 300", "\"total\": 200");
    serve(
        &srv2,
        100,
        &[page(0).replace("\"total\": 300", "\"total\": 200"), last],
    )
    .await;
    let c2 = ctx_for(&pool, &srv2, 100);
    pipeline::sync(&c2, None).await.unwrap();
    assert_eq!(
        count(
            &pool,
            "select count(*) from dead_letter where status = 'open'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_source_id_repeated_on_a_page_ends_as_its_last_occurrence() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let all = workers();
    let mut first = all[0].clone();
    first["businessTitle"] = json!("Old Title");
    let mut last = all[0].clone();
    last["businessTitle"] = json!("New Title");
    let recs: Vec<String> = [first, all[1].clone(), last, all[2].clone()]
        .iter()
        .map(|r| r.to_string())
        .collect();
    let srv = MockServer::start().await;
    serve(&srv, 100, &[page_text(4, &recs)]).await;
    let c = ctx_for(&pool, &srv, 100);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.superseded), (3, 1));
    let title =
        "select business_title from worker where source_id = 'c3dd75f6808578e6ec925f09a227f039'";
    let t: String = sqlx::query_scalar(title).fetch_one(&pool).await.unwrap();
    assert_eq!(t, "New Title");
    let derivations = count(&pool, "select count(*) from derivation").await;
    let st = sync_daemon::status::status(&pool, &[]).await.unwrap();
    let text = sync_daemon::status::render(&st);
    assert!(
        text.contains("4 seen = 3 changed + 0 unchanged + 0 dead-lettered + 1 superseded"),
        "{text}"
    );
    // Re-syncs neither flip the row nor write anything.
    for _ in 0..2 {
        let s = pipeline::sync(&c, None).await.unwrap();
        assert_eq!((s.changed, s.unchanged, s.superseded), (0, 3, 1));
        let t: String = sqlx::query_scalar(title).fetch_one(&pool).await.unwrap();
        assert_eq!(t, "New Title");
    }
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        derivations
    );
    let (seen, sup): (i64, i64) = sqlx::query_as(
        "select sum(records_seen)::bigint, sum(records_superseded)::bigint from sync_run",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((seen, sup), (12, 3));
    // A replay into an empty model agrees with the live state.
    let live = state(&pool).await;
    empty_model(&pool).await;
    let r = pipeline::replay(&c, None, false).await.unwrap();
    // Three stored copies of the page: the last copy's records win; the two
    // older copies' records and each copy's first occurrence are superseded.
    assert_eq!((r.changed, r.superseded), (3, 9));
    assert_eq!(state(&pool).await, live);
}

#[tokio::test]
async fn a_mapper_panic_dead_letters_its_record_and_other_panics_fail_the_run() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    #[derive(Debug)]
    struct PanicsOnOne(workday::WorkersMapper);
    impl canonical_model::Mapper for PanicsOnOne {
        fn mapping(&self) -> &canonical_model::MappingVersion {
            self.0.mapping()
        }
        fn map(
            &self,
            r: &Value,
        ) -> Result<Vec<canonical_model::Entity>, canonical_model::MapError> {
            if r["descriptor"] == "Trip Wire" {
                panic!("mapper bug");
            }
            self.0.map(r)
        }
    }
    let srv = MockServer::start().await;
    let mut recs = workers()[..3].to_vec();
    recs[1]["descriptor"] = json!("Trip Wire");
    let recs: Vec<String> = recs.iter().map(|r| r.to_string()).collect();
    serve(&srv, 100, &[page_text(3, &recs)]).await;
    let connector = workday_sized(&srv.uri(), 100)
        .with_workers_mapper(Arc::new(PanicsOnOne(workday::WorkersMapper::new())));
    let store = RawStore::in_memory();
    let c = common::ctx_built(
        &pool,
        &store,
        sync_daemon::registry::Built::new(connector).unwrap(),
        &bearer(),
    );
    let s = pipeline::sync(&c, None).await.expect("the stream goes on");
    assert_eq!((s.changed, s.dead_lettered), (2, 1));
    let (class, msg): (String, String) =
        sqlx::query_as("select error_class, message from dead_letter")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(class, "mapper_panic");
    assert!(
        msg.contains("mapper bug") && msg.contains("record 1"),
        "{msg}"
    );

    // A panic anywhere else in a run (here: the credential store) ends it
    // `failed` with the reason, and releases its lock.
    #[derive(Debug)]
    struct PanickingStore;
    #[async_trait::async_trait]
    impl connector_core::CredentialStore for PanickingStore {
        async fn load(
            &self,
            _: &str,
        ) -> Result<Option<secrecy::SecretString>, connector_core::Error> {
            panic!("credential store bug")
        }
        async fn save(
            &self,
            _: &str,
            _: &secrecy::SecretString,
        ) -> Result<(), connector_core::Error> {
            Ok(())
        }
    }
    let (base, _fx) = fixture_source().await;
    let mut p = ctx(
        &pool,
        &store,
        Arc::new(workday(&base)),
        &refresh_auth(&base, REFRESH_TOKEN),
    );
    p.connection = "wd-panics".into();
    p.http = Some(
        connector_core::HttpClient::connect(
            "wd-panics",
            p.connector.as_ref(),
            &refresh_auth(&base, REFRESH_TOKEN),
            connector_core::HttpSettings::default(),
            Arc::new(PanickingStore),
        )
        .unwrap(),
    );
    let e = pipeline::sync(&p, None).await.unwrap_err().to_string();
    assert!(
        e.contains("internal error") && e.contains("credential store bug"),
        "{e}"
    );
    let status: String =
        sqlx::query_scalar("select status from sync_run where connection = 'wd-panics'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    pipeline::sync(&c, None)
        .await
        .expect("other connections are not held back");
}

#[tokio::test]
async fn absurd_answers_end_runs_in_a_terminal_state() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let cases: Vec<(&str, ResponseTemplate, &str)> = vec![
        (
            "reset",
            ResponseTemplate::new(429).insert_header("X-RateLimit-Reset", "1e20"),
            "deferred",
        ),
        (
            "retry_after",
            ResponseTemplate::new(503).insert_header("Retry-After", "9000000000000"),
            "deferred",
        ),
        (
            "huge",
            ResponseTemplate::new(200).set_body_string(format!(
                "{{\"total\": 1, \"data\": [\"{}\"]}}",
                "x".repeat(2 << 20)
            )),
            "failed",
        ),
        (
            "total",
            ResponseTemplate::new(200)
                .set_body_string("{\"total\": 10000000000000, \"data\": []}".to_owned()),
            // An empty page the total says is not the end: an incomplete
            // pull, said so (not a silent success, not an allocation).
            "failed",
        ),
    ];
    for (name, resp, want) in cases {
        let srv = MockServer::start().await;
        Mock::given(path("/ccx/api/common/v1/acme/workers"))
            .respond_with(resp)
            .mount(&srv)
            .await;
        let mut c = ctx_for(&pool, &srv, 100);
        c.connection = format!("wd-{name}");
        let mut settings = connector_core::HttpSettings {
            max_body_bytes: 1 << 20,
            ..Default::default()
        };
        settings.retry.base_delay = std::time::Duration::from_millis(1);
        c.http = Some(
            connector_core::HttpClient::connect(
                &c.connection,
                c.connector.as_ref(),
                &bearer(),
                settings,
                Arc::new(connector_core::auth::MemoryCredentialStore::default()),
            )
            .unwrap(),
        );
        let r = pipeline::sync(&c, None).await;
        let (status, error, resume): (
            String,
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as("select status, error, resume_at from sync_run where connection = $1")
            .bind(&c.connection)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, want, "{name}: {r:?} {error:?}");
        if want == "deferred" {
            assert!(resume.is_some_and(|t| t > chrono::Utc::now() + chrono::Duration::days(6)));
        }
        if name == "total" {
            let e = error.as_deref().unwrap_or_default();
            assert!(e.contains("incomplete"), "{e}");
        }
        if name == "huge" {
            let e = error.unwrap();
            assert!(
                e.contains("max_body_bytes") && e.contains("/workers"),
                "{e}"
            );
        }
    }
    assert_ledger_consistent(&pool).await;
}

#[tokio::test]
async fn an_echoed_token_never_reaches_the_ledger() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(|req: &wiremock::Request| {
            let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
            ResponseTemplate::new(403).set_body_string(format!(
                "{{\"error\": \"forbidden\", \"request\": {{\"headers\": {{\"Authorization\": \"{auth}\"}}}}, \"hint\": \"token tok-5ecret-9d2f is not allowed\"}}"
            ))
        })
        .mount(&srv)
        .await;
    let c = ctx_for(&pool, &srv, 100);
    let e = format!("{:#}", pipeline::sync(&c, None).await.unwrap_err());
    let stored: String = sqlx::query_scalar("select error from sync_run")
        .fetch_one(&pool)
        .await
        .unwrap();
    for text in [&e, &stored] {
        assert!(
            text.contains("HTTP 403") && text.contains("forbidden"),
            "{text}"
        );
        assert!(!text.contains("5ecret"), "the token leaked: {text}");
    }
    // Echoed into a record's value, as is and JSON-escaped: the dead letter
    // quoting the value does not carry it either.
    let srv = MockServer::start().await;
    let mut bad = workers()[0].clone();
    bad["hireDate"] = json!("not-a-date tok-5ecret-9d2f");
    let mut bad2 = workers()[1].clone();
    bad2["hireDate"] = json!("@@ESC@@");
    let recs = vec![
        bad.to_string(),
        bad2.to_string()
            .replace("@@ESC@@", &"tok-5ecret-9d2f".replace('-', "\\u002d")),
    ];
    serve(&srv, 100, &[page_text(2, &recs)]).await;
    let mut c = ctx_for(&pool, &srv, 100);
    c.connection = "wd-echo".into();
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.dead_lettered, 2);
    let msgs: Vec<String> =
        sqlx::query_scalar("select message from dead_letter where connection = 'wd-echo'")
            .fetch_all(&pool)
            .await
            .unwrap();
    for m in &msgs {
        assert!(!m.contains("5ecret"), "the token leaked: {m}");
        assert!(m.contains("***"), "{m}");
    }
}

#[tokio::test]
async fn status_lists_every_configured_connection_even_one_that_never_stored_a_page() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    use sync_daemon::status::{Configured, status};
    let srv = MockServer::start().await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no such tenant"))
        .mount(&srv)
        .await;
    let c = ctx_for(&pool, &srv, 100);
    pipeline::sync(&c, None).await.unwrap_err();
    let configured = vec![
        Configured {
            connection: "wd".into(),
            streams: vec!["workers".into()],
            ..Default::default()
        },
        Configured {
            connection: "never-synced".into(),
            streams: vec!["workers".into()],
            ..Default::default()
        },
        Configured {
            connection: "broken-config".into(),
            streams: vec![],
            ..Default::default()
        },
    ];
    let st = status(&pool, &configured).await.unwrap();
    let rows: Vec<(&str, &str, Option<&str>)> = st
        .streams
        .iter()
        .map(|s| {
            (
                s.connection.as_str(),
                s.stream.as_str(),
                s.last_run_status.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("broken-config", "-", None),
            ("never-synced", "workers", None),
            ("wd", "workers", Some("failed")),
        ]
    );
    let wd = &st.streams[2];
    assert!(
        wd.last_run_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 404")),
        "{wd:?}"
    );
    let text = sync_daemon::status::render(&st);
    assert!(
        text.lines()
            .any(|l| l.starts_with("never-synced") && l.split_whitespace().nth(2) == Some("never")),
        "{text}"
    );
    assert!(text.contains("HTTP 404"), "{text}");
}

#[tokio::test]
async fn dead_letters_close_when_their_record_loads_and_replays_do_not_reopen_them() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let w = workers();
    let good = w[0].to_string();
    let mut bad = w[0].clone();
    bad["hireDate"] = json!("not a date");
    let bad = bad.to_string();
    let others: Vec<String> = w[1..3].iter().map(|r| r.to_string()).collect();
    let body = |a: &str| {
        let mut recs = vec![a.to_owned()];
        recs.extend(others.iter().cloned());
        page_text(3, &recs)
    };
    let open = "select count(*) from dead_letter where status = 'open'";
    let store = RawStore::in_memory();
    let at = |srv: &MockServer| {
        ctx(
            &pool,
            &store,
            Arc::new(workday_sized(&srv.uri(), 100)),
            &bearer(),
        )
    };
    for (version, open_after) in [(&good, 0), (&bad, 1), (&good, 0)] {
        let srv = MockServer::start().await;
        serve(&srv, 100, &[body(version)]).await;
        pipeline::sync(&at(&srv), None).await.unwrap();
        assert_eq!(count(&pool, open).await, open_after);
    }
    // The source went back to the stored version: unchanged, and its dead
    // letter closed. A replay of all three pages (the failing one between
    // two good ones) does not reopen it: the failure was superseded.
    let srv = MockServer::start().await;
    let c = at(&srv);
    let r = pipeline::replay(&c, None, false).await.unwrap();
    // Three stored copies of each of the three ids: the last copy of each is
    // unchanged, the six older ones (the failing one among them) superseded.
    assert_eq!(
        (r.dead_lettered, r.unchanged, r.superseded),
        (0, 3, 6),
        "{r:?}"
    );
    assert_eq!(count(&pool, open).await, 0);
    let d = pipeline::replay(&c, None, true).await.unwrap();
    assert_eq!(d.dead_lettered, 0);
}

#[tokio::test]
async fn a_source_id_on_two_pages_of_one_batch_does_not_flip() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    use sync_daemon::load::{LoadCtx, LoadOpts, PageBody, load_batch};
    let w = workers();
    let mut older = w[0].clone();
    older["businessTitle"] = json!("Title on page 0");
    let mut newer = w[0].clone();
    newer["businessTitle"] = json!("Title on page 1");
    let p0: Vec<String> = [older, w[1].clone()]
        .iter()
        .map(|r| r.to_string())
        .collect();
    let p1: Vec<String> = [w[2].clone(), newer]
        .iter()
        .map(|r| r.to_string())
        .collect();
    let srv = MockServer::start().await;
    serve(&srv, 2, &[page_text(4, &p0), page_text(4, &p1)]).await;
    let store = RawStore::in_memory();
    let c = ctx(
        &pool,
        &store,
        Arc::new(workday_sized(&srv.uri(), 2)),
        &bearer(),
    );
    pipeline::sync(&c, None).await.unwrap();
    let title =
        "select business_title from worker where source_id = 'c3dd75f6808578e6ec925f09a227f039'";
    let t: String = sqlx::query_scalar(title).fetch_one(&pool).await.unwrap();
    assert_eq!(t, "Title on page 1", "the later page wins");
    // The same two pages fetched again, loaded in one batch: the copy from
    // the earlier page does not win over its stored twin from the later one.
    let again: Vec<i64> = sqlx::query_scalar(
        "insert into raw_page (run_id, connection, stream, page_token, object_key, body_sha256, body_bytes,
                               fetched_at, request, record_path, record_count)
         select run_id, connection, stream, page_token, object_key, body_sha256, body_bytes, now(),
                request, record_path, record_count from raw_page order by id returning id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut bodies = Vec::new();
    for p in sync_daemon::db::pages(&pool, "wd", "workers", true)
        .await
        .unwrap()
    {
        assert!(again.contains(&p.id));
        let body = store.get(&p.object_key).await.unwrap();
        bodies.push(PageBody { page: p, body });
    }
    let def = c.connector.streams().remove(0);
    let model = c.model(def.name).unwrap();
    let mapping = sync_daemon::db::register_mapping(&pool, model.mapper.mapping())
        .await
        .unwrap();
    let lctx = LoadCtx::new("wd", &def, model, mapping, None);
    let mut tx = pool.begin().await.unwrap();
    let out = load_batch(&mut tx, &lctx, &bodies, LoadOpts::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((out.total.changed, out.total.superseded), (0, 1), "{out:?}");
    let t: String = sqlx::query_scalar(title).fetch_one(&pool).await.unwrap();
    assert_eq!(t, "Title on page 1");
}

#[tokio::test]
async fn bodies_that_bend_json_rules_in_one_way_are_read() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let w = workers();
    // Page 0: a byte-order mark, and a raw tab inside a string.
    let mut tabbed = w[0].clone();
    tabbed["businessTitle"] = json!("@@TAB@@");
    let p0 = format!(
        "\u{feff}{}",
        page_text(
            3,
            &[
                tabbed.to_string().replace("@@TAB@@", "Head\tof HR"),
                w[1].to_string()
            ]
        )
    );
    // Page 1: Latin-1, as its Content-Type says.
    let accented = json!({"id": "latin-1-worker", "descriptor": "René Müller"});
    let p1 = page_text(3, &[accented.to_string()]);
    let latin1: Vec<u8> = p1
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    let srv = MockServer::start().await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .and(query_param("offset", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_string(p0))
        .mount(&srv)
        .await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .and(query_param("offset", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(latin1, "application/json; charset=ISO-8859-1"),
        )
        .mount(&srv)
        .await;
    let store = RawStore::in_memory();
    let c = ctx(
        &pool,
        &store,
        Arc::new(workday_sized(&srv.uri(), 2)),
        &bearer(),
    );
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.dead_lettered, s.pages_unreadable), (3, 0, 0));
    let title: String = sqlx::query_scalar(
        "select business_title from worker where source_id = 'c3dd75f6808578e6ec925f09a227f039'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(title, "Head\tof HR");
    let name: String = sqlx::query_scalar("select display_name from worker where source_id = $1")
        .bind("latin-1-worker")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "René Müller");
    // A replay reads the stored bytes the same way: nothing changes.
    let r = pipeline::replay(&c, None, false).await.unwrap();
    assert_eq!((r.changed, r.unchanged), (0, 3));
}

#[tokio::test]
async fn a_dead_letter_of_a_record_without_id_closes_after_a_complete_pull() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let w = workers();
    let mut no_id = w[1].clone();
    no_id.as_object_mut().unwrap().remove("id");
    let store = RawStore::in_memory();
    let open = "select count(*) from dead_letter where status = 'open'";
    for (second, open_after) in [(no_id, 1), (w[1].clone(), 0)] {
        let srv = MockServer::start().await;
        serve(
            &srv,
            100,
            &[page_text(2, &[w[0].to_string(), second.to_string()])],
        )
        .await;
        let c = ctx(
            &pool,
            &store,
            Arc::new(workday_sized(&srv.uri(), 100)),
            &bearer(),
        );
        pipeline::sync(&c, None).await.unwrap();
        assert_eq!(count(&pool, open).await, open_after);
    }
}
