//! What a hostile or broken source can send, against the HTTP stack and the
//! pager: absurd waits, token lifetimes and totals, endless bodies, echoed
//! credentials, capped page sizes and unreadable pages. None may panic,
//! exhaust memory or leak a secret.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::{client_with, quick_settings, stream};
use connector_core::transport::MAX_SOURCE_WAIT;
use connector_core::{AuthConfig, Error, HttpClient, PageToken, Pager, Pagination, SyncMode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn client(base: &str, auth_cfg: AuthConfig) -> HttpClient {
    client_with(base, auth_cfg, quick_settings(3))
}

fn url(srv: &MockServer, p: &str) -> Url {
    Url::parse(&format!("{}{p}", srv.uri())).unwrap()
}

fn records(from: usize, n: usize) -> Vec<serde_json::Value> {
    (from..from + n)
        .map(|i| serde_json::json!({"id": i.to_string()}))
        .collect()
}

#[tokio::test]
async fn absurd_waits_defer_the_call_instead_of_panicking() {
    for (name, value) in [
        ("X-RateLimit-Reset", "1e20"),
        (
            "X-RateLimit-Reset",
            "179769313486231570000000000000000000000",
        ),
        ("Retry-After", "9000000000000"),
        ("Retry-After", "99999999999999999999999999999"),
        ("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ("RateLimit-Reset", "18446744073709551616"),
    ] {
        let srv = MockServer::start().await;
        Mock::given(path("/p"))
            .respond_with(ResponseTemplate::new(429).insert_header(name, value))
            .mount(&srv)
            .await;
        let e = client(&srv.uri(), AuthConfig::None)
            .get(url(&srv, "/p"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Deferred { wait, .. } if wait == MAX_SOURCE_WAIT),
            "{name}: {value} gave {e}"
        );
    }
}

#[tokio::test]
async fn absurd_token_lifetimes_are_clamped_or_refused() {
    for (expires_in, ok) in [
        (serde_json::json!(18446744073709551615u64), true),
        (serde_json::json!(1e300), true),
        (serde_json::json!("3600"), true),
        (serde_json::json!(-5), false),
        (serde_json::json!("forever"), false),
    ] {
        let srv = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "at-1", "token_type": "Bearer", "expires_in": expires_in})))
            .mount(&srv)
            .await;
        Mock::given(path("/p"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .mount(&srv)
            .await;
        let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
            "strategy": "oauth2_client_credentials", "token_url": format!("{}/token", srv.uri()),
            "client_id": "c", "client_secret": "s-5ecret"}))
        .unwrap();
        let r = client(&srv.uri(), cfg).get(url(&srv, "/p")).await;
        match (ok, r) {
            (true, Ok(_)) => {}
            (false, Err(Error::Body { message, .. })) => {
                assert!(message.contains("expires_in"), "{message}")
            }
            (_, other) => panic!("expires_in {expires_in}: {other:?}"),
        }
    }
}

/// A source that never stops sending: chunked, no length, forever.
async fn endless_source() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "[".repeat(65536));
                while sock.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_without_reading_them_whole() {
    let base = endless_source().await;
    let mut s = quick_settings(3);
    s.max_body_bytes = 1 << 20;
    let c = client_with(&base, AuthConfig::None, s.clone());
    let e = c
        .get(Url::parse(&format!("{base}/items")).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::BodyTooLarge { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("/items"), "names the endpoint: {e}");
    // With a Content-Length above the limit, nothing is read at all.
    let srv = MockServer::start().await;
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2 << 20)))
        .mount(&srv)
        .await;
    let e = client_with(&srv.uri(), AuthConfig::None, s)
        .get(url(&srv, "/big"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BodyTooLarge { .. }), "{e}");
    assert_eq!(
        srv.received_requests().await.unwrap().len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn credentials_a_source_echoes_back_never_reach_an_error() {
    let srv = MockServer::start().await;
    Mock::given(path("/p"))
        .respond_with(|req: &Request| {
            let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
            let key = req.headers.get("x-api-key").map(|v| v.to_str().unwrap().to_owned());
            ResponseTemplate::new(400).set_body_string(format!(
                "{{\"error\": \"bad request\", \"echo\": {{\"Authorization\": \"{auth}\", \"key\": \"{}\", \"url\": \"/p?api_key=zz-other-5ecret&x=1\"}}}}",
                key.unwrap_or_default()
            ))
        })
        .mount(&srv)
        .await;
    for cfg in [
        serde_json::json!({"strategy": "bearer", "token": "tok-5ecret-abc"}),
        serde_json::json!({"strategy": "basic", "username": "user-5ecret", "password": "pw-5ecret"}),
    ] {
        let cfg: AuthConfig = serde_json::from_value(cfg).unwrap();
        let e = client(&srv.uri(), cfg)
            .get(url(&srv, "/p"))
            .await
            .unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("HTTP 400"), "{text}");
        for secret in ["5ecret", "dXNlci01ZWNyZXQ6cHctNWVjcmV0"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

#[tokio::test]
async fn a_total_of_ten_trillion_is_walked_lazily() {
    let srv = MockServer::start().await;
    Mock::given(path("/items"))
        .and(query_param("offset", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"total": 10_000_000_000_000u64, "data": records(0, 100)}),
        ))
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 10_000_000_000_000u64, "data": []})),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::offset_limit(100));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Offset { offset: 0 }, None, 4);
    let mut pages = 0;
    while let Some(p) = pager.next_page().await {
        p.unwrap();
        pages += 1;
    }
    assert_eq!(pages, 2, "the empty page at offset 100 ends the pull");
    let requested = srv.received_requests().await.unwrap().len();
    assert!(
        requested <= 1 + 4,
        "{requested} requests: predictions are a bounded window"
    );
}

#[tokio::test]
async fn a_server_capping_the_page_size_is_paged_to_its_total() {
    let srv = MockServer::start().await;
    // 250 records, 100 asked per page, at most 40 served.
    Mock::given(path("/items"))
        .respond_with(|req: &Request| {
            let offset: usize = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "offset")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            let n = 40.min(250usize.saturating_sub(offset));
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 250, "data": records(offset, n)}))
        })
        .mount(&srv)
        .await;
    let def = stream(Pagination::offset_limit(100));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Offset { offset: 0 }, None, 3);
    let mut ids = std::collections::BTreeSet::new();
    while let Some(p) = pager.next_page().await {
        let p = p.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&p.response.body).unwrap();
        for r in body["data"].as_array().unwrap() {
            ids.insert(r["id"].as_str().unwrap().parse::<usize>().unwrap());
        }
    }
    assert_eq!(ids.len(), 250, "no record lost to the short pages");
}

#[tokio::test]
async fn next_links_lose_auth_parameters_and_store_masked() {
    let srv = MockServer::start().await;
    let base = srv.uri();
    Mock::given(path("/items"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": records(1, 1)})),
        )
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": records(0, 1),
            "next": format!("{base}/items?page=2&api_key=k-5ecret&sig=s1gnature"),
        })))
        .mount(&srv)
        .await;
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "api_key", "key": "k-5ecret", "query_param": "api_key"}))
    .unwrap();
    let def = stream(Pagination::NextLink(connector_core::LinkAt::Pointer(
        "/next",
    )));
    let c = client(&format!("{base}/"), cfg);
    let mut pager = Pager::new(c.clone(), def, PageToken::Start, None, 1);
    let first = pager.next_page().await.unwrap().unwrap();
    let next = first.next.clone().unwrap();
    let PageToken::Link { url: link, .. } = &next else {
        panic!("{next:?}")
    };
    assert!(
        !link.contains("k-5ecret"),
        "auth parameter stripped: {link}"
    );
    let stored = serde_json::to_string(&c.storable_token(&next)).unwrap();
    assert!(
        !stored.contains("s1gnature") && stored.contains("page=2"),
        "{stored}"
    );
    assert!(c.storable_token(&next).is_redacted());
    pager.next_page().await.unwrap().unwrap();
    let second = &srv.received_requests().await.unwrap()[1];
    let keys: Vec<_> = second
        .url
        .query_pairs()
        .filter(|(k, _)| k == "api_key")
        .collect();
    assert_eq!(keys.len(), 1, "the key is sent once: {}", second.url);
}

#[tokio::test]
async fn an_unreadable_page_is_handed_over_and_skipped_only_under_a_total() {
    let srv = MockServer::start().await;
    Mock::given(path("/items"))
        .and(query_param("offset", "0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 250, "data": records(0, 100)})),
        )
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .and(query_param("offset", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(b"\xff\xfe<html>".to_vec()))
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .and(query_param("offset", "200"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 250, "data": records(200, 50)})),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::offset_limit(100));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(
        c.clone(),
        def.clone(),
        PageToken::Offset { offset: 0 },
        None,
        2,
    );
    let mut seen = Vec::new();
    while let Some(p) = pager.next_page().await {
        let p = p.unwrap();
        assert!(p.stuck.is_none());
        seen.push((p.token.clone(), p.unparseable.clone()));
    }
    assert_eq!(seen.len(), 3);
    assert!(
        seen[1].1.as_deref().is_some_and(|m| m.contains("UTF-8")),
        "{seen:?}"
    );
    // Without a total yet, the offset still tells the next page: the pull
    // goes on and the readable page gives the total.
    let mut pager = Pager::new(
        c.clone(),
        def.clone(),
        PageToken::Offset { offset: 100 },
        None,
        1,
    );
    let p = pager.next_page().await.unwrap().unwrap();
    assert!(p.unparseable.is_some() && p.stuck.is_none());
    assert_eq!(p.next, Some(PageToken::Offset { offset: 200 }));
    let p = pager.next_page().await.unwrap().unwrap();
    assert!(p.unparseable.is_none() && p.next.is_none());
    // A source that answers nothing readable is given up on after a few pages.
    let srv2 = MockServer::start().await;
    Mock::given(path("/items"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
        .mount(&srv2)
        .await;
    let c2 = client(&format!("{}/", srv2.uri()), AuthConfig::None);
    let mut pager = Pager::new(c2, def, PageToken::Offset { offset: 0 }, None, 1);
    let mut pages = 0;
    let mut stuck = None;
    while let Some(p) = pager.next_page().await {
        let p = p.unwrap();
        pages += 1;
        stuck = stuck.or(p.stuck);
    }
    assert_eq!(pages, 3, "three unreadable pages in a row");
    assert!(stuck.is_some_and(|w| w.contains("offset 200")));
}

#[test]
fn incremental_streams_cannot_page_by_offset() {
    let mut def = stream(Pagination::offset_limit(100));
    def.cursor = Some("/updated");
    def.mode = SyncMode::since("since", Duration::from_secs(60));
    let e = def.validate().unwrap_err().to_string();
    assert!(
        e.contains("items") && e.contains("cursor or next link"),
        "{e}"
    );
    // Over a snapshot the source answers as of the pull's moment, offsets
    // cannot shift: allowed, with a hook that sends the moment.
    def.snapshot = true;
    let e = def.validate().unwrap_err().to_string();
    assert!(e.contains("snapshot stream needs a `request` hook"), "{e}");
    def.request = Some(connector_core::RequestHook::new(|req, page| {
        if let Some(t) = page.as_of_text() {
            req.url.query_pairs_mut().append_pair("asOf", &t);
        }
        Ok(())
    }));
    def.validate().unwrap();
    def.snapshot = false;
    assert!(def.validate().is_err());
    def.pagination = Pagination::cursor("cursor", "/next");
    def.validate().unwrap();
    def.cursor = None;
    assert!(def.validate().unwrap_err().to_string().contains("cursor"));
}

#[tokio::test]
async fn a_body_cut_short_on_every_attempt_is_handed_over_not_asked_for_forever() {
    let srv = MockServer::start().await;
    Mock::given(path("/items"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"total\": 3, \"data\": [{\"id\": \"a\"}"),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::offset_limit(100));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Offset { offset: 0 }, None, 1);
    let p = pager.next_page().await.unwrap().unwrap();
    let why = p.unparseable.expect("handed over as unreadable");
    assert!(why.contains("ended early"), "{why}");
    assert_eq!(
        p.next,
        Some(PageToken::Offset { offset: 100 }),
        "the offset tells the next page"
    );
}

#[tokio::test]
async fn a_link_header_carries_the_pull_past_an_unreadable_body() {
    let srv = MockServer::start().await;
    let base = srv.uri();
    Mock::given(path("/items"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": records(1, 1)})),
        )
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("<html>oops</html>")
                .insert_header(
                    "Link",
                    format!("<{base}/items?page=2>; rel=\"next\"").as_str(),
                ),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::LinkHeader);
    let c = client(&format!("{base}/"), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Start, None, 1);
    let first = pager.next_page().await.unwrap().unwrap();
    assert!(first.unparseable.is_some() && first.stuck.is_none());
    let second = pager.next_page().await.unwrap().unwrap();
    assert!(second.unparseable.is_none() && second.next.is_none());
}

#[tokio::test]
async fn an_empty_page_before_the_total_is_an_incomplete_pull_not_the_end() {
    let srv = MockServer::start().await;
    Mock::given(path("/items"))
        .and(query_param("offset", "0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 50_000, "data": records(0, 100)})),
        )
        .mount(&srv)
        .await;
    Mock::given(path("/items"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"total": 50_000, "data": []})),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::offset_limit(100));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Offset { offset: 0 }, None, 1);
    pager.next_page().await.unwrap().unwrap();
    let p = pager.next_page().await.unwrap().unwrap();
    let why = p.stuck.expect("an incomplete pull is said so");
    assert!(
        why.contains("total of 50000") && why.contains("offset 100"),
        "{why}"
    );
    assert!(pager.next_page().await.is_none());
}

#[tokio::test]
async fn a_cursor_that_cannot_be_stored_stops_the_pull_clearly() {
    let srv = MockServer::start().await;
    Mock::given(path("/items"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{\"data\": [{\"id\": \"a\"}], \"next\": \"c\\u0000d\"}"),
        )
        .mount(&srv)
        .await;
    let def = stream(Pagination::cursor("cursor", "/next"));
    let c = client(&format!("{}/", srv.uri()), AuthConfig::None);
    let mut pager = Pager::new(c, def, PageToken::Start, None, 1);
    let p = pager.next_page().await.unwrap().unwrap();
    assert!(p.next.is_none());
    assert!(p.stuck.is_some_and(|w| w.contains("NUL")));
}
