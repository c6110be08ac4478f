//! The SAP S/4HANA connection's keys.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The largest `$top` sent: SAP's RESTful ABAP services cap a page at 5000.
pub const MAX_TOP: u32 = 5000;

/// The streams and their default service paths (OData v2), relative to
/// `base_url`.
pub const DEFAULT_PATHS: &[(&str, &str)] = &[
    (
        "cost_centers",
        "sap/opu/odata/sap/API_COSTCENTER_SRV/A_CostCenter",
    ),
    (
        "gl_accounts",
        "sap/opu/odata/sap/API_GLACCOUNTINCHARTOFACCOUNTS_SRV/A_GLAccountInChartOfAccounts",
    ),
    (
        "suppliers",
        "sap/opu/odata/sap/API_BUSINESS_PARTNER/A_Supplier",
    ),
    (
        "journal_entry_items",
        "sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic",
    ),
];

/// The OData protocol version of the services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ODataVersion {
    #[default]
    V2,
    V4,
}

/// How the journal's amounts carry their sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmountSign {
    /// A positive amount marked credit (`DebitCreditCode` `H`) is negated; an
    /// amount the source already signs keeps its sign. Right for a source
    /// that sends unsigned amounts with the indicator, and for SAP's signed
    /// amounts except a negative posting's credit line (positive, marked `H`).
    #[default]
    Auto,
    /// The amounts are SAP's own signed values (+ debit, − credit, negative
    /// postings included): taken as they are; the indicator is only recorded.
    Signed,
}

/// `[[connection]]` keys of an SAP S/4HANA connection (credentials are in
/// `[connection.auth]`: `basic` or `oauth2_client_credentials`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SapConfig {
    /// The system's root, up to and excluding `/sap/opu/…`
    /// (`https://my123456-api.s4hana.cloud.sap`).
    pub base_url: Url,
    /// The SAP client, sent as `sap-client=NNN` on every request: without
    /// it an on-premise system answers from its default client.
    #[serde(default)]
    pub sap_client: Option<String>,
    /// Company codes: the journal stream runs once per company code.
    pub company_codes: Vec<String>,
    /// The language of names and descriptions (`to_Text`).
    #[serde(default = "default_language")]
    pub language: String,
    /// The journal items' change timestamp field (an `Edm.DateTimeOffset`).
    #[serde(default = "default_change_field")]
    pub journal_change_field: String,
    /// How far before the stored bound each journal pull starts again
    /// (late postings; `"2d"`, `"12h"`).
    #[serde(default = "default_lookback")]
    pub journal_lookback: String,
    /// How the journal's amounts are signed: `auto` (the default) or `signed`.
    #[serde(default)]
    pub amount_sign: AmountSign,
    /// Records per page (`$top`), at most 5000.
    #[serde(default = "default_top")]
    pub page_size: u32,
    /// `v2` (the default) or `v4`.
    #[serde(default)]
    pub odata_version: ODataVersion,
    /// Service paths by stream, replacing the defaults ([`DEFAULT_PATHS`];
    /// a v4 connection names the path of each stream it syncs).
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
}

fn default_language() -> String {
    "EN".into()
}
fn default_change_field() -> String {
    "LastChangeDateTime".into()
}
fn default_lookback() -> String {
    "2d".into()
}
fn default_top() -> u32 {
    MAX_TOP
}

/// An OData property name: letters, digits and `_`, starting with a letter.
fn is_property(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SapConfig {
    /// Cross-field checks; errors name the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            return Err(format!(
                "base_url must be http(s), not {:?}",
                self.base_url.scheme()
            ));
        }
        if self.base_url.path().contains("/sap/opu") {
            return Err(format!(
                "base_url {} must stop before /sap/opu/… (the connector adds each service's path)",
                self.base_url
            ));
        }
        if let Some(c) = &self.sap_client
            && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "sap_client {c:?} must be three digits, e.g. \"100\""
            ));
        }
        if self.company_codes.is_empty() {
            return Err(
                "company_codes must list at least one company code (the journal stream runs once per company code)"
                    .into(),
            );
        }
        if let Some(c) = self
            .company_codes
            .iter()
            .find(|c| c.is_empty() || c.len() > 4 || !c.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!(
                "company code {c:?} is not an SAP company code (1 to 4 letters or digits)"
            ));
        }
        canonical_model::Language::parse(&self.language).map_err(|e| format!("language: {e}"))?;
        if !is_property(&self.journal_change_field) {
            return Err(format!(
                "journal_change_field {:?} is not an OData property name",
                self.journal_change_field
            ));
        }
        self.lookback()?;
        if self.page_size == 0 || self.page_size > MAX_TOP {
            return Err(format!(
                "page_size {} must be between 1 and {MAX_TOP}",
                self.page_size
            ));
        }
        for (k, v) in &self.paths {
            if !DEFAULT_PATHS.iter().any(|(s, _)| s == k) {
                let names: Vec<&str> = DEFAULT_PATHS.iter().map(|(s, _)| *s).collect();
                return Err(format!(
                    "paths.{k}: no such stream; the streams are {}",
                    names.join(", ")
                ));
            }
            if v.starts_with('/') || v.contains("://") || v.contains('?') {
                return Err(format!(
                    "paths.{k} = {v:?} must be a path relative to base_url, without a query"
                ));
            }
        }
        if self.odata_version == ODataVersion::V4
            && let Some((s, _)) = DEFAULT_PATHS
                .iter()
                .find(|(s, _)| !self.paths.contains_key(*s))
        {
            return Err(format!(
                "odata_version = \"v4\": paths.{s} must name the v4 service path (the defaults are v2 services)"
            ));
        }
        Ok(())
    }

    pub fn lookback(&self) -> Result<Duration, String> {
        connector_core::parse_duration(&self.journal_lookback)
            .map_err(|e| format!("journal_lookback: {e}"))
    }

    /// The service path of a stream.
    pub fn path(&self, stream: &str) -> String {
        self.paths.get(stream).cloned().unwrap_or_else(|| {
            DEFAULT_PATHS
                .iter()
                .find(|(s, _)| *s == stream)
                .map(|(_, p)| (*p).to_owned())
                .unwrap_or_default()
        })
    }

    /// The system root as a directory URL.
    pub fn root(&self) -> Url {
        let mut u = self.base_url.clone();
        if !u.path().ends_with('/') {
            u.set_path(&format!("{}/", u.path()));
        }
        u
    }
}
