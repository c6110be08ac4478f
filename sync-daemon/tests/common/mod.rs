//! Shared test helpers: a fixture source on loopback and a pipeline context.
#![allow(dead_code)]

pub mod pg;
pub use pg::TestDb;

use connector_core::auth::AuthConfig;
use connector_core::{DynConnector, HttpClient, HttpSettings, RawStore};
use std::path::PathBuf;
use std::sync::Arc;
use sync_daemon::fixture_server::{self, FixtureOptions};
use sync_daemon::pipeline::Ctx;

pub const CLIENT_SECRET: &str = "cs-5ecret-7f3a9b";
pub const REFRESH_TOKEN: &str = "rt-5ecret-0c81d2";

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/workday/workers")
}

/// Serves the recorded fixtures; returns the base URL.
pub async fn fixture_source() -> (String, tokio::task::JoinHandle<()>) {
    let srv = fixture_server_with(FixtureOptions::default()).await;
    (format!("http://{}", srv.addr), srv.handle)
}

/// Serves the recorded fixtures with the test credentials and `opts`' other settings.
pub async fn fixture_server_with(opts: FixtureOptions) -> fixture_server::FixtureServer {
    let records = fixture_server::load_records(&fixture_dir()).unwrap();
    let opts = FixtureOptions {
        client_secret: CLIENT_SECRET.into(),
        refresh_token: REFRESH_TOKEN.into(),
        ..opts
    };
    fixture_server::start("127.0.0.1:0", records, opts)
        .await
        .unwrap()
}

/// A pipeline context syncing the fixture source through the refresh-token grant,
/// into an in-memory raw store. Keep the handle alive while syncing.
pub async fn fixture_ctx(
    pool: &sqlx::PgPool,
) -> (Ctx, RawStore, String, tokio::task::JoinHandle<()>) {
    let (base, srv) = fixture_source().await;
    let store = RawStore::in_memory();
    let c = ctx(
        pool,
        &store,
        Arc::new(workday(&base)),
        &refresh_auth(&base, REFRESH_TOKEN),
    );
    (c, store, base, srv)
}

/// Writes a daemon config with one Workday connection `wd` at `base` (raw
/// store under `dir`), fast retries, `conn_extra` inside its `[[connection]]`
/// table, and `secrets` (client secret, refresh token) as written: values or
/// `${VAR}` references. Returns its path.
pub fn write_config(
    dir: &std::path::Path,
    db_url: &str,
    base: &str,
    conn_extra: &str,
    secrets: (&str, &str),
) -> PathBuf {
    let raw = url::Url::from_directory_path(dir.join("raw")).unwrap();
    let (client_secret, refresh_token) = secrets;
    let text = format!(
        r#"[database]
url = "{db_url}"
[raw_store]
url = "{raw}"
[[connection]]
name = "wd"
connector = "workday"
base_url = "{base}"
tenant = "acme"
{conn_extra}
[connection.auth]
strategy = "oauth2_refresh_token"
token_url = "{base}/ccx/oauth2/acme/token"
client_id = "demo-client"
client_secret = "{client_secret}"
refresh_token = "{refresh_token}"
[connection.http]
retry_base_ms = 1
retry_max_delay_secs = 0
"#
    );
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback port nothing listens on (bound once, then let go).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn refresh_auth(base: &str, refresh_token: &str) -> AuthConfig {
    serde_json::from_value(serde_json::json!({
        "strategy": "oauth2_refresh_token",
        "token_url": format!("{base}/ccx/oauth2/acme/token"),
        "client_id": "demo-client",
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
    }))
    .unwrap()
}

pub fn workday(base: &str) -> workday::Workday {
    use connector_core::Connector;
    workday::Workday::new(
        serde_json::from_value(serde_json::json!({"base_url": base, "tenant": "acme"})).unwrap(),
    )
    .unwrap()
}

/// The model of a `workers` stream mapped by the Workday workers mapper.
pub fn workers_model() -> Vec<canonical_model::StreamModel> {
    vec![canonical_model::StreamModel {
        stream: "workers",
        entity: canonical_model::EntityKind::Worker,
        mapper: Arc::new(workday::WorkersMapper::new()),
    }]
}

/// [`ctx`] for a connector with its own models.
pub fn ctx_built(
    pool: &sqlx::PgPool,
    store: &RawStore,
    built: sync_daemon::registry::Built,
    auth: &AuthConfig,
) -> Ctx {
    Ctx {
        models: built.models,
        ..ctx(pool, store, built.connector, auth)
    }
}

/// A context for `connector`, whose `workers` stream is mapped by the
/// Workday workers mapper.
pub fn ctx(
    pool: &sqlx::PgPool,
    store: &RawStore,
    connector: Arc<dyn DynConnector>,
    auth: &AuthConfig,
) -> Ctx {
    let mut settings = HttpSettings::default();
    settings.retry.base_delay = std::time::Duration::from_millis(1);
    settings.retry.max_delay = std::time::Duration::from_millis(5);
    settings.retry.max_attempts = 3;
    let creds = Arc::new(sync_daemon::db::PgCredentialStore {
        pool: pool.clone(),
        connection: "wd".into(),
    });
    let http = HttpClient::connect("wd", connector.as_ref(), auth, settings, creds).unwrap();
    Ctx {
        pool: pool.clone(),
        store: store.clone(),
        tenant: "test".into(),
        connection: "wd".into(),
        connector,
        models: workers_model(),
        max_sweep_share: 0.5,
        http: Some(http),
        fetch_concurrency: 3,
        progress: None,
        stop_on_signal: false,
        shutdown: None,
        secrets: auth.secret_values(),
    }
}

pub async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The canonical state, by source ids (canonical ids differ between databases).
pub async fn state(pool: &sqlx::PgPool) -> Vec<String> {
    let o = orphans(pool).await;
    assert!(o.is_empty(), "rows that point at nothing: {o:?}");
    sqlx::query_scalar(
        "select w.source_id || '|' || (to_jsonb(w) - 'id' - 'org_unit_id' - 'location_id' - 'manager_id'
                 - 'prov_contributors' - 'updated_at' - 'mapping_version_id')::text
                 || '|' || coalesce(o.source_id, '-') || '|' || coalesce(l.source_id, '-') || '|' || coalesce(m.source_id, '-')
         from worker w left join org_unit o on o.id = w.org_unit_id left join location l on l.id = w.location_id
         left join worker m on m.id = w.manager_id
         union all select 'org|' || source_id || '|' || coalesce(name, '') from org_unit
         union all select 'loc|' || source_id || '|' || coalesce(name, '') || coalesce(country, '') from location
         order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What the hot tables' foreign keys checked before migration 0010 (ADR
/// 0014): every derivation's raw page and mapping version, every link's
/// derivation and mapping version, every entity row's mapping version and
/// contributors exist. Names each check that finds a row pointing at nothing.
pub async fn orphans(pool: &sqlx::PgPool) -> Vec<String> {
    let mut checks = vec![
        (
            "derivation → raw_page".to_owned(),
            "select count(*) from derivation d where not exists (select 1 from raw_page p where p.id = d.raw_page_id)".to_owned(),
        ),
        (
            "derivation → mapping_version".into(),
            "select count(*) from derivation d where not exists (select 1 from mapping_version m where m.id = d.mapping_version_id)".into(),
        ),
        (
            "source_link → derivation".into(),
            "select count(*) from source_link s where s.derivation_id is not null and not exists (select 1 from derivation d where d.id = s.derivation_id)".into(),
        ),
        (
            "source_link → mapping_version".into(),
            "select count(*) from source_link s where s.mapping_version_id is not null and not exists (select 1 from mapping_version m where m.id = s.mapping_version_id)".into(),
        ),
    ];
    for kind in canonical_model::EntityKind::ALL {
        let t = kind.as_str();
        checks.push((
            format!("{t} → mapping_version"),
            format!("select count(*) from {t} x where not exists (select 1 from mapping_version m where m.id = x.mapping_version_id)"),
        ));
        checks.push((
            format!("{t} → derivation"),
            format!("select count(*) from {t} x where exists (select 1 from unnest(x.prov_contributors) c(id) where not exists (select 1 from derivation d where d.id = c.id))"),
        ));
    }
    let mut found = Vec::new();
    for (name, sql) in checks {
        let n = count(pool, &sql).await;
        if n > 0 {
            found.push(format!("{name}: {n}"));
        }
    }
    found
}

/// The 260 recorded workers, as JSON values.
pub fn workers() -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for offset in [0, 100, 200] {
        let page: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture_dir().join(format!("{offset}.json"))).unwrap(),
        )
        .unwrap();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
    }
    all
}

/// The recorded workers as Workday serves them (`limit`/`offset`, with a
/// total), each page answered after `delay`; no auth.
pub async fn slow_source(delay: std::time::Duration) -> wiremock::MockServer {
    use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::path};
    let srv = MockServer::start().await;
    let all = Arc::new(workers());
    Mock::given(path("/ccx/api/common/v1/acme/workers"))
        .respond_with(move |req: &Request| {
            let q = |k: &str| -> usize {
                req.url
                    .query_pairs()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            let (offset, limit) = (q("offset"), q("limit"));
            let data: Vec<&serde_json::Value> = all.iter().skip(offset).take(limit).collect();
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": all.len(), "data": data}))
                .set_delay(delay)
        })
        .mount(&srv)
        .await;
    srv
}

/// A Workday connector with `page_size` records per page.
pub fn workday_sized(base: &str, page_size: u32) -> workday::Workday {
    use connector_core::Connector;
    workday::Workday::new(
        serde_json::from_value(
            serde_json::json!({"base_url": base, "tenant": "acme", "page_size": page_size}),
        )
        .unwrap(),
    )
    .unwrap()
}

/// Empties the canonical model and marks every stored page unloaded: what a
/// replay into an empty model starts from.
pub async fn empty_model(pool: &sqlx::PgPool) {
    let entities: Vec<&str> = canonical_model::EntityKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "truncate {}, journal_entry_unchecked, source_link, derivation, dead_letter cascade",
        entities.join(", ")
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "update raw_page set loaded_at = null, records_changed = null, records_unchanged = null,
                records_dead = null, records_superseded = null",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Marks one page stored but not loaded, as if the process had died between.
pub async fn unload_page(pool: &sqlx::PgPool, page: i64) {
    sqlx::query(
        "update raw_page set loaded_at = null, records_changed = null, records_unchanged = null,
                records_dead = null, records_superseded = null where id = $1",
    )
    .bind(page)
    .execute(pool)
    .await
    .unwrap();
}

/// The fixture server's SAP system over `fixtures/sap-s4hana` (user
/// `COMM_USER`, password `pw`, client 100): `$skip` pages for the master
/// data, the journal paged by the server's own `__next` links.
pub async fn sap_server() -> (
    fixture_server::FixtureServer,
    sync_daemon::fixture_finance::SapData,
) {
    let data = sync_daemon::fixture_finance::load_sap(
        &fixture_dir().join("../../sap-s4hana"),
        "COMM_USER",
        "pw",
    )
    .unwrap();
    let srv = fixture_server_with(FixtureOptions {
        sap: Some(data.clone()),
        ..Default::default()
    })
    .await;
    (srv, data)
}

/// A context for an SAP connection `sap` at `base` with these connector
/// settings (`base_url` and `sap_client` added), as `COMM_USER`.
pub fn sap_ctx_with(
    pool: &sqlx::PgPool,
    store: &RawStore,
    base: &str,
    mut settings: serde_json::Value,
) -> Ctx {
    use connector_core::Connector;
    settings["base_url"] = base.into();
    settings["sap_client"] = "100".into();
    let sap = sap_s4hana::SapS4Hana::new(serde_json::from_value(settings).unwrap()).unwrap();
    let auth: AuthConfig = serde_json::from_value(
        serde_json::json!({"strategy": "basic", "username": "COMM_USER", "password": "pw"}),
    )
    .unwrap();
    Ctx {
        connection: "sap".into(),
        ..ctx_built(
            pool,
            store,
            sync_daemon::registry::Built::new(sap).unwrap(),
            &auth,
        )
    }
}

/// [`sap_ctx_with`] company code 1010, three records a page.
pub fn sap_ctx(pool: &sqlx::PgPool, store: &RawStore, base: &str) -> Ctx {
    sap_ctx_with(
        pool,
        store,
        base,
        serde_json::json!({"company_codes": ["1010"], "page_size": 3}),
    )
}
