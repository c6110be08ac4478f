//! The daemon's TOML config, parsed once into validated types.

use crate::schedule::{DaemonConfig, SCHEDULE_KEYS, Schedule};
use connector_core::{AuthConfig, BreakerSettings, HttpSettings, RateLimitSettings, RetryPolicy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// Errors name the file and the key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path} not found: give one with --config FILE (or SYNC_CONFIG); \
         examples/fixtures.toml is the demo's, examples/workday.toml and examples/bamboohr.toml \
         production-shaped ones"
    )]
    NotFound { path: String },
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The keys every `[[connection]]` has, whatever its connector.
pub const CORE_KEYS: &[&str] = &[
    "name",
    "connector",
    "auth",
    "http",
    "requests_per_sec",
    "burst",
    "max_in_flight",
    "run_budget_secs",
    "max_sweep_share",
    "schedule",
    "every",
    "jitter",
    "schedule_time_zone",
    "streams",
];

/// A `${NAME}` whose variable is not set, and the key that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingEnv {
    /// E.g. `auth.client_secret` (within its connection) or `database.url`.
    pub key: String,
    pub var: String,
}

/// Lists missing variables as `A (key), B (key, key)`, each variable once,
/// in the order they first appear.
pub fn list_missing(missing: &[&MissingEnv]) -> String {
    let mut vars: Vec<(&str, Vec<&str>)> = Vec::new();
    for m in missing {
        match vars.iter_mut().find(|(v, _)| *v == m.var) {
            Some((_, keys)) => keys.push(&m.key),
            None => vars.push((&m.var, vec![&m.key])),
        }
    }
    vars.iter()
        .map(|(v, keys)| format!("{v} ({})", keys.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_tenant")]
    tenant: String,
    database: DatabaseConfig,
    raw_store: RawStoreConfig,
    /// `[daemon]`, read by [`DaemonConfig::from_toml`].
    daemon: Option<toml::Value>,
    #[serde(default)]
    connection: Vec<toml::Table>,
}

fn default_tenant() -> String {
    "default".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    4
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreConfig {
    pub url: Url,
    /// Backend options (e.g. `aws_region`, `aws_endpoint`); `${ENV}` allowed.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[connection.http]`: timeouts and retry bounds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    #[serde(default = "d_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "d_max_delay")]
    pub retry_max_delay_secs: u64,
    #[serde(default = "d_elapsed")]
    pub retry_max_elapsed_secs: u64,
    #[serde(default = "d_retry_after")]
    pub max_retry_after_secs: u64,
    /// Pages requested at once when the pagination makes them predictable.
    #[serde(default = "d_concurrency")]
    pub fetch_concurrency: usize,
    /// Deadline of one logical call (all attempts and waits); 0 for none.
    #[serde(default = "d_call_timeout")]
    pub call_timeout_secs: u64,
    /// The breaker opens after this many transient failures in a row…
    #[serde(default = "d_breaker_failures")]
    pub breaker_consecutive_failures: u32,
    /// …or when this share of the calls in the last minute failed (at least 20 calls).
    #[serde(default = "d_breaker_rate")]
    pub breaker_failure_rate: f64,
    /// How long an open breaker fails fast before one probe.
    #[serde(default = "d_breaker_cool_down")]
    pub breaker_cool_down_secs: u64,
    /// The largest page body read (bytes); a larger one fails the run with
    /// an error naming the endpoint, before the excess is read.
    #[serde(default = "d_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Query parameters of next-page links whose values are masked in the
    /// ledger, the watermark and `status`, besides the built-in list
    /// (`api_key`, `signature`, `sig`, `token`, `access_token`, …).
    #[serde(default)]
    pub redact_params: Vec<String>,
}

fn d_max_body_bytes() -> usize {
    connector_core::transport::DEFAULT_MAX_BODY_BYTES
}

/// Upper bounds of the duration keys: a typo of a few zeros must be a
/// config error naming the key, not an overflow at run time.
const DURATION_BOUNDS: &[(&str, u64)] = &[
    ("timeout_secs", 86_400),
    ("call_timeout_secs", 7 * 86_400),
    ("retry_base_ms", 3_600_000),
    ("retry_max_delay_secs", 86_400),
    ("retry_max_elapsed_secs", 7 * 86_400),
    ("max_retry_after_secs", 7 * 86_400),
    ("breaker_cool_down_secs", 86_400),
];

fn d_call_timeout() -> u64 {
    900
}
fn d_breaker_failures() -> u32 {
    5
}
fn d_breaker_rate() -> f64 {
    0.5
}
fn d_breaker_cool_down() -> u64 {
    30
}

fn d_timeout() -> u64 {
    60
}
fn d_attempts() -> u32 {
    6
}
fn d_base_ms() -> u64 {
    500
}
fn d_max_delay() -> u64 {
    30
}
fn d_elapsed() -> u64 {
    300
}
fn d_retry_after() -> u64 {
    120
}
fn d_concurrency() -> usize {
    4
}

impl Default for HttpConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl HttpConfig {
    /// Range checks of every key, naming the key that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        for (key, max) in DURATION_BOUNDS {
            let v = match *key {
                "timeout_secs" => self.timeout_secs,
                "call_timeout_secs" => self.call_timeout_secs,
                "retry_base_ms" => self.retry_base_ms,
                "retry_max_delay_secs" => self.retry_max_delay_secs,
                "retry_max_elapsed_secs" => self.retry_max_elapsed_secs,
                "max_retry_after_secs" => self.max_retry_after_secs,
                _ => self.breaker_cool_down_secs,
            };
            if v > *max {
                return Err(format!("{key} = {v} is out of range (at most {max})"));
            }
        }
        if !(0.0..=1.0).contains(&self.breaker_failure_rate) {
            return Err(format!(
                "breaker_failure_rate = {} must be within 0..1",
                self.breaker_failure_rate
            ));
        }
        if self.breaker_consecutive_failures == 0 {
            return Err("breaker_consecutive_failures must be at least 1".into());
        }
        if !(1..=64).contains(&self.fetch_concurrency) {
            return Err(format!(
                "fetch_concurrency = {} must be between 1 and 64",
                self.fetch_concurrency
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(format!(
                "max_attempts = {} must be between 1 and 100",
                self.max_attempts
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.max_body_bytes) {
            return Err(format!(
                "max_body_bytes = {} must be between 1024 and 1073741824 (1 GiB)",
                self.max_body_bytes
            ));
        }
        Ok(())
    }

    pub fn settings(&self) -> HttpSettings {
        let mut retry = RetryPolicy::default();
        retry.max_attempts = self.max_attempts;
        retry.base_delay = Duration::from_millis(self.retry_base_ms);
        retry.max_delay = Duration::from_secs(self.retry_max_delay_secs);
        retry.max_elapsed = Duration::from_secs(self.retry_max_elapsed_secs);
        retry.max_retry_after = Duration::from_secs(self.max_retry_after_secs);
        HttpSettings {
            attempt_timeout: (self.timeout_secs > 0)
                .then(|| Duration::from_secs(self.timeout_secs)),
            call_timeout: (self.call_timeout_secs > 0)
                .then(|| Duration::from_secs(self.call_timeout_secs)),
            retry,
            breaker: BreakerSettings {
                consecutive_failures: self.breaker_consecutive_failures,
                failure_rate: self.breaker_failure_rate,
                cool_down: Duration::from_secs(self.breaker_cool_down_secs),
                ..BreakerSettings::default()
            },
            max_body_bytes: self.max_body_bytes,
            redact_params: connector_core::DEFAULT_REDACT_PARAMS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(self.redact_params.iter().cloned())
                .collect(),
            ..HttpSettings::default()
        }
    }
}

/// The core keys of a `[[connection]]` besides name, connector, auth and http:
/// the connection's shared rate limit and its run budget.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sustained requests per second, shared by all the connection's streams.
    pub requests_per_sec: Option<f64>,
    /// Requests allowed at once after an idle period (default 1).
    pub burst: Option<u32>,
    /// Requests in flight at once.
    pub max_in_flight: Option<usize>,
    /// A run that would have to wait past this many seconds from its start
    /// (a long `Retry-After`, a slow rate limit) checkpoints and ends `deferred`.
    pub run_budget_secs: Option<u64>,
    /// The largest share of a full-refresh stream's live rows one sweep may
    /// soft-delete (default 0.5): a run that would delete more deletes
    /// nothing and fails, so a source that suddenly answers an empty list
    /// cannot wipe the model.
    pub max_sweep_share: Option<f64>,
}

impl ConnectionConfig {
    /// The schedule of stream `name` (its own, else the connection's).
    pub fn schedule_of(&self, name: &str) -> Option<&Schedule> {
        self.stream_schedules.get(name).or(self.schedule.as_ref())
    }
}

/// The default of [`Limits::max_sweep_share`].
pub const DEFAULT_MAX_SWEEP_SHARE: f64 = 0.5;

impl ConnectionConfig {
    /// The HTTP settings of this connection: `[connection.http]` plus its limits.
    pub fn http_settings(&self) -> HttpSettings {
        let mut s = self.http.settings();
        s.rate_limit = RateLimitSettings {
            requests_per_sec: self.limits.requests_per_sec,
            burst: self.limits.burst.unwrap_or(1),
            max_in_flight: self.limits.max_in_flight,
        };
        s.run_budget = self.limits.run_budget_secs.map(Duration::from_secs);
        s
    }
}

/// One `[[connection]]`: the core keys; the rest goes to the connector.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: String,
    pub connector: String,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub limits: Limits,
    /// When `run` syncs the connection's streams (`schedule`/`every` in the
    /// `[[connection]]`), unless a stream has its own.
    pub schedule: Option<Schedule>,
    /// `[connection.streams.NAME]`: a stream's own schedule.
    pub stream_schedules: BTreeMap<String, Schedule>,
    /// Connector-specific keys, checked by the connector (`deny_unknown_fields`).
    pub settings: serde_json::Value,
    /// `${NAME}` references of this connection whose variable is not set:
    /// only the commands that need those keys fail, naming them all.
    pub missing_env: Vec<MissingEnv>,
}

/// What a command needs of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its connector (streams, mappers): every key but the credentials.
    Connector,
    /// The source itself: every key, credentials included.
    Source,
}

impl ConnectionConfig {
    /// Fails, naming every unset variable at once, when this connection
    /// refers to environment variables that `need` requires and are not set.
    pub fn require_env(&self, need: Need) -> anyhow::Result<()> {
        let missing: Vec<&MissingEnv> = self
            .missing_env
            .iter()
            .filter(|m| need == Need::Source || !m.key.starts_with("auth."))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "connection {:?} needs environment variables that are not set: {}",
            self.name,
            list_missing(&missing)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tenant: String,
    pub database: DatabaseConfig,
    pub raw_store: RawStoreConfig,
    pub daemon: DaemonConfig,
    pub connections: Vec<ConnectionConfig>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            let path = path.display().to_string();
            if error.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound { path }
            } else {
                ConfigError::Read { path, error }
            }
        })?;
        Self::parse(&text, &path.display().to_string(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses config text; `${NAME}` in any string value is replaced by
    /// `env(NAME)`. An unset variable outside a `[[connection]]` is an error
    /// (listing every one); inside one it is recorded in the connection's
    /// `missing_env`, for the commands that need it to refuse.
    pub fn parse(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut missing = Vec::new();
        substitute(&mut value, "", env, &mut missing).map_err(invalid)?;
        let global: Vec<&MissingEnv> = missing
            .iter()
            .filter(|m| !m.key.starts_with("connection["))
            .collect();
        if !global.is_empty() {
            // Those of the connections too, so one run of the command names
            // every variable to set (a command only needs some of them).
            let conn: Vec<&MissingEnv> = missing
                .iter()
                .filter(|m| m.key.starts_with("connection["))
                .collect();
            let also = if conn.is_empty() {
                String::new()
            } else {
                format!(
                    "; and, for the commands that use the connections: {}",
                    list_missing(&conn)
                )
            };
            return Err(invalid(format!(
                "environment variables are not set: {}{also}",
                list_missing(&global)
            )));
        }
        let raw: RawConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        let mut connections = Vec::new();
        for (i, mut table) in raw.connection.into_iter().enumerate() {
            let prefix = format!("connection[{i}].");
            let missing_env: Vec<MissingEnv> = missing
                .iter()
                .filter_map(|m| {
                    m.key.strip_prefix(&prefix).map(|key| MissingEnv {
                        key: key.to_owned(),
                        var: m.var.clone(),
                    })
                })
                .collect();
            let at = |key: &str| format!("connection[{i}].{key}");
            let name = match table.remove("name") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(invalid(format!(
                        "{} is required (a non-empty string)",
                        at("name")
                    )));
                }
            };
            let at = |key: &str| format!("connection {name:?}: {key}");
            let connector = match table.remove("connector") {
                Some(toml::Value::String(s)) => s,
                _ => return Err(invalid(format!("{} is required", at("connector")))),
            };
            let auth_missing = missing_env.iter().any(|m| m.key.starts_with("auth."));
            let auth: AuthConfig = match table.remove("auth") {
                Some(v) => match v.try_into::<AuthConfig>() {
                    Ok(a) => a,
                    // A value from an unset variable may not parse (a URL
                    // like `${BASE}/token`): the commands that use the
                    // credentials refuse first, naming the variable.
                    Err(_) if auth_missing => AuthConfig::None,
                    Err(e) => {
                        return Err(invalid(format!("{}: {}", at("auth"), e.message())));
                    }
                },
                None => AuthConfig::None,
            };
            let http: HttpConfig = match table.remove("http") {
                Some(v) => v.try_into().map_err(|e: toml::de::Error| {
                    invalid(format!("{}: {}", at("http"), e.message()))
                })?,
                None => HttpConfig::default(),
            };
            let mut limit_keys = toml::Table::new();
            for k in [
                "requests_per_sec",
                "burst",
                "max_in_flight",
                "run_budget_secs",
                "max_sweep_share",
            ] {
                if let Some(v) = table.remove(k) {
                    limit_keys.insert(k.to_owned(), v);
                }
            }
            let limits: Limits =
                toml::Value::Table(limit_keys)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        invalid(format!("{}: {}", at("limits"), e.message()))
                    })?;
            if limits
                .requests_per_sec
                .is_some_and(|r| !(r > 0.0 && r.is_finite()))
                || limits.burst == Some(0)
                || limits.max_in_flight == Some(0)
            {
                return Err(invalid(format!(
                    "{}: requests_per_sec must be a positive number; burst and max_in_flight at least 1",
                    at("limits")
                )));
            }
            http.validate()
                .map_err(|e| invalid(format!("{}: {e}", at("http"))))?;
            if limits
                .max_sweep_share
                .is_some_and(|s| !(0.0..=1.0).contains(&s))
            {
                return Err(invalid(format!(
                    "{}: max_sweep_share must be within 0..1 (the share of a stream's rows one sweep may delete)",
                    at("max_sweep_share")
                )));
            }
            if limits.run_budget_secs.is_some_and(|b| b > 30 * 86_400) {
                return Err(invalid(format!(
                    "{}: run_budget_secs must be at most 2592000 (30 days)",
                    at("run_budget_secs")
                )));
            }
            // Credentials from unset variables are checked by the commands
            // that use them, once they are set.
            if !auth_missing {
                auth.validate()
                    .map_err(|e| invalid(format!("{}: {e}", at("auth"))))?;
            }
            if connections
                .iter()
                .any(|c: &ConnectionConfig| c.name == name)
            {
                return Err(invalid(format!("connection {name:?} is defined twice")));
            }
            let schedule = Schedule::take_from(&mut table).map_err(|e| invalid(at(&e)))?;
            let mut stream_schedules = BTreeMap::new();
            match table.remove("streams") {
                None => {}
                Some(toml::Value::Table(streams)) => {
                    for (stream, v) in streams {
                        let toml::Value::Table(mut t) = v else {
                            return Err(invalid(format!(
                                "{}: a table of schedule keys ({})",
                                at(&format!("streams.{stream}")),
                                SCHEDULE_KEYS.join(", ")
                            )));
                        };
                        let s = Schedule::take_from(&mut t)
                            .map_err(|e| invalid(at(&format!("streams.{stream}.{e}"))))?;
                        if let Some(k) = t.keys().next() {
                            return Err(invalid(format!(
                                "{}: unknown key {k:?} (a stream takes {})",
                                at(&format!("streams.{stream}")),
                                SCHEDULE_KEYS.join(", ")
                            )));
                        }
                        match s {
                            Some(s) => {
                                stream_schedules.insert(stream, s);
                            }
                            None => {
                                return Err(invalid(format!(
                                    "{}: give schedule (cron) or every (an interval)",
                                    at(&format!("streams.{stream}"))
                                )));
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "{}: a table of stream names, e.g. [connection.streams.workers]",
                        at("streams")
                    )));
                }
            }
            let settings = serde_json::to_value(&table)
                .map_err(|e| invalid(format!("{}: {e}", at("settings"))))?;
            connections.push(ConnectionConfig {
                name,
                connector,
                auth,
                http,
                limits,
                schedule,
                stream_schedules,
                settings,
                missing_env,
            });
        }
        if raw.tenant.is_empty() || raw.tenant.contains('/') {
            return Err(invalid(
                "tenant must be a non-empty name without '/'".into(),
            ));
        }
        let daemon = DaemonConfig::from_toml(raw.daemon).map_err(invalid)?;
        Ok(Config {
            tenant: raw.tenant,
            database: raw.database,
            raw_store: raw.raw_store,
            daemon,
            connections,
        })
    }

    pub fn connection(&self, name: &str) -> Result<&ConnectionConfig, String> {
        self.connections
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let names: Vec<_> = self.connections.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "no connection named {name:?} in the config (configured: {})",
                    names.join(", ")
                )
            })
    }
}

/// Replaces `${NAME}` references in every string; an unset variable is
/// recorded in `missing` with its key (never the value of anything) and its
/// reference left as it is.
fn substitute(
    v: &mut toml::Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<MissingEnv>,
) -> Result<(), String> {
    match v {
        toml::Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("{at}: unterminated ${{ in value"))?;
                let name = &after[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("{at}: invalid variable reference ${{{name}}}"));
                }
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        missing.push(MissingEnv {
                            key: at.to_owned(),
                            var: name.to_owned(),
                        });
                        out.push_str(&rest[start..start + 2 + end + 1]);
                    }
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let key = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                substitute(v, &key, env, missing)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                substitute(v, &format!("{at}[{i}]"), env, missing)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/workday.toml");

    fn env(k: &str) -> Option<String> {
        Some(format!("<{k}>"))
    }

    #[test]
    fn the_example_config_parses() {
        let c = Config::parse(EXAMPLE, "workday.toml", &env).unwrap();
        assert_eq!(c.connections[0].name, "workday-acme");
        assert!(!format!("{:?}", c.connections[0].auth).contains("<WORKDAY_CLIENT_SECRET>"));
    }

    #[test]
    fn absurd_values_are_config_errors_naming_the_key() {
        let head = "[database]\nurl='x'\n[raw_store]\nurl='memory:///'\n[[connection]]\nname='a'\nconnector='w'\n";
        for (extra, key) in [
            ("run_budget_secs = 9223372036854775807\n", "run_budget_secs"),
            (
                "[connection.http]\nbreaker_cool_down_secs = 9223372036854775807\n",
                "breaker_cool_down_secs",
            ),
            (
                "[connection.http]\ntimeout_secs = 99999999999\n",
                "timeout_secs",
            ),
            (
                "[connection.http]\nretry_base_ms = 9223372036854775807\n",
                "retry_base_ms",
            ),
            (
                "[connection.http]\nbreaker_failure_rate = nan\n",
                "breaker_failure_rate",
            ),
            ("[connection.http]\nmax_body_bytes = 10\n", "max_body_bytes"),
            (
                "[connection.http]\nfetch_concurrency = 100000\n",
                "fetch_concurrency",
            ),
            ("run_budget_secs = -1\n", "limits"),
            (
                "[connection.auth]\nstrategy = 'jwt_bearer'\ntoken_url = 'https://t.test/token'\nissuer = 'i'\nsubject = 's'\nprivate_key = '-----BEGIN -----END X-----'\n",
                "private_key",
            ),
        ] {
            let e = Config::parse(&format!("{head}{extra}"), "x.toml", &env)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(key) && e.contains("connection \"a\""),
                "{extra}: {e}"
            );
        }
    }

    #[test]
    fn missing_env_and_unknown_keys_are_named() {
        let e = Config::parse(EXAMPLE, "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("environment variables are not set: DATABASE_URL (database.url)")
                && e.contains("WORKDAY_CLIENT_SECRET"),
            "{e}"
        );
        let bad = "[database]\nurl='x'\nurll='y'\n[raw_store]\nurl='memory:///'\n";
        let e = Config::parse(bad, "x.toml", &env).unwrap_err().to_string();
        assert!(e.contains("urll"), "{e}");
        let bad = "[database]\nurl='x'\n[raw_store]\nurl='memory:///'\n[[connection]]\nname='a'\nconnector='w'\n[connection.auth]\nstrategy='magic'\n";
        let e = Config::parse(bad, "x.toml", &env).unwrap_err().to_string();
        assert!(
            e.contains("connection \"a\": auth") && e.contains("magic"),
            "{e}"
        );
    }

    #[test]
    fn unset_secrets_only_stop_the_commands_that_use_them_and_are_named_at_once() {
        let only_db = |k: &str| (k == "DATABASE_URL").then(|| "postgres://x@h/db".to_owned());
        let c = Config::parse(EXAMPLE, "x.toml", &only_db).unwrap();
        let conn = c.connection("workday-acme").unwrap();
        conn.require_env(Need::Connector).unwrap();
        let e = conn.require_env(Need::Source).unwrap_err().to_string();
        assert_eq!(
            e,
            "connection \"workday-acme\" needs environment variables that are not set: \
             WORKDAY_CLIENT_ID (auth.client_id), WORKDAY_CLIENT_SECRET (auth.client_secret), \
             WORKDAY_REFRESH_TOKEN (auth.refresh_token)"
        );
        // A connector key from an unset variable stops the connector's users too.
        let text = EXAMPLE.replace(
            "base_url = \"https://wd5-impl-services1.workday.com\"",
            "base_url = \"${WD_BASE}\"",
        );
        let c = Config::parse(&text, "x.toml", &only_db).unwrap();
        let e = c.connections[0]
            .require_env(Need::Connector)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("WD_BASE (base_url)"), "{e}");
    }

    #[test]
    fn a_missing_file_is_one_message_with_the_fix() {
        let e = Config::load(Path::new("/nonexistent/sync.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config file /nonexistent/sync.toml not found: give one with --config"),
            "{e}"
        );
        assert!(!e.contains("os error"), "{e}");
    }

    #[test]
    fn a_variable_used_twice_is_named_once_with_its_keys() {
        let m = |key: &str, var: &str| MissingEnv {
            key: key.into(),
            var: var.into(),
        };
        let all = [
            m("auth.token_url", "BASE"),
            m("auth.client_secret", "SECRET"),
            m("base_url", "BASE"),
        ];
        assert_eq!(
            list_missing(&all.iter().collect::<Vec<_>>()),
            "BASE (auth.token_url, base_url), SECRET (auth.client_secret)"
        );
    }
}
