//! The BambooHR connection's keys.

use serde::Deserialize;
use url::Url;

/// BambooHR refuses a report of more fields.
pub const MAX_FIELDS: usize = 400;

/// The report fields requested by default: everything the mapper reads.
pub const DEFAULT_FIELDS: &[&str] = &[
    "id",
    "employeeNumber",
    "displayName",
    "firstName",
    "lastName",
    "workEmail",
    "workPhone",
    "jobTitle",
    "department",
    "location",
    "status",
    "hireDate",
    "terminationDate",
    "supervisorEId",
    "lastChanged",
];

/// `[[connection]]` keys of a BambooHR connection (the API key is in
/// `[connection.auth]`: `strategy = "basic"`, `username = "${BAMBOO_API_KEY}"`,
/// `password = "x"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BambooHrConfig {
    /// The company's subdomain: `acme` for `https://acme.bamboohr.com`.
    pub company_domain: String,
    /// The API root, up to and including `v1/`. By default
    /// `https://api.bamboohr.com/api/gateway.php/{company_domain}/v1/`; a
    /// tenant whose `baseApiUrl` differs, or `https://{company_domain}.bamboohr.com/api/v1/`,
    /// sets it here.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// The custom report's fields; `id` and `lastChanged` are always asked
    /// for. Defaults to every field the mapper reads ([`DEFAULT_FIELDS`]).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

impl BambooHrConfig {
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.company_domain;
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "company_domain {d:?} must be the subdomain alone (letters, digits, '-'), e.g. \"acme\" for acme.bamboohr.com"
            ));
        }
        if let Some(u) = &self.base_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(format!("base_url must be http(s), not {:?}", u.scheme()));
        }
        let fields = self.fields();
        if fields.len() > MAX_FIELDS {
            return Err(format!(
                "fields lists {} fields; BambooHR reports take at most {MAX_FIELDS}",
                fields.len()
            ));
        }
        if let Some(f) = fields
            .iter()
            .find(|f| f.is_empty() || f.contains(|c: char| c.is_whitespace() || c == '"'))
        {
            return Err(format!("field {f:?} is not a BambooHR field name or alias"));
        }
        Ok(())
    }

    /// The API root as a directory URL.
    pub fn api_root(&self) -> Url {
        let mut u = self.base_url.clone().unwrap_or_else(|| {
            Url::parse(&format!(
                "https://api.bamboohr.com/api/gateway.php/{}/v1/",
                self.company_domain
            ))
            .expect("a validated subdomain makes a valid URL")
        });
        if !u.path().ends_with('/') {
            u.set_path(&format!("{}/", u.path()));
        }
        u
    }

    /// The report's fields: the configured ones (or the defaults), with
    /// `id` and `lastChanged` first when missing, each once.
    pub fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = vec!["id".into(), "lastChanged".into()];
        let configured: Vec<String> = match &self.fields {
            Some(f) => f.clone(),
            None => DEFAULT_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
        };
        for f in configured {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }
}
