//! Property tests: whatever a source sends in headers, bodies, token
//! responses and page envelopes, the core never panics, never waits beyond
//! its bounds, and every call ends in a result or a classified error.

mod common;

use common::{client_with, quick_settings, stream};
use connector_core::records::split_page;
use connector_core::retry::{parse_rate_limit_reset, parse_retry_after};
use connector_core::secret::Scrubber;
use connector_core::testkit::hostile::{Answer, answer, header_value, junk_body, play};
use connector_core::transport::MAX_SOURCE_WAIT;
use connector_core::{AuthConfig, PageFacts, PageToken, Pagination};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn wait_headers_never_panic_and_stay_bounded(v in header_value()) {
        let now = SystemTime::now();
        if let Some(d) = parse_retry_after(&v, now) {
            prop_assert!(d <= MAX_SOURCE_WAIT);
        }
        if let Ok(hv) = reqwest::header::HeaderValue::from_str(&v) {
            for name in ["x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"] {
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(name, hv.clone());
                if let Some(d) = parse_rate_limit_reset(&h, now) {
                    prop_assert!(d <= MAX_SOURCE_WAIT);
                }
            }
        }
    }

    #[test]
    fn retry_decisions_never_overflow(
        backoff in any::<u64>(), after in proptest::option::of(any::<u64>()),
        elapsed in any::<u64>(), budget in proptest::option::of(any::<u64>()),
    ) {
        let p = connector_core::RetryPolicy::default().with_seed(1);
        let _ = p.decide(
            Duration::from_millis(backoff),
            after.map(Duration::from_secs),
            Duration::from_secs(elapsed),
            budget.map(Duration::from_secs),
        );
    }

    #[test]
    fn page_envelopes_never_panic(body in page_body(), ptr in "(/[a-z]{0,3}){0,3}", total in "(/[a-z]{0,5})?") {
        let total = (!total.is_empty()).then_some(total.as_str());
        if let Ok(p) = split_page(body.as_bytes(), &ptr, total) {
            prop_assert!(p.records.len() <= body.len());
        }
    }

    #[test]
    fn pagination_arithmetic_never_overflows(
        offset in any::<u64>(), records in 0usize..100_000, total in proptest::option::of(any::<u64>()),
        limit in 1u32..=u32::MAX, first in any::<u64>(),
    ) {
        let facts = PageFacts { records, total, next: None };
        let o = Pagination::offset_limit(limit);
        let t = PageToken::Offset { offset };
        let _ = o.next(&t, &facts);
        let _ = o.next_blind(&t, total, Some(records as u64));
        prop_assert!(o.ahead(&t, &facts).take(64).count() <= 64);
        let p = Pagination::PageNumber {
            size: limit, page_param: "page", size_param: "size", first_page: first, total_pages_at: None,
        };
        let t = PageToken::Page { page: offset };
        let _ = p.next(&t, &facts);
        let _ = p.next_blind(&t, total, None);
        let _ = p.ahead(&t, &facts).take(64).count();
    }

    #[test]
    fn scrubbing_never_panics_and_removes_the_secret(
        prefix in "\\PC{0,40}", suffix in "\\PC{0,40}", secret in "[!-~]{6,30}",
    ) {
        let s = Scrubber::new([&secrecy::SecretString::from(secret.clone())]);
        let out = s.scrub(&format!("{prefix}{secret}{suffix}"));
        prop_assert!(!out.contains(&secret), "{out}");
    }
}

/// JSON-ish page bodies: valid envelopes with odd totals and records, or
/// the test kit's junk (cut, deeply nested, not JSON at all).
fn page_body() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{1,30}(e[0-9]{1,4})?",
        "\"[ -~]{0,10}\"",
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
    ];
    prop_oneof![
        (
            scalar.clone(),
            proptest::collection::vec(scalar.clone(), 0..5)
        )
            .prop_map(|(t, rs)| {
                let recs: Vec<String> = rs.iter().map(|r| format!("{{\"id\": {r}}}")).collect();
                format!("{{\"total\": {t}, \"data\": [{}]}}", recs.join(","))
            }),
        junk_body(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Sequences of hostile answers through the whole stack and the pager
    /// (token endpoint included): every walk ends, with pages or a
    /// classified error, and never sleeps past its bounds.
    #[test]
    fn any_sequence_of_answers_ends_the_walk(
        answers in proptest::collection::vec(answer(page_body()), 1..6),
        token in prop_oneof![
            Just(serde_json::json!({"access_token": "at", "expires_in": 18446744073709551615u64})),
            Just(serde_json::json!({"access_token": "at", "expires_in": "-1"})),
            Just(serde_json::json!({"access_token": "at", "token_type": "mac"})),
            Just(serde_json::json!({"token": "x"})),
            Just(serde_json::json!({"access_token": "at", "expires_in": 0})),
        ],
        paging in prop_oneof![
            Just(Pagination::offset_limit(2)),
            Just(Pagination::cursor("cursor", "/next")),
            Just(Pagination::NextLink(connector_core::LinkAt::Pointer("/next"))),
            Just(Pagination::LinkHeader),
        ],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(walk(answers, token, paging))?;
    }
}

async fn walk(
    answers: Vec<Answer>,
    token: serde_json::Value,
    paging: Pagination,
) -> Result<(), TestCaseError> {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let srv = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token))
        .mount(&srv)
        .await;
    play(&srv, answers, Answer::ok("{\"data\": []}")).await;
    let mut s = quick_settings(5);
    s.retry.max_attempts = 3;
    s.retry.max_retry_after = Duration::from_millis(50);
    s.attempt_timeout = Some(Duration::from_secs(5));
    s.call_timeout = Some(Duration::from_secs(10));
    s.max_body_bytes = 1 << 20;
    let base = format!("{}/", srv.uri());
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
        "strategy": "oauth2_client_credentials", "token_url": format!("{}token", base),
        "client_id": "c", "client_secret": "s"}))
    .unwrap();
    let client = client_with(&base, cfg, s);
    let def = stream(paging);
    let started = std::time::Instant::now();
    let start = def.pagination.first();
    let mut pager = connector_core::Pager::new(client, def, start, None, 2);
    let mut pages = 0;
    while let Some(p) = pager.next_page().await {
        match p {
            Ok(_) => pages += 1,
            Err(e) => {
                // A classified error, with a stable kind.
                prop_assert!(!e.kind().is_empty());
                break;
            }
        }
        prop_assert!(pages < 50, "the walk does not end");
    }
    prop_assert!(started.elapsed() < Duration::from_secs(20));
    Ok(())
}
