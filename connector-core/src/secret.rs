//! Redaction helpers: secrets never reach logs, errors, the raw store or the ledger.

use secrecy::{ExposeSecret, SecretString};

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

/// What replaces a secret.
pub const MASK: &str = "***";

/// Words after which a credential follows in free text (`Authorization:
/// Bearer …`, an `OAuth …` header echoed back).
const SCHEMES: &[&str] = &["bearer", "basic", "digest", "negotiate", "oauth"];

/// Names whose value, in `name=value` or `"name": "value"` form, is masked.
const SECRET_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "api_key",
    "apikey",
    "x-api-key",
    "client_secret",
    "password",
    "secret",
    "signature",
    "sig",
    "oauth_signature",
    "oauth_token",
    "assertion",
    "authorization",
];

/// Removes secrets from text a source sent back (error bodies, malformed
/// values): every known secret value of the connection, exactly and
/// percent-encoded, then anything that looks like a credential
/// (`Bearer …`, `Basic …`, `access_token=…`, `"api_key": "…"`).
#[derive(Clone, Default)]
pub struct Scrubber {
    values: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

impl Scrubber {
    /// A scrubber for these secret values (values shorter than 4 characters
    /// are too common to match exactly; the patterns still apply).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a SecretString>) -> Self {
        let mut values: Vec<String> = Vec::new();
        for s in secrets {
            let v = s.expose_secret();
            if v.chars().count() < 4 {
                continue;
            }
            for cand in encodings(v) {
                if !values.contains(&cand) {
                    values.push(cand);
                }
            }
        }
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Self { values }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        mask_patterns(&out)
    }
}

/// The forms a secret takes when a source echoes it back: as is, URL
/// encoded (form and percent, upper- and lower-case hex, every byte or only
/// the reserved ones), and JSON-escaped (serde's, with `\/`, and with
/// `\u00xx` for punctuation, as PHP and others write it).
fn encodings(v: &str) -> Vec<String> {
    let pct = |upper: bool, all: bool| -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || (!all && b"-._~".contains(&b)) {
                    (b as char).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    let json = serde_json::to_string(v).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(v)
        .to_owned();
    let unicode = |upper: bool| -> String {
        v.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else if upper {
                    format!("\\u{:04X}", c as u32)
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect()
    };
    vec![
        v.to_owned(),
        url::form_urlencoded::byte_serialize(v.as_bytes()).collect(),
        pct(true, false),
        pct(false, false),
        pct(true, true),
        pct(false, true),
        json.replace('/', "\\/"),
        json,
        unicode(false),
        unicode(true),
    ]
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=%".contains(&b)
}

/// Masks credential-looking values in free text.
fn mask_patterns(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    // Byte ranges to mask, found on the ASCII-lowercased copy (same offsets).
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let starts_word = |i: usize| i == 0 || !is_word(bytes[i - 1]);
    for scheme in SCHEMES {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(scheme) {
            let at = from + pos;
            from = at + scheme.len();
            let mut i = at + scheme.len();
            if !starts_word(at) || i >= bytes.len() || bytes[i] != b' ' {
                continue;
            }
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let start = i;
            // An OAuth header is a list of key="value" pairs: mask to its end.
            let oauth = *scheme == "oauth";
            while i < bytes.len()
                && (is_token_char(bytes[i]) || (oauth && b"\", ".contains(&bytes[i])))
            {
                i += 1;
            }
            if i - start >= 4 {
                spans.push((start, i));
            }
        }
    }
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(key) {
            let at = from + pos;
            from = at + key.len();
            let mut i = at + key.len();
            // `…/oauth2/token: transport error` is a path, not a key.
            let in_path = at > 0 && b"/.".contains(&bytes[at - 1]);
            if !starts_word(at) || in_path || (i < bytes.len() && is_word(bytes[i])) {
                continue;
            }
            // key = value, key: value, "key": "value"
            while i < bytes.len() && b"\"' ".contains(&bytes[i]) {
                i += 1;
            }
            if i >= bytes.len() || !b"=:".contains(&bytes[i]) {
                continue;
            }
            i += 1;
            while i < bytes.len() && b"\"' ".contains(&bytes[i]) {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && !b"\"'&,;} \t\r\n".contains(&bytes[i]) {
                i += 1;
            }
            if i > start {
                spans.push((start, i));
            }
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in spans {
        if e <= at {
            continue;
        }
        let s = s.max(at);
        // Spans end on ASCII bytes, so both ends are char boundaries.
        out.push_str(&text[at..s]);
        out.push_str(MASK);
        at = e;
    }
    out.push_str(&text[at..]);
    out
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

    #[test]
    fn known_secrets_and_credential_shapes_are_scrubbed() {
        let s = Scrubber::new([&SecretString::from("k3y/v@lue+1")]);
        for (text, leaked) in [
            ("{\"detail\": \"k3y\\/v@lue+1\"}", "v@lue"),
            ("k3y%2fv%40lue%2b1", "v%40lue"),
            ("k3y\\u002fv\\u0040lue\\u002b1", "lue"),
            ("echo: k3y/v@lue+1", "k3y/v@lue+1"),
            ("url ?key=k3y%2Fv%40lue%2B1&x=1", "k3y%2Fv%40lue%2B1"),
            ("url ?key=k3y%2Fv%40lue%2B1&x=1", "k3y"),
            (
                "{\"Authorization\": \"Bearer eyJhbGciOi.abc.def\"}",
                "eyJhbGciOi",
            ),
            ("authorization: basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            ("{\"access_token\":\"at-123456\",\"x\":1}", "at-123456"),
            (
                "bad request: api_key = zz-top-secret, retry",
                "zz-top-secret",
            ),
            (
                "OAuth realm=\"1_SB1\", oauth_signature=\"abc%3D\", oauth_nonce=\"n\"",
                "abc%3D",
            ),
        ] {
            let out = s.scrub(text);
            assert!(!out.contains(leaked), "{text} -> {out}");
            assert!(out.contains(MASK), "{out}");
        }
        // Ordinary text is left alone, including words that merely contain a key name.
        for text in [
            "monkey=banana, tokens: 3",
            "POST /ccx/oauth2/acme/token: transport error: connection refused",
            "invalid offset 100",
            "ünïcödé ✓ basic",
        ] {
            assert_eq!(s.scrub(text), text);
        }
    }
}
