//! Mock sources on loopback, serving recorded data:
//! - Workday-shaped: the token endpoint (refresh-token grant, client
//!   authenticated with HTTP Basic), a bearer check, and
//!   `workers?limit&offset` sliced from the recorded records, and with
//!   `updatedFrom=<RFC 3339>` / `updatedThrough=<RFC 3339>` only the workers
//!   whose `lastModified` is at or after / at or before them (a "changed
//!   since" endpoint answering as of a moment, for the connector's
//!   `changed_since_param` and `as_of_param`);
//! - BambooHR-shaped (when given its fixtures): HTTP Basic with the API key,
//!   `POST /api/gateway.php/{company}/v1/reports/custom` (filtered by
//!   `filters.lastChanged`) and `GET …/employees/changed/?since=` (an object
//!   keyed by id, with `latest`), over the recorded runs merged in order;
//! - SAP S/4HANA- and NetSuite-shaped (when given their fixtures): see
//!   `fixture_finance`.

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
    /// The BambooHR-shaped source, when served.
    pub bamboohr: Option<BambooData>,
    /// The SAP-shaped system, when served.
    pub sap: Option<crate::fixture_finance::SapData>,
    /// The NetSuite-shaped account, when served.
    pub netsuite: Option<crate::fixture_finance::NetSuiteData>,
}

/// The BambooHR company served: its employees and change entries as of
/// the last recorded run served (the latest version of each by `lastChanged`).
#[derive(Clone, Debug, Default)]
pub struct BambooData {
    pub company: String,
    /// The API key (Basic user name) the server accepts; any password.
    pub api_key: String,
    pub fields: serde_json::Value,
    pub employees: Vec<serde_json::Value>,
    pub changes: Vec<serde_json::Value>,
}

/// Reads `report-1.json` … `report-N.json` and `changed-1.json` …
/// `changed-N.json` from `dir` (the first `runs` of each), keeping the latest
/// version of each employee and change entry by `lastChanged`.
pub fn load_bamboohr(
    dir: &Path,
    runs: u32,
    company: &str,
    api_key: &str,
) -> anyhow::Result<BambooData> {
    let read = |name: String| -> anyhow::Result<serde_json::Value> {
        let p = dir.join(&name);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| anyhow::anyhow!("BambooHR fixture {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let mut data = BambooData {
        company: company.to_owned(),
        api_key: api_key.to_owned(),
        ..Default::default()
    };
    let newest = |all: &mut Vec<serde_json::Value>, v: serde_json::Value| match all
        .iter_mut()
        .find(|e| e["id"] == v["id"])
    {
        Some(old) if changed_at(old) <= changed_at(&v) => *old = v,
        Some(_) => {}
        None => all.push(v),
    };
    for run in 1..=runs.max(1) {
        let report = read(format!("report-{run}.json"))?;
        data.fields = report["fields"].clone();
        for e in report["employees"].as_array().cloned().unwrap_or_default() {
            newest(&mut data.employees, e);
        }
        let changed = read(format!("changed-{run}.json"))?;
        if let Some(m) = changed["employees"].as_object() {
            for e in m.values() {
                newest(&mut data.changes, e.clone());
            }
        }
    }
    Ok(data)
}

fn changed_at(v: &serde_json::Value) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    v["lastChanged"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
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
            bamboohr: None,
            sap: None,
            netsuite: None,
        }
    }
}

struct State {
    /// `http://host:port`, for the links the server writes.
    origin: String,
    records: Vec<Box<RawValue>>,
    /// Each record's `lastModified` (read once, as a source keeps an index).
    modified: Vec<Option<Time>>,
    /// The positions of the records changed since a bound, by bound (a pull
    /// pages through one bound's list).
    changed: Mutex<HashMap<String, Arc<Vec<usize>>>>,
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
    let modified = stamps(&records);
    let state = Arc::new(State {
        origin: format!("http://{local}"),
        records,
        modified,
        changed: Mutex::new(HashMap::new()),
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

pub(crate) fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
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

/// A BambooHR error: its reason in `X-BambooHR-Error-Message`, an empty body.
fn bamboo_error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    let mut r = reply(status, Bytes::new());
    if let Ok(v) = why.parse() {
        r.headers_mut().insert("x-bamboohr-error-message", v);
    }
    r
}

/// Serves the BambooHR-shaped endpoints; `None` when the request is not one.
async fn bamboo(
    data: &BambooData,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Request<hyper::body::Incoming>> {
    let root = format!("/api/gateway.php/{}/v1/", data.company);
    let Some(rest) = req.uri().path().strip_prefix(&root).map(str::to_owned) else {
        return Err(req);
    };
    // The API key is the user name; any password.
    let auth_ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .is_some_and(|d| {
            d.split_once(':')
                .is_some_and(|(user, _)| user == data.api_key)
        });
    if !auth_ok {
        return Ok(bamboo_error(
            StatusCode::UNAUTHORIZED,
            "Your API key is missing or invalid",
        ));
    }
    let json_accepted =
        req.headers().get("accept").and_then(|v| v.to_str().ok()) == Some("application/json");
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let after = |bound: &str, e: &serde_json::Value| -> bool {
        match (chrono::DateTime::parse_from_rfc3339(bound), changed_at(e)) {
            (Ok(b), Some(at)) => at >= b,
            _ => false,
        }
    };
    match (req.method().clone(), rest.as_str()) {
        (hyper::Method::POST, "reports/custom") => {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if !params
                .get("format")
                .is_some_and(|f| f.eq_ignore_ascii_case("json"))
                && !json_accepted
            {
                return Ok(bamboo_error(StatusCode::NOT_FOUND, "unsupported format"));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            // BambooHR reads any other content type as XML.
            if ct.as_deref() != Some("application/json") {
                return Ok(bamboo_error(StatusCode::BAD_REQUEST, "Malformed XML"));
            }
            let Ok(def) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return Ok(bamboo_error(StatusCode::BAD_REQUEST, "Malformed JSON"));
            };
            let filter = def["filters"]["lastChanged"]["value"]
                .as_str()
                .map(str::to_owned);
            if let Some(f) = &filter
                && chrono::DateTime::parse_from_rfc3339(f).is_err()
            {
                return Ok(bamboo_error(
                    StatusCode::BAD_REQUEST,
                    "lastChanged is not a valid ISO 8601 date",
                ));
            }
            let employees: Vec<&serde_json::Value> = data
                .employees
                .iter()
                .filter(|e| filter.as_deref().is_none_or(|f| after(f, e)))
                .collect();
            let out = serde_json::json!({
                "title": def["title"], "fields": data.fields, "employees": employees,
            });
            Ok(reply(StatusCode::OK, out.to_string()))
        }
        (hyper::Method::GET, "employees/changed" | "employees/changed/") => {
            let Some(since) = params.get("since") else {
                return Ok(bamboo_error(StatusCode::BAD_REQUEST, "since is required"));
            };
            if chrono::DateTime::parse_from_rfc3339(since).is_err() {
                return Ok(bamboo_error(
                    StatusCode::BAD_REQUEST,
                    &format!("since {since} is not a valid ISO 8601 date"),
                ));
            }
            let entries: Vec<&serde_json::Value> =
                data.changes.iter().filter(|e| after(since, e)).collect();
            let latest = entries
                .iter()
                .filter_map(|e| e["lastChanged"].as_str())
                .max_by_key(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .unwrap_or(since);
            let mut map = serde_json::Map::new();
            for e in &entries {
                map.insert(
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    (*e).clone(),
                );
            }
            let out = serde_json::json!({"latest": latest, "employees": map});
            Ok(reply(StatusCode::OK, out.to_string()))
        }
        _ => Ok(bamboo_error(StatusCode::NOT_FOUND, "not a valid API")),
    }
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    reply(status, format!("{{\"error\":\"{code}\"}}"))
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let o = &state.opts;
    let req = match &o.bamboohr {
        Some(data) => match bamboo(data, req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        },
        None => req,
    };
    let req = match &o.sap {
        Some(data) => match crate::fixture_finance::sap(data, &state.origin, req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        },
        None => req,
    };
    let req = match &o.netsuite {
        Some(data) => match crate::fixture_finance::netsuite(data, req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        },
        None => req,
    };
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
    let mut window = [None, None];
    for (slot, name) in window.iter_mut().zip(["updatedFrom", "updatedThrough"]) {
        if let Some(v) = params.get(name) {
            match chrono::DateTime::parse_from_rfc3339(v) {
                Ok(t) => *slot = Some(t),
                Err(_) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("{{\"error\":\"invalid {name}: an RFC 3339 time is expected\"}}"),
                    );
                }
            }
        }
    }
    let selected = match window {
        [None, None] => None,
        [from, through] => Some(changed_between(state, from, through)),
    };
    let total = selected.as_ref().map_or(state.records.len(), |s| s.len());
    let mut body = format!("{{\"total\":{total},\"data\":[");
    let positions: Box<dyn Iterator<Item = usize>> = match &selected {
        Some(s) => Box::new(s.iter().copied().skip(offset).take(limit)),
        None => Box::new((offset..state.records.len()).take(limit)),
    };
    for (i, at) in positions.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(state.records[at].get());
    }
    body.push_str("]}");
    reply(StatusCode::OK, body)
}

type Time = chrono::DateTime<chrono::FixedOffset>;

/// The positions of the records whose `lastModified` is within
/// `[from, through]` (either end open), computed once per window.
fn changed_between(state: &State, from: Option<Time>, through: Option<Time>) -> Arc<Vec<usize>> {
    let modified = &state.modified;
    let key = format!("{from:?}..{through:?}");
    let mut cache = state.changed.lock().expect("changed-since cache");
    if cache.len() >= 16 && !cache.contains_key(&key) {
        cache.clear();
    }
    cache
        .entry(key)
        .or_insert_with(|| {
            Arc::new(
                (0..modified.len())
                    .filter(|&i| {
                        // A worker without a stamp is in a pull from the start only.
                        modified[i].map_or(from.is_none(), |m| {
                            from.is_none_or(|f| m >= f) && through.is_none_or(|t| m <= t)
                        })
                    })
                    .collect(),
            )
        })
        .clone()
}

/// Each record's `lastModified`, when it has a valid one.
fn stamps(records: &[Box<RawValue>]) -> Vec<Option<Time>> {
    #[derive(serde::Deserialize)]
    struct Stamp<'a> {
        #[serde(rename = "lastModified", borrow)]
        last_modified: Option<&'a str>,
    }
    records
        .iter()
        .map(|r| {
            serde_json::from_str::<Stamp<'_>>(r.get())
                .ok()
                .and_then(|s| s.last_modified)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        })
        .collect()
}
