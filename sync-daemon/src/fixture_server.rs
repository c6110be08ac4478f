//! A Workday-shaped mock source on loopback, serving recorded pages: the token
//! endpoint (refresh-token grant, client authenticated with HTTP Basic), a
//! bearer check, and `workers?limit&offset` sliced from the recorded records.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the server accepts and serves.
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    pub tenant: String,
    pub api_path: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub token_ttl: Duration,
    /// Page requests an access token is good for (a token that expires mid-run
    /// whatever its announced lifetime, like a revoked one); `None`: no limit.
    pub token_max_requests: Option<u32>,
    pub max_limit: usize,
}

/// What the server saw, for tests and the demo.
#[derive(Debug, Default)]
pub struct FixtureStats {
    pub tokens_issued: AtomicU64,
    pub unauthorized: AtomicU64,
    pub pages_served: AtomicU64,
}

/// A running fixture server.
#[derive(Debug)]
pub struct FixtureServer {
    pub addr: std::net::SocketAddr,
    pub handle: tokio::task::JoinHandle<()>,
    pub stats: Arc<FixtureStats>,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        Self {
            tenant: "acme".into(),
            api_path: "ccx/api/common/v1".into(),
            client_id: "demo-client".into(),
            client_secret: "demo-client-secret".into(),
            refresh_token: "demo-refresh-token".into(),
            token_ttl: Duration::from_secs(3600),
            token_max_requests: None,
            max_limit: 100,
        }
    }
}

struct State {
    records: Vec<Box<RawValue>>,
    opts: FixtureOptions,
    /// Issued tokens: expiry and page requests left.
    tokens: Mutex<HashMap<String, (Instant, Option<u32>)>>,
    stats: Arc<FixtureStats>,
}

/// Reads every `*.json` page in `dir` (`{"data": [...]}`), in numeric file-name order.
pub fn load_records(dir: &Path) -> anyhow::Result<Vec<Box<RawValue>>> {
    #[derive(serde::Deserialize)]
    struct Page {
        data: Vec<Box<RawValue>>,
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("fixture pages {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let page: Page =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        out.extend(page.data);
    }
    Ok(out)
}

/// Binds `addr` and serves until the returned handle is dropped or aborted.
pub async fn start(
    addr: &str,
    records: Vec<Box<RawValue>>,
    opts: FixtureOptions,
) -> anyhow::Result<FixtureServer> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        records,
        opts,
        tokens: Mutex::new(HashMap::new()),
        stats: Arc::new(FixtureStats::default()),
    });
    let stats = state.stats.clone();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(FixtureServer {
        addr: local,
        handle,
        stats,
    })
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r.headers_mut().insert(
        "date",
        httpdate::fmt_http_date(std::time::SystemTime::now())
            .parse()
            .expect("date header"),
    );
    r
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    reply(status, format!("{{\"error\":\"{code}\"}}"))
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let o = &state.opts;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.method() == hyper::Method::POST && path == format!("/ccx/oauth2/{}/token", o.tenant) {
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", o.client_id, o.client_secret));
        let basic_ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Basic {expected}"));
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !basic_ok {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
        }
        if form.get("refresh_token") != Some(&o.refresh_token) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        let token = format!("fx-{:032x}", fastrand::u128(..));
        state.tokens.lock().expect("token table").insert(
            token.clone(),
            (Instant::now() + o.token_ttl, o.token_max_requests),
        );
        state.stats.tokens_issued.fetch_add(1, Ordering::Relaxed);
        return reply(
            StatusCode::OK,
            serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": o.token_ttl.as_secs()}).to_string(),
        );
    }
    let workers = format!("/{}/{}/workers", o.api_path.trim_matches('/'), o.tenant);
    if req.method() != hyper::Method::GET || path != workers {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer.is_some_and(|t| {
        let mut tokens = state.tokens.lock().expect("token table");
        match tokens.get_mut(t) {
            Some((exp, uses)) if Instant::now() < *exp && *uses != Some(0) => {
                if let Some(n) = uses {
                    *n -= 1;
                }
                true
            }
            _ => false,
        }
    });
    if !valid {
        state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    state.stats.pages_served.fetch_add(1, Ordering::Relaxed);
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let num = |k: &str, d: usize| {
        params
            .get(k)
            .map(|v| v.parse::<usize>().map_err(|_| k.to_owned()))
            .unwrap_or(Ok(d))
    };
    let (limit, offset) = match (num("limit", 20), num("offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(k), _) | (_, Err(k)) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("{{\"error\":\"invalid {k}\"}}"),
            );
        }
    };
    if limit == 0 || limit > o.max_limit {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "{{\"error\":\"limit must be between 1 and {}\"}}",
                o.max_limit
            ),
        );
    }
    let slice = state.records.iter().skip(offset).take(limit);
    let mut body = format!("{{\"total\":{},\"data\":[", state.records.len());
    for (i, r) in slice.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r.get());
    }
    body.push_str("]}");
    reply(StatusCode::OK, body)
}
