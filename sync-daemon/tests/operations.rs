//! Operations: the scheduler (`run`), its replicas, `/metrics` and
//! `/healthz`, watermark admin and schema drift.

mod common;

use common::*;
use connector_core::RawStore;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_daemon::config::Config;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sync-daemon")
}

async fn db_url(pool: &sqlx::PgPool) -> String {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    common::pg::url_of(&db)
}

/// A config with `[daemon]` keys and Workday connections (no auth), each
/// `(name, base URL, extra keys)`.
fn config_text(
    db: &str,
    raw: &std::path::Path,
    daemon: &str,
    conns: &[(&str, &str, &str)],
) -> String {
    let raw = url::Url::from_directory_path(raw).unwrap();
    let mut t =
        format!("[daemon]\n{daemon}\n[database]\nurl = \"{db}\"\n[raw_store]\nurl = \"{raw}\"\n");
    for (name, base, extra) in conns {
        t.push_str(&format!(
            "[[connection]]\nname = \"{name}\"\nconnector = \"workday\"\nbase_url = \"{base}\"\ntenant = \"acme\"\n{extra}\n[connection.http]\nmax_attempts = 1\nretry_base_ms = 1\nretry_max_delay_secs = 0\n"
        ));
    }
    t
}

/// (id, connection, status, started, finished) of every run.
async fn runs(
    pool: &sqlx::PgPool,
) -> Vec<(
    i64,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
)> {
    sqlx::query_as(
        "select id, connection, status, started_at, finished_at from sync_run order by id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// No two runs of a connection were ever running at the same time.
async fn assert_no_overlap(pool: &sqlx::PgPool) {
    let all = runs(pool).await;
    for a in &all {
        for b in &all {
            if a.0 < b.0 && a.1 == b.1 {
                let a_end = a.4.expect("every run is finished");
                assert!(
                    a_end <= b.3,
                    "run #{} ({:?}..{:?}) overlaps run #{} starting {:?}",
                    a.0,
                    a.3,
                    a.4,
                    b.0,
                    b.3
                );
            }
        }
    }
}

#[tokio::test]
async fn the_scheduler_runs_due_streams_and_backs_off_a_failing_one_without_holding_back_others() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let good = slow_source(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &db_url(&pool).await,
        &dir.path().join("raw"),
        "max_concurrent_runs = 1\nbackoff_base = \"1s\"\nbackoff_max = \"4s\"\npoll = \"1s\"",
        &[
            (
                "good",
                &good.uri(),
                "page_size = 100\nevery = \"1s\"\njitter = \"0\"",
            ),
            (
                "bad",
                &format!("http://127.0.0.1:{}", dead_port()),
                "every = \"1s\"\njitter = \"0\"",
            ),
        ],
    );
    let cfg = Config::parse(&text, "test.toml", &|_| None).unwrap();
    let store = RawStore::from_url(&cfg.raw_store.url, &[]).unwrap();
    sync_daemon::scheduler::run_until(
        &cfg,
        &pool,
        &store,
        tokio::time::sleep(Duration::from_secs(8)),
    )
    .await
    .unwrap();

    let all = runs(&pool).await;
    let n = |c: &str, s: &str| all.iter().filter(|r| r.1 == c && r.2 == s).count();
    assert!(n("good", "succeeded") >= 3, "{all:?}");
    assert_eq!(n("good", "failed"), 0, "{all:?}");
    // 1 s, 2 s, 4 s between the failures: fewer runs than the healthy
    // stream's (due every second).
    assert!(n("bad", "failed") >= 2, "{all:?}");
    assert!(n("bad", "failed") < n("good", "succeeded"), "{all:?}");
    let (failures, gap): (i32, f64) = sqlx::query_as(
        "select failures, extract(epoch from next_at - last_finished_at)::float8
         from sync_schedule where connection = 'bad'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(failures >= 2, "{failures}");
    assert!(gap >= 1.9, "the backoff doubled: {gap}");
    // One run at a time (max_concurrent_runs = 1), across connections.
    for w in all.windows(2) {
        assert!(w[0].4.unwrap() <= w[1].3, "{w:?}");
    }
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_lease where expires_at > now()"
        )
        .await,
        0,
        "every lease is released at shutdown"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_schedule where claimed_by is not null"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_database_run_each_due_time_once() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let source = slow_source(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    // Due at every even second; two schedulers race for each due time.
    let text = config_text(
        &db_url(&pool).await,
        &dir.path().join("raw"),
        "poll = \"1s\"",
        &[(
            "wd",
            &source.uri(),
            "page_size = 100\nschedule = \"*/2 * * * * *\"\njitter = \"0\"",
        )],
    );
    let cfg = Config::parse(&text, "test.toml", &|_| None).unwrap();
    let store = RawStore::from_url(&cfg.raw_store.url, &[]).unwrap();
    let started = chrono::Utc::now();
    let (a, b) = tokio::join!(
        sync_daemon::scheduler::run_until(
            &cfg,
            &pool,
            &store,
            tokio::time::sleep(Duration::from_secs(7))
        ),
        sync_daemon::scheduler::run_until(
            &cfg,
            &pool,
            &store,
            tokio::time::sleep(Duration::from_secs(7))
        ),
    );
    a.unwrap();
    b.unwrap();
    let ended = chrono::Utc::now();
    // Due times within the window: one every two seconds.
    let slots = (started.timestamp() + 1..=ended.timestamp())
        .filter(|s| s % 2 == 0)
        .count();
    let all = runs(&pool).await;
    assert!(!all.is_empty());
    assert!(
        all.len() <= slots,
        "{} runs for {slots} due times: {all:?}",
        all.len()
    );
    assert!(all.iter().all(|r| r.2 == "succeeded"), "{all:?}");
    assert_no_overlap(&pool).await;
}

#[tokio::test]
async fn a_due_time_is_claimed_once_and_one_a_dead_replica_claimed_is_run_again() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, _store, _base, _srv) = fixture_ctx(&pool).await;
    sync_daemon::db::ensure_connection(&pool, "wd", "workday")
        .await
        .unwrap();
    sqlx::query(
        "insert into sync_schedule (connection, stream, spec, next_at)
         values ('wd', 'workers', 'every 60s', now() - interval '1 second')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut t = toml::Table::new();
    t.insert("every".into(), "60s".into());
    let schedule = sync_daemon::schedule::Schedule::take_from(&mut t)
        .unwrap()
        .unwrap();
    let claim = sync_daemon::scheduler::Claim::new("wd", "workers", schedule, Default::default());
    let first = sync_daemon::pipeline::sync_due(&ctx, "workers", &claim)
        .await
        .unwrap();
    let first = first.expect("the due time runs");
    assert_eq!(first.outcome, "succeeded");
    // A replica that saw it due too, and gets the lock after: nothing to do.
    assert!(
        sync_daemon::pipeline::sync_due(&ctx, "workers", &claim)
            .await
            .unwrap()
            .is_none()
    );
    let (next_in, last, claimed): (f64, i64, Option<String>) = sqlx::query_as(
        "select extract(epoch from next_at - now())::float8, last_run_id, claimed_by
         from sync_schedule where connection = 'wd'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(next_in > 50.0, "due again a period later: {next_in}");
    assert_eq!((last, claimed), (first.run_id, None));
    assert_eq!(count(&pool, "select count(*) from sync_run").await, 1);
    // A replica that claimed it and died: still due, run by the next.
    sqlx::query(
        "update sync_schedule set claimed_by = 'dead:1:', next_at = now() - interval '1 second'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let again = sync_daemon::pipeline::sync_due(&ctx, "workers", &claim)
        .await
        .unwrap();
    assert!(again.is_some());
    assert_eq!(count(&pool, "select count(*) from sync_run").await, 2);
}

fn run_replica(cfg: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(bin())
        // Each replica its own metrics port.
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for the child without blocking the runtime that serves the source.
async fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls `sql` (one bigint) until `ok` holds, for at most `within`.
async fn wait_for(
    pool: &sqlx::PgPool,
    sql: &str,
    ok: impl Fn(i64) -> bool,
    within: Duration,
) -> i64 {
    let end = tokio::time::Instant::now() + within;
    loop {
        let v = count(pool, sql).await;
        if ok(v) || tokio::time::Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The pid in a holder name (`host:pid:run`).
fn pid_of(holder: &str) -> u32 {
    holder.split(':').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn three_replicas_share_the_work_one_killed_mid_run_one_stopped_nothing_lost_or_doubled() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    // 13 pages of 20 workers, 150 ms each: a run lasts about two seconds.
    let source = slow_source(Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &db_url(&pool).await,
        &dir.path().join("raw"),
        "shutdown_grace = \"20s\"\npoll = \"1s\"",
        &[(
            "wd",
            &source.uri(),
            "page_size = 20\nevery = \"1s\"\njitter = \"0\"",
        )],
    );
    let cfg = dir.path().join("sync.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut replicas: Vec<Child> = (0..3)
        .map(|i| run_replica(&cfg, &dir.path().join(format!("replica-{i}.log"))))
        .collect();
    let pids: Vec<u32> = replicas.iter().map(Child::id).collect();
    let holder_sql = "select holder from sync_lease where expires_at > now() and run_id is not null
                      and exists (select 1 from sync_run r where r.id = run_id and r.status = 'running')";

    // A run in progress: kill its replica with SIGKILL.
    let mut holder: Option<String> = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while holder.is_none() && tokio::time::Instant::now() < end {
        holder = sqlx::query_scalar(holder_sql)
            .fetch_optional(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = holder.expect("a replica started a run");
    // Let it store a few pages first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = pids.iter().position(|p| *p == pid_of(&holder)).unwrap();
    let killed_run: i64 = count(&pool, "select max(id) from sync_run").await;
    replicas[killed].kill().unwrap(); // SIGKILL
    wait_exit(&mut replicas[killed], Duration::from_secs(5))
        .await
        .unwrap();

    // Another replica takes the stream over and completes a run.
    let done = wait_for(
        &pool,
        &format!("select count(*) from sync_run where id > {killed_run} and status = 'succeeded'"),
        |n| n >= 1,
        Duration::from_secs(40),
    )
    .await;
    assert!(
        done >= 1,
        "a surviving replica completed a run after the kill"
    );

    // SIGTERM the replica running now: it stops at a page boundary, closes
    // its run, releases its lease and exits 0.
    let mut stopped = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while stopped.is_none() && tokio::time::Instant::now() < end {
        if let Some(h) = sqlx::query_scalar::<_, String>(holder_sql)
            .fetch_optional(&pool)
            .await
            .unwrap()
        {
            let i = pids.iter().position(|p| *p == pid_of(&h)).unwrap();
            if i != killed {
                stopped = Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = stopped.expect("a surviving replica started a run");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Command::new("kill")
        .args(["-TERM", &pids[stopped].to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_exit(&mut replicas[stopped], Duration::from_secs(25))
        .await
        .expect("the stopped replica exits within its grace period");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let prefix = format!("%:{}:%", pids[stopped]);
    assert_eq!(
        count(
            &pool,
            &format!("select count(*) from sync_lease where holder like '{prefix}' and expires_at > now()")
        )
        .await,
        0,
        "the stopped replica released its leases"
    );

    // The last replica goes on: one more complete run after the stop.
    let last: i64 = count(&pool, "select max(id) from sync_run").await;
    let done = wait_for(
        &pool,
        &format!("select count(*) from sync_run where id > {last} and status = 'succeeded'"),
        |n| n >= 1,
        Duration::from_secs(40),
    )
    .await;
    assert!(done >= 1, "the last replica runs the stream after the stop");
    let survivor = (0..3).find(|i| *i != killed && *i != stopped).unwrap();
    Command::new("kill")
        .args(["-TERM", &pids[survivor].to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut replicas[survivor], Duration::from_secs(25))
        .await
        .expect("the last replica exits");
    assert!(status.success(), "{status:?}");

    // The killed run is closed as interrupted by whoever ran next; no two
    // runs overlapped; every worker is there once, with one derivation.
    let killed_status: String = sqlx::query_scalar("select status from sync_run where id = $1")
        .bind(killed_run)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(killed_status, "interrupted");
    assert_no_overlap(&pool).await;
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_run where status not in ('succeeded', 'interrupted')"
        )
        .await,
        0,
        "{:?}",
        runs(&pool).await
    );
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
    assert_eq!(count(&pool, "select count(*) from derivation").await, 260);
    assert_eq!(
        count(
            &pool,
            "select count(*) from source_link where entity_type = 'worker'"
        )
        .await,
        260
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_lease where expires_at > now()"
        )
        .await,
        0
    );
}

fn bamboo_config(dir: &std::path::Path, db: &str, base: &str) -> std::path::PathBuf {
    let raw = url::Url::from_directory_path(dir.join("raw")).unwrap();
    let text = format!(
        r#"[database]
url = "{db}"
[raw_store]
url = "{raw}"
[[connection]]
name = "bamboo"
connector = "bamboohr"
company_domain = "acme"
base_url = "{base}/api/gateway.php/acme/v1/"
[connection.auth]
strategy = "basic"
username = "demo-bamboo-key"
password = "x"
[[connection]]
name = "wd"
connector = "workday"
base_url = "{base}"
tenant = "acme"
"#
    );
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn cli(cfg: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("USER", "tester")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// The CLI runs as a child the test waits for: the fixture server needs a
// thread of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_is_shown_checked_against_its_shape_rewound_audited_and_refused_while_leased() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let bamboo = sync_daemon::fixture_server::load_bamboohr(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bamboohr"),
        2,
        "acme",
        "demo-bamboo-key",
    )
    .unwrap();
    let srv = fixture_server_with(sync_daemon::fixture_server::FixtureOptions {
        bamboohr: Some(bamboo),
        ..Default::default()
    })
    .await;
    let base = format!("http://{}", srv.addr);
    let dir = tempfile::tempdir().unwrap();
    let cfg = bamboo_config(dir.path(), &db_url(&pool).await, &base);
    let (ok, _, err) = cli(&cfg, &["sync", "bamboo"]);
    assert!(ok, "{err}");

    // A mistyped name is a usage error, not an empty list.
    for args in [
        &["dead-letters", "list", "--connection", "nosuch"][..],
        &["drift", "--connection", "nosuch"][..],
        &["watermark", "show", "nosuch"][..],
    ] {
        let (ok, _, err) = cli(&cfg, args);
        assert!(
            !ok && err.contains("no connection named"),
            "{args:?}: {err}"
        );
    }
    let open = count(
        &pool,
        "select count(*) from dead_letter where connection = 'bamboo' and status = 'open'",
    )
    .await;
    let (ok, out, err) = cli(&cfg, &["dead-letters", "retry", "--connection", "bamboo"]);
    assert!(ok, "{err}");
    if open == 0 {
        assert!(out.contains("nothing to retry"), "{out}");
    }
    let (ok, _, err) = cli(&cfg, &["run", "--listen", "nowhere"]);
    assert!(!ok && err.contains("--listen"), "{err}");
    let (ok, _, err) = cli(&cfg, &["run"]);
    assert!(!ok && err.contains("no connection has a schedule"), "{err}");
    let (ok, _, err) = cli(
        &cfg,
        &["drift", "--connection", "bamboo", "--stream", "nope"],
    );
    assert!(!ok && err.contains("no stream"), "{err}");

    let (ok, out, err) = cli(&cfg, &["watermark", "show", "bamboo", "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changes = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "employee_changes")
        .unwrap()
        .clone();
    assert_eq!(changes["shape"], "server_token");
    let before = chrono::DateTime::parse_from_rfc3339(changes["value"].as_str().unwrap()).unwrap();

    // Values are checked against the stream's shape.
    for (args, wants) in [
        (
            vec!["set", "bamboo", "employees", "last tuesday"],
            "RFC 3339",
        ),
        (vec!["set", "bamboo", "employees", "2999-01-01"], "future"),
        (
            vec!["rewind", "bamboo", "employees", "2026-11-20"],
            "not a rewind",
        ),
        (
            vec!["rewind", "bamboo", "employees", "2999-01-01"],
            "future",
        ),
        (vec!["set", "wd", "workers", "2026-01-01"], "full-refresh"),
        (
            vec!["set", "bamboo", "employee_changes", "garbage token"],
            "token is a time",
        ),
        (vec!["rewind", "bamboo", "employees", "0d"], "moves nothing"),
        (vec!["set", "bamboo", "nope", "2026-01-01"], "no stream"),
    ] {
        let mut a = vec!["watermark"];
        a.extend(args.iter());
        a.extend(["--reason", "test"]);
        let (ok, _, err) = cli(&cfg, &a);
        assert!(!ok && err.contains(wants), "{args:?}: {err}");
    }

    // Refused while the stream is leased by a live run.
    sqlx::query(
        "insert into sync_lease (connection, stream, holder, fence, expires_at)
         values ('bamboo', 'employee_changes', 'other-host:4242:x', 99, now() + interval '1 minute')
         on conflict (connection, stream) do update set holder = excluded.holder,
             expires_at = excluded.expires_at",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rewind = || {
        cli(
            &cfg,
            &[
                "watermark",
                "rewind",
                "bamboo",
                "employee_changes",
                "2d",
                "--reason",
                "x",
            ],
        )
    };
    let (ok, _, err) = rewind();
    assert!(!ok && err.contains("leased by other-host:4242:x"), "{err}");
    sqlx::query("update sync_lease set expires_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    // And while another process holds the connection.
    let lock = sync_daemon::lease::lock(&pool, "bamboo").await.unwrap();
    let (ok, _, err) = rewind();
    assert!(!ok && err.contains("being synced"), "{err}");
    drop(lock);

    let (ok, out, err) = cli(
        &cfg,
        &[
            "watermark",
            "rewind",
            "bamboo",
            "employee_changes",
            "2d",
            "--reason",
            "re-fetch after the mapping fix",
            "--by",
            "alice",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("->"), "{out}");
    let want = (before - chrono::Duration::days(2))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (by, reason, state): (String, Option<String>, serde_json::Value) = sqlx::query_as(
        "select changed_by, reason, new_cursor->'state' from watermark_history
         where connection = 'bamboo' and stream = 'employee_changes' order by id desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(by, "alice");
    assert_eq!(reason.as_deref(), Some("re-fetch after the mapping fix"));
    assert_eq!(state, serde_json::json!(want));
    // The default author is the OS user.
    let (ok, _, err) = cli(
        &cfg,
        &[
            "watermark",
            "set",
            "bamboo",
            "employees",
            "2026-01-01",
            "--reason",
            "audit",
        ],
    );
    assert!(ok, "{err}");
    let by: String = sqlx::query_scalar(
        "select changed_by from watermark_history where stream = 'employees' order by id desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(by, "tester");

    // The next sync asks the source from the rewound bound.
    let (ok, _, err) = cli(&cfg, &["sync", "bamboo", "--stream", "employee_changes"]);
    assert!(ok, "{err}");
    let since: Option<String> = sqlx::query_scalar(
        "select since from raw_page where connection = 'bamboo' and stream = 'employee_changes'
         order by id desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let since = since.expect("the page records its bound");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&since).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&want).unwrap(),
        "the re-fetch starts at the rewound bound"
    );
}

/// A Workday-shaped source whose records the test changes between runs.
async fn mutable_source(records: Arc<Mutex<Vec<serde_json::Value>>>) -> wiremock::MockServer {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};
    let srv = MockServer::start().await;
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(move |req: &wiremock::Request| {
            let q = |k: &str| -> usize {
                req.url
                    .query_pairs()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            let all = records.lock().unwrap().clone();
            let data: Vec<&serde_json::Value> =
                all.iter().skip(q("offset")).take(q("limit")).collect();
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": all.len(), "data": data}))
        })
        .mount(&srv)
        .await;
    srv
}

#[tokio::test]
async fn a_source_that_adds_drops_and_retypes_fields_is_reported_and_nothing_is_dropped() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let records = Arc::new(Mutex::new(workers()));
    let srv = mutable_source(records.clone()).await;
    let store = RawStore::in_memory();
    let ctx = common::ctx(
        &pool,
        &store,
        Arc::new(workday_sized(&srv.uri(), 100)),
        &connector_core::auth::AuthConfig::None,
    );
    let first = sync_daemon::pipeline::sync(&ctx, None).await.unwrap();
    assert!(first.warnings.is_empty());
    assert_eq!(
        count(&pool, "select count(*) from drift_event").await,
        0,
        "the first pull is the baseline"
    );
    assert!(
        count(
            &pool,
            "select count(*) from field_catalogue where pointer = '/primaryWorkPhone'"
        )
        .await
            >= 1
    );

    for r in records.lock().unwrap().iter_mut() {
        let o = r.as_object_mut().unwrap();
        o.insert("preferredName".into(), serde_json::json!("P"));
        o.remove("primaryWorkPhone");
        if let Some(t) = o.get("businessTitle").cloned() {
            o.insert("businessTitle".into(), serde_json::json!({"descriptor": t}));
        }
    }
    let second = sync_daemon::pipeline::sync(&ctx, None).await.unwrap();
    let n = records.lock().unwrap().len() as i64;
    assert_eq!(
        second.changed + second.unchanged + second.dead_lettered + second.superseded,
        n,
        "every record is accounted for"
    );
    let events = sync_daemon::drift::list(&pool, None, None).await.unwrap();
    let find = |k: &str, p: &str| {
        events
            .iter()
            .find(|e| e.kind == k && e.pointer == p)
            .cloned()
    };
    let added = find("added", "/preferredName").expect("the new field");
    assert!(!added.mapped, "the mapping does not read it");
    assert!(added.raw_page_id.is_some(), "the raw page that showed it");
    let removed = find("removed", "/primaryWorkPhone").expect("the vanished field");
    assert!(removed.mapped, "the mapping reads it");
    let retyped = find("type_changed", "/businessTitle").expect("the retyped field");
    assert_eq!(
        (retyped.old_types.clone(), retyped.new_types.clone()),
        (vec!["string".into()], vec!["object".into()])
    );
    assert!(find("added", "/businessTitle/descriptor").is_some());
    assert!(
        second
            .warnings
            .iter()
            .any(|w| w.contains("/primaryWorkPhone") && w.contains("work_phone")),
        "{:?}",
        second.warnings
    );
    assert!(
        second
            .warnings
            .iter()
            .any(|w| w.contains("/businessTitle") && w.contains("business_title")),
        "{:?}",
        second.warnings
    );
    // Nothing is dropped: every worker is still in the model.
    assert_eq!(count(&pool, "select count(*) from worker").await, n);

    // The same shape again: nothing new to report.
    let before = count(&pool, "select count(*) from drift_event").await;
    let third = sync_daemon::pipeline::sync(&ctx, None).await.unwrap();
    assert!(third.warnings.is_empty(), "{:?}", third.warnings);
    assert_eq!(
        count(&pool, "select count(*) from drift_event").await,
        before
    );

    // The catalogue keeps each field's share of the records.
    let fields = sync_daemon::drift::fields(&pool, Some("wd"), Some("workers"))
        .await
        .unwrap();
    let share = |p: &str, t: &str| {
        fields
            .iter()
            .find(|f| f.pointer == p && f.json_type == t)
            .map(|f| f.share)
    };
    assert_eq!(
        share("/preferredName", "string"),
        Some(2.0 / 3.0),
        "two pulls of three"
    );
    assert_eq!(share("/id", "string"), Some(1.0));
    // `drift --json` lists them; `status` counts them.
    let events = sync_daemon::drift::list(&pool, Some("wd"), None)
        .await
        .unwrap();
    assert_eq!(events.len() as i64, before);
    let st = sync_daemon::status::status(
        &pool,
        &[sync_daemon::status::Configured {
            connection: "wd".into(),
            streams: vec!["workers".into()],
            entities: Default::default(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(st.streams[0].drift_events, before);
    assert!(st.streams[0].last_success_at.is_some());
}
