//! The first hour, through the real binary: every mistake a newcomer makes is
//! one clear message naming the cause (the file and line, the host and port,
//! the key and the valid ones, every missing variable), in seconds, and
//! `status` reads at a glance after syncs, a dry run and a recovered outage.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `args`, no inherited `DATABASE_URL`/`RUST_LOG`, and `env`.
fn daemon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sync-daemon"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("SYNC_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A config with one Workday connection at `base`, secrets from
/// `WD_SECRET`/`WD_REFRESH`.
fn config(dir: &std::path::Path, db_url: &str, base: &str, extra: &str) -> String {
    let secrets = ("${WD_SECRET}", "${WD_REFRESH}");
    let path = write_config(dir, db_url, base, extra, secrets);
    path.to_str().unwrap().to_owned()
}

const SECRETS: [(&str, &str); 2] = [("WD_SECRET", CLIENT_SECRET), ("WD_REFRESH", REFRESH_TOKEN)];

#[test]
fn a_missing_config_file_and_a_toml_syntax_error_are_one_clear_message() {
    let o = daemon(&["--config", "/nonexistent/sync.toml", "status"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "error: config file /nonexistent/sync.toml not found: give one with --config"
        ),
        "{e}"
    );
    assert!(!e.contains("os error"), "the OS error is not repeated: {e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[database]\nurl = \"postgres://x@h/db\n").unwrap();
    let e = stderr(&daemon(
        &["--config", path.to_str().unwrap(), "status"],
        &[],
    ));
    assert!(e.contains("bad.toml") && e.contains("line 2"), "{e}");
    assert!(
        e.lines().count() > 2,
        "the caret snippet keeps its lines: {e}"
    );
}

#[test]
fn a_dead_server_is_named_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = dead_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/sync_x");
    let cfg = config(dir.path(), &url, "http://127.0.0.1:9", "");
    let started = Instant::now();
    let o = daemon(&["--config", &cfg, "migrate"], &[]);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "cannot connect to PostgreSQL at postgres@127.0.0.1:{port}/sync_x"
        )),
        "{e}"
    );
    assert!(!e.contains("timed out"), "{e}");
}

#[tokio::test]
async fn migrate_creates_the_database_it_is_pointed_at() {
    let name = format!("syncd_test_cli_{}", std::process::id());
    let url = common::pg::url_of(&name);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "http://127.0.0.1:9", "");
    let o = daemon(&["--config", &cfg, "status"], &[]);
    assert!(
        stderr(&o).contains("does not exist; `sync-daemon migrate` creates it"),
        "{}",
        stderr(&o)
    );
    let o = daemon(&["--config", &cfg, "migrate"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("created database \"{name}\"")));
    let o = daemon(&["--config", &cfg, "status"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = daemon(&["--config", &cfg, "migrate"], &[]);
    assert!(o.status.success() && !stderr(&o).contains("created"));
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(common::pg::server_url())
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "drop database \"{name}\" with (force)"
        )))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_typo_in_a_connection_key_is_caught_by_every_command() {
    let test_db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    for (typo, nearest) in [
        ("requests_per_second = 5", "requests_per_sec"),
        ("page_sise = 20", "page_size"),
    ] {
        let cfg = config(dir.path(), &test_db.url(), "http://127.0.0.1:9", typo);
        for args in [
            vec!["status"],
            vec!["explain", "worker", "1"],
            vec!["migrate"],
            vec!["replay", "wd"],
            vec!["sync", "wd"],
        ] {
            let mut all = vec!["--config", cfg.as_str()];
            all.extend(args.iter().copied());
            let o = daemon(&all, &SECRETS);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
            let key = typo.split(' ').next().unwrap();
            assert!(
                e.contains(&format!("unknown key `{key}` (did you mean `{nearest}`?)")),
                "{args:?}: {e}"
            );
            // The core's keys and the connector's, both.
            assert!(
                e.contains("requests_per_sec") && e.contains("run_budget_secs"),
                "{e}"
            );
            assert!(e.contains("base_url") && e.contains("page_size"), "{e}");
        }
    }
}

#[tokio::test]
async fn secrets_are_only_needed_by_commands_that_call_the_source() {
    let test_db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &test_db.url(), "http://127.0.0.1:9", "");
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["replay", "wd", "--dry-run"],
    ] {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend(args.iter().copied());
        let o = daemon(&all, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        if args == ["status", "--json"] {
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            assert_eq!(v["streams"][0]["connection"], "wd");
            assert_eq!(v["streams"][0]["last_run_status"], serde_json::Value::Null);
        }
    }
    let o = daemon(&["--config", &cfg, "sync", "wd"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("WD_SECRET (auth.client_secret), WD_REFRESH (auth.refresh_token)"),
        "every missing variable at once: {e}"
    );
    // Nothing was recorded for the refused sync.
    let runs = count(
        &test_db.pool,
        "select count(*) from sync_run where not dry_run",
    )
    .await;
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn an_unknown_stream_is_a_usage_error_and_records_no_run() {
    let test_db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &test_db.url(), "http://127.0.0.1:9", "");
    for cmd in ["replay", "sync"] {
        let o = daemon(
            &["--config", &cfg, cmd, "wd", "--stream", "wrkers"],
            &SECRETS,
        );
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o)
                .contains("connection \"wd\" has no stream \"wrkers\" (its streams: workers)"),
            "{}",
            stderr(&o)
        );
        let o = daemon(&["--config", &cfg, cmd, "nope"], &SECRETS);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("configured: wd"), "{}", stderr(&o));
    }
    for args in [["explain", "person", "1"], ["explain", "worker", "1"]] {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend(args);
        if args[1] == "worker" {
            all.push("salary");
        }
        let o = daemon(&all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        count(&test_db.pool, "select count(*) from sync_run").await,
        0
    );
}

#[tokio::test]
async fn a_missing_required_key_is_caught_by_every_command_naming_the_file() {
    let test_db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &test_db.url(), "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("tenant = \"acme\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    for cmd in ["status", "migrate"] {
        let e = stderr(&daemon(&["--config", &cfg, cmd], &[]));
        assert!(
            e.contains(&format!("config {cfg}: connection \"wd\"")) && e.contains("tenant"),
            "{cmd}: {e}"
        );
    }
}

/// A breaker an earlier run left open is still open for the next run, as
/// `status` says: the source is not called, and a cool-down longer than a
/// run waits for defers the run to its end.
#[tokio::test]
async fn a_breaker_left_open_holds_for_the_next_run() {
    let test_db = TestDb::migrated().await;
    let srv = wiremock::MockServer::start().await;
    let host = srv.address().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &test_db.url(), &srv.uri(), "");
    for sql in [
        "insert into connection (name, connector) values ('wd', 'workday')".to_owned(),
        format!(
            "insert into circuit_breaker (connection, host, state, consecutive_failures, times_opened, retry_at)
             values ('wd', '{host}', 'open', 5, 1, now() + interval '10 minutes')"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&test_db.pool)
            .await
            .unwrap();
    }
    let st = stdout(&daemon(&["--config", &cfg, "status"], &[]));
    assert!(
        st.contains("open (9 min left)") || st.contains("open (10 min left)"),
        "{st}"
    );
    // Its cool-down outlasts what a run waits for: the run defers to then.
    let o = daemon(&["--config", &cfg, "sync", "wd"], &SECRETS);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deferred"), "{}", stdout(&o));
    assert!(srv.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_source_that_is_down_is_named_with_its_cause_and_logs_have_no_colour_in_a_pipe() {
    let test_db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), &test_db.url(), &base, "");
    let o = daemon(
        &["--config", &cfg, "sync", "wd"],
        &[SECRETS[0], SECRETS[1], ("RUST_LOG", "warn")],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let last = e.lines().last().unwrap();
    assert!(last.starts_with("error: "), "{e}");
    assert!(
        last.contains(&format!("127.0.0.1:{port}")) && last.contains("Connection refused"),
        "the final error names the endpoint and the underlying failure: {last}"
    );
    assert!(e.contains("WARN"), "warnings were logged: {e}");
    assert!(
        !e.contains('\x1b'),
        "no ANSI colour when stderr is a pipe: {e:?}"
    );
    assert!(!e.contains(CLIENT_SECRET) && !e.contains(REFRESH_TOKEN));
}

#[test]
fn every_argument_and_option_has_a_description() {
    use clap::CommandFactory;
    let cli = sync_daemon::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        assert!(
            sub.get_about().is_some(),
            "{} has no description",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            if arg.get_help().is_none() && !["help", "version"].contains(&arg.get_id().as_str()) {
                missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
            }
        }
    }
    for arg in cli.get_arguments() {
        if arg.get_help().is_none() && !["help", "version"].contains(&arg.get_id().as_str()) {
            missing.push(arg.get_id().to_string());
        }
    }
    assert!(missing.is_empty(), "without a description: {missing:?}");
}

/// `status` after five syncs, a dry run, and an outage that recovered: the
/// model's count does not grow with re-syncs, the last run's counts are the
/// last run's, the dry run is apart, and the breaker is read as of now.
#[tokio::test]
async fn status_reads_at_a_glance_after_resyncs_a_dry_run_and_a_recovered_outage() {
    use sync_daemon::pipeline;
    use sync_daemon::status::{Configured, render, status};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, store, _base, _srv) = fixture_ctx(&pool).await;
    for _ in 0..5 {
        pipeline::sync(&ctx, None).await.unwrap();
    }
    pipeline::replay(&ctx, None, true).await.unwrap();
    // An outage: the source is unreachable for one sync, then back.
    let dead = "http://127.0.0.1:9";
    let down = common::ctx(
        &pool,
        &store,
        std::sync::Arc::new(workday(dead)),
        &refresh_auth(dead, REFRESH_TOKEN),
    );
    let failed = pipeline::sync(&down, None).await.unwrap_err();
    assert!(
        format!("{failed:#}").contains("Connection refused"),
        "{failed:#}"
    );
    let configured = [Configured {
        connection: "wd".into(),
        streams: vec!["workers".into()],
        entities: [("workers".into(), "worker".into())].into(),
    }];
    let st = status(&pool, &configured).await.unwrap();
    assert_eq!(st.streams[0].last_run_status.as_deref(), Some("failed"));
    assert!(render(&st).contains("failed: "), "{}", render(&st));

    pipeline::sync(&ctx, None).await.unwrap();
    // A breaker saved open whose cool-down is over reads as half-open now.
    sqlx::query(
        "insert into circuit_breaker (connection, host, state, consecutive_failures, times_opened, retry_at, updated_at)
         values ('wd', '127.0.0.1:9', 'open', 5, 1, now() - interval '10 minutes', now() - interval '11 minutes')
         on conflict (connection, host) do update set state = excluded.state,
           consecutive_failures = excluded.consecutive_failures, retry_at = excluded.retry_at,
           updated_at = excluded.updated_at",
    )
    .execute(&pool)
    .await
    .unwrap();
    let st = status(&pool, &configured).await.unwrap();
    let s = &st.streams[0];
    assert_eq!(s.last_run_status.as_deref(), Some("succeeded"));
    assert_eq!(s.last_run_error, None);
    assert_eq!(
        s.records_in_model,
        Some(260),
        "records now, not summed over runs"
    );
    let c = s.last_run_counts.unwrap();
    assert_eq!((c.seen, c.changed, c.unchanged), (260, 0, 260));
    assert_eq!(s.last_run_pages, Some(3), "the last run's pages");
    assert_eq!(
        s.lifetime.pages_stored, 18,
        "lifetime totals are labelled as such"
    );
    assert!(s.last_dry_run_id.is_some());
    assert_ne!(s.last_run_mode.as_deref(), Some("replay"));
    assert!(
        s.watermark_text.starts_with("complete, "),
        "{}",
        s.watermark_text
    );
    let b = st
        .circuit_breakers
        .iter()
        .find(|b| b.host == "127.0.0.1:9")
        .unwrap();
    assert_eq!(b.state_now, "half_open");
    let text = render(&st);
    let header = text.lines().next().unwrap();
    for col in [
        "CONNECTION",
        "STREAM",
        "LAST RUN",
        "OUTCOME",
        "LAST SUCCESS",
        "RECORDS",
        "CHANGED/SAME/DEAD",
        "DEAD LETTERS",
        "WATERMARK",
        "LEASE",
        "DRIFT",
        "BREAKER",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[0..2], ["wd", "workers"], "{text}");
    assert!(
        row[2].starts_with('#') && row[2].contains("sync") && row[2].ends_with("ago"),
        "{text}"
    );
    assert_eq!(row[3], "succeeded", "{text}");
    assert!(row[4].ends_with("ago"), "the last success: {text}");
    assert_eq!(row[5..8], ["260", "0/260/0", "0"], "{text}");
    assert_eq!(
        row[row.len() - 3..row.len() - 1],
        ["-", "0"],
        "no lease now, no drift: {text}"
    );
    assert_eq!(*row.last().unwrap(), "half-open", "{text}");
    assert!(!text.contains("null"), "{text}");
    assert!(text.contains("cool-down is over"), "{text}");
    assert!(text.contains("Dry runs wrote nothing"), "{text}");
    assert!(
        !text.contains("failed"),
        "the recovered outage is history: {text}"
    );
}
