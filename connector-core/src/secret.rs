//! Redaction helpers: secrets never reach logs, errors, the raw store or the ledger.

/// Query parameter and header names whose values are always redacted.
const SENSITIVE: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "password",
    "api_key",
    "apikey",
    "key",
    "secret",
    "signature",
    "x-api-key",
    "assertion",
    "code",
];

/// True when a header or parameter of this name may carry a credential.
pub fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SENSITIVE.contains(&n.as_str())
        || n.contains("secret")
        || n.contains("token")
        || n.contains("password")
}

/// The value to record for a parameter or header: itself, or `***`.
pub fn redact<'a>(name: &str, value: &'a str) -> &'a str {
    if is_sensitive(name) { "***" } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("Authorization", "Bearer abc"), "***");
        assert_eq!(redact("refresh_token", "r"), "***");
        assert_eq!(redact("X-Api-Key", "k"), "***");
        assert_eq!(redact("offset", "100"), "100");
    }
}
