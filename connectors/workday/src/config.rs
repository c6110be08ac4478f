//! The Workday connection's keys.

use serde::Deserialize;
use url::Url;

/// Workday's REST API serves at most 100 records per page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// `[[connection]]` keys of a Workday connection (auth is in `[connection.auth]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkdayConfig {
    /// E.g. `https://wd5-impl-services1.workday.com`.
    pub base_url: Url,
    /// The Workday tenant name, as in `/ccx/api/common/v1/{tenant}/workers`.
    pub tenant: String,
    /// API path before the tenant; `ccx/api/common/v1` by default.
    #[serde(default = "default_api_path")]
    pub api_path: String,
    /// Records per page (`limit`), 1 to 100; 100 by default.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_api_path() -> String {
    "ccx/api/common/v1".into()
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

impl WorkdayConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            return Err(format!(
                "base_url must be http(s), not {:?}",
                self.base_url.scheme()
            ));
        }
        if self.tenant.is_empty() || self.tenant.contains(['/', '?', '#']) {
            return Err(format!(
                "tenant {:?} must be a non-empty name without '/', '?' or '#'",
                self.tenant
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(format!(
                "page_size {} must be between 1 and {MAX_PAGE_SIZE}",
                self.page_size
            ));
        }
        Ok(())
    }

    /// `{api_path}/{tenant}/workers`, relative to the base URL.
    pub fn workers_path(&self) -> String {
        format!(
            "{}/{}/workers",
            self.api_path.trim_matches('/'),
            self.tenant
        )
    }
}
