//! Deletes: tombstones from a source's feed (BambooHR's changed feed, end to
//! end) and mark and sweep of full-refresh streams (Workday).

mod common;

use common::*;
use connector_core::{AuthConfig, Connector, RawStore};
use serde_json::{Value, json};
use sync_daemon::{explain, pipeline, registry::Built};
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A recorded payload, byte for byte (key order matters: records keyed by
/// id are read in body order).
fn bamboo_fixture(name: &str) -> ResponseTemplate {
    let p = fixture_dir().join("../../bamboohr").join(name);
    ResponseTemplate::new(200).set_body_raw(std::fs::read(&p).unwrap(), "application/json")
}

const REPORT: &str = "/api/gateway.php/acme/v1/reports/custom";
const CHANGED: &str = "/api/gateway.php/acme/v1/employees/changed/";

/// The report definition the connector sends, with the filter of an
/// incremental run.
fn report_request(since: Option<&str>) -> Value {
    let fields: Vec<String> = bamboohr::DEFAULT_FIELDS
        .iter()
        .filter(|f| **f != "id" && **f != "lastChanged")
        .map(|f| (*f).to_owned())
        .collect();
    let mut all = vec!["id".to_owned(), "lastChanged".to_owned()];
    all.extend(fields);
    let mut body = json!({"title": "sync-daemon employees", "fields": all});
    if let Some(s) = since {
        body["filters"] = json!({"lastChanged": {"includeNull": "no", "value": s}});
    }
    body
}

/// Serves one run of the BambooHR-shaped source: the report for exactly
/// `filter` (none on the first run) and the changed feed for exactly `since`.
async fn serve_run(
    srv: &MockServer,
    filter: Option<&str>,
    report: &str,
    since: &str,
    changed: &str,
) {
    srv.reset().await;
    Mock::given(method("POST"))
        .and(path(REPORT))
        .and(query_param("format", "JSON"))
        .and(query_param("onlyCurrent", "false"))
        .and(wiremock::matchers::header(
            "content-type",
            "application/json",
        ))
        .and(wiremock::matchers::header("accept", "application/json"))
        // apikey:x
        .and(wiremock::matchers::header(
            "authorization",
            "Basic c2VjcmV0LWFwaS1rZXk6eA==",
        ))
        .and(body_json(report_request(filter)))
        .respond_with(bamboo_fixture(report))
        .mount(srv)
        .await;
    Mock::given(method("GET"))
        .and(path(CHANGED))
        .and(query_param("since", since))
        .respond_with(bamboo_fixture(changed))
        .mount(srv)
        .await;
}

/// A BambooHR connection to the mock `srv` (API key `key`, password `x`).
fn bamboo_ctx(pool: &sqlx::PgPool, store: &RawStore, srv: &MockServer, key: &str) -> pipeline::Ctx {
    let bamboo = bamboohr::BambooHr::new(
        serde_json::from_value(json!({
            "company_domain": "acme",
            "base_url": format!("{}/api/gateway.php/acme/v1/", srv.uri()),
        }))
        .unwrap(),
    )
    .unwrap();
    let auth: AuthConfig =
        serde_json::from_value(json!({"strategy": "basic", "username": key, "password": "x"}))
            .unwrap();
    ctx_built(pool, store, Built::new(bamboo).unwrap(), &auth)
}

async fn deleted(pool: &sqlx::PgPool, source_id: &str) -> bool {
    sqlx::query_scalar(
        "select w.deleted_at is not null from worker w join source_link l on l.canonical_id = w.id
         where l.entity_type = 'worker' and l.source_id = $1",
    )
    .bind(source_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn bamboohr_end_to_end_tombstones_delete_and_a_newer_record_revives() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let store = RawStore::in_memory();
    let c = bamboo_ctx(&pool, &store, &srv, "secret-api-key");

    // Run 1: the report without a filter, the changed feed from its floor.
    serve_run(
        &srv,
        None,
        "report-1.json",
        bamboohr::CHANGES_FLOOR,
        "changed-1.json",
    )
    .await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.outcome, "succeeded");
    assert_eq!(
        count(
            &pool,
            "select count(*) from worker where deleted_at is null"
        )
        .await,
        6
    );
    let (hire, term, status, manager): (
        Option<chrono::NaiveDate>,
        Option<chrono::NaiveDate>,
        String,
        bool,
    ) = sqlx::query_as(
        "select w.hire_date, w.termination_date, w.employment_status, w.manager_id is not null
             from worker w join source_link l on l.canonical_id = w.id where l.source_id = '5'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (hire, term, status.as_str(), manager),
        (None, None, "Active", true),
        "0000-00-00 is no date"
    );
    let terminated: (String, String) = sqlx::query_as(
        "select employment_status, termination_date::text from worker where display_name = '小明 王'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        terminated,
        ("Inactive".into(), "2026-10-31".into()),
        "terminated is not deleted"
    );
    // The ledger has the real method and a hash of the body, never the body.
    let (m, h): (String, Option<String>) = sqlx::query_as(
        "select request->>'method', request->>'body_sha256' from raw_page where stream = 'employees'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(m, "POST");
    assert_eq!(h.map(|h| h.len()), Some(64));

    // Run 2: the report filtered by the stored bound (the highest lastChanged
    // seen); the feed from the server's `latest` (its `+` sent as %2B: a bare
    // `+` would decode to a space and match nothing). Employee 6 is deleted.
    serve_run(
        &srv,
        Some("2026-11-06T13:45:00Z"),
        "report-2.json",
        "2026-11-06T13:45:00+00:00",
        "changed-2.json",
    )
    .await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.outcome, "succeeded", "{s:?}");
    assert!(
        deleted(&pool, "6").await,
        "the tombstone soft-deletes worker 6"
    );
    assert!(!deleted(&pool, "4").await);
    assert_eq!(
        count(
            &pool,
            "select count(*) from worker where deleted_at is null"
        )
        .await,
        6,
        "7 new, 6 gone"
    );
    let (page, ordinal): (i64, i32) = sqlx::query_as(
        "select deleted_page_id, deleted_ordinal from source_link where source_id = '6' and entity_type = 'worker'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stream: String = sqlx::query_scalar("select stream from raw_page where id = $1")
        .bind(page)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((stream.as_str(), ordinal), ("employee_changes", 0));
    let x = explain::explain_in(&pool, &store, "worker", "6", None, Some("wd"))
        .await
        .unwrap();
    let d = x.deletion.as_ref().expect("the deletion's provenance");
    assert_eq!(
        (d.by, d.raw_page_id, d.record_position),
        ("tombstone", Some(page), Some(0))
    );
    assert!(d.deleted_at.is_some());
    assert!(x.to_string().contains("DELETED"), "{x}");
    // A replay of every stored page gives the same state (tombstone included).
    let before = state(&pool).await;
    let mut r = c.clone();
    r.http = None;
    pipeline::replay(&r, None, false).await.unwrap();
    assert_eq!(state(&pool).await, before);
    assert!(
        deleted(&pool, "6").await,
        "an older record replayed does not revive it"
    );

    // Run 3: employee 6 is back, newer than its deletion: live again.
    serve_run(
        &srv,
        Some("2026-11-10T09:05:00Z"),
        "report-3.json",
        "2026-11-10T09:05:00+00:00",
        "changed-3.json",
    )
    .await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.outcome, "succeeded", "{s:?}");
    assert!(!deleted(&pool, "6").await, "a newer record revives");
    let title: String =
        sqlx::query_scalar("select business_title from worker where display_name like 'Aaliyah%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(title, "Senior Analyst");
    let x = explain::explain_in(&pool, &store, "worker", "6", None, Some("wd"))
        .await
        .unwrap();
    assert!(x.deletion.as_ref().is_some_and(|d| d.deleted_at.is_none()));
    assert!(x.to_string().contains("revived"), "{x}");
    let wm: Value =
        sqlx::query_scalar("select cursor from watermark where stream = 'employee_changes'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        wm["state"], "2026-11-20T08:30:00+00:00",
        "the server's latest, not our clock"
    );

    // Run 4: deleted again; run 5: restored exactly as it was (its old
    // lastChanged, from a source that ignores the filter) and a changed feed
    // with nothing new, as an empty list and without `latest`: the restored
    // record is the source's later word, so the worker is live again, and
    // the feed's state stays where it was.
    let json = |v: Value| ResponseTemplate::new(200).set_body_json(v);
    let report_of = |emps: Vec<Value>| {
        let mut r = serde_json::from_slice::<Value>(
            &std::fs::read(fixture_dir().join("../../bamboohr/report-1.json")).unwrap(),
        )
        .unwrap();
        r["employees"] = Value::Array(emps);
        r
    };
    let restored: Value = serde_json::from_slice::<Value>(
        &std::fs::read(fixture_dir().join("../../bamboohr/report-1.json")).unwrap(),
    )
    .unwrap()["employees"][5]
        .clone();
    assert_eq!(restored["id"], "6");
    for (filter, report, since, changed) in [
        (
            "2026-11-20T08:30:00Z",
            report_of(Vec::new()),
            "2026-11-20T08:30:00+00:00",
            json!({"latest": "2026-11-21T10:00:00+00:00", "employees": {
                "6": {"id": "6", "action": "Deleted", "lastChanged": "2026-11-21T10:00:00+00:00"}}}),
        ),
        (
            "2026-11-20T08:30:00Z",
            report_of(vec![restored.clone()]),
            "2026-11-21T10:00:00+00:00",
            json!({"employees": []}),
        ),
    ] {
        srv.reset().await;
        Mock::given(method("POST"))
            .and(path(REPORT))
            .and(body_json(report_request(Some(filter))))
            .respond_with(json(report))
            .mount(&srv)
            .await;
        Mock::given(method("GET"))
            .and(path(CHANGED))
            .and(query_param("since", since))
            .respond_with(json(changed))
            .mount(&srv)
            .await;
        let s = pipeline::sync(&c, None).await.unwrap();
        assert_eq!(s.outcome, "succeeded", "{s:?}");
        if since.starts_with("2026-11-20") {
            assert!(deleted(&pool, "6").await, "deleted again");
        }
    }
    assert!(!deleted(&pool, "6").await, "restored as it was: live again");
    let wm: Value =
        sqlx::query_scalar("select cursor from watermark where stream = 'employee_changes'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        wm["state"], "2026-11-21T10:00:00+00:00",
        "no latest: the state stays"
    );
}

/// A Workday-shaped source of `workers` (offset/limit with a total); the
/// page at `fail_at` answers 500.
async fn serve_workers(srv: &MockServer, all: Vec<Value>, fail_at: Option<usize>) {
    srv.reset().await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(move |req: &wiremock::Request| {
            let q = |k: &str| -> usize {
                req.url
                    .query_pairs()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            let (offset, limit) = (q("offset"), q("limit"));
            if fail_at == Some(offset) {
                return ResponseTemplate::new(500);
            }
            let data: Vec<&Value> = all.iter().skip(offset).take(limit).collect();
            ResponseTemplate::new(200).set_body_json(json!({"total": all.len(), "data": data}))
        })
        .mount(srv)
        .await;
}

#[tokio::test]
async fn a_complete_full_run_sweeps_what_the_source_dropped_and_nothing_else_ever_does() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let store = RawStore::in_memory();
    let c = ctx(
        &pool,
        &store,
        std::sync::Arc::new(workday_sized(&srv.uri(), 50)),
        &AuthConfig::None,
    );
    let all: Vec<Value> = workers().into_iter().take(100).collect();
    let gone = all[7]["id"].as_str().unwrap().to_owned();
    let live = "select count(*) from worker where deleted_at is null";

    serve_workers(&srv, all.clone(), None).await;
    pipeline::sync(&c, None).await.unwrap();
    assert_eq!(count(&pool, live).await, 100);

    // The source no longer lists one worker: the complete run deletes it.
    let mut fewer = all.clone();
    fewer.remove(7);
    serve_workers(&srv, fewer.clone(), None).await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.swept, 1);
    assert!(deleted(&pool, &gone).await);
    assert_eq!(count(&pool, live).await, 99);
    let run: Option<i64> = sqlx::query_scalar(
        "select deleted_run_id from source_link where entity_type = 'worker' and source_id = $1",
    )
    .bind(&gone)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(run, Some(s.run_id));
    let x = explain::explain(&pool, &store, "worker", &gone, None)
        .await
        .unwrap();
    assert!(
        x.to_string().contains("sweep of run") && x.to_string().contains("stream workers"),
        "{x}"
    );
    // A replay of every stored page (the worker's older records included)
    // leaves it deleted: the sweep is newer than any record the run saw.
    let mut r = c.clone();
    r.http = None;
    pipeline::replay(&r, None, false).await.unwrap();
    assert!(deleted(&pool, &gone).await, "a replay revived a swept row");
    assert_eq!(count(&pool, live).await, 99);

    // A worker removed while the pull pages through (the total drops between
    // pages) shifts a live one onto a page already read: nothing is swept.
    srv.reset().await;
    let shifting = fewer.clone();
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(move |req: &wiremock::Request| {
            let offset: usize = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "offset")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            // The second page is read after worker 0 was removed.
            let now: Vec<&Value> = if offset == 0 {
                shifting.iter().collect()
            } else {
                shifting.iter().skip(1).collect()
            };
            let data: Vec<&&Value> = now.iter().skip(offset).take(50).collect();
            ResponseTemplate::new(200).set_body_json(json!({"total": now.len(), "data": data}))
        })
        .mount(&srv)
        .await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.swept, 0, "records moved between pages: nothing is swept");
    assert_eq!(count(&pool, live).await, 99);

    // An empty answer would delete everything: the guard deletes nothing.
    serve_workers(&srv, Vec::new(), None).await;
    let e = pipeline::sync(&c, None).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("max_sweep_share") && msg.contains("99 of its 99"),
        "{msg}"
    );
    assert_eq!(count(&pool, live).await, 99);

    // A run that fails on its last page deletes nothing, although its
    // first page lacks workers.
    let mut partial = fewer.clone();
    partial.drain(0..10);
    serve_workers(&srv, partial, Some(50)).await;
    assert!(pipeline::sync(&c, None).await.is_err());
    assert_eq!(count(&pool, live).await, 99);

    // The worker comes back: live again, and a resumed (not complete from
    // its first page) run sweeps nothing either.
    serve_workers(&srv, all.clone(), None).await;
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.swept, 0);
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.swept, 0);
    assert!(!deleted(&pool, &gone).await);
    assert_eq!(count(&pool, live).await, 100);
}

#[tokio::test]
async fn bamboohr_throttling_by_503_or_429_with_retry_after_is_waited_out_and_its_reason_kept() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    // The report is throttled once with 503 (older tenants), the feed once with 429.
    Mock::given(method("POST"))
        .and(path(REPORT))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "1")
                .insert_header("X-BambooHR-Error-Message", "Too many requests"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&srv)
        .await;
    Mock::given(method("POST"))
        .and(path(REPORT))
        .respond_with(bamboo_fixture("report-1.json"))
        .mount(&srv)
        .await;
    Mock::given(method("GET"))
        .and(path(CHANGED))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&srv)
        .await;
    Mock::given(method("GET"))
        .and(path(CHANGED))
        .respond_with(bamboo_fixture("changed-1.json"))
        .mount(&srv)
        .await;
    let store = RawStore::in_memory();
    let c = bamboo_ctx(&pool, &store, &srv, "k");
    let started = std::time::Instant::now();
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.outcome, s.changed), ("succeeded", 6), "{s:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "both waits were honoured"
    );
    let posts = srv
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == REPORT)
        .count();
    assert_eq!(
        posts, 2,
        "the report (a POST that only reads) was retried once"
    );

    // A refusal that is not throttling fails with BambooHR's reason.
    srv.reset().await;
    Mock::given(method("POST"))
        .and(path(REPORT))
        .respond_with(ResponseTemplate::new(400).insert_header(
            "X-BambooHR-Error-Message",
            "Malformed XML: body parsed as XML",
        ))
        .mount(&srv)
        .await;
    let e = pipeline::sync(&c, None).await.unwrap_err();
    assert!(format!("{e:#}").contains("Malformed XML"), "{e:#}");
}

#[tokio::test]
async fn a_server_state_ahead_of_the_servers_own_clock_is_held_at_its_clock() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REPORT))
        .respond_with(bamboo_fixture("report-1.json"))
        .mount(&srv)
        .await;
    // A record stamped in the future makes `latest` run ahead of the clock.
    Mock::given(method("GET"))
        .and(path(CHANGED))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "latest": "2099-01-01T00:00:00+00:00",
            "employees": {"1": {"id": "1", "action": "Updated", "lastChanged": "2099-01-01T00:00:00+00:00"}}
        })))
        .mount(&srv)
        .await;
    let store = RawStore::in_memory();
    let c = bamboo_ctx(&pool, &store, &srv, "k");
    pipeline::sync(&c, None).await.unwrap();
    let state: String = sqlx::query_scalar(
        "select cursor ->> 'state' from watermark where stream = 'employee_changes'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let state = chrono::DateTime::parse_from_rfc3339(&state).unwrap();
    assert!(
        state <= chrono::Utc::now() + chrono::Duration::seconds(5),
        "the next since must not skip what changes until 2099: {state}"
    );
}

/// One stream of records and tombstones, paged by cursor.
#[derive(Debug)]
struct Feed(url::Url);

impl Connector for Feed {
    const NAME: &'static str = "feed";
    type Config = url::Url;
    fn new(base: url::Url) -> Result<Self, connector_core::Error> {
        Ok(Self(base))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<connector_core::StreamDef> {
        vec![connector_core::StreamDef {
            records: connector_core::Records::Array("/data"),
            pagination: connector_core::Pagination::cursor("cursor", "/next"),
            deleted: Some(connector_core::Deleted::When {
                pointer: "/action",
                values: &["deleted"],
            }),
            ..connector_core::StreamDef::get("workers", "workers")
        }]
    }
}

impl canonical_model::Modeled for Feed {
    fn models(&self) -> Vec<canonical_model::StreamModel> {
        workers_model()
    }
}

/// A batch holding a tombstone and, after it, the same record unchanged
/// (skipped by its hash) leaves the row live: the source listed it after
/// saying it was deleted.
#[tokio::test]
async fn a_record_listed_after_its_tombstone_in_one_batch_keeps_the_row_live() {
    use sync_daemon::load::{LoadCtx, LoadOpts, PageBody, load_batch};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = MockServer::start().await;
    let x = json!({"id": "x", "descriptor": "Worker X"});
    Mock::given(path("/workers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [x]})))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    let built = Built::new(Feed(url::Url::parse(&srv.uri()).unwrap())).unwrap();
    let store = RawStore::in_memory();
    let c = ctx_built(&pool, &store, built, &AuthConfig::None);
    pipeline::sync(&c, None).await.unwrap();
    // Run 2: a tombstone of x, then x again as it was, on the next page.
    Mock::given(path("/workers"))
        .and(wiremock::matchers::query_param_is_missing("cursor"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"id": "x", "action": "deleted"}], "next": "b"})),
        )
        .mount(&srv)
        .await;
    Mock::given(path("/workers"))
        .and(query_param("cursor", "b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [x]})))
        .mount(&srv)
        .await;
    pipeline::sync(&c, None).await.unwrap();
    // Load run 2's two pages again in one batch, from the state before them
    // (x live, last seen on run 1's page).
    sqlx::query(
        "update source_link set raw_page_id = (select min(id) from raw_page), record_ordinal = 0,
                deleted_at = null, deleted_page_id = null, deleted_ordinal = null where source_id = 'x'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("update worker set deleted_at = null")
        .execute(&pool)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for p in sync_daemon::db::pages(&pool, "wd", "workers", false)
        .await
        .unwrap()
        .into_iter()
        .skip(1)
    {
        let body = store.get(&p.object_key).await.unwrap();
        bodies.push(PageBody { page: p, body });
    }
    assert_eq!(bodies.len(), 2);
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
    assert_eq!(
        out.total.superseded, 1,
        "the tombstone is superseded: {out:?}"
    );
    assert!(
        !deleted(&pool, "x").await,
        "x was listed after its tombstone"
    );
}
