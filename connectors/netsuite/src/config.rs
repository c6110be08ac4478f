//! The NetSuite connection's keys.

use serde::Deserialize;
use url::Url;

/// SuiteQL's largest page.
pub const MAX_LIMIT: u32 = 1000;

/// `[[connection]]` keys of a NetSuite connection. Credentials are in
/// `[connection.auth]`: `strategy = "oauth1_tba"` with `realm` =
/// [`realm`]`(account_id)` (`1234567_SB1`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSuiteConfig {
    /// The account id as NetSuite shows it: `1234567`, `1234567_SB1` or `1234567-sb1`.
    pub account_id: String,
    /// The REST root; by default `https://{account}.suitetalk.api.netsuite.com`
    /// (the account id lower-cased, `_` as `-`).
    #[serde(default)]
    pub base_url: Option<Url>,
    /// The IANA time zone the token's user sees dates in (its "Time Zone"
    /// preference): SuiteQL renders and reads date-times in it.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Rows per page (`limit`), at most 1000.
    #[serde(default = "default_limit")]
    pub page_size: u32,
}

fn default_time_zone() -> String {
    "UTC".into()
}
fn default_limit() -> u32 {
    MAX_LIMIT
}

/// The OAuth `realm` of an account: upper-cased, every `-` as `_`
/// (`1234567-sb1` → `1234567_SB1`). A lower-case realm is refused as an
/// invalid login.
pub fn realm(account_id: &str) -> String {
    account_id.trim().to_ascii_uppercase().replace('-', "_")
}

/// The account's host label: lower-cased, every `_` as `-`.
pub fn host_label(account_id: &str) -> String {
    account_id.trim().to_ascii_lowercase().replace('_', "-")
}

impl NetSuiteConfig {
    pub fn validate(&self) -> Result<(), String> {
        let a = self.account_id.trim();
        if a.is_empty()
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "account_id {:?} must be the account id alone (e.g. \"1234567\" or \"1234567_SB1\")",
                self.account_id
            ));
        }
        if let Some(u) = &self.base_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(format!("base_url must be http(s), not {:?}", u.scheme()));
        }
        self.tz()?;
        if self.page_size == 0 || self.page_size > MAX_LIMIT {
            return Err(format!(
                "page_size {} must be between 1 and {MAX_LIMIT}",
                self.page_size
            ));
        }
        Ok(())
    }

    pub fn tz(&self) -> Result<chrono_tz::Tz, String> {
        self.time_zone.parse().map_err(|_| {
            format!(
                "time_zone {:?} is not an IANA time zone name (e.g. \"America/Los_Angeles\")",
                self.time_zone
            )
        })
    }

    /// The REST root as a directory URL.
    pub fn root(&self) -> Url {
        let mut u = self.base_url.clone().unwrap_or_else(|| {
            Url::parse(&format!(
                "https://{}.suitetalk.api.netsuite.com/",
                host_label(&self.account_id)
            ))
            .expect("a validated account id makes a valid URL")
        });
        if !u.path().ends_with('/') {
            u.set_path(&format!("{}/", u.path()));
        }
        u
    }
}
