//! RFC 7523 JWT bearer assertions, signed RS256 (RFC 7518 §3.3).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Lifetime of an assertion: short, as RFC 7523 §3 advises.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// A parsed RSA private key. Its `Debug` shows nothing of the key.
pub(crate) struct PrivateKey(RsaKeyPair);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

/// Reads a PEM RSA key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`). Errors never quote the key.
pub(crate) fn parse_private_key(pem: &SecretString) -> Result<PrivateKey, Error> {
    let bad = |why: &str| Error::Config(format!("auth: jwt_bearer private_key {why}"));
    let text = pem.expose_secret();
    let (label, b64) = pem_body(text).ok_or_else(|| bad("is not a PEM block"))?;
    let der = STANDARD
        .decode(b64)
        .map_err(|_| bad("has invalid base64 inside its PEM block"))?;
    let pair = match label {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        _ => return Err(bad("must be `PRIVATE KEY` or `RSA PRIVATE KEY` PEM")),
    }
    .map_err(|e| bad(&format!("is not a usable RSA key ({e})")))?;
    Ok(PrivateKey(pair))
}

/// The label and base64 body of the first PEM block; `None` when the text
/// has no well-formed `-----BEGIN L-----` … `-----END L-----` block.
fn pem_body(text: &str) -> Option<(&str, String)> {
    let (_, rest) = text.split_once("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let (body, rest) = rest.split_once("-----END ")?;
    let (end_label, _) = rest.split_once("-----")?;
    if label.is_empty() || label != end_label {
        return None;
    }
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, body))
}

/// The claims of one connection's assertions.
#[derive(Debug)]
pub(crate) struct Assertion {
    pub key: PrivateKey,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub key_id: Option<String>,
}

impl Assertion {
    /// A fresh signed assertion: `header.claims.signature`, base64url.
    pub(crate) fn sign(&self, now: SystemTime) -> Result<String, Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
            "jti": format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.0.public_modulus_len()];
        self.key
            .0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| Error::Config("auth: jwt_bearer could not sign the assertion".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    /// A throwaway key generated per test run: (PEM private key, DER public key).
    pub(crate) fn test_key() -> (SecretString, Vec<u8>) {
        let kp = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
        let b64 = STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let public = kp.public_key().as_ref().to_vec();
        (pem.into(), public)
    }

    #[test]
    fn the_assertion_verifies_with_the_public_key_and_carries_the_claims() {
        let (pem, public) = test_key();
        let a = Assertion {
            key: parse_private_key(&pem).unwrap(),
            issuer: "client-1".into(),
            subject: "isu_sync".into(),
            audience: "https://login.example.test/token".into(),
            key_id: Some("k1".into()),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = a.sign(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(signed.as_bytes(), &sig)
            .expect("signature verifies with the public key");
        // A changed claim no longer verifies.
        let tampered = format!(
            "{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(b"{\"sub\":\"admin\"}")
        );
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(tampered.as_bytes(), &sig)
                .is_err()
        );
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "k1");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "isu_sync");
        assert_eq!(claims["aud"], "https://login.example.test/token");
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_000_300u64);
    }

    #[test]
    fn bad_keys_are_config_errors_that_do_not_quote_the_key() {
        for pem in [
            "not a key",
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            // Malformed framing that once sliced out of bounds.
            "-----BEGIN -----END X-----",
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----AAAA-----END RSA PRIVATE KEY-----",
            "-----END PRIVATE KEY----- -----BEGIN PRIVATE KEY-----",
            "-----BEGIN ",
            "-----BEGIN é-----\u{0}-----END é-----",
        ] {
            let e = parse_private_key(&pem.to_owned().into())
                .unwrap_err()
                .to_string();
            assert!(e.contains("private_key") && !e.contains("AAAA"), "{e}");
        }
    }
}
