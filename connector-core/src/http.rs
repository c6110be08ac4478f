//! The HTTP stack of one connection.
//!
//! Layers, outermost first, and why each sits where it does:
//! 1. **origin check**: a URL on another origin is refused before anything else,
//!    so no credential is ever attached to it (docs/architecture.md,
//!    "Invariants and where they hold", 7);
//! 2. **events**: every attempt and failure is a named event with metrics;
//! 3. **call deadline**: the whole logical call, waits included, is bounded;
//! 4. **retry**: classifies each failure ([`Error::class`]) and waits (full
//!    jitter, `Retry-After`, rate-limit reset headers) within attempt and
//!    elapsed-time bounds; a wait the source asks for beyond the run's budget
//!    ends the call as [`Error::Deferred`]. It wraps everything below, so a
//!    failed token refresh or an open breaker is retried like any transient error;
//! 5. **circuit breaker** per (host, credential): fails fast while open; only
//!    transient failures count, so it sits inside retry and outside the limiter
//!    (an open breaker must not consume rate-limit tokens);
//! 6. **rate limiter**: the connection's token bucket and in-flight cap, shared
//!    by all its streams; slows down on 429;
//! 7. **auth**: attaches the cached credential; a first 401 invalidates it and
//!    retries at once with a fresh one, a second 401 fails as "needs re-auth";
//! 8. **per-attempt timeout**, then the transport (reqwest; redirects are
//!    followed only on the same origin), then the caller's body check, so a
//!    truncated body is retried like a dropped connection.

use backon::BackoffBuilder;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use url::Url;

use crate::auth::{self, Auth, AuthConfig, AuthContext, CredentialStore};
use crate::breaker::{BreakerSettings, BreakerSnapshot, CircuitBreaker, Outcome};
use crate::events::{Emit, RequestFailed, RequestSent};
use crate::ratelimit::{RateLimitSettings, RateLimiter};
use crate::retry::{Decision, RetryPolicy, parse_rate_limit_reset, parse_retry_after};
use crate::secret::redact;
use crate::{Body, Error, ErrorClass, Method, Request};

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
    /// Deadline of one logical call, every attempt and wait included.
    pub call_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub rate_limit: RateLimitSettings,
    /// The run's time budget from the client's creation: a wait that would
    /// end after it defers the run instead ([`Error::Deferred`]).
    pub run_budget: Option<Duration>,
    pub user_agent: String,
    /// The largest page body read; a larger one fails the call with
    /// [`Error::BodyTooLarge`] before the excess is read. Peak memory of a
    /// sync is bounded by this limit times the pages in flight, queued and
    /// batched.
    pub max_body_bytes: usize,
    /// Query parameters whose values are masked in page tokens stored in the
    /// ledger and the watermark (exact names, case-insensitive), besides
    /// those the auth strategy adds.
    pub redact_params: Vec<String>,
}

/// Query parameters masked in stored page links by default: names that carry
/// keys or signatures in real APIs' next links.
pub const DEFAULT_REDACT_PARAMS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "key",
    "access_token",
    "token",
    "auth",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "client_secret",
    "password",
    "secret",
];

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(60)),
            call_timeout: Some(Duration::from_secs(900)),
            retry: RetryPolicy::default(),
            breaker: BreakerSettings::default(),
            rate_limit: RateLimitSettings::default(),
            run_budget: None,
            user_agent: concat!("sync-daemon/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_body_bytes: crate::transport::DEFAULT_MAX_BODY_BYTES,
            redact_params: DEFAULT_REDACT_PARAMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// What was requested and answered, redacted: stored with each raw page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    /// SHA-256 of the request body, when there was one (never the body
    /// itself: a body may carry secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
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

/// A successful response: the verbatim body, its headers (for `Link`
/// pagination) and the redacted metadata that is recorded.
#[derive(Clone, Debug)]
pub struct Response {
    pub body: Bytes,
    pub headers: HeaderMap,
    pub meta: RequestMeta,
}

/// The HTTP client of one connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: String,
    connector: String,
    base: Url,
    http: reqwest::Client,
    auth: Box<dyn Auth>,
    settings: HttpSettings,
    breaker: Arc<CircuitBreaker>,
    limiter: RateLimiter,
    deadline: Option<Instant>,
    /// Query parameters the auth strategy adds: stripped from next links.
    auth_params: Vec<String>,
    /// Masked in stored page tokens and request records: the settings'
    /// list plus the auth strategy's parameters.
    redact_params: Vec<String>,
    /// The connector's reading of answers that are not a success.
    read_error: crate::ReadError,
}

/// What [`HttpClient::new`] assembles.
#[derive(Debug)]
pub struct ClientParts {
    /// The `[[connection]]` name: metrics label, credential-store key.
    pub connection: String,
    /// The connector's name, in error messages.
    pub connector: String,
    pub base: Url,
    pub auth: Box<dyn Auth>,
    /// Non-secret name of the credential ([`AuthConfig::identity`]): the
    /// circuit breaker is shared per (host, credential).
    pub credential: String,
    pub http: reqwest::Client,
    pub settings: HttpSettings,
    /// Share breakers across clients of one process (e.g.
    /// [`CircuitBreaker::shared`]); `None` gives this client its own.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// The connector's [`crate::Connector::read_error`] ([`crate::read_nothing`]
    /// when the status says all).
    pub read_error: crate::ReadError,
}

/// The breaker's host: `host:port`, so two sources on one host never share one.
fn breaker_host(base: &Url) -> String {
    format!(
        "{}:{}",
        base.host_str().unwrap_or(""),
        base.port_or_known_default().unwrap_or(0)
    )
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
        .map_err(|e| Error::Config(format!("HTTP client: {}", crate::transport::describe(&e))))
}

impl HttpClient {
    pub fn new(parts: ClientParts) -> Self {
        let host = breaker_host(&parts.base);
        let breaker = parts.breaker.unwrap_or_else(|| {
            Arc::new(CircuitBreaker::new(
                &host,
                &parts.credential,
                &parts.connection,
                parts.settings.breaker.clone(),
            ))
        });
        let limiter = RateLimiter::new(&parts.connection, &parts.settings.rate_limit);
        let auth_params = parts.auth.query_params();
        let mut redact_params = parts.settings.redact_params.clone();
        redact_params.extend(auth_params.iter().cloned());
        let deadline = parts
            .settings
            .run_budget
            .map(|b| crate::transport::instant_after(Instant::now(), b));
        Self {
            inner: Arc::new(Inner {
                connection: parts.connection,
                connector: parts.connector,
                base: parts.base,
                http: parts.http,
                auth: parts.auth,
                settings: parts.settings,
                breaker,
                limiter,
                deadline,
                auth_params,
                redact_params,
                read_error: parts.read_error,
            }),
        }
    }

    /// The whole stack for one connection: transport, auth provider (with
    /// `store` for rotated credentials), its own breaker and limiter.
    pub fn connect(
        connection: &str,
        connector: &dyn crate::DynConnector,
        auth: &AuthConfig,
        settings: HttpSettings,
        store: Arc<dyn CredentialStore>,
    ) -> Result<Self, Error> {
        Self::connect_shared(connection, connector, auth, settings, store, false)
    }

    /// Like [`connect`](Self::connect); with `share_breaker`, the breaker is
    /// the process-wide one of (host, credential), so every connection of
    /// the process that calls one host with one credential trips together.
    pub fn connect_shared(
        connection: &str,
        connector: &dyn crate::DynConnector,
        auth: &AuthConfig,
        settings: HttpSettings,
        store: Arc<dyn CredentialStore>,
        share_breaker: bool,
    ) -> Result<Self, Error> {
        connector.check_auth(auth).map_err(|e| {
            Error::Config(format!("connection {connection}: [connection.auth]: {e}"))
        })?;
        let base = connector.base_url();
        let breaker = share_breaker.then(|| {
            CircuitBreaker::shared(
                &breaker_host(base),
                &auth.identity(),
                connection,
                settings.breaker.clone(),
            )
        });
        let http = base_client(&settings.user_agent)?;
        let provider = auth::provider(
            auth,
            AuthContext {
                connection: connection.to_owned(),
                http: http.clone(),
                store,
                timeout: settings.attempt_timeout,
            },
        )?;
        Ok(Self::new(ClientParts {
            connection: connection.to_owned(),
            connector: connector.name().to_owned(),
            base: connector.base_url().clone(),
            auth: provider,
            credential: auth.identity(),
            http,
            settings,
            breaker,
            read_error: connector.error_reader(),
        }))
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    pub fn connection(&self) -> &str {
        &self.inner.connection
    }

    /// The state of this client's circuit breaker.
    pub fn breaker(&self) -> BreakerSnapshot {
        self.inner.breaker.snapshot()
    }

    /// Restores a breaker state saved by an earlier process (see
    /// [`crate::breaker::CircuitBreaker::restore`]).
    pub fn restore_breaker(&self, retry_in: Duration, consecutive: u32, times_opened: u64) {
        self.inner
            .breaker
            .restore(retry_in, consecutive, times_opened);
    }

    /// Every secret the connection's auth holds now (see [`crate::auth::Auth::secrets`]).
    pub fn secrets(&self) -> Vec<secrecy::SecretString> {
        self.inner.auth.secrets()
    }

    /// Scrubs every secret of the connection (and credential-looking values)
    /// from text a source sent back.
    pub fn scrub(&self, text: &str) -> String {
        let secrets = self.inner.auth.secrets();
        crate::secret::Scrubber::new(&secrets).scrub(text)
    }

    /// A next link without the query parameters the auth strategy adds (it
    /// adds them again on each request; a source that echoes them back must
    /// not get them stored or sent twice).
    pub fn strip_auth_params(&self, link: &str) -> String {
        let Ok(mut u) = Url::parse(link) else {
            return link.to_owned();
        };
        let is_auth = |k: &str| self.inner.auth_params.iter().any(|p| p == k);
        if !u.query_pairs().any(|(k, _)| is_auth(&k)) {
            return link.to_owned();
        }
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !is_auth(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
        u.into()
    }

    /// A page token as it may be stored (ledger, watermark, `status`): link
    /// parameters that may carry secrets are masked ([`PageToken::redacted`]).
    pub fn storable_token(&self, token: &crate::PageToken) -> crate::PageToken {
        token.redacted(&self.inner.redact_params)
    }

    /// The rate the limiter currently allows (after AIMD), if limited.
    pub fn allowed_rate(&self) -> Option<f64> {
        self.inner.limiter.current_rate()
    }

    /// `GET url` through the whole stack; `url` must be on the base URL's origin.
    pub async fn get(&self, url: Url) -> Result<Response, Error> {
        self.send(&Request::get(url)).await
    }

    /// `req` through the whole stack; its URL must be on the base URL's origin.
    pub async fn send(&self, req: &Request) -> Result<Response, Error> {
        self.send_checked(req, |_| Ok(())).await.map(|(r, ())| r)
    }

    /// `GET url`, checked (see [`send_checked`](Self::send_checked)).
    pub async fn get_checked<T>(
        &self,
        url: Url,
        check: impl Fn(&Response) -> Result<T, Error>,
    ) -> Result<(Response, T), Error> {
        self.send_checked(&Request::get(url), check).await
    }

    /// Sends `req`, with `check` run on each successful answer inside the
    /// retry loop: a check that fails with a retryable error (e.g.
    /// [`Error::Truncated`]) fetches again. Returns the response and what
    /// `check` made of it. A request that is not idempotent is not sent
    /// again after a timeout.
    pub async fn send_checked<T>(
        &self,
        req: &Request,
        check: impl Fn(&Response) -> Result<T, Error>,
    ) -> Result<(Response, T), Error> {
        let url = &req.url;
        let endpoint = format!(
            "{} {} {}",
            self.inner.connector,
            req.method.as_str(),
            url.path()
        );
        if url.origin() != self.inner.base.origin() {
            return Err(Error::CrossOrigin {
                endpoint,
                origin: url.origin().ascii_serialization(),
            });
        }
        let call = self.call(&endpoint, req, &check);
        match self.inner.settings.call_timeout {
            Some(t) => tokio::time::timeout(t, call)
                .await
                .map_err(|_| Error::CallTimeout { endpoint, after: t })?,
            None => call.await,
        }
    }

    async fn call<T>(
        &self,
        endpoint: &str,
        url: &Request,
        check: &impl Fn(&Response) -> Result<T, Error>,
    ) -> Result<(Response, T), Error> {
        let policy = &self.inner.settings.retry;
        let started = Instant::now();
        let mut schedule = policy.backoff().build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match self.guarded_attempt(endpoint, url, check, attempts).await {
                Ok((mut resp, t)) => {
                    resp.meta.attempts = attempts;
                    return Ok((resp, t));
                }
                Err(e) => e,
            };
            let ErrorClass::Retry { after } = err.class() else {
                return Err(err);
            };
            // A request that is not idempotent is sent again only when it
            // cannot have reached the source, or the source refused it unread.
            if !url.idempotent && !unsent(&err) {
                return Err(err);
            }
            // backon's schedule bounds the attempts and gives the exponential step.
            let Some(step) = schedule.next() else {
                return Err(err);
            };
            let budget_left = self
                .inner
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            match policy.decide(step, after, started.elapsed(), budget_left) {
                Decision::Wait(d) => {
                    tracing::info!(
                        event = "request_retry", connection = %self.inner.connection, endpoint,
                        error_kind = err.kind(), delay_ms = d.as_millis() as u64, attempt = attempts
                    );
                    tokio::time::sleep(d).await;
                }
                Decision::GiveUp => return Err(err),
                Decision::Defer(wait) => {
                    return Err(Error::Deferred {
                        endpoint: endpoint.to_owned(),
                        wait,
                    });
                }
            }
        }
    }

    /// One attempt behind the breaker and the rate limiter.
    async fn guarded_attempt<T>(
        &self,
        endpoint: &str,
        url: &Request,
        check: &impl Fn(&Response) -> Result<T, Error>,
        attempt: u32,
    ) -> Result<(Response, T), Error> {
        let inner = &*self.inner;
        if let Err(retry_in) = inner.breaker.admit() {
            return Err(Error::CircuitOpen {
                endpoint: endpoint.to_owned(),
                host: inner.breaker.host.clone(),
                retry_in,
                last_failure: inner.breaker.last_failure(),
            });
        }
        let max_pause = inner.settings.retry.max_retry_after;
        let _permit = match inner.limiter.acquire(inner.deadline, max_pause).await {
            Ok(p) => p,
            Err(wait) => {
                inner.breaker.record(Outcome::Ignored);
                return Err(Error::Deferred {
                    endpoint: endpoint.to_owned(),
                    wait,
                });
            }
        };
        RequestSent {
            connection: &inner.connection,
            endpoint,
            attempt,
        }
        .emit();
        let answer = self.attempt_with_auth(endpoint, url).await;
        // The breaker judges the host by its answer, not by the content: a
        // complete answer whose body the check refuses (cut JSON, a bad
        // page) says the host is up.
        let outcome = Outcome::of(&answer);
        if let (Outcome::TransientFailure, Err(e)) = (outcome, &answer) {
            inner.breaker.note_failure(self.scrub(&e.to_string()));
        }
        inner.breaker.record(outcome);
        let result = match answer {
            Ok(resp) => check(&resp).map(|t| (resp, t)),
            Err(e) => Err(e),
        }
        // Whatever the source echoed back (an error body, a malformed value)
        // is scrubbed of the connection's secrets before anyone sees it.
        .map_err(|e| e.map_text(|t| self.scrub(t)));
        match &result {
            Ok(_) => inner.limiter.on_success(),
            Err(e) => {
                if let Error::RateLimited { .. } = e {
                    inner.limiter.on_rate_limited();
                }
                // The source's own word on when to come back holds for the
                // whole connection, not only for this request.
                if let Error::RateLimited {
                    retry_after: Some(wait),
                    ..
                }
                | Error::Server {
                    status: 503,
                    retry_after: Some(wait),
                    ..
                } = e
                {
                    inner.limiter.pause(*wait);
                }
                RequestFailed {
                    connection: &inner.connection,
                    endpoint,
                    kind: e.kind(),
                    error: e,
                }
                .emit();
            }
        }
        result
    }

    async fn attempt_with_auth(&self, endpoint: &str, url: &Request) -> Result<Response, Error> {
        match self.attempt(endpoint, url).await {
            Err(Error::Unauthorized { endpoint, detail }) if !self.inner.auth.refreshes() => {
                // Nothing to refresh: asking again with the same credential
                // would be refused the same way.
                Err(Error::NeedsReauth {
                    endpoint,
                    detail: format!(
                        "the configured credential was refused: {}",
                        detail.as_deref().unwrap_or("HTTP 401")
                    ),
                })
            }
            Err(Error::Unauthorized { .. }) => {
                self.inner.auth.invalidate().await;
                match self.attempt(endpoint, url).await {
                    Err(Error::Unauthorized { endpoint, detail }) => Err(Error::NeedsReauth {
                        endpoint,
                        detail: format!(
                            "a freshly issued credential was refused: {}",
                            detail.as_deref().unwrap_or("HTTP 401")
                        ),
                    }),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn attempt(&self, endpoint: &str, req: &Request) -> Result<Response, Error> {
        let url = &req.url;
        let form: &[(String, String)] = match &req.body {
            Some(Body::Form(pairs)) => pairs,
            _ => &[],
        };
        let creds = self
            .inner
            .auth
            .credentials(req.method.as_str(), url, form)
            .await?;
        // Query credentials go on the outgoing URL only; `url` (what is
        // recorded) never carries them.
        let mut target = url.clone();
        if !creds.query.is_empty() {
            let mut q = target.query_pairs_mut();
            for (k, v) in &creds.query {
                q.append_pair(k, v.expose_secret());
            }
        }
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut out = self.inner.http.request(method, target);
        // A stream's own `Accept` (OData v4's `IEEE754Compatible=true`)
        // replaces core's.
        if !req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            out = out.header("Accept", "application/json");
        }
        for (k, v) in &req.headers {
            out = out.header(k.as_str(), v.as_str());
        }
        let sent = req.body.as_ref().map(Body::encode);
        if let Some((bytes, content_type)) = &sent {
            // Exactly this content type: some sources refuse any parameter.
            out = out
                .header("Content-Type", *content_type)
                .body(bytes.clone());
        }
        for (k, v) in &creds.headers {
            out = out.header(k.clone(), v.expose_secret());
        }
        drop(creds);
        let crate::transport::Exchange {
            status,
            headers,
            body,
        } = crate::transport::exchange(
            out,
            endpoint,
            self.inner.settings.attempt_timeout,
            req.idempotent,
            self.inner.settings.max_body_bytes,
        )
        .await?;
        if !(200..300).contains(&status) {
            let now = SystemTime::now();
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now))
                .or_else(|| {
                    matches!(status, 429 | 503)
                        .then(|| parse_rate_limit_reset(&headers, now))
                        .flatten()
                });
            let reading = (self.inner.read_error)(&crate::ErrorAnswer {
                status,
                headers: &headers,
                body: &body,
            });
            let text = self.scrub(&String::from_utf8_lossy(&body));
            return Err(Error::from_answer(
                endpoint,
                status,
                retry_after,
                text.as_bytes(),
                reading,
            )
            .map_text(|t| self.scrub(t)));
        }
        let mut meta = self.meta(url, status, &headers);
        meta.method = req.method.as_str().to_owned();
        meta.body_sha256 = sent.map(|(b, _)| crate::RawStore::sha256_hex(&b));
        Ok(Response {
            meta,
            headers,
            body,
        })
    }
}

/// True when `err` says the request was not processed: refused before it
/// was sent (an open breaker, no connection) or throttled (429).
fn unsent(err: &Error) -> bool {
    match err {
        Error::RateLimited { .. } | Error::CircuitOpen { .. } => true,
        Error::Transport { message, .. } => message.starts_with("connection failed"),
        _ => false,
    }
}

impl HttpClient {
    /// The redacted record of a request and its answer.
    fn meta(&self, url: &Url, status: u16, headers: &HeaderMap) -> RequestMeta {
        RequestMeta {
            method: "GET".into(),
            path: url.path().to_owned(),
            params: url
                .query_pairs()
                .map(|(k, v)| {
                    let masked = self
                        .inner
                        .redact_params
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(&k));
                    let v = if masked {
                        crate::secret::MASK
                    } else {
                        redact(&k, &v)
                    };
                    // Decoded values may hold U+0000 (`%00`), which the
                    // ledger's JSON cannot: the record shows U+FFFD instead.
                    (k.replace('\0', "\u{FFFD}"), v.replace('\0', "\u{FFFD}"))
                })
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
            body_sha256: None,
            attempts: 1,
        }
    }
}
