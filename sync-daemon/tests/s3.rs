//! The raw store on S3, against an S3-compatible server the test starts
//! itself (moto in server mode, from PyPI: installed with pip when missing,
//! as `.ci/run` does): create-only puts, a page round trip, a sync and a
//! replay from S3, and a clear error for a bucket that does not exist.

mod common;

use common::*;
use connector_core::RawStore;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sync_daemon::pipeline;

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_has_moto() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn moto() -> Moto {
    moto_with(&[])
}

/// A moto server with these environment variables (e.g. credentials checked).
fn moto_with(env: &[(&str, &str)]) -> Moto {
    if !python_has_moto() {
        // Like examples/postgres.sh for PostgreSQL: install what the test needs.
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && python_has_moto(),
            "this test needs an S3-compatible server: `python3 -m pip install 'moto[server]'`"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs moto.server");
    let endpoint = format!("http://127.0.0.1:{port}");
    // An external process: wait until it accepts connections (bounded).
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto { child, endpoint }
}

fn options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("aws_endpoint", endpoint),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn raw_pages_live_in_s3_and_replay_from_there() {
    let s3 = moto();
    let made = reqwest::Client::new()
        .put(format!("{}/raw-pages", s3.endpoint))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "bucket: {}", made.status());
    let url = url::Url::parse("s3://raw-pages/sync").unwrap();
    let store = RawStore::from_url(&url, &options(&s3.endpoint)).unwrap();

    // Create-only puts: the same body twice is one object, and success.
    let at = chrono::Utc::now();
    let body = bytes::Bytes::from_static(b"{\"d\":{\"results\":[]}}");
    let a = store
        .put("t", "c", "s", at, Some("application/json"), body.clone())
        .await
        .unwrap();
    let b = store
        .put("t", "c", "s", at, Some("application/json"), body.clone())
        .await
        .unwrap();
    assert_eq!(a.key, b.key);
    assert_eq!(store.get(&a.key).await.unwrap(), body);

    // A sync stores every page in S3; a replay into an empty model reads them back.
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (srv, _) = sap_server().await;
    let c = sap_ctx(&pool, &store, &format!("http://{}", srv.addr));
    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s.changed, s.dead_lettered), (21, 2));
    let keys: Vec<String> = sqlx::query_scalar("select object_key from raw_page order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    for k in &keys {
        assert!(store.get(k).await.is_ok(), "{k} is in S3");
    }
    let lines = count(&pool, "select count(*) from journal_line").await;
    empty_model(&pool).await;
    let r = pipeline::replay(&c, None, false).await.unwrap();
    assert_eq!(r.pages_missing, 0);
    assert_eq!(
        count(&pool, "select count(*) from journal_line").await,
        lines
    );
    assert_eq!((r.balance.entries, r.balance.unbalanced), (5, 2));

    // A bucket that does not exist: the sync fails, naming it.
    let missing = RawStore::from_url(
        &url::Url::parse("s3://no-such-bucket/sync").unwrap(),
        &options(&s3.endpoint),
    )
    .unwrap();
    let test_db2 = TestDb::migrated().await;
    let c2 = sap_ctx(&test_db2.pool, &missing, &format!("http://{}", srv.addr));
    let e = format!("{:#}", pipeline::sync(&c2, None).await.unwrap_err());
    assert!(
        e.contains("does the bucket")
            && (e.contains("no-such-bucket") || e.contains("NoSuchBucket")),
        "{e}"
    );
    assert_eq!(
        count(&test_db2.pool, "select count(*) from raw_page").await,
        0
    );
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error_and_store_nothing() {
    // Credentials checked from the first request: the test's keys are unknown.
    let s3 = moto_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::from_url(
        &url::Url::parse("s3://raw-pages/sync").unwrap(),
        &options(&s3.endpoint),
    )
    .unwrap();
    let (srv, _) = sap_server().await;
    let c = sap_ctx(&pool, &store, &format!("http://{}", srv.addr));
    let e = format!("{:#}", pipeline::sync(&c, None).await.unwrap_err());
    assert!(
        e.contains("refused the credentials") && e.contains("403"),
        "the store's refusal is named: {e}"
    );
    assert!(!e.contains("testing\""), "no key in the error: {e}");
    assert_eq!(count(&pool, "select count(*) from raw_page").await, 0);
    assert_eq!(count(&pool, "select count(*) from watermark").await, 0);
}
