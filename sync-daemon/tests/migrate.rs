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
    // The balance check's marks (not mapped fields).
    let journal_entry_extra = [
        ("balance_checked_at", "timestamp with time zone"),
        ("imbalance", "jsonb"),
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
                    FieldType::Decimal | FieldType::Money(_) => "numeric",
                    FieldType::Currency => "character",
                    FieldType::Ref(_) => "bigint",
                };
                (f.column(), ty.to_owned())
            })
            .chain(
                common
                    .iter()
                    .chain(if kind == EntityKind::JournalEntry {
                        &journal_entry_extra[..]
                    } else {
                        &[][..]
                    })
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

/// Every column of every entity table carries a comment, and it is the
/// meaning `docs/canonical-model.md` gives the column, word for word: the
/// schema explains itself, and the document cannot drift from it.
#[tokio::test]
async fn every_entity_column_is_commented_as_the_model_document_says() {
    use canonical_model::EntityKind;
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/canonical-model.md"
    ))
    .unwrap();
    // `### `table`` sections with `| `column` | type | meaning |` rows.
    let mut documented: Vec<(String, String, String)> = Vec::new();
    let mut table = String::new();
    for line in doc.lines() {
        if let Some(t) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            table = t.to_owned();
        } else if let Some(row) = line.strip_prefix("| `") {
            let cells: Vec<&str> = row.splitn(3, " | ").collect();
            if let [col, _ty, meaning] = cells[..] {
                documented.push((
                    table.clone(),
                    col.trim_end_matches('`').to_owned(),
                    meaning.trim_end_matches(" |").to_owned(),
                ));
            }
        }
    }
    for kind in EntityKind::ALL {
        let got: Vec<(String, Option<String>)> = sqlx::query_as(
            "select a.attname::text, col_description(a.attrelid, a.attnum)
             from pg_attribute a
             where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped
             order by a.attnum",
        )
        .bind(kind.as_str())
        .fetch_all(&pool)
        .await
        .unwrap();
        for (col, comment) in got {
            let comment =
                comment.unwrap_or_else(|| panic!("{}.{col} has no comment", kind.as_str()));
            let doc = documented
                .iter()
                .find(|(t, c, _)| t == kind.as_str() && *c == col)
                .unwrap_or_else(|| {
                    panic!(
                        "docs/canonical-model.md does not document {}.{col}",
                        kind.as_str()
                    )
                });
            assert_eq!(doc.2, comment, "{}.{col}", kind.as_str());
        }
    }
}
