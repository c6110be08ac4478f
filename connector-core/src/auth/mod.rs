//! Authentication: typed secret config and cached credential providers.
//!
//! A provider turns a request (method and URL) into the credentials to attach:
//! headers and, for API keys in the query, query parameters. Tokens are cached
//! and refreshed before they expire; concurrent callers share one refresh
//! (single flight: the refresh runs under the cache's lock and later callers
//! find the fresh token). A 401 makes the HTTP stack call [`Auth::invalidate`]
//! and retry once with a fresh credential.
//!
//! | `strategy` | what is sent |
//! |---|---|
//! | `none` | nothing |
//! | `api_key` | the key in a header (default `X-API-Key`) or a query parameter |
//! | `basic` | `Authorization: Basic` (RFC 7617) |
//! | `bearer` | a static `Authorization: Bearer` token |
//! | `oauth2_client_credentials` | a token from the client-credentials grant (RFC 6749 §4.4) |
//! | `oauth2_refresh_token` | a token from the refresh-token grant (§6); a rotated refresh token is saved through the [`CredentialStore`] before the new access token is used |
//! | `oauth1_tba` | OAuth 1.0a token-based auth signed with HMAC-SHA256, with `realm` (NetSuite) |
//! | `jwt_bearer` | a token for an RS256-signed JWT assertion (RFC 7523; Workday, Salesforce) |

mod jwt;
mod oauth1;
mod oauth2;
mod store;

use async_trait::async_trait;
use base64::Engine;
use reqwest::header::{AUTHORIZATION, HeaderName};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Digest;
use std::fmt;
use std::sync::Arc;
use url::Url;

use crate::Error;

pub use oauth1::{percent_encode, signature_base_string};
pub use store::{CredentialStore, MemoryCredentialStore};

/// The `[connection.auth]` table, tagged by `strategy`. Secret values are
/// [`SecretString`]s: their `Debug` prints a placeholder, never the value.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credential (public or test sources).
    None,
    /// A static key, in a header or a query parameter (exactly one of them;
    /// a header named `X-API-Key` when neither is given).
    ApiKey {
        key: SecretString,
        #[serde(default)]
        header: Option<String>,
        #[serde(default)]
        query_param: Option<String>,
    },
    /// HTTP Basic. BambooHR-style APIs put the API key in `username`.
    Basic {
        username: SecretString,
        #[serde(default)]
        password: Option<SecretString>,
    },
    /// A static bearer token.
    Bearer { token: SecretString },
    /// OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
    Oauth2ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        #[serde(default)]
        scope: Option<String>,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuth,
    },
    /// OAuth 2.0 refresh-token grant (RFC 6749 §6). When the token endpoint
    /// rotates the refresh token, the new one is saved durably through the
    /// [`CredentialStore`] before the new access token is used; the one in the
    /// config only seeds the store.
    Oauth2RefreshToken {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
    },
    /// OAuth 1.0a token-based authentication (NetSuite TBA), HMAC-SHA256.
    Oauth1Tba {
        /// The account id, sent as `realm` (e.g. `1234567_SB1`).
        realm: String,
        consumer_key: SecretString,
        consumer_secret: SecretString,
        token_id: SecretString,
        token_secret: SecretString,
    },
    /// OAuth 2.0 JWT bearer grant (RFC 7523) with an RS256-signed assertion.
    JwtBearer {
        token_url: Url,
        /// `iss`: usually the client id.
        issuer: String,
        /// `sub`: the user or integration system user.
        subject: String,
        /// `aud`; the token URL when absent.
        #[serde(default)]
        audience: Option<String>,
        /// The RSA private key, PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
        private_key: SecretString,
        #[serde(default)]
        key_id: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        /// Sent as `client_id` in the token request when given (Workday).
        #[serde(default)]
        client_id: Option<String>,
    },
}

/// How an OAuth2 client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret (the RFC's recommendation).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

impl AuthConfig {
    /// The snake_case strategy name (metrics labels, logs).
    pub fn strategy(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::ApiKey { .. } => "api_key",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
            AuthConfig::Oauth2RefreshToken { .. } => "oauth2_refresh_token",
            AuthConfig::Oauth1Tba { .. } => "oauth1_tba",
            AuthConfig::JwtBearer { .. } => "jwt_bearer",
        }
    }

    /// A stable, non-secret name of the credential: the circuit breaker is
    /// kept per (host, credential). Secrets enter only as a short SHA-256
    /// fingerprint.
    pub fn identity(&self) -> String {
        let who = match self {
            AuthConfig::None => String::new(),
            AuthConfig::ApiKey { key, .. } => fingerprint(key),
            AuthConfig::Basic { username, .. } => fingerprint(username),
            AuthConfig::Bearer { token } => fingerprint(token),
            AuthConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                ..
            }
            | AuthConfig::Oauth2RefreshToken {
                token_url,
                client_id,
                ..
            } => format!("{client_id}@{}", token_url.host_str().unwrap_or("")),
            AuthConfig::Oauth1Tba {
                realm, token_id, ..
            } => format!("{realm}/{}", fingerprint(token_id)),
            AuthConfig::JwtBearer {
                issuer, subject, ..
            } => format!("{issuer}/{subject}"),
        };
        format!("{}:{who}", self.strategy())
    }

    /// Every secret value of the config (keys, passwords, client secrets,
    /// refresh tokens, private keys): what to scrub from texts a source
    /// sends back even where no provider was built (a replay).
    pub fn secret_values(&self) -> Vec<SecretString> {
        match self {
            AuthConfig::None => Vec::new(),
            AuthConfig::ApiKey { key, .. } => vec![key.clone()],
            AuthConfig::Basic { username, password } => {
                let mut v = vec![username.clone()];
                v.extend(password.clone());
                v
            }
            AuthConfig::Bearer { token } => vec![token.clone()],
            AuthConfig::Oauth2ClientCredentials { client_secret, .. } => {
                vec![client_secret.clone()]
            }
            AuthConfig::Oauth2RefreshToken {
                client_secret,
                refresh_token,
                ..
            } => vec![client_secret.clone(), refresh_token.clone()],
            AuthConfig::Oauth1Tba {
                consumer_key,
                consumer_secret,
                token_id,
                token_secret,
                ..
            } => vec![
                consumer_key.clone(),
                consumer_secret.clone(),
                token_id.clone(),
                token_secret.clone(),
            ],
            AuthConfig::JwtBearer { private_key, .. } => vec![private_key.clone()],
        }
    }

    /// Cross-field checks, naming the key that is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            AuthConfig::ApiKey {
                header: Some(_),
                query_param: Some(_),
                ..
            } => Err(Error::Config(
                "auth: api_key takes `header` or `query_param`, not both".into(),
            )),
            AuthConfig::ApiKey {
                header: Some(h), ..
            } if HeaderName::from_bytes(h.as_bytes()).is_err() => Err(Error::Config(format!(
                "auth: api_key header {h:?} is not a valid header name"
            ))),
            AuthConfig::JwtBearer { private_key, .. } => {
                jwt::parse_private_key(private_key).map(|_| ())
            }
            // An empty credential can only be refused (an unset or empty
            // variable, most often): said now, naming the key.
            AuthConfig::Basic { username, .. } if username.expose_secret().trim().is_empty() => {
                Err(Error::Config(
                    "auth: basic `username` is empty (for an API-key source such as BambooHR, it is the API key)"
                        .into(),
                ))
            }
            AuthConfig::Bearer { token } if token.expose_secret().trim().is_empty() => Err(
                Error::Config("auth: bearer `token` is empty".into()),
            ),
            AuthConfig::ApiKey { key, .. } if key.expose_secret().trim().is_empty() => Err(
                Error::Config("auth: api_key `key` is empty".into()),
            ),
            _ => Ok(()),
        }
    }
}

/// The first 8 hex digits of the secret's SHA-256: tells credentials apart
/// without revealing them.
fn fingerprint(secret: &SecretString) -> String {
    let digest = sha2::Sha256::digest(secret.expose_secret().as_bytes());
    hex::encode(&digest[..4])
}

/// The credential-store key of a connection's refresh token: the connection
/// and the fingerprint of the config's token, so a new token in the config (a
/// re-authorization) starts a new lineage instead of reusing a spent one.
pub fn refresh_token_key(connection: &str, seed: &SecretString) -> String {
    format!("{connection}/refresh_token/{}", fingerprint(seed))
}

/// What to attach to one request. Values are secrets; the HTTP stack adds
/// them to the outgoing request only, never to what it records.
#[derive(Default)]
pub struct Credentials {
    pub headers: Vec<(HeaderName, SecretString)>,
    pub query: Vec<(String, SecretString)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.query.iter().map(|(k, _)| k.as_str()))
            .collect();
        write!(f, "Credentials({names:?}: ***)")
    }
}

impl Credentials {
    fn header(name: HeaderName, value: String) -> Self {
        Self {
            headers: vec![(name, value.into())],
            query: Vec::new(),
        }
    }
}

/// A credential provider, used as `dyn` by the HTTP stack.
///
/// # Contract
/// - `credentials` may block on a token refresh; concurrent callers share one.
/// - A provider with a cached token refreshes it before it expires.
/// - `invalidate` drops the cached token so the next call gets a fresh one.
#[async_trait]
pub trait Auth: Send + Sync + fmt::Debug {
    /// The credentials for `method url`.
    async fn credentials(
        &self,
        method: &str,
        url: &Url,
        form: &[(String, String)],
    ) -> Result<Credentials, Error>;
    /// Drops the cached credential after the source refused it.
    async fn invalidate(&self);
    /// Every secret value this provider holds or has handed out (config
    /// secrets, header values, current tokens): the HTTP stack scrubs them
    /// from any text a source sends back.
    fn secrets(&self) -> Vec<SecretString>;
    /// Names of the query parameters this provider adds to requests: they
    /// are stripped from next links a source echoes back (the provider adds
    /// them again) and never stored.
    fn query_params(&self) -> Vec<String> {
        Vec::new()
    }
    /// True when [`Auth::invalidate`] makes the next call fetch a fresh
    /// credential (token grants); static credentials cannot be refreshed,
    /// so a 401 needs re-authorization at once.
    fn refreshes(&self) -> bool {
        false
    }
}

/// What a provider needs besides its config.
#[derive(Clone, Debug)]
pub struct AuthContext {
    /// The connection's name: the key of its saved credentials and its metrics.
    pub connection: String,
    /// Client for token requests (same-origin redirects only).
    pub http: reqwest::Client,
    /// Where rotated refresh tokens are saved.
    pub store: Arc<dyn CredentialStore>,
    /// Timeout of one token request.
    pub timeout: Option<std::time::Duration>,
}

/// Builds the provider for a config.
pub fn provider(config: &AuthConfig, ctx: AuthContext) -> Result<Box<dyn Auth>, Error> {
    config.validate()?;
    Ok(match config {
        AuthConfig::None => Box::new(Static::new(None, Vec::new())),
        AuthConfig::ApiKey {
            key,
            header,
            query_param,
        } => Box::new(Static::new(
            Some(match query_param {
                Some(p) => Credentials {
                    headers: Vec::new(),
                    query: vec![(p.clone(), key.clone())],
                },
                None => {
                    let name = header.as_deref().unwrap_or("X-API-Key");
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        Error::Config(format!(
                            "auth: api_key header {name:?} is not a valid header name"
                        ))
                    })?;
                    Credentials {
                        headers: vec![(name, key.clone())],
                        query: Vec::new(),
                    }
                }
            }),
            vec![key.clone()],
        )),
        AuthConfig::Basic { username, password } => {
            let raw = format!(
                "{}:{}",
                username.expose_secret(),
                password.as_ref().map(|p| p.expose_secret()).unwrap_or("")
            );
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            let mut secrets = vec![username.clone(), b64.clone().into()];
            secrets.extend(password.clone());
            Box::new(Static::new(
                Some(Credentials::header(AUTHORIZATION, format!("Basic {b64}"))),
                secrets,
            ))
        }
        AuthConfig::Bearer { token } => Box::new(Static::new(
            Some(Credentials::header(
                AUTHORIZATION,
                format!("Bearer {}", token.expose_secret()),
            )),
            vec![token.clone()],
        )),
        AuthConfig::Oauth2ClientCredentials { .. }
        | AuthConfig::Oauth2RefreshToken { .. }
        | AuthConfig::JwtBearer { .. } => Box::new(oauth2::TokenAuth::new(config, ctx)?),
        AuthConfig::Oauth1Tba {
            realm,
            consumer_key,
            consumer_secret,
            token_id,
            token_secret,
        } => Box::new(oauth1::Tba {
            realm: realm.clone(),
            consumer_key: consumer_key.clone(),
            consumer_secret: consumer_secret.clone(),
            token_id: token_id.clone(),
            token_secret: token_secret.clone(),
        }),
    })
}

/// A credential that never changes (none, API key, basic, static bearer),
/// and the secret values it is made of.
struct Static {
    creds: Option<Credentials>,
    secrets: Vec<SecretString>,
}

impl Static {
    fn new(creds: Option<Credentials>, mut secrets: Vec<SecretString>) -> Self {
        if let Some(c) = &creds {
            secrets.extend(c.headers.iter().map(|(_, v)| v.clone()));
        }
        Self { creds, secrets }
    }
}

impl fmt::Debug for Static {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Static({:?})", self.creds)
    }
}

#[async_trait]
impl Auth for Static {
    async fn credentials(
        &self,
        _method: &str,
        _url: &Url,
        _form: &[(String, String)],
    ) -> Result<Credentials, Error> {
        Ok(match &self.creds {
            None => Credentials::default(),
            Some(c) => Credentials {
                headers: c.headers.clone(),
                query: c.query.clone(),
            },
        })
    }
    async fn invalidate(&self) {}

    fn secrets(&self) -> Vec<SecretString> {
        self.secrets.clone()
    }

    fn query_params(&self) -> Vec<String> {
        self.creds
            .iter()
            .flat_map(|c| c.query.iter().map(|(k, _)| k.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn ctx() -> AuthContext {
        AuthContext {
            connection: "test".into(),
            http: reqwest::Client::new(),
            store: Arc::new(MemoryCredentialStore::default()),
            timeout: None,
        }
    }

    fn cfg(v: serde_json::Value) -> AuthConfig {
        serde_json::from_value(v).unwrap()
    }

    async fn creds(c: &AuthConfig) -> Credentials {
        let p = provider(c, ctx()).unwrap();
        let url = Url::parse("https://api.example.test/v1/x?a=1").unwrap();
        p.credentials("GET", &url, &[]).await.unwrap()
    }

    #[test]
    fn debug_never_shows_secrets() {
        for c in [
            json!({"strategy": "oauth2_refresh_token", "token_url": "https://e.test/token",
                   "client_id": "cid", "client_secret": "s3cr3t-client", "refresh_token": "s3cr3t-refresh"}),
            json!({"strategy": "api_key", "key": "s3cr3t-key"}),
            json!({"strategy": "basic", "username": "s3cr3t-user", "password": "s3cr3t-pw"}),
            json!({"strategy": "oauth1_tba", "realm": "123_SB1", "consumer_key": "s3cr3t-ck",
                   "consumer_secret": "s3cr3t-cs", "token_id": "s3cr3t-t", "token_secret": "s3cr3t-ts"}),
        ] {
            let c = cfg(c);
            let dbg = format!("{c:?}");
            assert!(!dbg.contains("s3cr3t"), "{dbg}");
            let p = provider(&c, ctx()).unwrap();
            assert!(!format!("{p:?}").contains("s3cr3t"));
            assert!(!c.identity().contains("s3cr3t"), "{}", c.identity());
        }
    }

    #[test]
    fn empty_credentials_are_refused_naming_the_key() {
        for (v, key) in [
            (
                serde_json::json!({"strategy": "basic", "username": " ", "password": "x"}),
                "username",
            ),
            (
                serde_json::json!({"strategy": "bearer", "token": ""}),
                "token",
            ),
            (
                serde_json::json!({"strategy": "api_key", "key": "", "header": "X-Key"}),
                "key",
            ),
        ] {
            let e = cfg(v).validate().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("empty"), "{e}");
        }
    }

    #[test]
    fn unknown_strategy_and_keys_are_refused() {
        let e = serde_json::from_value::<AuthConfig>(json!({"strategy": "kerberos"})).unwrap_err();
        assert!(e.to_string().contains("kerberos"), "{e}");
        let e = serde_json::from_value::<AuthConfig>(
            json!({"strategy": "bearer", "token": "t", "tokn": 1}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tokn"), "{e}");
        let both =
            cfg(json!({"strategy": "api_key", "key": "k", "header": "X", "query_param": "k"}));
        assert!(
            provider(&both, ctx())
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let bad = cfg(json!({"strategy": "api_key", "key": "k", "header": "X Api Key"}));
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("not a valid header name"), "{e}");
    }

    #[tokio::test]
    async fn static_strategies_attach_their_credential() {
        let c = creds(&cfg(json!({"strategy": "api_key", "key": "k1"}))).await;
        assert_eq!(c.headers[0].0, "x-api-key");
        assert_eq!(c.headers[0].1.expose_secret(), "k1");
        let c = creds(&cfg(
            json!({"strategy": "api_key", "key": "k2", "query_param": "apikey"}),
        ))
        .await;
        assert!(c.headers.is_empty());
        assert_eq!(
            (c.query[0].0.as_str(), c.query[0].1.expose_secret()),
            ("apikey", "k2")
        );
        let c = creds(&cfg(
            json!({"strategy": "basic", "username": "key", "password": "x"}),
        ))
        .await;
        // RFC 7617 §2 example shape: base64("key:x")
        assert_eq!(c.headers[0].1.expose_secret(), "Basic a2V5Ong=");
        let c = creds(&cfg(json!({"strategy": "bearer", "token": "t0"}))).await;
        assert_eq!(c.headers[0].1.expose_secret(), "Bearer t0");
        assert!(creds(&AuthConfig::None).await.headers.is_empty());
    }

    #[test]
    fn identities_tell_credentials_apart() {
        let a = cfg(json!({"strategy": "bearer", "token": "t0"}));
        let b = cfg(json!({"strategy": "bearer", "token": "t1"}));
        assert_ne!(a.identity(), b.identity());
        assert!(a.identity().starts_with("bearer:"));
    }
}
