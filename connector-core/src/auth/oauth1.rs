//! OAuth 1.0a token-based authentication (RFC 5849) signed with HMAC-SHA256,
//! as NetSuite requires: a `realm` (the account id) in the header, not in the
//! signature.

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use url::Url;

use super::Credentials;
use crate::Error;

pub(crate) struct Tba {
    pub realm: String,
    pub consumer_key: SecretString,
    pub consumer_secret: SecretString,
    pub token_id: SecretString,
    pub token_secret: SecretString,
}

impl fmt::Debug for Tba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tba")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// RFC 5849 §3.6: every byte but the unreserved `ALPHA / DIGIT / - . _ ~` as
/// `%XX` with upper-case hex.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature base string of RFC 5849 §3.4.1: method, base string URI
/// (§3.4.1.2: no query, no default port), and the normalized parameters
/// (§3.4.1.3: the URL's query, `extra` (form body) and `oauth` parameters,
/// encoded, sorted by name then value, joined).
pub fn signature_base_string(
    method: &str,
    url: &Url,
    extra: &[(String, String)],
    oauth: &[(&str, String)],
) -> String {
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (percent_encode(&k), percent_encode(&v)))
        .chain(
            extra
                .iter()
                .map(|(k, v)| (percent_encode(k), percent_encode(v))),
        )
        .chain(
            oauth
                .iter()
                .map(|(k, v)| (percent_encode(k), percent_encode(v))),
        )
        .collect();
    params.sort();
    let normalized = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let uri = base.as_str().to_owned();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(&uri),
        percent_encode(&normalized)
    )
}

impl Tba {
    /// The `Authorization` header for one request at `timestamp` with `nonce`.
    pub(crate) fn header(
        &self,
        method: &str,
        url: &Url,
        form: &[(String, String)],
        timestamp: u64,
        nonce: &str,
    ) -> String {
        let oauth = [
            (
                "oauth_consumer_key",
                self.consumer_key.expose_secret().to_owned(),
            ),
            ("oauth_nonce", nonce.to_owned()),
            ("oauth_signature_method", "HMAC-SHA256".to_owned()),
            ("oauth_timestamp", timestamp.to_string()),
            ("oauth_token", self.token_id.expose_secret().to_owned()),
            ("oauth_version", "1.0".to_owned()),
        ];
        let base = signature_base_string(method, url, form, &oauth);
        let key = format!(
            "{}&{}",
            percent_encode(self.consumer_secret.expose_secret()),
            percent_encode(self.token_secret.expose_secret())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
            base.as_bytes(),
        );
        let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let mut parts = vec![format!("realm=\"{}\"", percent_encode(&self.realm))];
        parts.extend(
            oauth
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", percent_encode(v))),
        );
        parts.push(format!(
            "oauth_signature=\"{}\"",
            percent_encode(&signature)
        ));
        format!("OAuth {}", parts.join(", "))
    }
}

#[async_trait]
impl super::Auth for Tba {
    async fn credentials(
        &self,
        method: &str,
        url: &Url,
        form: &[(String, String)],
    ) -> Result<Credentials, Error> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let nonce: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(20)
            .collect();
        Ok(Credentials {
            headers: vec![(
                reqwest::header::AUTHORIZATION,
                self.header(method, url, form, timestamp, &nonce).into(),
            )],
            query: Vec::new(),
        })
    }
    // Each request is signed afresh: there is nothing cached to drop.
    async fn invalidate(&self) {}

    fn secrets(&self) -> Vec<SecretString> {
        vec![
            self.consumer_key.clone(),
            self.consumer_secret.clone(),
            self.token_id.clone(),
            self.token_secret.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// HMAC (RFC 2104) over SHA-256, written out here so the test does not
    /// check the provider's HMAC against itself.
    fn independent_hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[test]
    fn base_string_matches_rfc_5849_section_3_4_1_1() {
        // The request of RFC 5849 §3.4.1.1, with its form body parameters.
        let url = Url::parse("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b").unwrap();
        let body = [
            ("c2".to_owned(), String::new()),
            ("a3".to_owned(), "2 q".to_owned()),
        ];
        let oauth = [
            ("oauth_consumer_key", "9djdj82h48djs9d2".to_owned()),
            ("oauth_token", "kkk9d7dh3k39sjv7".to_owned()),
            ("oauth_signature_method", "HMAC-SHA1".to_owned()),
            ("oauth_timestamp", "137131201".to_owned()),
            ("oauth_nonce", "7d8f3e4a".to_owned()),
        ];
        let expected = concat!(
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q",
            "%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_",
            "key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m",
            "ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk",
            "9d7dh3k39sjv7"
        );
        assert_eq!(signature_base_string("post", &url, &body, &oauth), expected);
    }

    #[test]
    fn netsuite_header_carries_realm_and_an_independently_verified_signature() {
        let tba = Tba {
            realm: "1234567_SB1".into(),
            consumer_key: "ck".to_owned().into(),
            consumer_secret: "cs&x".to_owned().into(),
            token_id: "tid".to_owned().into(),
            token_secret: "ts".to_owned().into(),
        };
        let url = Url::parse(
            "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/employee?limit=2&offset=0",
        )
        .unwrap();
        let header = tba.header("GET", &url, &[], 1_700_000_000, "abcDEF123");
        assert!(
            header.starts_with("OAuth realm=\"1234567_SB1\", "),
            "{header}"
        );
        assert!(header.contains("oauth_signature_method=\"HMAC-SHA256\""));
        // Recompute by hand from RFC 5849 §3.4.1 and §3.4.2.
        let base = "GET&https%3A%2F%2F1234567-sb1.suitetalk.api.netsuite.com%2Fservices%2Frest%2Frecord%2Fv1%2Femployee&limit%3D2%26oauth_consumer_key%3Dck%26oauth_nonce%3DabcDEF123%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1700000000%26oauth_token%3Dtid%26oauth_version%3D1.0%26offset%3D0";
        let mac = independent_hmac_sha256(b"cs%26x&ts", base.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(mac);
        let got = header
            .split("oauth_signature=\"")
            .nth(1)
            .and_then(|s| s.strip_suffix('"'))
            .unwrap();
        assert_eq!(got, percent_encode(&expected));
        assert!(!header.contains("cs&x") && !header.contains("\"ts\""));
    }

    #[test]
    fn percent_encoding_is_rfc_3986_unreserved_only() {
        assert_eq!(percent_encode("a-._~Z9 +/*"), "a-._~Z9%20%2B%2F%2A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
