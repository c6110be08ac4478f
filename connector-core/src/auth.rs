//! Authentication: typed secret config and cached credential providers.
//!
//! A provider hands out the `Authorization` header value for a request. Tokens
//! are cached and refreshed before they expire; concurrent callers share one
//! refresh (single flight, double-checked under the lock). A 401 makes the HTTP
//! stack call [`Auth::invalidate`] and retry once with a fresh credential.

use async_trait::async_trait;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::Error;

/// The `[connection.auth]` table, tagged by `strategy`. Secret values are
/// [`SecretString`]s: their `Debug` prints a placeholder, never the value.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credential (public or test sources).
    None,
    /// A static bearer token.
    Bearer { token: SecretString },
    /// OAuth 2.0 refresh-token grant (RFC 6749 §6); the client authenticates with
    /// HTTP Basic (RFC 6749 §2.3.1).
    Oauth2RefreshToken {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
        #[serde(default)]
        scope: Option<String>,
    },
}

/// A credential provider, used as `dyn` by the HTTP stack.
#[async_trait]
pub trait Auth: Send + Sync + fmt::Debug {
    /// The `Authorization` header value for the next request, if any.
    async fn authorization(&self) -> Result<Option<SecretString>, Error>;
    /// Drops the cached credential after the source refused it.
    async fn invalidate(&self);
}

/// Builds the provider for a config; `http` is used for token requests.
pub fn provider(config: &AuthConfig, http: reqwest::Client) -> Box<dyn Auth> {
    match config {
        AuthConfig::None => Box::new(NoAuth),
        AuthConfig::Bearer { token } => Box::new(StaticBearer(token.clone())),
        AuthConfig::Oauth2RefreshToken {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            scope,
        } => Box::new(RefreshTokenAuth {
            http,
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            refresh_token: Mutex::new(refresh_token.clone()),
            scope: scope.clone(),
            cached: Mutex::new(None),
        }),
    }
}

#[derive(Debug)]
struct NoAuth;

#[async_trait]
impl Auth for NoAuth {
    async fn authorization(&self) -> Result<Option<SecretString>, Error> {
        Ok(None)
    }
    async fn invalidate(&self) {}
}

#[derive(Debug)]
struct StaticBearer(SecretString);

#[async_trait]
impl Auth for StaticBearer {
    async fn authorization(&self) -> Result<Option<SecretString>, Error> {
        Ok(Some(format!("Bearer {}", self.0.expose_secret()).into()))
    }
    async fn invalidate(&self) {}
}

struct CachedToken {
    header: SecretString,
    refresh_at: Instant,
}

/// Tokens are refreshed when this much of their lifetime is left (at most 60 s,
/// at most half the lifetime).
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 2).min(Duration::from_secs(60))
}

/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

struct RefreshTokenAuth {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    refresh_token: Mutex<SecretString>,
    scope: Option<String>,
    cached: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for RefreshTokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenAuth")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

impl RefreshTokenAuth {
    fn endpoint(&self) -> String {
        format!("oauth2 POST {}", self.token_url.path())
    }

    async fn fetch(&self) -> Result<CachedToken, Error> {
        let endpoint = self.endpoint();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.client_id),
            form_encode(self.client_secret.expose_secret())
        ));
        let refresh = self.refresh_token.lock().await.clone();
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose_secret()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let resp = self
            .http
            .post(self.token_url.clone())
            .header("Authorization", format!("Basic {basic}"))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::Transport {
                endpoint: endpoint.clone(),
                message: crate::http::describe(&e),
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| Error::Transport {
            endpoint: endpoint.clone(),
            message: crate::http::describe(&e),
        })?;
        if matches!(status, 400 | 401 | 403) {
            // invalid_grant / invalid_client: only a person can fix this. The body
            // is an OAuth error object; only its `error` code is kept.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(Error::NeedsReauth {
                endpoint,
                detail: format!("token endpoint refused the grant: {code}"),
            });
        }
        if !(200..300).contains(&status) {
            return Err(Error::from_status(&endpoint, status, None, b""));
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Body {
            endpoint: endpoint.clone(),
            message: format!("token response is not an OAuth2 token: {e}"),
        })?;
        if let Some(t) = token.token_type.as_deref()
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(Error::Body {
                endpoint,
                message: format!("unsupported token_type {t:?}"),
            });
        }
        if let Some(rotated) = token.refresh_token {
            // Durable persistence of a rotated refresh token goes through the
            // credential store; in memory the new one is used from now on.
            *self.refresh_token.lock().await = rotated;
        }
        let lifetime = token
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        tracing::info!(event = "token_refreshed", endpoint = %self.endpoint(), lifetime_secs = lifetime.as_secs());
        Ok(CachedToken {
            header: format!("Bearer {}", token.access_token.expose_secret()).into(),
            refresh_at: Instant::now() + lifetime - refresh_margin(lifetime),
        })
    }
}

#[async_trait]
impl Auth for RefreshTokenAuth {
    async fn authorization(&self) -> Result<Option<SecretString>, Error> {
        // Holding the lock across the refresh makes concurrent callers wait for
        // one refresh and then reuse its token (single flight).
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Some(t.header.clone()));
        }
        let fresh = self.fetch().await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok(Some(header))
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// `application/x-www-form-urlencoded` encoding of a client id or secret, as
/// RFC 6749 §2.3.1 requires before Basic encoding.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
            "strategy": "oauth2_refresh_token",
            "token_url": "https://example.test/token",
            "client_id": "cid",
            "client_secret": "s3cr3t-client",
            "refresh_token": "s3cr3t-refresh",
        }))
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        let p = provider(&cfg, reqwest::Client::new());
        assert!(!format!("{p:?}").contains("s3cr3t"));
    }

    #[test]
    fn unknown_strategy_and_keys_are_refused() {
        let e = serde_json::from_value::<AuthConfig>(serde_json::json!({"strategy": "kerberos"}))
            .unwrap_err();
        assert!(e.to_string().contains("kerberos"), "{e}");
        let e = serde_json::from_value::<AuthConfig>(
            serde_json::json!({"strategy": "bearer", "token": "t", "tokn": 1}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tokn"), "{e}");
    }

    #[test]
    fn margin_is_bounded() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
    }
}
