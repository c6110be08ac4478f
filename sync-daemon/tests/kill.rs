//! The real binary, killed with SIGKILL at several moments of a sync and rerun,
//! ends with exactly the rows of an uninterrupted sync.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn database_url(db: &str) -> String {
    common::pg::url_of(db)
}

fn sync(cfg: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sync-daemon"))
        .args(["--config", cfg.to_str().unwrap(), "sync", "wd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the child without blocking the runtime that serves the fixtures.
async fn wait(mut child: Child) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigkill_at_any_moment_then_rerun_equals_an_uninterrupted_sync() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (base, _srv) = fixture_source().await;
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &database_url(&db),
        &base,
        "page_size = 20",
        (CLIENT_SECRET, REFRESH_TOKEN),
    );

    let mut killed_mid_run = 0;
    for delay_ms in [40, 90, 150, 220, 300, 400, 520] {
        let mut child = sync(&cfg);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_run += 1;
        }
        wait(child).await;
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed during a run"
    );
    assert!(wait(sync(&cfg)).await.success(), "the rerun completes");
    assert!(
        count(
            &pool,
            "select count(*) from sync_run where status = 'interrupted' and pages > 0"
        )
        .await
            >= 1,
        "a killed run is recorded with the pages the ledger shows it stored"
    );

    let interrupted = state(&pool).await;
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
    assert_eq!(
        count(&pool, "select count(*) from derivation").await,
        260,
        "each worker written exactly once"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from raw_page where loaded_at is null"
        )
        .await,
        0
    );
    let raw = connector_core::RawStore::from_url(
        &url::Url::from_directory_path(dir.path().join("raw")).unwrap(),
        &[],
    )
    .unwrap();
    for key in sqlx::query_scalar::<_, String>("select object_key from raw_page")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        assert!(
            raw.exists(&key).await.unwrap(),
            "ledger row without its object: {key}"
        );
    }

    // The same source synced once, without interruption, into an emptied database.
    sqlx::query(
        "truncate worker, org_unit, location, dead_letter, source_link, derivation, raw_page,
                  watermark, watermark_history, sync_run cascade",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(wait(sync(&cfg)).await.success());
    assert_eq!(state(&pool).await, interrupted);
}

/// SIGTERM ends a run as `interrupted` (not `running`, not `failed`), and
/// the next run resumes and completes.
#[tokio::test]
async fn sigterm_ends_the_run_as_interrupted() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let srv = slow_source(Duration::from_millis(150)).await;
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = url::Url::from_directory_path(dir.path().join("raw")).unwrap();
    let cfg = dir.path().join("sync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[raw_store]\nurl = \"{raw}\"\n[[connection]]\nname = \"wd\"\nconnector = \"workday\"\nbase_url = \"{}\"\ntenant = \"acme\"\npage_size = 20\n[connection.http]\nfetch_concurrency = 1\n",
            database_url(&db),
            srv.uri()
        ),
    )
    .unwrap();
    let child = sync(&cfg);
    while count(&pool, "select count(*) from raw_page").await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait(child).await;
    assert!(!status.success(), "an interrupted run is not a success");
    let (run_status, error): (String, String) =
        sqlx::query_as("select status, error from sync_run")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(run_status, "interrupted");
    assert!(error.contains("signal"), "{error}");
    assert!(
        count(&pool, "select pages::bigint from sync_run").await >= 1,
        "an interrupted run records the pages it stored"
    );
    assert!(wait(sync(&cfg)).await.success(), "the next run completes");
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
}
