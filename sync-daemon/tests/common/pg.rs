//! One fresh database per test, on a server found or started without help.
//!
//! The server is the one `examples/postgres.sh url` names: `DATABASE_URL` when
//! set (checked: a server that does not answer fails the first test in
//! seconds, naming the URL), else the local default
//! `postgres://postgres@127.0.0.1:5432`, else a private server the script
//! starts under `target/postgres` and leaves running for the next test binary.
//!
//! Each test gets a database of its own, copied from a template migrated once
//! per set of migrations. A test that passes drops its database; a failed
//! test leaves it for inspection, and the next run drops it.

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Test databases are named `<PREFIX><unix seconds>_<pid>_<n>`.
const PREFIX: &str = "syncd_test_";
/// How long a connection attempt may take before the test fails, naming the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A superuser URL (database `postgres`) of the server the tests use.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/postgres.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("url")
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !stderr.trim().is_empty() {
            eprintln!("{}", stderr.trim_end());
        }
        assert!(
            out.status.success(),
            "no PostgreSQL server for the tests: {}",
            stderr.trim()
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("DATABASE_URL is not a Postgres URL ({e})"));
        url
    })
}

/// The server's URL with another database.
pub fn url_of(db: &str) -> String {
    let mut url = url::Url::parse(server_url()).expect("the server URL parses");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// The server URL without a password, for messages.
fn shown() -> String {
    let mut url = url::Url::parse(server_url()).expect("the server URL parses");
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

async fn admin() -> PgConnection {
    let opts = PgConnectOptions::from_str(server_url()).expect("the server URL parses");
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("cannot connect to PostgreSQL at {}: {e}", shown()),
        Err(_) => panic!(
            "cannot connect to PostgreSQL at {}: no answer within {CONNECT_TIMEOUT:?}",
            shown()
        ),
    }
}

/// A database of one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> TestDb {
        let template = template().await;
        Self::create(Some(&template)).await
    }

    /// A fresh, empty database (no migration applied).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        url_of(&self.name)
    }

    async fn create(template: Option<&str>) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        static SWEPT: OnceLock<()> = OnceLock::new();
        let mut admin = admin().await;
        if SWEPT.set(()).is_ok() {
            drop_leftovers(&mut admin).await;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "{PREFIX}{secs}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let sql = match template {
            Some(t) => format!("create database \"{name}\" template \"{t}\""),
            None => format!("create database \"{name}\""),
        };
        admin
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let opts = PgConnectOptions::from_str(&url_of(&name)).unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(opts);
        TestDb { pool, name }
    }
}

impl Drop for TestDb {
    /// A passed test's database is dropped (connections still open are
    /// ended); a failed one is kept for inspection.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test database kept for inspection: {}", url_of(&self.name));
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime: the drop gets its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let mut admin = admin().await;
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "drop database if exists \"{name}\" with (force)"
                        )))
                        .await;
                    let _ = admin.close().await;
                })
        })
        .join();
    }
}

/// Drops the test databases of earlier runs: older than a minute and not
/// in use (a test binary running beside this one keeps its own).
async fn drop_leftovers(admin: &mut PgConnection) {
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(60);
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like $1 || '%'")
            .bind(PREFIX)
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let secs: u64 = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        // Without `force`: a database still in use (a test binary of
        // another run beside this one) is left alone.
        if secs < cutoff {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "drop database if exists \"{name}\""
                )))
                .await;
        }
    }
}

/// The name of a database with every migration applied, made once per set of
/// migrations (its name carries their checksums) and copied by each test.
async fn template() -> String {
    static NAME: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(|| async {
        let mut sums = Vec::new();
        for m in sync_daemon::db::MIGRATOR.iter() {
            sums.extend_from_slice(&m.checksum);
        }
        let hash = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(&sums)[..8])
        };
        let name = format!("syncd_template_{hash}");
        let mut admin = admin().await;
        // One builder at a time across test binaries.
        sqlx::query("select pg_advisory_lock(hashtext('syncd_template'))")
            .execute(&mut admin)
            .await
            .unwrap();
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if !exists {
            // Built under another name and renamed when complete: a run
            // killed half-way never leaves a half-migrated template.
            let building = format!("{name}_building");
            for sql in [
                format!("drop database if exists \"{building}\" with (force)"),
                format!("create database \"{building}\""),
            ] {
                admin
                    .execute(sqlx::AssertSqlSafe(sql))
                    .await
                    .unwrap_or_else(|e| panic!("cannot create the template database: {e}"));
            }
            let mut conn = PgConnection::connect(&url_of(&building)).await.unwrap();
            sync_daemon::db::MIGRATOR
                .run(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("the migrations fail on a fresh database: {e}"));
            conn.close().await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "alter database \"{building}\" rename to \"{name}\""
                )))
                .await
                .unwrap();
        }
        let _ = admin.close().await;
        name
    })
    .await
    .clone()
}
