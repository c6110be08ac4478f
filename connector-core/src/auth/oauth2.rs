//! OAuth 2.0 token providers: client credentials, refresh token (with durable
//! rotation) and JWT bearer. One token request path serves all three.

use async_trait::async_trait;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::{AuthConfig, AuthContext, ClientAuth, Credentials, jwt};
use crate::Error;
use crate::events::{Emit, TokenRefreshed};

/// Tokens are refreshed when this much of their lifetime is left (at most 60 s,
/// at most half the lifetime).
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 2).min(Duration::from_secs(60))
}

/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

enum Grant {
    ClientCredentials,
    RefreshToken {
        /// The refresh token of the config; it only seeds the store.
        seed: SecretString,
        /// Store key: the connection and the seed's fingerprint, so a new
        /// token in the config (a re-authorization) starts a new lineage.
        key: String,
        current: Mutex<Option<SecretString>>,
    },
    JwtBearer(jwt::Assertion),
}

struct CachedToken {
    header: SecretString,
    refresh_at: Instant,
}

pub(crate) struct TokenAuth {
    ctx: AuthContext,
    strategy: &'static str,
    token_url: Url,
    client: Option<(String, SecretString, ClientAuth)>,
    client_id_param: Option<String>,
    scope: Option<String>,
    grant: Grant,
    cached: Mutex<Option<CachedToken>>,
    /// Tokens handed out or received lately (access and rotated refresh
    /// tokens), for [`super::Auth::secrets`].
    seen: std::sync::Mutex<std::collections::VecDeque<SecretString>>,
}

impl fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuth")
            .field("strategy", &self.strategy)
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

/// The largest token response read.
const TOKEN_BODY_LIMIT: usize = 1 << 20;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    /// Seconds; a number or a numeric string (some servers quote it).
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

/// The token's lifetime from `expires_in`, clamped to
/// `0..=`[`MAX_TOKEN_LIFETIME`](crate::transport::MAX_TOKEN_LIFETIME): a
/// number or a numeric string; absent means [`DEFAULT_LIFETIME`]; anything
/// else (negative, not a number) is a malformed token response.
pub(crate) fn token_lifetime(expires_in: Option<&serde_json::Value>) -> Result<Duration, String> {
    use serde_json::Value;
    let secs: f64 = match expires_in {
        None | Some(Value::Null) => return Ok(DEFAULT_LIFETIME),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(f64::NAN),
        Some(_) => f64::NAN,
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "expires_in is not a non-negative number of seconds: {}",
            crate::snippet(
                expires_in
                    .map(|v| v.to_string())
                    .unwrap_or_default()
                    .as_bytes()
            )
        ));
    }
    let max = crate::transport::MAX_TOKEN_LIFETIME;
    Ok(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max)))
}

impl TokenAuth {
    pub(crate) fn new(config: &AuthConfig, ctx: AuthContext) -> Result<Self, Error> {
        let strategy = config.strategy();
        let (token_url, client, client_id_param, scope, grant) = match config {
            AuthConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => (
                token_url,
                Some((client_id.clone(), client_secret.clone(), *client_auth)),
                None,
                scope,
                Grant::ClientCredentials,
            ),
            AuthConfig::Oauth2RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scope,
                client_auth,
            } => (
                token_url,
                Some((client_id.clone(), client_secret.clone(), *client_auth)),
                None,
                scope,
                Grant::RefreshToken {
                    key: super::refresh_token_key(&ctx.connection, refresh_token),
                    seed: refresh_token.clone(),
                    current: Mutex::new(None),
                },
            ),
            AuthConfig::JwtBearer {
                token_url,
                issuer,
                subject,
                audience,
                private_key,
                key_id,
                scope,
                client_id,
            } => (
                token_url,
                None,
                client_id.clone(),
                scope,
                Grant::JwtBearer(jwt::Assertion {
                    key: jwt::parse_private_key(private_key)?,
                    issuer: issuer.clone(),
                    subject: subject.clone(),
                    audience: audience.clone().unwrap_or_else(|| token_url.to_string()),
                    key_id: key_id.clone(),
                }),
            ),
            _ => {
                return Err(Error::Config(format!(
                    "auth: {strategy} is not an OAuth2 grant"
                )));
            }
        };
        Ok(Self {
            ctx,
            strategy,
            token_url: token_url.clone(),
            client,
            client_id_param,
            scope: scope.clone(),
            grant,
            cached: Mutex::new(None),
            seen: Default::default(),
        })
    }

    /// Keeps the last few tokens so they can be scrubbed from error texts.
    fn remember(&self, token: SecretString) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= 8 {
                seen.pop_front();
            }
            seen.push_back(token);
        }
    }

    fn endpoint(&self) -> String {
        format!("{} POST {}", self.strategy, self.token_url.path())
    }

    /// The refresh token to use: the store's latest, else the config's seed.
    async fn current_refresh_token(
        &self,
        seed: &SecretString,
        key: &str,
        current: &Mutex<Option<SecretString>>,
    ) -> Result<SecretString, Error> {
        let mut cur = current.lock().await;
        if cur.is_none() {
            *cur = Some(
                self.ctx
                    .store
                    .load(key)
                    .await?
                    .unwrap_or_else(|| seed.clone()),
            );
        }
        Ok(cur.clone().unwrap_or_else(|| seed.clone()))
    }

    async fn fetch(&self) -> Result<CachedToken, Error> {
        let endpoint = self.endpoint();
        let mut form: Vec<(&str, String)> = Vec::new();
        // A refresh-token request that times out may have rotated the token on
        // the server: it is not safe to repeat blindly.
        let idempotent = !matches!(self.grant, Grant::RefreshToken { .. });
        match &self.grant {
            Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
            Grant::RefreshToken { seed, key, current } => {
                let rt = self.current_refresh_token(seed, key, current).await?;
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt.expose_secret().to_owned()));
            }
            Grant::JwtBearer(a) => {
                form.push((
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ));
                form.push(("assertion", a.sign(std::time::SystemTime::now())?));
            }
        }
        if let Some(id) = &self.client_id_param {
            form.push(("client_id", id.clone()));
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        let mut req = self
            .ctx
            .http
            .post(self.token_url.clone())
            .header("Accept", "application/json");
        if let Some((id, secret, how)) = &self.client {
            match how {
                ClientAuth::Basic => {
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        form_encode(id),
                        form_encode(secret.expose_secret())
                    ));
                    req = req.header("Authorization", format!("Basic {basic}"));
                }
                ClientAuth::Body => {
                    form.push(("client_id", id.clone()));
                    form.push(("client_secret", secret.expose_secret().to_owned()));
                }
            }
        }
        let req = req.form(&form);
        drop(form);
        let crate::transport::Exchange { status, body, .. } = crate::transport::exchange(
            req,
            &endpoint,
            self.ctx.timeout,
            idempotent,
            TOKEN_BODY_LIMIT,
        )
        .await?;
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
        let mut rotated = false;
        if let (Some(new), Grant::RefreshToken { key, current, .. }) =
            (token.refresh_token, &self.grant)
        {
            let mut cur = current.lock().await;
            if cur.as_ref().map(|c| c.expose_secret()) != Some(new.expose_secret()) {
                // Durable before use: if this process dies after this line, the
                // next one starts from the rotated token, never the spent one.
                self.ctx.store.save(key, &new).await?;
                self.remember(new.clone());
                *cur = Some(new);
                rotated = true;
            }
        }
        let lifetime =
            token_lifetime(token.expires_in.as_ref()).map_err(|message| Error::Body {
                endpoint: endpoint.clone(),
                message,
            })?;
        self.remember(token.access_token.clone());
        TokenRefreshed {
            connection: &self.ctx.connection,
            strategy: self.strategy,
            lifetime,
            rotated,
        }
        .emit();
        Ok(CachedToken {
            header: format!("Bearer {}", token.access_token.expose_secret()).into(),
            refresh_at: crate::transport::instant_after(
                Instant::now(),
                lifetime - refresh_margin(lifetime),
            ),
        })
    }
}

#[async_trait]
impl super::Auth for TokenAuth {
    async fn credentials(
        &self,
        _method: &str,
        _url: &Url,
        _form: &[(String, String)],
    ) -> Result<Credentials, Error> {
        // Holding the lock across the refresh makes concurrent callers wait for
        // one refresh and then reuse its token (single flight).
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Credentials {
                headers: vec![(reqwest::header::AUTHORIZATION, t.header.clone())],
                query: Vec::new(),
            });
        }
        let fresh = self.fetch().await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok(Credentials {
            headers: vec![(reqwest::header::AUTHORIZATION, header)],
            query: Vec::new(),
        })
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn secrets(&self) -> Vec<SecretString> {
        let mut out: Vec<SecretString> = self
            .seen
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if let Some((_, secret, _)) = &self.client {
            out.push(secret.clone());
        }
        if let Grant::RefreshToken { seed, .. } = &self.grant {
            out.push(seed.clone());
        }
        out
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
    fn absurd_lifetimes_are_clamped_or_refused() {
        use serde_json::json;
        let max = crate::transport::MAX_TOKEN_LIFETIME;
        assert_eq!(token_lifetime(None).unwrap(), DEFAULT_LIFETIME);
        assert_eq!(
            token_lifetime(Some(&json!(3599))).unwrap(),
            Duration::from_secs(3599)
        );
        assert_eq!(
            token_lifetime(Some(&json!("3599"))).unwrap(),
            Duration::from_secs(3599)
        );
        assert_eq!(
            token_lifetime(Some(&json!(18446744073709551615u64))).unwrap(),
            max
        );
        assert_eq!(token_lifetime(Some(&json!(1e300))).unwrap(), max);
        assert_eq!(token_lifetime(Some(&json!(0))).unwrap(), Duration::ZERO);
        for bad in [json!(-1), json!("soon"), json!([1]), json!(true)] {
            assert!(token_lifetime(Some(&bad)).is_err(), "{bad}");
        }
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
