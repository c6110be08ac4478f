//! A hostile source for property tests: strategies for the answers a broken
//! or malicious API gives (any status, absurd wait headers, odd bodies) and
//! a mock that plays a scripted sequence of them.
//!
//! ```no_run
//! use connector_core::testkit::hostile::{Answer, answer, junk_body, play};
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #[test]
//!     fn whatever_the_source_answers_the_run_ends(
//!         answers in proptest::collection::vec(answer(junk_body()), 1..5),
//!     ) {
//!         let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!         rt.block_on(async {
//!             let srv = wiremock::MockServer::start().await;
//!             play(&srv, answers, Answer::ok(r#"{"data": []}"#)).await;
//!             // … run the connector against `srv.uri()` and check how the run ended
//!         });
//!     }
//! }
//! ```

use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// One answer of the source.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    /// A 200 with `body` and no headers.
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// Header values as hostile sources write them: numbers of every size and
/// sign, fractions and exponents, far dates, words, nothing.
pub fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[0-9]{1,40}",
        "[0-9]{1,5}\\.[0-9]{1,5}[eE][+-]?[0-9]{1,4}",
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
        "[ -~]{0,30}",
    ]
}

/// Bodies that are not a page: markup, cut JSON, a records object instead
/// of an array, deep nesting, arbitrary text.
pub fn junk_body() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<html>Service temporarily unavailable</html>".to_owned()),
        Just("{\"total\": 3, \"data\": [{\"id\": \"a\"}".to_owned()),
        Just("{\"data\": {}}".to_owned()),
        (1usize..3000).prop_map(|d| format!("{{\"data\": [{}{}]}}", "[".repeat(d), "]".repeat(d))),
        (1usize..3000).prop_map(|d| "{\"a\":".repeat(d)),
        "\\PC{0,80}",
    ]
}

/// Answers with a status (mostly 200; 429, 5xx, 4xx), up to two wait or
/// date headers with hostile values, and a body from `body`.
pub fn answer(body: impl Strategy<Value = String>) -> impl Strategy<Value = Answer> {
    let status = prop_oneof![
        6 => Just(200u16),
        1 => Just(429),
        1 => Just(503),
        1 => Just(500),
        1 => Just(400),
        1 => Just(401),
        1 => Just(404),
        1 => 100u16..600,
    ];
    let name = prop_oneof![
        Just("retry-after"),
        Just("x-ratelimit-reset"),
        Just("ratelimit-reset"),
        Just("link"),
        Just("date"),
    ];
    (
        status,
        proptest::collection::vec((name, header_value()), 0..3),
        body,
    )
        .prop_map(|(status, headers, body)| Answer {
            status,
            headers,
            body,
        })
}

/// Answers every GET with the next of `answers`, then with `after`
/// forever. Header values the HTTP library cannot carry are left out.
pub async fn play(srv: &MockServer, answers: Vec<Answer>, after: Answer) {
    let script = Arc::new(Mutex::new(answers.into_iter()));
    Mock::given(method("GET"))
        .respond_with(move |_: &Request| {
            let next = script.lock().ok().and_then(|mut s| s.next());
            let a = next.unwrap_or_else(|| after.clone());
            let mut r = ResponseTemplate::new(a.status).set_body_string(a.body);
            for (k, v) in a.headers {
                if reqwest::header::HeaderValue::from_str(&v).is_ok() {
                    r = r.insert_header(k, v.as_str());
                }
            }
            r
        })
        .mount(srv)
        .await;
}
