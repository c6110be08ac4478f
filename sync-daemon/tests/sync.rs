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

/// A batch prepared while the previous one is still loading must not trust
/// what the crosswalk says of the ids that batch holds: they are mapped and
/// decided again under lock in its own transaction (ADR 0014).
#[tokio::test]
async fn a_batch_prepared_beside_a_loading_one_does_not_skip_its_ids_by_hash() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, _store, _base, _srv) = fixture_ctx(&pool).await;
    pipeline::sync(&ctx, None).await.unwrap();
    let records = sync_daemon::fixture_server::load_records(&fixture_dir()).unwrap();
    let id = records[0].get();
    let source_id = serde_json::from_str::<serde_json::Value>(id).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = sync_daemon::load::PageBody {
        page: sync_daemon::db::PageRef {
            id: 1,
            object_key: String::new(),
            body_sha256: String::new(),
            record_path: "/data".into(),
            record_count: 1,
            parse_error: None,
            page_token: serde_json::Value::Null,
            since: None,
            content_type: None,
        },
        body: format!("{{\"data\":[{id}]}}").into(),
    };
    let def = &ctx.connector.streams()[0];
    let model = &ctx.models[0];
    let mapping_id = sync_daemon::db::register_mapping(&pool, model.mapper.mapping())
        .await
        .unwrap();
    let lctx = sync_daemon::load::LoadCtx::new("wd", def, model, mapping_id, None);
    let opts = sync_daemon::load::LoadOpts::default();
    let alone = sync_daemon::load::prepare(
        &pool,
        &lctx,
        std::slice::from_ref(&page),
        opts,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        alone.decided(),
        (1, 0),
        "the stored record is skipped by hash"
    );
    let in_flight = std::collections::HashSet::from([source_id]);
    let beside = sync_daemon::load::prepare(&pool, &lctx, &[page], opts, &in_flight)
        .await
        .unwrap();
    assert_eq!(
        beside.decided(),
        (0, 1),
        "an id of the batch still loading is mapped, not skipped"
    );
}

/// With `changed_since_param`, the Workday stream is incremental: the first
/// pull asks for everything, the next only for workers whose `lastModified`
/// is at or after the high-water mark (the fixture server filters by it).
#[tokio::test]
async fn workday_changed_since_asks_only_for_what_changed() {
    use connector_core::Connector;
    use sync_daemon::fixture_server::{self, FixtureOptions};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::in_memory();
    // The recorded workers carry no change stamp: each gets one, a minute
    // apart, two of them in the same second.
    let mut all = workers();
    let start = chrono::DateTime::parse_from_rfc3339("2025-03-01T08:00:00.250-05:00").unwrap();
    for (i, w) in all.iter_mut().enumerate() {
        let at = start + chrono::Duration::minutes(i.min(258) as i64);
        w["lastModified"] = at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
            .into();
    }
    let serve = |records: &[serde_json::Value]| {
        let records: Vec<Box<serde_json::value::RawValue>> = records
            .iter()
            .map(|r| serde_json::value::to_raw_value(r).unwrap())
            .collect();
        async move {
            fixture_server::start(
                "127.0.0.1:0",
                records,
                FixtureOptions {
                    client_secret: CLIENT_SECRET.into(),
                    refresh_token: REFRESH_TOKEN.into(),
                    ..FixtureOptions::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let ctx_at = |srv: &fixture_server::FixtureServer| {
        let base = format!("http://{}", srv.addr);
        let wd = workday::Workday::new(
            serde_json::from_value(serde_json::json!({
                "base_url": base, "tenant": "acme", "changed_since_param": "updatedFrom"
            }))
            .unwrap(),
        )
        .unwrap();
        ctx(
            &pool,
            &store,
            Arc::new(wd),
            &refresh_auth(&base, REFRESH_TOKEN),
        )
    };
    let first = serve(&all).await;
    let s = pipeline::sync(&ctx_at(&first), None).await.unwrap();
    assert_eq!((s.pages_fetched, s.changed), (3, 260));
    let high: String = sqlx::query_scalar("select cursor->>'high_water' from watermark")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The bound goes out in whole seconds.
    let bound =
        chrono::SubsecRound::trunc_subsecs(chrono::DateTime::parse_from_rfc3339(&high).unwrap(), 0);
    let at_high = all
        .iter()
        .filter(|w| {
            w["lastModified"]
                .as_str()
                .is_some_and(|m| chrono::DateTime::parse_from_rfc3339(m).unwrap() >= bound)
        })
        .count();
    assert_eq!(at_high, 2, "workers at or after {high}");

    // Three workers change after the first pull.
    for w in all.iter_mut().skip(40).step_by(50).take(3) {
        w["businessTitle"] = "Chief Incremental Officer".into();
        w["lastModified"] = "2026-01-05T10:00:00.000Z".into();
    }
    let second = serve(&all).await;
    let s = pipeline::sync(&ctx_at(&second), None).await.unwrap();
    assert_eq!(s.pages_fetched, 1, "one page of changes");
    assert_eq!(s.changed, 3);
    assert_eq!(
        s.unchanged as usize, at_high,
        "the inclusive bound's overlap"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from worker where business_title = 'Chief Incremental Officer'"
        )
        .await,
        3
    );
}
