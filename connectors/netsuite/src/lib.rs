//! NetSuite connector: SuiteQL over REST.
//!
//! Every stream is one SuiteQL query, `POST
//! services/rest/query/v1/suiteql?limit=L` with `Prefer: transient` and
//! `{"q": "SELECT …"}` (a POST that only reads: retried like a GET), whose
//! answer holds the rows at `/items` (every value a string; a null column
//! is absent from its item):
//!
//! | stream | query | canonical | sync |
//! |---|---|---|---|
//! | `employees` | `employee` | worker (+ department, location) | full pull by id, swept |
//! | `vendors` | `vendor` + currency + billing address | supplier | full pull by id, swept |
//! | `accounts` | `account` | gl_account | full pull by id, swept |
//! | `transactions` | `transaction` + `transactionaccountingline` (primary book) + `transactionline` | journal_line + journal_entry | incremental by `lastmodifieddate` |
//!
//! **Keyset paging.** SuiteQL answers at most 100,000 rows of one query, so
//! no query pages by `offset`: each page asks for the rows after the largest
//! key of the page before, ordered by `lastmodifieddate` (for
//! `transactions`) then the ids. Rows with the same `lastmodifieddate` are
//! told apart by their ids, so a page boundary among them loses none, and
//! the next sync starts after the last `(lastmodifieddate, transaction,
//! line)` it stored.
//!
//! **Time.** Date-times are selected through `TO_CHAR(…, 'YYYY-MM-DD
//! HH24:MI:SS')` (NetSuite otherwise renders them in the user's date
//! format) and read in the connection's `time_zone`, the token user's
//! time-zone preference; bounds are sent back in the same text.
//!
//! **Errors.** `CONCURRENCY_LIMIT_EXCEEDED` in `o:errorDetails[].o:errorCode`
//! is throttling whatever the HTTP status (429 or 400): the request is
//! retried and the connection slows down. `INVALID_LOGIN` is a refused
//! credential. The error names the code and NetSuite's detail.
//!
//! Auth is OAuth 1.0 TBA (`strategy = "oauth1_tba"`), HMAC-SHA256, with
//! `realm` = the account id upper-cased with `-` as `_` ([`realm`]); the
//! `limit` parameter is signed, the JSON body is not.
//!
//! ```
//! use connector_core::Connector;
//! let cfg = serde_json::from_value(serde_json::json!({"account_id": "1234567_SB1"})).unwrap();
//! let ns = netsuite::NetSuite::new(cfg).unwrap();
//! assert_eq!(ns.base_url().as_str(), "https://1234567-sb1.suitetalk.api.netsuite.com/");
//! assert_eq!(netsuite::realm("1234567-sb1"), "1234567_SB1");
//! ```

mod config;
pub mod mapper;
pub mod query;

use canonical_model::{EntityKind, Modeled, StreamModel};
use connector_core::{
    Body, Connector, CursorTime, Error, ErrorAnswer, ErrorReading, Pagination, Records,
    RequestHook, StreamDef, SyncMode,
};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub use config::{MAX_LIMIT, NetSuiteConfig, host_label, realm};
pub use query::Query;

/// Late commits: the state stays this far behind the server's clock.
const LAG: Duration = Duration::from_secs(120);

const PATH: &str = "services/rest/query/v1/suiteql";

/// A NetSuite account.
#[derive(Debug, Clone)]
pub struct NetSuite {
    config: NetSuiteConfig,
    root: Url,
    tz: chrono_tz::Tz,
}

impl NetSuite {
    fn stream(&self, name: &'static str, q: Query, key: &'static str) -> StreamDef {
        let tz = self.tz;
        StreamDef {
            headers: vec![("Prefer".into(), "transient".into())],
            records: Records::Array("/items"),
            pagination: Pagination::Keyset {
                limit: self.config.page_size,
                limit_param: "limit",
            },
            primary_key: key,
            request: Some(RequestHook::new(move |req, page| {
                let text = q.text(tz, page.since, page.after)?;
                req.body = Some(Body::Json(serde_json::json!({ "q": text })));
                Ok(())
            })),
            cursor_parse: Some(CursorTime::new(move |s| query::parse_local(s, tz))),
            ..StreamDef::post(name, PATH, Body::Json(serde_json::json!({ "q": q.select })))
        }
    }
}

impl Connector for NetSuite {
    const NAME: &'static str = "netsuite";
    type Config = NetSuiteConfig;

    fn new(config: NetSuiteConfig) -> Result<Self, Error> {
        let bad = |e: String| Error::Config(format!("connector netsuite: {e}"));
        config.validate().map_err(bad)?;
        let tz = config.tz().map_err(bad)?;
        Ok(Self {
            root: config.root(),
            config,
            tz,
        })
    }

    fn base_url(&self) -> &Url {
        &self.root
    }

    fn streams(&self) -> Vec<StreamDef> {
        vec![
            self.stream("employees", query::EMPLOYEES, "/id"),
            self.stream("vendors", query::VENDORS, "/id"),
            self.stream("accounts", query::ACCOUNTS, "/id"),
            StreamDef {
                cursor: Some("/lastmodifieddate"),
                mode: SyncMode::Incremental {
                    since_param: None,
                    token_at: None,
                    keyset: true,
                    lag: LAG,
                },
                ..self.stream(
                    "transactions",
                    query::TRANSACTIONS,
                    "/transaction,/transactionline",
                )
            },
        ]
    }

    fn read_error(answer: &ErrorAnswer<'_>) -> ErrorReading {
        read_netsuite_error(answer.body)
    }

    /// TBA's realm must be the account id upper-cased with `_`: NetSuite
    /// refuses `1234567_sb1` or `1234567-SB1` as an invalid login.
    fn check_auth(&self, auth: &connector_core::AuthConfig) -> Result<(), String> {
        match auth {
            connector_core::AuthConfig::Oauth1Tba { realm: got, .. } => {
                let want = realm(&self.config.account_id);
                if *got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "realm = {got:?}, but NetSuite expects the account id upper-cased with `_`: realm = {want:?}"
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}

/// NetSuite's error body: `o:errorDetails[]` with `o:errorCode` and `detail`.
pub fn read_netsuite_error(body: &[u8]) -> ErrorReading {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return ErrorReading::default();
    };
    let details: Vec<&serde_json::Value> = v
        .get("o:errorDetails")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let code = |d: &serde_json::Value| {
        d.get("o:errorCode")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let has = |c: &str| details.iter().any(|d| code(d) == c);
    let message = details.first().map(|d| {
        let detail = d
            .get("detail")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let text = format!("{}: {}", code(d), detail.trim());
        text.chars().take(400).collect::<String>()
    });
    ErrorReading {
        throttled: has("CONCURRENCY_LIMIT_EXCEEDED"),
        unauthorized: has("INVALID_LOGIN") || has("INVALID_LOGIN_ATTEMPT"),
        message: message.or_else(|| {
            v.get("title")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        }),
    }
}

impl Modeled for NetSuite {
    fn models(&self) -> Vec<StreamModel> {
        let tz = self.tz;
        vec![
            StreamModel {
                stream: "employees",
                entity: EntityKind::Worker,
                mapper: Arc::new(mapper::NetSuiteMapper::employees(tz)),
            },
            StreamModel {
                stream: "vendors",
                entity: EntityKind::Supplier,
                mapper: Arc::new(mapper::NetSuiteMapper::vendors(tz)),
            },
            StreamModel {
                stream: "accounts",
                entity: EntityKind::GlAccount,
                mapper: Arc::new(mapper::NetSuiteMapper::accounts()),
            },
            StreamModel {
                stream: "transactions",
                entity: EntityKind::JournalLine,
                mapper: Arc::new(mapper::NetSuiteMapper::transactions(tz)),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{PageCtx, PageToken};

    fn ns() -> NetSuite {
        NetSuite::new(
            serde_json::from_value(serde_json::json!({
                "account_id": "1234567-sb1", "base_url": "http://127.0.0.1:9",
                "time_zone": "America/Los_Angeles", "page_size": 2
            }))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_page_is_a_suiteql_post_with_limit_and_no_offset() {
        let n = ns();
        let t = n.streams().pop().unwrap();
        let r = t
            .request(n.base_url(), &t.pagination.first(), &PageCtx::default())
            .unwrap();
        assert_eq!(r.method.as_str(), "POST");
        assert!(r.idempotent);
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:9/services/rest/query/v1/suiteql?limit=2"
        );
        assert!(r.headers.contains(&("Prefer".into(), "transient".into())));
        let after = PageToken::Cursor {
            cursor: r#"{"modified":"2024-03-01 10:00:00","id":"7|2"}"#.into(),
        };
        let r = t
            .request(n.base_url(), &after, &PageCtx::default())
            .unwrap();
        let Some(Body::Json(b)) = &r.body else {
            panic!("a JSON body")
        };
        let q = b["q"].as_str().unwrap();
        assert!(q.contains("t.id = 7 AND tal.transactionline > 2"), "{q}");
        assert_eq!(r.url.query(), Some("limit=2"));
        // Cursors read in the user's time zone.
        assert_eq!(
            t.cursor_time("2024-03-01 10:00:00").unwrap().to_rfc3339(),
            "2024-03-01T18:00:00+00:00"
        );
    }

    #[test]
    fn error_codes_decide_throttling_and_refused_logins() {
        let fixture = |name: &str| {
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../fixtures/netsuite")
                    .join(name),
            )
            .unwrap()
        };
        let busy = &fixture("error-concurrency-400.json");
        let r = read_netsuite_error(busy);
        assert!(r.throttled && !r.unauthorized);
        assert_eq!(
            r.message.as_deref(),
            Some("CONCURRENCY_LIMIT_EXCEEDED: Concurrent request limit exceeded. Request blocked.")
        );
        let login = &fixture("error-invalid-login-401.json");
        let r = read_netsuite_error(login);
        assert!(r.unauthorized && !r.throttled);
        assert_eq!(read_netsuite_error(b"<html/>"), ErrorReading::default());
    }

    #[test]
    fn a_realm_netsuite_would_refuse_is_refused_before_any_request() {
        let n = ns();
        let tba = |realm: &str| -> connector_core::AuthConfig {
            serde_json::from_value(serde_json::json!({
                "strategy": "oauth1_tba", "realm": realm, "consumer_key": "k",
                "consumer_secret": "s", "token_id": "t", "token_secret": "u"
            }))
            .unwrap()
        };
        assert!(Connector::check_auth(&n, &tba("1234567_SB1")).is_ok());
        for bad in ["1234567_sb1", "1234567-SB1"] {
            let e = Connector::check_auth(&n, &tba(bad)).unwrap_err();
            assert!(e.contains(r#"realm = "1234567_SB1""#), "{e}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        for (cfg, want) in [
            (
                serde_json::json!({"account_id": "1234567.sb1"}),
                "account id alone",
            ),
            (
                serde_json::json!({"account_id": "1", "time_zone": "PST"}),
                "IANA",
            ),
            (
                serde_json::json!({"account_id": "1", "page_size": 1001}),
                "1000",
            ),
        ] {
            let e = NetSuite::new(serde_json::from_value(cfg).unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
