//! The sync daemon: fetches raw pages into the raw store, loads them into the
//! canonical model in Postgres with field-level provenance, and replays them
//! after a mapping changes without calling the source.
//!
//! The binary is a thin shell over [`run`]; everything is usable as a library
//! (the tests drive [`pipeline::sync`] and [`pipeline::replay`] directly).

/// `println!` that returns an error instead of panicking when stdout is gone
/// (e.g. piped into `head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)?
    }};
}

pub mod balance;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod drift;
pub mod explain;
pub mod fixture_finance;
pub mod fixture_server;
pub mod lease;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod schedule;
pub mod scheduler;
pub mod status;
pub mod sweep;
pub mod watermark;

use clap::{Parser, Subcommand};
use connector_core::{HttpClient, RawStore};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "sync-daemon",
    version,
    about = "Sync enterprise sources into a canonical model with provenance"
)]
pub struct Cli {
    /// The TOML config file.
    #[arg(
        long,
        short,
        global = true,
        env = "SYNC_CONFIG",
        default_value = "sync.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if it does not exist and apply the migrations (safe to run twice and concurrently).
    Migrate,
    /// Fetch every page of a connection into the raw store and load it.
    Sync {
        /// The connection's `name` in the config.
        connection: String,
        /// Sync only this stream (default: every stream of the connection).
        #[arg(long)]
        stream: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reload every stored page through the current mappers, without calling the source.
    Replay {
        /// The connection's `name` in the config.
        connection: String,
        /// Replay only this stream (default: every stream of the connection).
        #[arg(long)]
        stream: Option<String>,
        /// Report what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show where each field of a canonical row came from.
    Explain {
        /// The entity type: worker, org_unit, location, cost_center, gl_account, supplier, journal_entry or journal_line.
        entity: String,
        /// Canonical id or the source's own id.
        id: String,
        /// Explain only this field (default: every field).
        field: Option<String>,
        /// Read `id` as this connection's source id (source ids of two
        /// connections, or a source id and a canonical id, can be equal).
        #[arg(long)]
        connection: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One line per connection and stream: last run, outcome, records, dead letters, watermark, breaker.
    Status {
        /// Print everything, and more, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduler: sync each connection's streams on their schedules until SIGTERM or Ctrl-C (several replicas may share one database).
    Run {
        /// Serve /metrics and /healthz here instead of `[daemon] listen` (replicas on one host need one port each; port 0 takes a free one; `none` serves nothing).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Records that could not be loaded: list the open ones, show one whole, discard one.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Changes of the sources' shapes: fields that appeared, vanished or changed type, with the raw page that showed them.
    Drift {
        /// Only this connection's.
        #[arg(long)]
        connection: Option<String>,
        /// Only this stream's.
        #[arg(long)]
        stream: Option<String>,
        /// The field catalogue instead: each field's JSON pointer, type, share of records, first and last seen.
        #[arg(long)]
        fields: bool,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show, set or rewind a stream's watermark (refused while the stream runs; every change is recorded with who and why).
    Watermark {
        #[command(subcommand)]
        action: WatermarkAction,
    },
    /// Serve recorded Workday pages, a BambooHR company, an SAP S/4HANA system and a NetSuite account on loopback (the demo's and the benchmark's source); prints its base URL on stdout.
    ServeFixtures {
        /// Address to listen on; port 0 takes a free port (the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Folder of recorded pages (`*.json` with a `data` array).
        #[arg(long, default_value = "fixtures/workday/workers")]
        pages: PathBuf,
        /// The Workday tenant in the served paths.
        #[arg(long, default_value = "acme")]
        tenant: String,
        /// The API path before the tenant.
        #[arg(long, default_value = "ccx/api/common/v1")]
        api_path: String,
        /// Lifetime of issued access tokens.
        #[arg(long, default_value_t = 3600)]
        token_ttl_secs: u64,
        /// Page requests an access token is good for (tokens that expire mid-run).
        #[arg(long)]
        token_max_requests: Option<u32>,
        /// Folder of BambooHR payloads (`report-N.json`, `changed-N.json`)
        /// to serve as a BambooHR company too; `none` to serve none.
        #[arg(long, default_value = "fixtures/bamboohr")]
        bamboohr: PathBuf,
        /// How many recorded BambooHR runs the company has gone through (the
        /// second deletes an employee).
        #[arg(long, default_value_t = 2)]
        bamboohr_runs: u32,
        /// The BambooHR API key the server accepts (the Basic user name).
        #[arg(long, default_value = "demo-bamboo-key")]
        bamboohr_api_key: String,
        /// Folder of SAP OData pages (`cost-centers-N.json`, `journal-…`) to
        /// serve as an SAP S/4HANA system too; `none` to serve none.
        #[arg(long, default_value = "fixtures/sap-s4hana")]
        sap: PathBuf,
        /// The SAP user the server accepts (HTTP Basic).
        #[arg(long, default_value = "DEMO_COMM_USER")]
        sap_user: String,
        /// The SAP password the server accepts (HTTP Basic).
        #[arg(long, default_value = "demo-sap-password")]
        sap_password: String,
        /// Folder of SuiteQL answers (`transactions-N.json`, …) to serve as a
        /// NetSuite account too; `none` to serve none.
        #[arg(long, default_value = "fixtures/netsuite")]
        netsuite: PathBuf,
        /// The TBA realm the NetSuite account accepts.
        #[arg(long, default_value = "1234567_SB1")]
        netsuite_realm: String,
        /// Answer every n-th SuiteQL request with CONCURRENCY_LIMIT_EXCEEDED (0: never).
        #[arg(long, default_value_t = 5)]
        netsuite_throttle_every: u64,
    },
}

/// `dead-letters …`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// The open dead letters, oldest first.
    List {
        /// Only this connection's.
        #[arg(long)]
        connection: Option<String>,
        /// Only this stream's (a partition is `name@code`).
        #[arg(long)]
        stream: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter whole: reason, field, pointer, mapping version and the raw record.
    Show {
        /// The dead letter's id (`#N` in `list`).
        id: i64,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retry open dead letters of a connection: replay their raw pages through the current mappers, without calling the source.
    Retry {
        /// The connection's `name` in the config.
        #[arg(long)]
        connection: String,
        /// Only these dead letters (default: every open one of the connection).
        #[arg(long = "id")]
        ids: Vec<i64>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Discard an open dead letter (recorded with who, when and why; never deleted).
    Discard {
        /// The dead letter's id.
        id: i64,
        /// Why it is discarded.
        #[arg(long)]
        reason: String,
        /// Who discards it (default: the OS user).
        #[arg(long)]
        by: Option<String>,
    },
}

/// `watermark …`.
#[derive(Debug, Subcommand)]
pub enum WatermarkAction {
    /// Where each stream's next pull starts, and who changed it last.
    Show {
        /// Only this connection's streams.
        connection: Option<String>,
        /// Only this stream (a name selects all its partitions; `name@code` one).
        stream: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the bound the next pull starts from: a timestamp (time and keyset
    /// streams), the source's token, or a raw page id (detail streams).
    Set {
        connection: String,
        stream: String,
        value: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who (default: the OS user).
        #[arg(long)]
        by: Option<String>,
    },
    /// Move the bound back by a duration (`2h`, `7d`) or to an earlier timestamp: the next sync fetches that span again.
    Rewind {
        connection: String,
        stream: String,
        /// A duration to go back by, or a timestamp before the current bound.
        to: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who (default: the OS user).
        #[arg(long)]
        by: Option<String>,
    },
}

/// A command line that names something the config does not have (a
/// connection, a stream): the binary exits 2, as for other usage errors,
/// and no run is recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command; the binary maps the error to a one-line message and exit 1.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::ServeFixtures {
        listen,
        pages,
        tenant,
        api_path,
        token_ttl_secs,
        token_max_requests,
        bamboohr,
        bamboohr_runs,
        bamboohr_api_key,
        sap,
        sap_user,
        sap_password,
        netsuite,
        netsuite_realm,
        netsuite_throttle_every,
    } = &cli.command
    {
        let records = fixture_server::load_records(pages)?;
        let n = records.len();
        let bamboo = if bamboohr.as_os_str() == "none" {
            None
        } else {
            Some(fixture_server::load_bamboohr(
                bamboohr,
                *bamboohr_runs,
                tenant,
                bamboohr_api_key,
            )?)
        };
        if let Some(b) = &bamboo {
            eprintln!(
                "serving BambooHR company {tenant} ({} employees, {} change entries) at \
                 /api/gateway.php/{tenant}/v1/ (API key {bamboohr_api_key:?})",
                b.employees.len(),
                b.changes.len()
            );
        }
        let sap = if sap.as_os_str() == "none" {
            None
        } else {
            let d = fixture_finance::load_sap(sap, sap_user, sap_password)?;
            eprintln!("serving an SAP S/4HANA system at /sap/opu/odata/sap/ (user {sap_user:?})");
            Some(d)
        };
        let netsuite = if netsuite.as_os_str() == "none" {
            None
        } else {
            let mut d = fixture_finance::load_netsuite(netsuite, netsuite_realm)?;
            d.throttle_every = Some(*netsuite_throttle_every).filter(|n| *n > 0);
            eprintln!(
                "serving a NetSuite account at /services/rest/query/v1/suiteql (realm {netsuite_realm:?})"
            );
            Some(d)
        };
        let opts = fixture_server::FixtureOptions {
            tenant: tenant.clone(),
            api_path: api_path.clone(),
            token_ttl: std::time::Duration::from_secs(*token_ttl_secs),
            token_max_requests: *token_max_requests,
            bamboohr: bamboo,
            sap,
            netsuite,
            ..Default::default()
        };
        let fixture_server::FixtureServer { addr, handle, .. } =
            fixture_server::start(listen, records, opts).await?;
        eprintln!(
            "serving {n} workers at http://{addr} (endpoint /{api_path}/{tenant}/workers; \
             FIXTURE_URL=http://{addr}); Ctrl-C to stop"
        );
        // The base URL, alone on stdout, for scripts (`read -r url < <(…)`).
        outln!("http://{addr}");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = handle => {}
        }
        return Ok(());
    }
    let cfg = config::Config::load(&cli.config)?;
    registry::check(&cfg, &cli.config)?;
    // Usage errors come before anything touches the database.
    match &cli.command {
        Command::Sync {
            connection, stream, ..
        } => check_usage(&cfg, connection, stream.as_deref(), config::Need::Source)?,
        Command::Replay {
            connection, stream, ..
        } => check_usage(&cfg, connection, stream.as_deref(), config::Need::Connector)?,
        Command::DeadLetters {
            action: DeadLetterAction::Retry { connection, .. },
        } => check_usage(&cfg, connection, None, config::Need::Connector)?,
        Command::DeadLetters {
            action:
                DeadLetterAction::List {
                    connection: Some(c),
                    stream,
                    ..
                },
        }
        | Command::Drift {
            connection: Some(c),
            stream,
            ..
        } => check_usage(&cfg, c, stream.as_deref(), config::Need::Connector)?,
        Command::Watermark {
            action:
                WatermarkAction::Set {
                    connection, stream, ..
                }
                | WatermarkAction::Rewind {
                    connection, stream, ..
                },
        } => check_usage(&cfg, connection, Some(stream), config::Need::Connector)?,
        Command::Watermark {
            action:
                WatermarkAction::Show {
                    connection: Some(c),
                    stream,
                    ..
                },
        } => check_usage(&cfg, c, stream.as_deref(), config::Need::Connector)?,
        _ => {}
    }
    let migrate = matches!(cli.command, Command::Migrate);
    let pool = db::connect(&cfg.database.url, cfg.database.max_connections, migrate).await?;
    if migrate {
        db::migrate(&pool).await?;
        outln!("migrations applied");
        return Ok(());
    }
    db::check_schema(&pool, &cli.config).await?;
    let opts: Vec<(String, String)> = cfg
        .raw_store
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let store = RawStore::from_url(&cfg.raw_store.url, &opts)?;
    match cli.command {
        Command::Sync {
            connection,
            stream,
            json,
        } => {
            let ctx = context(&cfg, &pool, &store, &connection, true)?;
            restore_breaker(&ctx).await;
            let s = pipeline::sync(&ctx, stream.as_deref()).await;
            finish_progress(&ctx);
            let s = s?;
            print_summary("sync", &connection, &s, json)?;
        }
        Command::Replay {
            connection,
            stream,
            dry_run,
            json,
        } => {
            let ctx = context(&cfg, &pool, &store, &connection, false)?;
            let s = pipeline::replay(&ctx, stream.as_deref(), dry_run).await;
            finish_progress(&ctx);
            let s = s?;
            print_summary(
                if dry_run {
                    "replay --dry-run"
                } else {
                    "replay"
                },
                &connection,
                &s,
                json,
            )?;
        }
        Command::Explain {
            entity,
            id,
            field,
            connection,
            json,
        } => {
            explain::check_usage(&entity, field.as_deref()).map_err(UsageError)?;
            if let Some(c) = connection.as_deref() {
                cfg.connection(c).map_err(|e| UsageError(e.to_string()))?;
            }
            let x = explain::explain_in(
                &pool,
                &store,
                &entity,
                &id,
                field.as_deref(),
                connection.as_deref(),
            )
            .await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&x)?);
            } else {
                out!("{x}");
            }
        }
        Command::Status { json } => {
            let configured: Vec<status::Configured> = cfg
                .connections
                .iter()
                .map(|c| {
                    // Each stream (each partition of one) with the entity it feeds.
                    let streams: Vec<(String, String)> = registry::build(c)
                        .map(|b| {
                            b.connector
                                .streams()
                                .iter()
                                .filter_map(|d| {
                                    let m = b.models.iter().find(|m| m.stream == d.name)?;
                                    Some((d.key(), m.entity.as_str().to_owned()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    status::Configured {
                        connection: c.name.clone(),
                        streams: streams.iter().map(|s| s.0.clone()).collect(),
                        entities: streams.into_iter().collect(),
                    }
                })
                .collect();
            let rows = status::status(&pool, &configured).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                out!("{}", status::render(&rows));
            }
        }
        Command::DeadLetters { action } => match action {
            DeadLetterAction::List {
                connection,
                stream,
                json,
            } => {
                let l = dead_letters::list(&pool, connection.as_deref(), stream.as_deref()).await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&l)?);
                } else {
                    out!("{}", dead_letters::render_list(&l));
                }
            }
            DeadLetterAction::Show { id, json } => {
                let d = dead_letters::show(&pool, &store, id).await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    out!("{}", dead_letters::render_detail(&d));
                }
            }
            DeadLetterAction::Retry {
                connection,
                ids,
                json,
            } => {
                let ctx = context(&cfg, &pool, &store, &connection, false)?;
                let r = dead_letters::retry(&ctx, &ids).await;
                finish_progress(&ctx);
                let r = r?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&r)?);
                } else if r.retried.is_empty() {
                    outln!("{connection} has no open dead letters: nothing to retry");
                } else {
                    outln!(
                        "retried {} dead letter(s) of {connection} by replaying {} page(s) (run #{}): {} resolved, {} still open",
                        r.retried.len(),
                        r.run.pages_loaded,
                        r.run.run_id,
                        r.resolved.len(),
                        r.still_open.len()
                    );
                    out!(
                        "{}",
                        if r.still_open.is_empty() {
                            String::new()
                        } else {
                            dead_letters::render_list(&r.still_open)
                        }
                    );
                }
            }
            DeadLetterAction::Discard { id, reason, by } => {
                let by = by.unwrap_or_else(dead_letters::os_user);
                dead_letters::discard(&pool, id, &reason, &by).await?;
                outln!("dead letter {id} discarded by {by}: {reason}");
            }
        },
        Command::Run { listen } => {
            let mut cfg = cfg;
            match listen.as_deref() {
                None => {}
                Some("none") => cfg.daemon.listen = None,
                Some(l) => {
                    cfg.daemon.listen = Some(l.parse().map_err(|_| {
                        UsageError(format!(
                            "--listen {l:?} is not an address and port, e.g. 127.0.0.1:9465 (or none)"
                        ))
                    })?);
                }
            }
            scheduler::run(&cfg, &pool, &store).await?
        }
        Command::Drift {
            connection,
            stream,
            fields: true,
            json,
        } => {
            let f = drift::fields(&pool, connection.as_deref(), stream.as_deref()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                out!("{}", drift::render_fields(&f));
            }
        }
        Command::Drift {
            connection,
            stream,
            fields: false,
            json,
        } => {
            let events = drift::list(&pool, connection.as_deref(), stream.as_deref()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                out!("{}", drift::render(&events));
            }
        }
        Command::Watermark { action } => match action {
            WatermarkAction::Show {
                connection,
                stream,
                json,
            } => {
                let mut rows = Vec::new();
                for c in &cfg.connections {
                    if connection.as_ref().is_some_and(|n| *n != c.name) {
                        continue;
                    }
                    let ctx = context(&cfg, &pool, &store, &c.name, false)?;
                    rows.extend(watermark::show(&ctx, stream.as_deref()).await?);
                }
                if json {
                    outln!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    out!("{}", watermark::render(&rows));
                }
            }
            WatermarkAction::Set {
                connection,
                stream,
                value,
                reason,
                by,
            } => {
                let ctx = context(&cfg, &pool, &store, &connection, false)?;
                let change = watermark::Change::Set(value);
                move_watermark(&ctx, &stream, &change, &reason, by).await?;
            }
            WatermarkAction::Rewind {
                connection,
                stream,
                to,
                reason,
                by,
            } => {
                let ctx = context(&cfg, &pool, &store, &connection, false)?;
                let change = watermark::Change::Rewind(to);
                move_watermark(&ctx, &stream, &change, &reason, by).await?;
            }
        },
        Command::Migrate | Command::ServeFixtures { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// The connection and stream a command names exist, and the environment
/// variables the command needs of the connection are set.
fn check_usage(
    cfg: &config::Config,
    connection: &str,
    stream: Option<&str>,
    need: config::Need,
) -> anyhow::Result<()> {
    let conn = cfg
        .connection(connection)
        .map_err(|e| UsageError(e.to_string()))?;
    conn.require_env(need)?;
    if stream.is_some() {
        registry::select_streams(
            connection,
            registry::build(conn)?.connector.streams(),
            stream,
        )?;
    }
    Ok(())
}

/// `watermark set | rewind`, printed.
async fn move_watermark(
    ctx: &pipeline::Ctx,
    stream: &str,
    change: &watermark::Change,
    reason: &str,
    by: Option<String>,
) -> anyhow::Result<()> {
    let by = by.unwrap_or_else(dead_letters::os_user);
    for c in watermark::change(ctx, stream, change, &by, reason).await? {
        outln!(
            "{}/{}: {} -> {} (by {by}: {reason}); the next sync starts from it",
            c.connection,
            c.stream,
            c.old.as_deref().unwrap_or("none"),
            c.new
        );
    }
    Ok(())
}

/// An open breaker saved by an earlier run of the connection stays open
/// for what is left of its cool-down.
pub(crate) async fn restore_breaker(ctx: &pipeline::Ctx) {
    if let Some(http) = &ctx.http {
        let host = http.breaker().host;
        match db::open_breaker(&ctx.pool, &ctx.connection, &host).await {
            Ok(Some((left, consecutive, opened))) => {
                http.restore_breaker(left, consecutive, opened);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(event = "breaker_not_read", connection = %ctx.connection, "{e:#}");
            }
        }
    }
}

pub(crate) fn context(
    cfg: &config::Config,
    pool: &sqlx::PgPool,
    store: &RawStore,
    name: &str,
    with_http: bool,
) -> anyhow::Result<pipeline::Ctx> {
    let conn = cfg.connection(name).map_err(anyhow::Error::msg)?;
    let registry::Built { connector, models } = registry::build(conn)?;
    let http = if with_http {
        let store = Arc::new(db::PgCredentialStore {
            pool: pool.clone(),
            connection: name.to_owned(),
        });
        Some(HttpClient::connect_shared(
            name,
            connector.as_ref(),
            &conn.auth,
            conn.http_settings(),
            store,
            true,
        )?)
    } else {
        None
    };
    let progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>> = if std::io::stderr().is_terminal() {
        let started = std::time::Instant::now();
        Some(Arc::new(move |pages, records| {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r  {pages} pages, {records} records, {:.0} records/s   ",
                records as f64 / secs
            );
        }))
    } else {
        None
    };
    Ok(pipeline::Ctx {
        pool: pool.clone(),
        store: store.clone(),
        tenant: cfg.tenant.clone(),
        connection: name.to_owned(),
        connector,
        models,
        max_sweep_share: conn
            .limits
            .max_sweep_share
            .unwrap_or(config::DEFAULT_MAX_SWEEP_SHARE),
        http,
        fetch_concurrency: conn.http.fetch_concurrency,
        progress,
        stop_on_signal: true,
        shutdown: None,
        secrets: conn.auth.secret_values(),
    })
}

fn finish_progress(ctx: &pipeline::Ctx) {
    if ctx.progress.is_some() {
        eprintln!();
    }
}

fn print_summary(
    what: &str,
    connection: &str,
    s: &pipeline::Summary,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let pages = if what.starts_with("replay") {
        format!(
            "{} stored pages {}",
            s.pages_loaded,
            if what.ends_with("--dry-run") {
                "read, nothing written"
            } else {
                "replayed"
            }
        )
    } else {
        format!(
            "{} pages fetched, {} pages loaded",
            s.pages_fetched, s.pages_loaded
        )
    };
    outln!(
        "{what} {connection}: run #{}, {pages}; records: {} changed, {} unchanged, {} dead-lettered, {} superseded; {:.2}s, {:.0} records/s",
        s.run_id,
        s.changed,
        s.unchanged,
        s.dead_lettered,
        s.superseded,
        s.elapsed_secs,
        s.records_per_sec()
    );
    if s.swept > 0 {
        outln!(
            "  {} {} soft-deleted: the complete pull no longer lists {} (explain shows the run)",
            s.swept,
            if s.swept == 1 { "row" } else { "rows" },
            if s.swept == 1 { "it" } else { "them" }
        );
    }
    if s.balance.entries > 0 {
        outln!(
            "  {} journal {} checked: {} {} per currency (status counts them; the column journal_entry.imbalance says by how much)",
            s.balance.entries,
            if s.balance.entries == 1 {
                "entry"
            } else {
                "entries"
            },
            s.balance.unbalanced,
            if s.balance.unbalanced == 1 {
                "does not balance"
            } else {
                "do not balance"
            }
        );
    }
    if what.starts_with("replay") && s.superseded > 0 {
        outln!(
            "  superseded: older stored copies of the same records (each sync stores its pages; the newest copy wins)"
        );
    }
    if s.pages_unreadable > 0 || s.pulls_incomplete > 0 {
        outln!(
            "  {} pages could not be read (stored and dead-lettered as pages){}; see `status`",
            s.pages_unreadable,
            if s.pulls_incomplete > 0 {
                ": the pull is incomplete, its records are asked for again by the next sync"
            } else {
                ""
            }
        );
    }
    if s.pages_missing > 0 {
        outln!(
            "  {} raw pages had a missing or corrupt object ({} fetched again from the source); see `status`",
            s.pages_missing,
            s.pages_refetched
        );
    }
    for w in &s.warnings {
        outln!("  warning: schema drift: {w}");
    }
    if let Some(at) = s.resume_at {
        outln!(
            "  deferred: the source asked for a wait beyond this run's budget; the next sync resumes from the watermark at or after {}",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if let Some(d) = &s.diff {
        let rows = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                return "none".to_owned();
            }
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!("  rows new: {}", rows(&d.rows_new));
        outln!("  rows changed: {}", rows(&d.rows_changed));
        if !d.fields_changed.is_empty() {
            outln!("  fields changed: {}", rows(&d.fields_changed));
        }
    }
    Ok(())
}

/// Threads the binary's runtime keeps for blocking work (file reads and
/// writes, the loader's preparing work, the drift scan). Few on purpose:
/// every thread that allocates gets its own malloc arena, which keeps what
/// it freed, so peak memory grows with the threads ever used.
pub const BLOCKING_THREADS: usize = 4;

/// Installs the log subscriber: `RUST_LOG` filters, logs go to stderr, in
/// colour only when stderr is a terminal (and `NO_COLOR` is not set).
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}
