//! SAP S/4HANA connector: four OData services of S/4HANA's public APIs,
//! mapped to the canonical finance model.
//!
//! | stream | service / entity set | key | sync |
//! |---|---|---|---|
//! | `cost_centers` | `API_COSTCENTER_SRV/A_CostCenter` + `to_Text` | ControllingArea, CostCenter, ValidityEndDate | full pull (no change stamp), diffed by hash, swept |
//! | `gl_accounts` | `API_GLACCOUNTINCHARTOFACCOUNTS_SRV/A_GLAccountInChartOfAccounts` + `to_Text` | ChartOfAccounts, GLAccount | full pull, swept |
//! | `suppliers` | `API_BUSINESS_PARTNER/A_Supplier` | Supplier | full pull, swept |
//! | `journal_entry_items` | `API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic` | CompanyCode, FiscalYear (or LedgerFiscalYear), AccountingDocument, LedgerGLLineItem (or AccountingDocumentItem) | incremental by `LastChangeDateTime`, one partition per company code |
//!
//! Every request carries `sap-client` (when configured: without it an
//! on-premise system answers from its default client), `$top` (at most
//! 5000) and, in v2, `$format=json` and `$inlinecount=allpages`
//! (`$count=true` and `Accept: application/json;IEEE754Compatible=true` in
//! v4, so decimals arrive as strings). A page's next link (`d.__next`,
//! `@odata.nextLink`) is followed as the server gives it, with
//! `sap-client` and `$format` added when it dropped them; without one the
//! stream pages by `$skip` up to the announced count. Each stream orders by
//! its key (`$orderby`), which never changes, so paging by `$skip` cannot
//! skip a record that changes during the pull.
//!
//! The journal stream asks `CompanyCode eq '…' and LastChangeDateTime ge
//! datetimeoffset'…'` (the field is `journal_change_field`; the bound is the
//! stored one less `journal_lookback`); its first pull asks for everything.
//! An SAP error body (v2 `{"error": {"code", "message": {"value"},
//! "innererror": {"transactionid"}}}`, v4 `{"error": {"code", "message"}}`)
//! is read into the error as its code, message and transaction id.
//!
//! ```
//! use connector_core::Connector;
//! let cfg = serde_json::from_value(serde_json::json!({
//!     "base_url": "https://my123456-api.s4hana.cloud.sap",
//!     "sap_client": "100",
//!     "company_codes": ["1010", "1710"],
//! })).unwrap();
//! let sap = sap_s4hana::SapS4Hana::new(cfg).unwrap();
//! let names: Vec<String> = sap.streams().iter().map(|s| s.key()).collect();
//! assert_eq!(names, ["cost_centers", "gl_accounts", "suppliers",
//!     "journal_entry_items@1010", "journal_entry_items@1710"]);
//! ```

mod config;
pub mod mapper;

use canonical_model::{EntityKind, Modeled, StreamModel};
use chrono::{DateTime, SecondsFormat, Utc};
use connector_core::{
    Connector, Error, ErrorAnswer, ErrorReading, Pagination, Records, RequestHook, StreamDef,
    SyncMode,
};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub use config::{AmountSign, DEFAULT_PATHS, MAX_TOP, ODataVersion, SapConfig};

/// Late postings: the journal's bound stays this far behind the server's clock.
const LAG: Duration = Duration::from_secs(60);

/// An SAP S/4HANA connection.
#[derive(Debug, Clone)]
pub struct SapS4Hana {
    config: SapConfig,
    root: Url,
    lookback: Duration,
    /// `/` + the journal's change field: the stream's record cursor.
    change_pointer: &'static str,
}

impl SapS4Hana {
    fn v4(&self) -> bool {
        self.config.odata_version == ODataVersion::V4
    }

    /// One entity set, read whole and ordered by its key.
    fn entity_set(&self, name: &'static str, key: &'static str, texts: bool) -> StreamDef {
        // Ordered by the key (each part's first name).
        let order: Vec<&str> = key
            .split(',')
            .map(|p| p.split('|').next().unwrap_or(p).trim_start_matches('/'))
            .collect();
        let order = order.join(",");
        let mut query: Vec<(String, String)> = Vec::new();
        if self.v4() {
            query.push(("$count".into(), "true".into()));
        } else {
            query.push(("$format".into(), "json".into()));
            query.push(("$inlinecount".into(), "allpages".into()));
        }
        query.push(("$orderby".into(), order));
        if texts {
            // The texts' navigation: `to_Text` in the v2 APIs, `_Text` in v4.
            let nav = if self.v4() { "_Text" } else { "to_Text" };
            query.push(("$expand".into(), nav.into()));
        }
        let top = self.config.page_size;
        StreamDef {
            query,
            headers: if self.v4() {
                vec![(
                    "Accept".into(),
                    "application/json;IEEE754Compatible=true".into(),
                )]
            } else {
                Vec::new()
            },
            records: Records::Array(if self.v4() { "/value" } else { "/d/results" }),
            pagination: if self.v4() {
                Pagination::odata_v4_or_skip(top)
            } else {
                Pagination::odata_v2_or_skip(top)
            },
            primary_key: key,
            request: Some(self.hook(None)),
            ..StreamDef::get(name, self.config.path(name))
        }
    }

    /// Adds what every request needs and a next link may have dropped
    /// (`sap-client`, `$format`), and the journal's filter when given.
    fn hook(&self, journal: Option<(&'static str, Duration)>) -> RequestHook {
        let client = self.config.sap_client.clone();
        let v4 = self.v4();
        RequestHook::new(move |req, page| {
            let has = |k: &str| req.url.query_pairs().any(|(q, _)| q == k);
            let mut add: Vec<(String, String)> = Vec::new();
            if let Some(c) = &client
                && !has("sap-client")
            {
                add.push(("sap-client".into(), c.clone()));
            }
            if !v4 && !has("$format") {
                add.push(("$format".into(), "json".into()));
            }
            if let Some((field, lookback)) = journal
                && !has("$filter")
            {
                let code = page.partition.unwrap_or_default().replace('\'', "''");
                let mut filter = format!("CompanyCode eq '{code}'");
                if let Some(since) = page.since_text() {
                    let t = DateTime::parse_from_rfc3339(&since)
                        .map_err(|e| {
                            Error::Config(format!(
                                "stream journal_entry_items: stored bound {since:?} is not RFC 3339: {e}"
                            ))
                        })?
                        .with_timezone(&Utc);
                    let from = t
                        .checked_sub_signed(
                            chrono::Duration::from_std(lookback)
                                .unwrap_or(chrono::Duration::zero()),
                        )
                        .unwrap_or(DateTime::<Utc>::MIN_UTC);
                    let at = from.to_rfc3339_opts(SecondsFormat::Secs, true);
                    filter.push_str(&if v4 {
                        format!(" and {field} ge {at}")
                    } else {
                        format!(" and {field} ge datetimeoffset'{at}'")
                    });
                }
                add.push(("$filter".into(), filter));
            }
            // The whole query as OData writes it: `$`, quotes, commas and
            // colons literal, a space as `%20` (not `+`).
            let pairs: Vec<(String, String)> = req
                .url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .chain(add)
                .collect();
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", odata_escape(k), odata_escape(v)))
                .collect();
            req.url.set_query(
                Some(&query.join("&"))
                    .filter(|q| !q.is_empty())
                    .map(String::as_str),
            );
            Ok(())
        })
    }
}

/// Percent-encodes a query key or value, leaving the characters OData
/// writes literally (`$ , : ( ) / *`; the URL library still writes a quote
/// as `%27`) and the unreserved ones; a space is `%20`, never `+`.
fn odata_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$',:()/*".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Connector for SapS4Hana {
    const NAME: &'static str = "sap_s4hana";
    type Config = SapConfig;

    fn new(config: SapConfig) -> Result<Self, Error> {
        config
            .validate()
            .map_err(|e| Error::Config(format!("connector sap_s4hana: {e}")))?;
        let lookback = config
            .lookback()
            .map_err(|e| Error::Config(format!("connector sap_s4hana: {e}")))?;
        // One small string per connection, for the stream's lifetime.
        let change_pointer: &'static str =
            Box::leak(format!("/{}", config.journal_change_field).into_boxed_str());
        Ok(Self {
            root: config.root(),
            config,
            lookback,
            change_pointer,
        })
    }

    fn base_url(&self) -> &Url {
        &self.root
    }

    fn streams(&self) -> Vec<StreamDef> {
        let field: &'static str = &self.change_pointer[1..];
        let journal = StreamDef {
            cursor: Some(self.change_pointer),
            mode: SyncMode::Incremental {
                since_param: None,
                token_at: None,
                keyset: false,
                lag: LAG,
            },
            request: Some(self.hook(Some((field, self.lookback)))),
            ..self.entity_set(
                "journal_entry_items",
                "/CompanyCode,/FiscalYear|/LedgerFiscalYear,/AccountingDocument,/LedgerGLLineItem|/AccountingDocumentItem",
                false,
            )
        };
        let mut out = vec![
            self.entity_set(
                "cost_centers",
                "/ControllingArea,/CostCenter,/ValidityEndDate",
                true,
            ),
            StreamDef {
                cursor: Some("/LastChangeDateTime"),
                ..self.entity_set("gl_accounts", "/ChartOfAccounts,/GLAccount", true)
            },
            self.entity_set("suppliers", "/Supplier", false),
        ];
        out.extend(journal.partitions(&self.config.company_codes));
        out
    }

    /// SAP's error body: code, message and the transaction id to quote to
    /// SAP support, never the whole body.
    fn read_error(answer: &ErrorAnswer<'_>) -> ErrorReading {
        ErrorReading {
            message: read_sap_error(answer.body),
            ..Default::default()
        }
    }
}

/// `code: message (transaction id …)` from a v2 or v4 error body.
pub fn read_sap_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let message = text(e.get("message")).or_else(|| text(e.pointer("/message/value")));
    let code = text(e.get("code"));
    let tx = text(e.pointer("/innererror/transactionid"))
        .or_else(|| text(e.pointer("/innererror/ErrorDetails/@SAP__common.TransactionId")));
    if message.is_none() && code.is_none() {
        return None;
    }
    let mut out = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => unreachable!(),
    };
    if let Some(t) = tx {
        out.push_str(&format!(" (transaction id {t})"));
    }
    Some(out)
}

impl Modeled for SapS4Hana {
    fn models(&self) -> Vec<StreamModel> {
        let lang = canonical_model::Language::parse(&self.config.language)
            .unwrap_or_else(|_| canonical_model::Language::parse("EN").expect("EN is a language"));
        vec![
            StreamModel {
                stream: "cost_centers",
                entity: EntityKind::CostCenter,
                mapper: Arc::new(mapper::SapMapper::cost_centers(lang)),
            },
            StreamModel {
                stream: "gl_accounts",
                entity: EntityKind::GlAccount,
                mapper: Arc::new(mapper::SapMapper::gl_accounts(lang)),
            },
            StreamModel {
                stream: "suppliers",
                entity: EntityKind::Supplier,
                mapper: Arc::new(mapper::SapMapper::suppliers()),
            },
            StreamModel {
                stream: "journal_entry_items",
                entity: EntityKind::JournalLine,
                mapper: Arc::new(mapper::SapMapper::journal_items(
                    self.change_pointer,
                    self.config.amount_sign,
                )),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{PageCtx, PageToken};

    fn sap(extra: serde_json::Value) -> SapS4Hana {
        let mut cfg = serde_json::json!({
            "base_url": "http://127.0.0.1:9/", "sap_client": "100", "company_codes": ["1010"],
        });
        cfg.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        SapS4Hana::new(serde_json::from_value(cfg).unwrap()).unwrap()
    }

    fn query(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn every_request_carries_the_client_format_top_and_order() {
        let s = sap(serde_json::json!({}));
        let cc = &s.streams()[0];
        let r = cc
            .request(s.base_url(), &cc.pagination.first(), &PageCtx::default())
            .unwrap();
        assert_eq!(
            r.url.path(),
            "/sap/opu/odata/sap/API_COSTCENTER_SRV/A_CostCenter"
        );
        let q = query(&r.url);
        for want in [
            ("$format", "json"),
            ("$inlinecount", "allpages"),
            ("$orderby", "ControllingArea,CostCenter,ValidityEndDate"),
            ("$expand", "to_Text"),
            ("$top", "5000"),
            ("$skip", "0"),
            ("sap-client", "100"),
        ] {
            assert!(
                q.contains(&(want.0.into(), want.1.into())),
                "{want:?} in {q:?}"
            );
        }
        // A next link that dropped the client and the format gets them back, once.
        let link = PageToken::Link {
            window_end: None,
            url: "http://127.0.0.1:9/sap/opu/odata/sap/API_COSTCENTER_SRV/A_CostCenter?$skiptoken=5000"
                .into(),
        };
        let r = cc
            .request(s.base_url(), &link, &PageCtx::default())
            .unwrap();
        assert_eq!(
            r.url.query(),
            Some("$skiptoken=5000&sap-client=100&$format=json")
        );
    }

    #[test]
    fn the_journal_filters_by_company_code_and_change_time_less_the_lookback() {
        let s = sap(serde_json::json!({"journal_lookback": "2d"}));
        let j = s.streams().pop().unwrap();
        assert_eq!(j.key(), "journal_entry_items@1010");
        let first = j
            .request(
                s.base_url(),
                &j.pagination.first(),
                &PageCtx {
                    partition: Some("1010"),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(query(&first.url).contains(&("$filter".into(), "CompanyCode eq '1010'".into())));
        let since = serde_json::json!("2024-04-05T08:15:22.5+02:00");
        let next = j
            .request(
                s.base_url(),
                &j.pagination.first(),
                &PageCtx {
                    partition: Some("1010"),
                    since: Some(&since),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            query(&next.url).contains(&(
                "$filter".into(),
                "CompanyCode eq '1010' and LastChangeDateTime ge datetimeoffset'2024-04-03T06:15:22Z'"
                    .into()
            )),
            "{}",
            next.url
        );
        let v4 = sap(serde_json::json!({
            "odata_version": "v4",
            "paths": {
                "cost_centers": "sap/opu/odata4/sap/api_cost_center/srvd_a2x/sap/costcenter/0001/A_CostCenter_2",
                "gl_accounts": "x/gl", "suppliers": "x/s", "journal_entry_items": "x/j"
            }
        }));
        let cc = &v4.streams()[0];
        let r = cc
            .request(v4.base_url(), &cc.pagination.first(), &PageCtx::default())
            .unwrap();
        assert!(
            r.url.as_str().contains("$expand=_Text") && r.url.as_str().contains("$count=true"),
            "{}",
            r.url
        );
        let j = v4.streams().pop().unwrap();
        let r = j
            .request(
                v4.base_url(),
                &j.pagination.first(),
                &PageCtx {
                    partition: Some("1010"),
                    since: Some(&since),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            r.url.as_str().contains("$filter=CompanyCode%20eq%20%271010%27%20and%20LastChangeDateTime%20ge%202024-04-03T06:15:22Z"),
            "{}",
            r.url
        );
        assert!(!r.url.as_str().contains("format"));
        assert_eq!(
            r.headers,
            vec![(
                "Accept".to_owned(),
                "application/json;IEEE754Compatible=true".to_owned()
            )]
        );
    }

    #[test]
    fn error_bodies_give_code_message_and_transaction_id() {
        let v2 = br#"{"error":{"code":"/IWBEP/CM_MGW_RT/020","message":{"lang":"en","value":"Resource not found for segment 'A_X'"},
            "innererror":{"transactionid":"D25C6A8CF4D30020E0067DD0610AFCCA","timestamp":"","errordetails":[]}}}"#;
        assert_eq!(
            read_sap_error(v2).unwrap(),
            "/IWBEP/CM_MGW_RT/020: Resource not found for segment 'A_X' (transaction id D25C6A8CF4D30020E0067DD0610AFCCA)"
        );
        let v4 =
            br#"{"error":{"code":"M_/011","message":"Change indicators could not be determined",
            "innererror":{"ErrorDetails":{"@SAP__common.TransactionId":"F140"}}}}"#;
        assert_eq!(
            read_sap_error(v4).unwrap(),
            "M_/011: Change indicators could not be determined (transaction id F140)"
        );
        assert_eq!(read_sap_error(b"<html>502</html>"), None);
    }

    #[test]
    fn bad_keys_are_named() {
        for (cfg, want) in [
            (
                serde_json::json!({"base_url": "https://h/sap/opu/odata", "company_codes": ["1010"]}),
                "/sap/opu",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": []}),
                "company_codes",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": ["1010"], "sap_client": "1"}),
                "three digits",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": ["1010"], "journal_lookback": "2 days"}),
                "journal_lookback",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": ["1010"], "page_size": 6000}),
                "5000",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": ["1010"], "odata_version": "v4"}),
                "paths.cost_centers",
            ),
            (
                serde_json::json!({"base_url": "https://h", "company_codes": ["1010"], "paths": {"invoices": "x"}}),
                "no such stream",
            ),
        ] {
            let e = SapS4Hana::new(serde_json::from_value(cfg).unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
