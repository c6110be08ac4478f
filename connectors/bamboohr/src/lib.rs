//! BambooHR connector: two streams of BambooHR's REST API (v1).
//!
//! - `employees`: `POST reports/custom?format=JSON&onlyCurrent=false` with a
//!   report definition (`{"title", "fields"}`) answers every employee, Active
//!   and Inactive, in one unpaged body `{"title", "fields", "employees": [...]}`.
//!   An incremental run adds `filters.lastChanged` (`includeNull: "no"`, the
//!   stored bound, inclusive); the first run sends no filter. Each employee
//!   maps to a canonical `worker`, plus its department (`org_unit`) and
//!   `location`.
//! - `employee_changes`: `GET employees/changed/?since=…` answers
//!   `{"latest": "…", "employees": {"123": {"id", "action", "lastChanged"}}}`,
//!   an object keyed by id. `Deleted` entries are tombstones of the worker;
//!   `Inserted`/`Updated` ones map to nothing (the report carries the data).
//!   The next `since` is the answer's `latest`, the server's clock (sent with
//!   `+` as `%2B`); the first run asks from 2011-06-05, when BambooHR began
//!   recording changes.
//!
//! Auth is HTTP Basic with the API key as user name and any password
//! (`[connection.auth] strategy = "basic"`); `Accept: application/json` is
//! sent on every request and request bodies go out as `Content-Type:
//! application/json` exactly (BambooHR reads anything else as XML).
//! BambooHR throttles with 503 (older tenants) or 429 and `Retry-After`;
//! both pause the connection. Its reason for an error is in the
//! `X-BambooHR-Error-Message` header, which goes into the error.
//!
//! ```
//! use connector_core::Connector;
//! let cfg = serde_json::from_value(serde_json::json!({"company_domain": "acme"})).unwrap();
//! let bamboo = bamboohr::BambooHr::new(cfg).unwrap();
//! assert_eq!(
//!     bamboo.base_url().as_str(),
//!     "https://api.bamboohr.com/api/gateway.php/acme/v1/"
//! );
//! assert_eq!(bamboo.streams()[0].name, "employees");
//! ```

mod config;
pub mod mapper;

use canonical_model::{EntityKind, Modeled, StreamModel};
use connector_core::{
    Body, Connector, Deleted, Error, ErrorAnswer, ErrorReading, Records, RequestHook, StreamDef,
    SyncMode,
};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub use config::{BambooHrConfig, DEFAULT_FIELDS, MAX_FIELDS};
pub use mapper::{ChangesMapper, EmployeesMapper};

/// BambooHR began recording change dates on 2011-06-05: the first
/// `employees/changed` pull starts there.
pub const CHANGES_FLOOR: &str = "2011-06-05T00:00:00Z";

/// Late commits: the report's bound stays this far behind the server's clock.
const LAG: Duration = Duration::from_secs(60);

/// A BambooHR connection.
#[derive(Debug, Clone)]
pub struct BambooHr {
    config: BambooHrConfig,
    base_url: Url,
}

impl Connector for BambooHr {
    const NAME: &'static str = "bamboohr";
    type Config = BambooHrConfig;

    fn new(config: BambooHrConfig) -> Result<Self, Error> {
        config
            .validate()
            .map_err(|e| Error::Config(format!("connector bamboohr: {e}")))?;
        let base_url = config.api_root();
        Ok(Self { config, base_url })
    }

    fn base_url(&self) -> &Url {
        &self.base_url
    }

    fn streams(&self) -> Vec<StreamDef> {
        let report = serde_json::json!({
            "title": "sync-daemon employees",
            "fields": self.config.fields(),
        });
        let employees = StreamDef {
            query: vec![
                ("format".into(), "JSON".into()),
                ("onlyCurrent".into(), "false".into()),
            ],
            records: Records::Array("/employees"),
            cursor: Some("/lastChanged"),
            // A report only reads: retried like a GET.
            idempotent: true,
            mode: SyncMode::Incremental {
                since_param: None,
                token_at: None,
                keyset: false,
                lag: LAG,
            },
            // The bound goes in the report's filter, on incremental runs only.
            request: Some(RequestHook::new(|req, page| {
                if let (Some(since), Some(Body::Json(body))) = (page.since_text(), &mut req.body) {
                    body["filters"] = serde_json::json!({
                        "lastChanged": {"includeNull": "no", "value": since}
                    });
                }
                Ok(())
            })),
            ..StreamDef::post("employees", "reports/custom", Body::Json(report))
        };
        let changes = StreamDef {
            records: Records::Values("/employees"),
            cursor: Some("/lastChanged"),
            deleted: Some(Deleted::When {
                pointer: "/action",
                values: &["Deleted"],
            }),
            mode: SyncMode::Incremental {
                since_param: Some("since"),
                token_at: Some("/latest"),
                keyset: false,
                lag: LAG,
            },
            // The API needs a `since`: the first pull asks for all it has.
            request: Some(RequestHook::new(|req, page| {
                if page.since.is_none() {
                    req.url
                        .query_pairs_mut()
                        .append_pair("since", CHANGES_FLOOR);
                }
                Ok(())
            })),
            ..StreamDef::get("employee_changes", "employees/changed/")
        };
        vec![employees, changes]
    }

    /// BambooHR's reason for an error is in `X-BambooHR-Error-Message`.
    fn read_error(answer: &ErrorAnswer<'_>) -> ErrorReading {
        ErrorReading {
            throttled: false,
            message: answer
                .headers
                .get("x-bamboohr-error-message")
                .and_then(|v| v.to_str().ok())
                .filter(|m| !m.trim().is_empty())
                .map(|m| m.chars().take(500).collect()),
            ..Default::default()
        }
    }
}

impl Modeled for BambooHr {
    fn models(&self) -> Vec<StreamModel> {
        vec![
            StreamModel {
                stream: "employees",
                entity: EntityKind::Worker,
                mapper: Arc::new(EmployeesMapper::new()),
            },
            StreamModel {
                stream: "employee_changes",
                entity: EntityKind::Worker,
                mapper: Arc::new(ChangesMapper::new()),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{PageCtx, PageToken};

    fn bamboo() -> BambooHr {
        BambooHr::new(
            serde_json::from_value(serde_json::json!({
                "company_domain": "acme", "base_url": "http://127.0.0.1:9/api/gateway.php/acme/v1"
            }))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_report_filters_by_last_changed_only_on_incremental_runs() {
        let b = bamboo();
        let s = &b.streams()[0];
        let first = s
            .request(b.base_url(), &PageToken::Start, &PageCtx::default())
            .unwrap();
        assert_eq!(first.method.as_str(), "POST");
        assert!(first.idempotent);
        assert_eq!(
            first.url.as_str(),
            "http://127.0.0.1:9/api/gateway.php/acme/v1/reports/custom?format=JSON&onlyCurrent=false"
        );
        let Some(Body::Json(body)) = &first.body else {
            panic!("a JSON body")
        };
        assert!(body.get("filters").is_none());
        assert_eq!(body["fields"][0], "id");
        let since = serde_json::json!("2024-05-01T10:00:00Z");
        let next = s
            .request(
                b.base_url(),
                &PageToken::Start,
                &PageCtx {
                    since: Some(&since),
                    ..Default::default()
                },
            )
            .unwrap();
        let Some(Body::Json(body)) = &next.body else {
            panic!("a JSON body")
        };
        assert_eq!(
            body["filters"],
            serde_json::json!({"lastChanged": {"includeNull": "no", "value": "2024-05-01T10:00:00Z"}})
        );
    }

    #[test]
    fn the_changed_feed_sends_the_servers_latest_with_plus_encoded() {
        let b = bamboo();
        let s = &b.streams()[1];
        let first = s
            .request(b.base_url(), &PageToken::Start, &PageCtx::default())
            .unwrap();
        assert_eq!(first.url.query(), Some("since=2011-06-05T00%3A00%3A00Z"));
        let latest = serde_json::json!("2024-05-01T10:00:00+02:00");
        let next = s
            .request(
                b.base_url(),
                &PageToken::Start,
                &PageCtx {
                    since: Some(&latest),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            next.url.query(),
            Some("since=2024-05-01T10%3A00%3A00%2B02%3A00")
        );
    }

    #[test]
    fn bad_keys_are_named() {
        for (cfg, want) in [
            (
                serde_json::json!({"company_domain": "acme.bamboohr.com"}),
                "subdomain",
            ),
            (
                serde_json::json!({"company_domain": "acme", "base_url": "ftp://x/"}),
                "http",
            ),
            (
                serde_json::json!({"company_domain": "acme", "fields": (0..401).map(|i| format!("f{i}")).collect::<Vec<_>>()}),
                "at most 400",
            ),
        ] {
            let e = BambooHr::new(serde_json::from_value(cfg).unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
