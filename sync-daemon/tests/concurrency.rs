//! One writer per stream (docs/architecture.md, "Invariants and where they hold", 9): two loaders racing on the same pages
//! never duplicate an entity, and a run whose lock session dies stops before
//! writing beside the process that took over.

mod common;

use common::*;
use connector_core::{AuthConfig, RawStore};
use std::sync::Arc;
use std::time::Duration;
use sync_daemon::db;
use sync_daemon::load::{LoadCtx, LoadOpts, PageBody, load_batch};
use sync_daemon::pipeline;

fn bearer() -> AuthConfig {
    AuthConfig::Bearer {
        token: "t".to_owned().into(),
    }
}

async fn no_duplicates(pool: &sqlx::PgPool) {
    assert_eq!(count(pool, "select count(*) from worker").await, 260);
    assert_eq!(
        count(pool, "select count(distinct source_id) from worker").await,
        260
    );
    assert_eq!(
        count(
            pool,
            "select count(*) from worker w join source_link s
               on s.entity_type = 'worker' and s.canonical_id = w.id and s.source_id = w.source_id"
        )
        .await,
        260,
        "every worker row is the one its crosswalk row names"
    );
    assert_eq!(orphans(pool).await, Vec::<String>::new());
}

#[tokio::test]
async fn two_loaders_on_the_same_pages_at_once_create_each_entity_once() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    // Record the pages with a first sync, then empty the model.
    let (c, store, _base, _srv) = fixture_ctx(&pool).await;
    pipeline::sync(&c, None).await.unwrap();
    empty_model(&pool).await;
    let def = c.connector.streams().remove(0);
    let model = c.model(def.name).unwrap().clone();
    let mapping = db::register_mapping(&pool, model.mapper.mapping())
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for p in db::pages(&pool, "wd", "workers", false).await.unwrap() {
        let body = store.get(&p.object_key).await.unwrap();
        bodies.push(PageBody { page: p, body });
    }

    // Loader A writes everything but does not commit yet.
    let lctx = LoadCtx::new("wd", &def, &model, mapping, None);
    let mut a = pool.begin().await.unwrap();
    load_batch(&mut a, &lctx, &bodies, LoadOpts::default())
        .await
        .unwrap();
    // Loader B starts on the same pages meanwhile.
    let (pool_b, def_b, bodies_b, model_b) =
        (pool.clone(), def.clone(), bodies.clone(), model.clone());
    let b = tokio::spawn(async move {
        let lctx = LoadCtx::new("wd", &def_b, &model_b, mapping, None);
        let mut tx = pool_b.begin().await.unwrap();
        load_batch(&mut tx, &lctx, &bodies_b, LoadOpts::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B waits for A's crosswalk rows");
    a.commit().await.unwrap();
    b.await.unwrap();
    no_duplicates(&pool).await;
}

#[tokio::test]
async fn a_run_whose_lock_session_dies_stops_before_writing_beside_its_successor() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = slow_source(Duration::from_millis(120)).await;
    let store = RawStore::in_memory();
    let mk = || pipeline::Ctx {
        fetch_concurrency: 1,
        ..ctx(
            &pool,
            &store,
            Arc::new(workday_sized(&srv.uri(), 20)),
            &bearer(),
        )
    };
    let a_ctx = mk();
    let a = tokio::spawn(async move { pipeline::sync(&a_ctx, None).await });
    // Let A store a few pages, then kill the session that holds its lock.
    while count(&pool, "select count(*) from raw_page").await < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = count(
        &pool,
        // The session holding the connection's lock (key `sync:wd`).
        "select count(pg_terminate_backend(l.pid))
         from pg_locks l, (select hashtextextended('sync:wd', 0) as k) h
         where l.locktype = 'advisory' and l.granted and l.mode = 'ExclusiveLock'
           and l.database = (select oid from pg_database where datname = current_database())
           and l.classid::text::bigint = (h.k >> 32) & 4294967295
           and l.objid::text::bigint = h.k & 4294967295",
    )
    .await;
    assert_eq!(killed, 1);
    // B takes over as soon as Postgres has released the lock.
    let b_ctx = mk();
    let b = loop {
        match pipeline::sync(&b_ctx, None).await {
            Err(e) if e.to_string().contains("another process") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    let b = b.expect("the successor completes");
    let a = a.await.unwrap();
    let e = format!("{:#}", a.expect_err("A must stop"));
    assert!(e.contains("lost the sync lease"), "{e}");
    let a_run = b.run_id - 1;
    let (status, error): (String, String) =
        sqlx::query_as("select status, error from sync_run where id = $1")
            .bind(a_run)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("lease"), "{error}");
    // Nothing of A was written after B took the lease.
    assert_eq!(
        count(
            &pool,
            &format!(
                "select count(*) from raw_page p where p.run_id = {a_run}
                 and p.id > (select min(id) from raw_page where run_id = {})",
                b.run_id
            )
        )
        .await,
        0
    );
    no_duplicates(&pool).await;
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        260,
        "each worker written once"
    );
}
