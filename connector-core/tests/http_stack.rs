//! The HTTP stack against a mock source: retries under paused time, 401 handling, origin check.

use connector_core::{AuthConfig, Error, HttpClient, HttpSettings, auth, http};
use std::time::Duration;
use url::Url;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(base: &str, auth_cfg: AuthConfig) -> HttpClient {
    let mut s = HttpSettings::default();
    s.attempt_timeout = None; // paused time: no timer may race the loopback I/O
    s.retry = s.retry.with_seed(1);
    // Under paused time, tokio jumps the clock to the next timer (e.g. hyper's
    // idle-pool timer) while a request waits on loopback I/O, so elapsed time
    // is inflated: these tests bound retries by attempts only.
    s.retry.max_elapsed = Duration::from_secs(86_400);
    let c = http::base_client("test").unwrap();
    HttpClient::new(
        "test",
        Url::parse(base).unwrap(),
        auth::provider(&auth_cfg, c.clone()),
        c,
        s,
    )
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
