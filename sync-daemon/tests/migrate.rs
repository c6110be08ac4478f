//! `migrate` is safe to run twice and concurrently.

mod common;

use common::TestDb;
use sync_daemon::db;

#[tokio::test]
async fn migrate_runs_concurrently_and_twice() {
    let test_db = TestDb::empty().await;
    let pool = test_db.pool.clone();
    let (a, b) = tokio::join!(db::migrate(&pool), db::migrate(&pool));
    a.unwrap();
    b.unwrap();
    db::migrate(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, db::MIGRATOR.iter().count() as i64);
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name in ('worker', 'raw_page', 'watermark')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn an_unmigrated_database_is_named_with_the_fix() {
    let test_db = TestDb::empty().await;
    let pool = test_db.pool.clone();
    let e = sync_daemon::db::check_schema(&pool, std::path::Path::new("sync.toml"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not migrated") && e.contains("--config sync.toml migrate"),
        "{e}"
    );
    sync_daemon::db::migrate(&pool).await.unwrap();
    sync_daemon::db::check_schema(&pool, std::path::Path::new("sync.toml"))
        .await
        .unwrap();
}
