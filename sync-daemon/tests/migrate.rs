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

/// Each entity table has exactly the columns its declaration says
/// (`EntityKind::fields`, each with its SQL type), plus the provenance and
/// bookkeeping columns every entity has: a field added to the model without
/// its migration, or the other way round, or with another type, fails here.
#[tokio::test]
async fn entity_tables_match_their_declaration() {
    use canonical_model::{EntityKind, FieldType};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let common = [
        ("id", "bigint"),
        ("prov_contributors", "ARRAY"),
        ("prov_field_src", "ARRAY"),
        ("row_hash", "bytea"),
        ("mapping_version_id", "integer"),
        ("updated_at", "timestamp with time zone"),
        ("deleted_at", "timestamp with time zone"),
    ];
    for kind in EntityKind::ALL {
        let mut want: Vec<(String, String)> = kind
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.ty {
                    FieldType::Text => "text",
                    FieldType::Bool => "boolean",
                    FieldType::Date => "date",
                    FieldType::Timestamp => "timestamp with time zone",
                    FieldType::Decimal => "numeric",
                    FieldType::Ref(_) => "bigint",
                };
                (f.column(), ty.to_owned())
            })
            .chain(
                common
                    .iter()
                    .map(|(c, t)| ((*c).to_owned(), (*t).to_owned())),
            )
            .collect();
        want.sort();
        let mut got: Vec<(String, String)> = sqlx::query_as(
            "select column_name::text, data_type::text from information_schema.columns
             where table_schema = 'public' and table_name = $1",
        )
        .bind(kind.as_str())
        .fetch_all(&pool)
        .await
        .unwrap();
        got.sort();
        assert_eq!(got, want, "table {} against its declaration", kind.as_str());
    }
}
