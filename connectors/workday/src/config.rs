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
    /// The query parameter in which the workers endpoint answers "changed
    /// since" (an inclusive RFC 3339 time compared with each worker's
    /// `lastModified`), where the tenant's gateway or report offers one:
    /// `updatedFrom` for a RaaS report whose prompt is named so. When set,
    /// the `workers` stream is incremental by `/lastModified`; unset (the
    /// default), it is a full pull diffed by content hash and swept.
    #[serde(default)]
    pub changed_since_param: Option<String>,
    /// With `changed_since_param`: the parameter carrying the moment the
    /// whole pull is answered as of (changes after it come with the next
    /// pull), the same on every page so that offsets page over one snapshot
    /// (`Updated_Through` / `As_Of_Entry_DateTime`); `updatedThrough` by
    /// default. An endpoint that cannot answer as of a moment cannot be paged
    /// incrementally by offset without skipping workers changed mid-pull:
    /// leave `changed_since_param` unset there (a full pull, diffed by hash).
    #[serde(default = "default_as_of_param")]
    pub as_of_param: String,
    /// How far behind the server's clock the "changed since" bound is held,
    /// for changes committed late; 300 s by default.
    #[serde(default = "default_changed_since_lag_secs")]
    pub changed_since_lag_secs: u64,
}

fn default_as_of_param() -> String {
    "updatedThrough".into()
}

fn default_changed_since_lag_secs() -> u64 {
    300
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
        let plain = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        for (key, p) in [
            ("changed_since_param", self.changed_since_param.as_deref()),
            ("as_of_param", Some(self.as_of_param.as_str())),
        ] {
            if let Some(p) = p
                && !plain(p)
            {
                return Err(format!(
                    "{key} {p:?} must be a query parameter name (letters, digits, '_', '-', '.')"
                ));
            }
        }
        if self.changed_since_param.as_deref() == Some(self.as_of_param.as_str()) {
            return Err(format!(
                "changed_since_param and as_of_param are both {:?}: they are two parameters",
                self.as_of_param
            ));
        }
        if self.changed_since_lag_secs > 7 * 86_400 {
            return Err(format!(
                "changed_since_lag_secs {} must be at most a week (604800)",
                self.changed_since_lag_secs
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
