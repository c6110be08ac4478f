//! End to end over the recorded fixtures, with a real Postgres per test.

mod common;

use canonical_model::{EntityKind, FieldRule, FieldType, MappingVersion, Transform};
use common::*;
use connector_core::RawStore;
use std::sync::Arc;
use sync_daemon::{explain, pipeline};

#[tokio::test]
async fn sync_loads_every_worker_with_typed_values_and_provenance() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, store, _base, _srv) = fixture_ctx(&pool).await;
    let s = pipeline::sync(&ctx, None).await.unwrap();
    assert_eq!(
        (s.pages_fetched, s.changed, s.unchanged, s.dead_lettered),
        (3, 260, 0, 0)
    );
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);

    let (name, hire, fte, org): (String, chrono::NaiveDate, rust_decimal::Decimal, Option<i64>) = sqlx::query_as(
        "select display_name, hire_date, fte, org_unit_id from worker where source_id = 'c3dd75f6808578e6ec925f09a227f039'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(name, "Logan McNeil");
    assert_eq!(hire.to_string(), "2008-12-14");
    assert_eq!(fte.to_string(), "1");
    assert!(org.is_some());
    // Edge cases of the fixtures: Workday date with offset, non-ASCII, no organisation, nulls.
    let names: Vec<(String, Option<String>, Option<i64>)> =
        sqlx::query_as("select display_name, hire_date::text, org_unit_id from worker order by worker_number limit 6")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(names[1].0, "山田 太郎");
    assert_eq!(names[1].1.as_deref(), Some("2015-04-01"));
    assert_eq!(names[3].2, None, "worker 4 has no organisation");
    assert!(
        count(
            &pool,
            "select count(*) from worker where manager_id is not null"
        )
        .await
            > 0
    );

    // Every non-null field resolves to a stored object whose pointer yields the source value.
    let ids: Vec<String> = sqlx::query_scalar("select source_id from worker")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut checked = 0;
    for id in ids {
        let x = explain::explain(&pool, &store, "worker", &id, None)
            .await
            .unwrap();
        for f in &x.fields {
            let def = EntityKind::Worker.field(&f.field).unwrap();
            let src = f
                .source_value
                .as_ref()
                .unwrap_or_else(|| panic!("{id}.{} has no source value", f.field));
            let t: Transform = f.transform.as_deref().unwrap().parse().unwrap();
            match def.ty {
                FieldType::Ref(kind) => {
                    let target = f.value["canonical_id"].as_i64().unwrap();
                    let sid: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "select source_id from {kind} where id = $1"
                    )))
                    .bind(target)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert_eq!(&serde_json::Value::String(sid), src);
                }
                _ => assert_eq!(
                    t.apply(src).unwrap(),
                    t.apply(&f.value).unwrap(),
                    "{id}.{}",
                    f.field
                ),
            }
            assert!(store.exists(&f.raw_object_key).await.unwrap());
            checked += 1;
        }
    }
    assert!(checked > 260 * 10, "checked {checked} fields");
}

#[tokio::test]
async fn resync_of_unchanged_data_writes_nothing_and_counts_add_up() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, _store, _base, _srv) = fixture_ctx(&pool).await;
    pipeline::sync(&ctx, None).await.unwrap();
    let derivations = count(&pool, "select count(*) from derivation").await;
    let stamp: Vec<String> = sqlx::query_scalar("select updated_at::text from worker order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let s = pipeline::sync(&ctx, None).await.unwrap();
    assert_eq!((s.changed, s.unchanged, s.dead_lettered), (0, 260, 0));
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        derivations
    );
    let stamp2: Vec<String> = sqlx::query_scalar("select updated_at::text from worker order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stamp, stamp2, "no entity row was rewritten");
    assert_eq!(
        count(
            &pool,
            &format!(
                "select sum(records_changed)::bigint from raw_page where run_id = {}",
                s.run_id
            )
        )
        .await,
        0,
        "every page of the re-sync loaded as unchanged"
    );
    // Per page and per run: changed + unchanged + dead = records.
    assert_eq!(count(&pool, "select count(*) from raw_page where loaded_at is null or record_count <> records_changed + records_unchanged + records_dead").await, 0);
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_run where records_seen = 260 and status = 'succeeded'"
        )
        .await,
        2
    );
}

fn v2() -> Arc<workday::WorkersMapper> {
    let v1 = MappingVersion::new(
        workday::mapper::MAPPER,
        workday::mapper::VERSION,
        workday::mapper::rules(),
    )
    .unwrap();
    let rule = FieldRule::new(
        EntityKind::Worker,
        "business_title",
        &["/businessTitle"],
        Transform::Uppercase,
    );
    Arc::new(workday::WorkersMapper::with_mapping(
        v1.with_rule("2", rule).unwrap(),
    ))
}

#[tokio::test]
async fn replay_after_a_mapping_change_rewrites_only_changed_rows() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (base, _srv) = fixture_source().await;
    let store = RawStore::in_memory();
    let auth = refresh_auth(&base, REFRESH_TOKEN);
    pipeline::sync(&ctx(&pool, &store, Arc::new(workday(&base)), &auth), None)
        .await
        .unwrap();
    let before = state(&pool).await;
    let derivations = count(&pool, "select count(*) from derivation").await;
    let titled = count(
        &pool,
        "select count(*) from worker where business_title is not null",
    )
    .await;

    let mut c2 = ctx_built(
        &pool,
        &store,
        sync_daemon::registry::Built::new(workday(&base).with_workers_mapper(v2())).unwrap(),
        &auth,
    );
    c2.http = None; // replay never calls the source
    let dry = pipeline::replay(&c2, None, true).await.unwrap();
    let diff = dry.diff.unwrap();
    assert_eq!(
        diff.fields_changed.get("worker.business_title").copied(),
        Some(titled as u64)
    );
    assert_eq!(diff.fields_changed.len(), 1, "{diff:?}");
    assert_eq!(state(&pool).await, before, "--dry-run writes nothing");
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        derivations
    );

    let real = pipeline::replay(&c2, None, false).await.unwrap();
    assert_eq!(real.changed, titled);
    let v2_id = "(select id from mapping_version where version = '2')";
    assert_eq!(
        count(
            &pool,
            &format!("select count(*) from worker where mapping_version_id = {v2_id}")
        )
        .await,
        titled
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from worker where business_title <> upper(business_title)"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            &format!("select count(*) from derivation where mapping_version_id = {v2_id}")
        )
        .await,
        titled
    );
    // A second replay of the same version changes nothing.
    assert_eq!(pipeline::replay(&c2, None, false).await.unwrap().changed, 0);
}

#[tokio::test]
async fn replaying_every_page_into_an_empty_model_reproduces_the_live_state() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (c, _store, _base, _srv) = fixture_ctx(&pool).await;
    pipeline::sync(&c, None).await.unwrap();
    pipeline::sync(&c, None).await.unwrap();
    let live = state(&pool).await;
    empty_model(&pool).await;
    assert!(state(&pool).await.is_empty());
    let mut r = c.clone();
    r.http = None;
    let s = pipeline::replay(&r, None, false).await.unwrap();
    assert_eq!(s.records(), 520);
    assert_eq!(state(&pool).await, live);
}

#[tokio::test]
async fn tokens_that_expire_mid_run_are_refreshed() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    // Each token is good for two page requests: the third page meets a 401.
    let srv = fixture_server_with(sync_daemon::fixture_server::FixtureOptions {
        token_max_requests: Some(2),
        ..Default::default()
    })
    .await;
    let base = format!("http://{}", srv.addr);
    let store = RawStore::in_memory();
    let c = pipeline::Ctx {
        fetch_concurrency: 1,
        ..ctx(
            &pool,
            &store,
            Arc::new(workday(&base)),
            &refresh_auth(&base, REFRESH_TOKEN),
        )
    };
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.pages_fetched, s.changed), (3, 260));
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        srv.stats.unauthorized.load(Relaxed),
        1,
        "one expired token met"
    );
    assert_eq!(srv.stats.tokens_issued.load(Relaxed), 2, "refreshed once");
    assert_eq!(srv.stats.pages_served.load(Relaxed), 3);
}
