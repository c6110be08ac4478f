//! The HTTP stack against a mock source: retries under paused time, 401 handling, origin check.
#![allow(clippy::field_reassign_with_default)]

mod common;

use connector_core::{AuthConfig, Error, HttpClient, HttpSettings};
use std::time::Duration;
use url::Url;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(base: &str, auth_cfg: AuthConfig) -> HttpClient {
    let mut s = HttpSettings::default();
    // These tests are about retries; the breaker has its own below.
    s.breaker.consecutive_failures = 1000;
    client_with(base, auth_cfg, s)
}

fn client_with(base: &str, auth_cfg: AuthConfig, mut s: HttpSettings) -> HttpClient {
    // Paused time: no timer may race the loopback I/O.
    s.attempt_timeout = None;
    s.call_timeout = None;
    s.retry = s.retry.with_seed(1);
    // Under paused time, tokio jumps the clock to the next timer (e.g. hyper's
    // idle-pool timer) while a request waits on loopback I/O, so elapsed time
    // is inflated: these tests bound retries by attempts only.
    s.retry.max_elapsed = Duration::from_secs(86_400);
    common::client_with(base, auth_cfg, s)
}

fn refresh(base: &str) -> AuthConfig {
    serde_json::from_value(serde_json::json!({
        "strategy": "oauth2_refresh_token", "token_url": format!("{base}/token"),
        "client_id": "id", "client_secret": "secret", "refresh_token": "rt"
    }))
    .unwrap()
}

/// `/p` answers `first` `n` times, then 200.
async fn fails_then_ok(srv: &MockServer, first: ResponseTemplate, n: u64) {
    Mock::given(path("/p"))
        .respond_with(first)
        .up_to_n_times(n)
        .mount(srv)
        .await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(srv)
        .await;
}

fn url(srv: &MockServer, p: &str) -> Url {
    Url::parse(&format!("{}{p}", srv.uri())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_429_is_honoured() {
    let srv = MockServer::start().await;
    fails_then_ok(
        &srv,
        ResponseTemplate::new(429).insert_header("Retry-After", "7"),
        1,
    )
    .await;
    let c = client(&srv.uri(), AuthConfig::None);
    let t0 = tokio::time::Instant::now();
    let r = c.get(url(&srv, "/p")).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(7),
        "waited {:?}",
        t0.elapsed()
    );
    assert_eq!(r.meta.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn bursts_of_503_are_retried_then_give_up() {
    let srv = MockServer::start().await;
    fails_then_ok(&srv, ResponseTemplate::new(503), 3).await;
    let c = client(&srv.uri(), AuthConfig::None);
    assert_eq!(c.get(url(&srv, "/p")).await.unwrap().meta.attempts, 4);

    let srv2 = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&srv2)
        .await;
    let e = client(&srv2.uri(), AuthConfig::None)
        .get(url(&srv2, "/p"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e}");
    assert_eq!(
        srv2.received_requests().await.unwrap().len(),
        6,
        "bounded by max_attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_refreshed_once_then_needs_reauth() {
    let srv = MockServer::start().await;
    let token = |t: &str| {
        ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600}),
        )
    };
    // RFC 6749 §2.3.1: client id and secret in HTTP Basic ("id:secret").
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("authorization", "Basic aWQ6c2VjcmV0"))
        .respond_with(token("t1"))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("t2"))
        .mount(&srv)
        .await;
    Mock::given(path("/p"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&srv)
        .await;
    Mock::given(path("/p"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&srv)
        .await;
    Mock::given(path("/q"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&srv)
        .await;
    let c = client(&srv.uri(), refresh(&srv.uri()));
    c.get(url(&srv, "/p")).await.unwrap();
    let tokens =
        |reqs: Vec<wiremock::Request>| reqs.iter().filter(|r| r.url.path() == "/token").count();
    assert_eq!(
        tokens(srv.received_requests().await.unwrap()),
        2,
        "one refresh after the 401"
    );
    let e = c.get(url(&srv, "/q")).await.unwrap_err();
    assert!(matches!(e, Error::NeedsReauth { .. }), "{e}");
    assert!(!e.to_string().contains("t2") && !e.to_string().contains("secret"));
}

#[tokio::test]
async fn cross_origin_urls_are_refused_before_any_request() {
    let srv = MockServer::start().await;
    let c = client(
        &srv.uri(),
        AuthConfig::Bearer {
            token: "tok".to_owned().into(),
        },
    );
    let e = c
        .get(Url::parse("http://127.0.0.2:9/p").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::CrossOrigin { .. }), "{e}");
    assert!(srv.received_requests().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_fails_fast_and_a_probe_closes_it() {
    let srv = MockServer::start().await;
    fails_then_ok(&srv, ResponseTemplate::new(503), 5).await;
    let mut s = HttpSettings::default();
    s.retry.max_attempts = 5;
    let c = client_with(&srv.uri(), AuthConfig::None, s);
    let e = c.get(url(&srv, "/p")).await.unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e}");
    assert_eq!(c.breaker().state, connector_core::BreakerState::Open);
    let sent = srv.received_requests().await.unwrap().len();
    assert_eq!(sent, 5);
    // While open, the retry layer waits out the cool-down instead of calling;
    // the probe then succeeds and closes the breaker.
    let t0 = tokio::time::Instant::now();
    let r = c.get(url(&srv, "/p")).await.unwrap();
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(30),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.meta.attempts, 2, "one fast failure, one probe");
    assert_eq!(
        srv.received_requests().await.unwrap().len(),
        sent + 1,
        "only the probe reached the source"
    );
    assert_eq!(c.breaker().state, connector_core::BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn data_errors_never_open_the_breaker() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&srv)
        .await;
    let c = client_with(&srv.uri(), AuthConfig::None, HttpSettings::default());
    for _ in 0..20 {
        assert!(matches!(
            c.get(url(&srv, "/p")).await.unwrap_err(),
            Error::Client { status: 422, .. }
        ));
    }
    assert_eq!(c.breaker().state, connector_core::BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn requests_are_spaced_by_the_connection_rate_limit() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&srv)
        .await;
    let mut s = HttpSettings::default();
    s.rate_limit = connector_core::RateLimitSettings {
        requests_per_sec: Some(2.0),
        burst: 1,
        max_in_flight: Some(2),
    };
    let c = client_with(&srv.uri(), AuthConfig::None, s);
    // Two "streams" of the same connection share the bucket: 6 requests at
    // 2/s with a burst of 1 take at least 5 intervals of 500 ms. (Completion
    // times under paused time jump with the clock, so the bound is on the
    // whole run; the limiter's unit tests measure each gap.)
    let t0 = tokio::time::Instant::now();
    let run = |c: HttpClient, u: Url| async move {
        for _ in 0..3 {
            c.get(u.clone()).await.unwrap();
        }
    };
    tokio::join!(
        run(c.clone(), url(&srv, "/p")),
        run(c.clone(), url(&srv, "/p"))
    );
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(srv.received_requests().await.unwrap().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_429_slows_the_connection_down() {
    let srv = MockServer::start().await;
    fails_then_ok(
        &srv,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
        1,
    )
    .await;
    let mut s = HttpSettings::default();
    s.rate_limit = connector_core::RateLimitSettings {
        requests_per_sec: Some(8.0),
        burst: 1,
        max_in_flight: None,
    };
    let c = client_with(&srv.uri(), AuthConfig::None, s);
    c.get(url(&srv, "/p")).await.unwrap();
    assert_eq!(c.allowed_rate(), Some(4.0), "halved by the 429");
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_the_budget_defers_instead_of_sleeping() {
    let srv = MockServer::start().await;
    fails_then_ok(
        &srv,
        ResponseTemplate::new(429).insert_header("Retry-After", "3600"),
        1,
    )
    .await;
    let mut s = HttpSettings::default();
    s.run_budget = Some(std::time::Duration::from_secs(600));
    let c = client_with(&srv.uri(), AuthConfig::None, s);
    let t0 = tokio::time::Instant::now();
    let e = c.get(url(&srv, "/p")).await.unwrap_err();
    assert!(
        matches!(e, Error::Deferred { wait, .. } if wait == std::time::Duration::from_secs(3600)),
        "{e}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "did not sleep the hour"
    );
}

/// A 429 (or 503) with `Retry-After` on one request holds back every other
/// request of the connection: here, with a run budget shorter than the wait,
/// another stream's request defers without reaching the source.
#[tokio::test(start_paused = true)]
async fn a_retry_after_pauses_every_request_of_the_connection() {
    for status in [429, 503] {
        let srv = MockServer::start().await;
        Mock::given(path("/a"))
            .respond_with(ResponseTemplate::new(status).insert_header("Retry-After", "3600"))
            .mount(&srv)
            .await;
        Mock::given(path("/b"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .mount(&srv)
            .await;
        let mut s = HttpSettings::default();
        s.run_budget = Some(Duration::from_secs(600));
        let c = client_with(&srv.uri(), AuthConfig::None, s);
        let e = c.get(url(&srv, "/a")).await.unwrap_err();
        assert!(matches!(e, Error::Deferred { .. }), "{e}");
        let e = c.clone().get(url(&srv, "/b")).await.unwrap_err();
        assert!(
            matches!(e, Error::Deferred { wait, .. } if wait > Duration::from_secs(3000)),
            "{status}: {e}"
        );
        let sent: Vec<String> = srv
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect();
        assert_eq!(sent, ["/a"], "{status}: /b never reached the source");
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_reset_headers_are_honoured() {
    let srv = MockServer::start().await;
    fails_then_ok(
        &srv,
        ResponseTemplate::new(429).insert_header("X-RateLimit-Reset", "9"),
        1,
    )
    .await;
    let c = client(&srv.uri(), AuthConfig::None);
    let t0 = tokio::time::Instant::now();
    c.get(url(&srv, "/p")).await.unwrap();
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(9),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn api_keys_in_the_query_are_sent_but_never_recorded() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .and(wiremock::matchers::query_param("api_key", "k-5ecret"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&srv)
        .await;
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "api_key", "key": "k-5ecret", "query_param": "api_key"
    }))
    .unwrap();
    let r = client(&srv.uri(), cfg)
        .get(url(&srv, "/p?limit=5"))
        .await
        .unwrap();
    let recorded = serde_json::to_string(&r.meta).unwrap();
    assert!(
        !recorded.contains("k-5ecret") && recorded.contains("limit"),
        "{recorded}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_truncated_body_is_fetched_again_a_malformed_one_fails() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": [1, 2"))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": [1, 2]}"))
        .mount(&srv)
        .await;
    let c = client(&srv.uri(), AuthConfig::None);
    let check = |r: &connector_core::Response| {
        connector_core::records::split_page(&r.body, "/data", None)
            .map(|_| ())
            .map_err(|e| {
                if e.truncated {
                    Error::Truncated {
                        endpoint: "t".into(),
                        message: e.message,
                    }
                } else {
                    Error::Body {
                        endpoint: "t".into(),
                        message: e.message,
                    }
                }
            })
    };
    let (r, ()) = c.get_checked(url(&srv, "/p"), check).await.unwrap();
    assert_eq!(r.meta.attempts, 2);
    let srv2 = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&srv2)
        .await;
    let c = client(&srv2.uri(), AuthConfig::None);
    let e = c.get_checked(url(&srv2, "/p"), check).await.unwrap_err();
    assert!(matches!(e, Error::Body { .. }), "{e}");
    assert_eq!(
        srv2.received_requests().await.unwrap().len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_refused_static_credential_needs_reauthorization_at_once() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&srv)
        .await;
    let cfg = AuthConfig::Bearer {
        token: "static".to_owned().into(),
    };
    let e = client(&srv.uri(), cfg)
        .get(url(&srv, "/p"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NeedsReauth { detail, .. } if detail.contains("configured credential")),
        "{e}"
    );
    assert_eq!(
        srv.received_requests().await.unwrap().len(),
        1,
        "nothing to refresh"
    );
}

/// NetSuite signals a concurrency limit as HTTP 400 with an error code in
/// the body; its connector reads it as throttling.
fn netsuite_reading(a: &connector_core::ErrorAnswer<'_>) -> connector_core::ErrorReading {
    let v: serde_json::Value = serde_json::from_slice(a.body).unwrap_or_default();
    let throttled = v["o:errorDetails"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d["o:errorCode"] == "CONCURRENCY_LIMIT_EXCEEDED");
    connector_core::ErrorReading {
        throttled,
        message: v["title"].as_str().map(str::to_owned),
        ..Default::default()
    }
}

/// BambooHR puts its reason in a header.
fn bamboohr_reading(a: &connector_core::ErrorAnswer<'_>) -> connector_core::ErrorReading {
    connector_core::ErrorReading {
        throttled: false,
        message: a
            .headers
            .get("x-bamboohr-error-message")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_connector_reads_throttling_and_reasons_the_status_does_not_say() {
    let concurrency = ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
        "title": "Concurrency limit exceeded",
        "status": 400,
        "o:errorDetails": [{"detail": "Too many requests at once.", "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED"}]
    }));
    // Without the connector's reading, a 400 is a client error: it fails at once.
    let srv = MockServer::start().await;
    fails_then_ok(&srv, concurrency.clone(), 1).await;
    let e = client(&srv.uri(), AuthConfig::None)
        .get(url(&srv, "/p"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Client { status: 400, .. }), "{e}");
    // With it, the same answer is throttling: retried, and the rate halves.
    let srv = MockServer::start().await;
    fails_then_ok(&srv, concurrency, 1).await;
    let mut s = HttpSettings::default();
    s.rate_limit = connector_core::RateLimitSettings {
        requests_per_sec: Some(8.0),
        burst: 1,
        max_in_flight: None,
    };
    s.attempt_timeout = None;
    s.call_timeout = None;
    s.retry = s.retry.with_seed(1);
    s.retry.max_elapsed = Duration::from_secs(86_400);
    let c = common::client_reading(&srv.uri(), AuthConfig::None, s, netsuite_reading);
    let r = c.get(url(&srv, "/p")).await.unwrap();
    assert_eq!(r.meta.attempts, 2);
    assert_eq!(c.allowed_rate(), Some(4.0), "slowed down like a 429");

    // BambooHR's reason, from its header, is in the error, scrubbed of the key.
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(ResponseTemplate::new(403).insert_header(
            "X-BambooHR-Error-Message",
            "API key k3y-5ecret-91a7 lacks access to report fields",
        ))
        .mount(&srv)
        .await;
    let basic: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "basic", "username": "k3y-5ecret-91a7", "password": "x"
    }))
    .unwrap();
    let mut s = HttpSettings::default();
    s.attempt_timeout = None;
    s.call_timeout = None;
    let c = common::client_reading(&srv.uri(), basic, s, bamboohr_reading);
    let e = c.get(url(&srv, "/p")).await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 403") && e.contains("lacks access to report fields"),
        "{e}"
    );
    assert!(!e.contains("k3y-5ecret-91a7"), "{e}");
}

/// RFC 3986 percent-encoding of the unreserved set, written out here (not
/// the provider's).
fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// HMAC-SHA256 (RFC 2104) written out with `sha2`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |x: u8| k.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn oauth1_signs_a_post_as_sent_method_query_and_form_body() {
    let (srv, http) = suiteql_with_tba().await;
    let url = Url::parse(&format!(
        "{}/services/rest/query/v1/suiteql?limit=2&offset=0&q=a+b%2Bc",
        srv.uri()
    ))
    .unwrap();
    let req = connector_core::Request {
        method: connector_core::Method::Post,
        body: Some(connector_core::Body::Form(vec![
            ("q".into(), "SELECT id FROM employee".into()),
            ("é".into(), "=&".into()),
        ])),
        idempotent: true,
        ..connector_core::Request::get(url)
    };
    http.send(&req).await.unwrap();
    let got = &srv.received_requests().await.unwrap()[0];
    assert_oauth1_signed(got, &req.url);
    assert_eq!(
        got.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_request_that_is_not_idempotent_is_sent_again_only_when_it_was_not_processed() {
    let srv = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/write"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&srv)
        .await;
    Mock::given(method("POST"))
        .and(path("/throttled"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&srv)
        .await;
    Mock::given(method("POST"))
        .and(path("/throttled"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&srv)
        .await;
    let http = common::client_with(&srv.uri(), AuthConfig::None, common::quick_settings(5));
    let post = |p: &str| connector_core::Request {
        method: connector_core::Method::Post,
        body: Some(connector_core::Body::Json(serde_json::json!({"a": 1}))),
        idempotent: false,
        ..connector_core::Request::get(Url::parse(&format!("{}{p}", srv.uri())).unwrap())
    };
    let e = http.send(&post("/write")).await.unwrap_err();
    assert!(matches!(e, Error::Server { status: 502, .. }), "{e}");
    http.send(&post("/throttled")).await.unwrap();
    let sent = |p: &'static str| {
        let srv = &srv;
        async move {
            srv.received_requests()
                .await
                .unwrap()
                .iter()
                .filter(|r| r.url.path() == p)
                .count()
        }
    };
    assert_eq!(
        sent("/write").await,
        1,
        "a 502 may have come after the write"
    );
    assert_eq!(
        sent("/throttled").await,
        2,
        "a 429 was not processed: sent again"
    );
    // The same POST declared idempotent (a report) is retried on 502.
    let mut report = post("/write");
    report.idempotent = true;
    assert!(http.send(&report).await.is_err());
    assert!(sent("/write").await > 2);
}

/// Checks a received request's OAuth 1 signature (secrets `cs&1`, `ts 2`)
/// against RFC 5849 §3.4.1, rebuilt from what the server received: the
/// method, the URL without its query, and every query, form-body and
/// `oauth_` parameter (a JSON body is not a parameter).
fn assert_oauth1_signed(got: &wiremock::Request, sent: &Url) {
    use base64::Engine;
    let auth = got.headers.get("authorization").unwrap().to_str().unwrap();
    let param = |name: &str| -> String {
        let v = auth
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        percent_decode(v)
    };
    let form = got
        .headers
        .get("content-type")
        .is_some_and(|c| c == "application/x-www-form-urlencoded");
    let mut params: Vec<(String, String)> = got
        .url
        .query_pairs()
        .chain(url::form_urlencoded::parse(if form {
            &got.body
        } else {
            &[]
        }))
        .map(|(k, v)| (rfc3986(&k), rfc3986(&v)))
        .collect();
    for k in [
        "oauth_consumer_key",
        "oauth_nonce",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_token",
        "oauth_version",
    ] {
        params.push((k.to_owned(), rfc3986(&param(k))));
    }
    params.sort();
    let normalized: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // (The mock rebuilds the URL without the port: the origin is the one addressed.)
    let mut base_uri = sent.clone();
    base_uri.set_query(None);
    assert_eq!(base_uri.path(), got.url.path());
    let base = format!(
        "{}&{}&{}",
        got.method.as_str(),
        rfc3986(base_uri.as_str()),
        rfc3986(&normalized.join("&"))
    );
    let key = format!("{}&{}", rfc3986("cs&1"), rfc3986("ts 2"));
    let want = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(key.as_bytes(), base.as_bytes()));
    assert_eq!(param("oauth_signature"), want, "base string: {base}");
    assert!(auth.starts_with("OAuth realm=\"1234567_SB1\""), "{auth}");
    assert_eq!(param("oauth_signature_method"), "HMAC-SHA256");
}

/// SuiteQL: a POST of a JSON query, `limit` and `offset` in the URL; the
/// signature covers the query parameters, not the JSON body.
#[tokio::test]
async fn oauth1_signs_a_suiteql_post_by_its_query_not_its_json_body() {
    let (srv, http) = suiteql_with_tba().await;
    let url = Url::parse(&format!(
        "{}/services/rest/query/v1/suiteql?limit=1000",
        srv.uri()
    ))
    .unwrap();
    let req = connector_core::Request {
        method: connector_core::Method::Post,
        body: Some(connector_core::Body::Json(
            serde_json::json!({"q": "SELECT id FROM transaction WHERE id > 5 ORDER BY id"}),
        )),
        idempotent: true,
        headers: vec![("Prefer".into(), "transient".into())],
        ..connector_core::Request::get(url)
    };
    http.send(&req).await.unwrap();
    let got = &srv.received_requests().await.unwrap()[0];
    assert_eq!(got.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(got.headers.get("prefer").unwrap(), "transient");
    assert_oauth1_signed(got, &req.url);
}

/// A SuiteQL endpoint answering `{}`, and a client signing with TBA
/// (secrets `cs&1`, `ts 2`, realm `1234567_SB1`).
async fn suiteql_with_tba() -> (MockServer, connector_core::HttpClient) {
    let srv = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/rest/query/v1/suiteql"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&srv)
        .await;
    let auth: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "oauth1_tba", "realm": "1234567_SB1", "consumer_key": "ck",
        "consumer_secret": "cs&1", "token_id": "tid", "token_secret": "ts 2"
    }))
    .unwrap();
    let http = common::client_with(&srv.uri(), auth, common::quick_settings(3));
    (srv, http)
}
