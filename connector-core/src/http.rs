//! The HTTP stack of one connection.
//!
//! Layers, outermost first (DESIGN.md §5), and why each sits where it does:
//! 1. **origin check**: a URL on another origin is refused before anything else,
//!    so no credential is ever attached to it (invariant 7);
//! 2. **retry**: classifies each failure ([`Error::class`]) and waits (full jitter
//!    or `Retry-After`) within attempt and elapsed-time bounds; it wraps auth so a
//!    failed token refresh is retried like any transient error;
//! 3. **auth**: attaches the cached credential; a first 401 invalidates it and
//!    retries at once with a fresh one, a second 401 fails as "needs re-auth";
//! 4. **per-attempt timeout**, then the transport (reqwest; redirects are
//!    followed only on the same origin).
//!
//! Circuit breaking and rate limiting slot in between retry and auth.

use backon::Retryable;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use url::Url;

use crate::Error;
use crate::auth::Auth;
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::secret::redact;

/// Response headers kept in the run ledger (never credentials).
const KEPT_HEADERS: &[&str] = &[
    "date",
    "content-type",
    "content-length",
    "retry-after",
    "etag",
    "last-modified",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
];

/// Settings of the HTTP stack (`[connection.http]` in the daemon's config).
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Per-attempt timeout; `None` disables it (tests under paused time).
    pub attempt_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(60)),
            retry: RetryPolicy::default(),
            user_agent: concat!("sync-daemon/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// What was requested and answered, redacted: stored with each raw page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub attempts: u32,
}

impl RequestMeta {
    /// The `Date` header of the response: the server's "now".
    pub fn server_date(&self) -> Option<SystemTime> {
        self.headers
            .iter()
            .find(|(k, _)| k == "date")
            .and_then(|(_, v)| httpdate::parse_http_date(v).ok())
    }
}

/// A successful response: the verbatim body and the redacted metadata.
#[derive(Clone, Debug)]
pub struct Response {
    pub body: Bytes,
    pub meta: RequestMeta,
}

/// The HTTP client of one connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: String,
    base: Url,
    http: reqwest::Client,
    auth: Box<dyn Auth>,
    settings: HttpSettings,
}

/// Describes a reqwest error without its URL (which could carry a query secret).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body interrupted"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// A reqwest client that follows redirects only on the original origin.
pub fn base_client(user_agent: &str) -> Result<reqwest::Client, Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 || !same {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(policy)
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {}", describe(&e))))
}

impl HttpClient {
    pub fn new(
        connector: &str,
        base: Url,
        auth: Box<dyn Auth>,
        http: reqwest::Client,
        settings: HttpSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector: connector.to_owned(),
                base,
                http,
                auth,
                settings,
            }),
        }
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `GET url` through the whole stack; `url` must be on the base URL's origin.
    pub async fn get(&self, url: Url) -> Result<Response, Error> {
        let endpoint = format!("{} GET {}", self.inner.connector, url.path());
        if url.origin() != self.inner.base.origin() {
            return Err(Error::CrossOrigin {
                endpoint,
                origin: url.origin().ascii_serialization(),
            });
        }
        let policy = &self.inner.settings.retry;
        let started = tokio::time::Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let op = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt_with_auth(&endpoint, &url).await
        };
        let mut resp = op
            .retry(policy.backoff())
            .when(|e: &Error| e.is_retryable())
            .adjust(|e: &Error, backoff| {
                // backon's schedule bounds the attempts and gives the exponential
                // step; the policy picks the delay: Retry-After when the source
                // sent one, else full jitter over the step.
                let backoff = backoff?;
                let after = match e.class() {
                    crate::ErrorClass::Retry { after } => after,
                    _ => None,
                };
                let d = policy.delay(backoff, after, started.elapsed());
                tracing::warn!(
                    event = "request_retry", endpoint = %endpoint, error_kind = e.kind(),
                    delay_ms = d.map(|d| d.as_millis() as u64), "{e}"
                );
                d
            })
            .await?;
        resp.meta.attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
        Ok(resp)
    }

    async fn attempt_with_auth(&self, endpoint: &str, url: &Url) -> Result<Response, Error> {
        match self.attempt(endpoint, url).await {
            Err(Error::Unauthorized { .. }) => {
                self.inner.auth.invalidate().await;
                match self.attempt(endpoint, url).await {
                    Err(Error::Unauthorized { endpoint }) => Err(Error::NeedsReauth {
                        endpoint,
                        detail: "a freshly issued credential was refused".into(),
                    }),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn attempt(&self, endpoint: &str, url: &Url) -> Result<Response, Error> {
        let mut req = self
            .inner
            .http
            .get(url.clone())
            .header("Accept", "application/json");
        if let Some(h) = self.inner.auth.authorization().await? {
            req = req.header(AUTHORIZATION, h.expose_secret());
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Timeout {
                    endpoint: endpoint.to_owned(),
                    after: self.inner.settings.attempt_timeout.unwrap_or_default(),
                }
            } else {
                Error::Transport {
                    endpoint: endpoint.to_owned(),
                    message: describe(&e),
                }
            }
        };
        let exchange = async {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(transport)?;
            Ok::<_, Error>((status, headers, body))
        };
        let (status, headers, body) = match self.inner.settings.attempt_timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| Error::Timeout {
                    endpoint: endpoint.to_owned(),
                    after: t,
                })??,
            None => exchange.await?,
        };
        if !(200..300).contains(&status) {
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(Error::from_status(endpoint, status, retry_after, &body));
        }
        Ok(Response {
            body,
            meta: meta(url, status, &headers),
        })
    }
}

fn meta(url: &Url, status: u16, headers: &HeaderMap) -> RequestMeta {
    RequestMeta {
        method: "GET".into(),
        path: url.path().to_owned(),
        params: url
            .query_pairs()
            .map(|(k, v)| (k.to_string(), redact(&k, &v).to_owned()))
            .collect(),
        status,
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|k| {
                headers
                    .get(*k)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| ((*k).to_owned(), v.to_owned()))
            })
            .collect(),
        attempts: 1,
    }
}
