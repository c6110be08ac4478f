//! Finance end to end: SAP S/4HANA (OData v2) and NetSuite (SuiteQL)
//! shaped sources on loopback, into the canonical finance model with exact
//! money, balanced-or-flagged journal entries and provenance.

mod common;

use common::*;
use connector_core::{AuthConfig, Connector, RawStore};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use sync_daemon::{explain, pipeline, registry::Built, status};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn sap_fixture(name: &str, base: &str) -> String {
    let p = fixture_dir().join("../../sap-s4hana").join(name);
    std::fs::read_to_string(&p)
        .unwrap()
        .replace("{{base}}", base)
}

/// An SAP-shaped server over the recorded pages: `$skip` pages of three
/// for the master data, the server's own `$skiptoken` links for the
/// journal; every request must carry `sap-client=100` and `$format=json`
/// (else SAP's error body). The journal requests are kept.
async fn sap_server(journal: Vec<String>) -> (MockServer, Arc<Mutex<Vec<String>>>) {
    let srv = MockServer::start().await;
    let base = srv.uri();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(move |r: &Request| {
            let q: std::collections::HashMap<String, String> =
                r.url.query_pairs().into_owned().collect();
            let get = |k: &str| q.get(k).map(String::as_str);
            if get("sap-client") != Some("100") || get("$format") != Some("json") {
                return ResponseTemplate::new(400).set_body_json(json!({"error": {
                    "code": "/IWBEP/CM_MGW_RT/001",
                    "message": {"lang": "en", "value": "sap-client or $format missing"},
                    "innererror": {"transactionid": "ABC123"}}}));
            }
            let path = r.url.path();
            let page = |name: &str| {
                ResponseTemplate::new(200)
                    .set_body_raw(sap_fixture(name, &base).into_bytes(), "application/json")
            };
            let skip = get("$skip").unwrap_or("0");
            if path.ends_with("/A_CostCenter") {
                page(if skip == "0" {
                    "cost-centers-1.json"
                } else {
                    "cost-centers-2.json"
                })
            } else if path.ends_with("/A_GLAccountInChartOfAccounts") {
                page(if skip == "0" {
                    "gl-accounts-1.json"
                } else {
                    "gl-accounts-2.json"
                })
            } else if path.ends_with("/A_Supplier") {
                page("suppliers-1.json")
            } else if path.ends_with("/A_JournalEntryItemBasic") {
                log.lock()
                    .unwrap()
                    .push(r.url.query().unwrap_or("").to_owned());
                let i = match get("$skiptoken") {
                    None => 0,
                    Some("5") => 1,
                    Some(_) => 2,
                };
                ResponseTemplate::new(200).set_body_raw(
                    journal[i].replace("{{base}}", &base).into_bytes(),
                    "application/json",
                )
            } else {
                ResponseTemplate::new(404)
            }
        })
        .mount(&srv)
        .await;
    (srv, seen)
}

fn sap_ctx(pool: &sqlx::PgPool, store: &RawStore, srv: &MockServer) -> pipeline::Ctx {
    let sap = sap_s4hana::SapS4Hana::new(
        serde_json::from_value(json!({
            "base_url": srv.uri(),
            "sap_client": "100",
            "company_codes": ["1010"],
            "page_size": 3,
            "journal_lookback": "2d",
        }))
        .unwrap(),
    )
    .unwrap();
    let auth: AuthConfig = serde_json::from_value(
        json!({"strategy": "basic", "username": "COMM_USER", "password": "pw"}),
    )
    .unwrap();
    pipeline::Ctx {
        connection: "sap".into(),
        ..ctx_built(pool, store, Built::new(sap).unwrap(), &auth)
    }
}

async fn text(pool: &sqlx::PgPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

fn recorded_journal() -> Vec<String> {
    [
        "journal-1010-1.json",
        "journal-1010-2.json",
        "journal-1010-3.json",
    ]
    .iter()
    .map(|n| sap_fixture(n, "{{base}}"))
    .collect()
}

#[tokio::test]
async fn sap_entries_spanning_pages_balance_and_the_unbalanced_are_flagged_and_counted() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (srv, seen) = sap_server(recorded_journal()).await;
    let store = RawStore::in_memory();
    let c = sap_ctx(&pool, &store, &srv);

    let s = pipeline::sync(&c, None).await.unwrap();
    assert_eq!(s.outcome, "succeeded");
    // 4 cost center periods, 5 accounts, 3 suppliers, 11 journal items of
    // which two are refused: an unknown currency, yen with decimals.
    assert_eq!(s.dead_lettered, 2);
    assert_eq!(count(&pool, "select count(*) from cost_center").await, 4);
    assert_eq!(count(&pool, "select count(*) from gl_account").await, 5);
    assert_eq!(count(&pool, "select count(*) from supplier").await, 3);
    assert_eq!(count(&pool, "select count(*) from journal_line").await, 9);
    let dead: Vec<(String, Option<String>)> =
        sqlx::query_as("select field, pointer from dead_letter order by field")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        dead,
        vec![
            (
                "amount".into(),
                Some("/AmountInTransactionCurrency | /DebitCreditCode".into())
            ),
            ("currency".into(), Some("/TransactionCurrency".into())),
        ]
    );

    // Exact amounts, signed: a credit SAP sent unsigned (H) is negative.
    let amount = |line: &'static str| {
        let pool = pool.clone();
        async move {
            text(
                &pool,
                &format!(
                    "select l.amount::text || ' ' || l.currency || ' / ' || l.amount_company::text || ' ' || l.company_currency
                     from journal_line l join source_link s on s.canonical_id = l.id
                     where s.entity_type = 'journal_line' and s.source_id = '{line}'"
                ),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        amount("1010|2024|100000002|000002").await,
        "-150000 JPY / -925.93 EUR"
    );
    assert_eq!(
        amount("1010|2024|100000003|000001").await,
        "100.125 KWD / 305.50 EUR"
    );
    assert_eq!(
        amount("1010|2024|100000001|000002").await,
        "-1000.00 USD / -920.00 EUR"
    );

    // The entry whose lines are on two pages balances; 100000004 is off by
    // a cent, 100000006 has one line; 100000005 has no line that loaded.
    assert_eq!((s.balance.entries, s.balance.unbalanced), (5, 2));
    let imbalance = |doc: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<Value>>(sqlx::AssertSqlSafe(format!(
                "select e.imbalance from journal_entry e join source_link s on s.canonical_id = e.id
                 where s.entity_type = 'journal_entry' and s.source_id = '1010|2024|{doc}'
                   and e.balance_checked_at is not null"
            )))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(imbalance("100000001").await, None);
    assert_eq!(imbalance("100000002").await, None);
    assert_eq!(imbalance("100000003").await, None);
    assert_eq!(
        imbalance("100000004").await,
        Some(json!({"transaction": {"EUR": "0.01"}, "company": {"EUR": "0.01"}}))
    );
    assert_eq!(
        imbalance("100000006").await,
        Some(json!({"transaction": {"USD": "920"}, "company": {"EUR": "846.4"}}))
    );
    let st = status::status(&pool, &[]).await.unwrap();
    assert_eq!(st.unbalanced_journal_entries.get("sap"), Some(&2));
    assert!(status::render(&st).contains("sap: 2 journal entries do not balance per currency"));

    // Dates: /Date(ms)/ as the UTC calendar date; 9999-12-31 open-ended;
    // names in the configured language; a line's account and cost center resolve.
    assert_eq!(
        text(&pool, "select string_agg(valid_from || '..' || valid_to || ' ' || name, ', ' order by valid_from) from cost_center where code = '10101101'").await.unwrap(),
        "2016-01-01..2023-12-31 Sales, 2024-01-01..9999-12-31 Sales DE"
    );
    assert_eq!(
        text(&pool, "select l.posting_date::text || ' ' || g.account_number || ' ' || c.valid_from
                     from journal_line l
                     join gl_account g on g.id = l.gl_account_id
                     join journal_line_cost_center v on v.journal_line_id = l.id
                     join cost_center c on c.id = v.cost_center_id
                     join source_link s on s.canonical_id = l.id and s.source_id = '1010|2024|100000001|000001'").await.unwrap(),
        "2024-03-31 0061000000 2024-01-01"
    );

    // Where a line's amount came from: the raw object, the pointers, the transform.
    let e = explain::explain_in(
        &pool,
        &store,
        "journal_line",
        "1010|2024|100000002|000002",
        Some("amount"),
        Some("sap"),
    )
    .await
    .unwrap();
    let f = &e.fields[0];
    assert_eq!(f.value, json!(-150000));
    assert_eq!(f.transform.as_deref(), Some("signed_by"));
    assert_eq!(
        f.json_pointer.as_deref(),
        Some("/AmountInTransactionCurrency, /DebitCreditCode")
    );
    assert_eq!(f.source_value, Some(json!(["150000", "H"])));
    assert_eq!(
        f.object_pointer.as_deref(),
        Some("/d/results/2/AmountInTransactionCurrency")
    );

    // The next run asks for what changed since the newest item less the lookback.
    seen.lock().unwrap().clear();
    let s2 = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s2.changed, s2.dead_lettered), (0, 2));
    assert_eq!(
        s2.balance.entries, 0,
        "nothing changed, nothing to check again"
    );
    let first = seen.lock().unwrap()[0].clone();
    assert!(
        first.contains("$filter=CompanyCode%20eq%20%271010%27%20and%20LastChangeDateTime%20ge%20datetimeoffset%272024-04-01T08:00:00Z%27"),
        "{first}"
    );
}

/// A journal item in the v2 shape.
fn item(doc: &str, line: &str, dc: &str, amount: &str, changed_ms: i64) -> Value {
    json!({
        "CompanyCode": "1010", "FiscalYear": "2024", "AccountingDocument": doc, "LedgerGLLineItem": line,
        "ChartOfAccounts": "YCOA", "GLAccount": "0061000000", "DebitCreditCode": dc,
        "AmountInTransactionCurrency": amount, "TransactionCurrency": "EUR",
        "AmountInCompanyCodeCurrency": amount, "CompanyCodeCurrency": "EUR",
        "PostingDate": "/Date(1711843200000)/", "LastChangeDateTime": format!("/Date({changed_ms}+0000)/"),
    })
}

fn page(items: Vec<Value>) -> Vec<String> {
    let body = json!({"d": {"results": items}}).to_string();
    vec![body.clone(), body.clone(), body]
}

#[tokio::test]
async fn an_entry_whose_lines_arrive_in_two_runs_is_flagged_then_balances() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::in_memory();
    let (srv, _) = sap_server(page(vec![item(
        "200000001",
        "000001",
        "S",
        "75.10",
        1_712_000_000_000,
    )]))
    .await;
    let c = sap_ctx(&pool, &store, &srv);
    let s = pipeline::sync(&c, Some("journal_entry_items"))
        .await
        .unwrap();
    assert_eq!((s.balance.entries, s.balance.unbalanced), (1, 1));
    assert_eq!(
        status::status(&pool, &[])
            .await
            .unwrap()
            .unbalanced_journal_entries
            .get("sap"),
        Some(&1)
    );

    // The other line is posted later: the next run loads it, and the entry balances.
    let (srv2, _) = sap_server(page(vec![item(
        "200000001",
        "000002",
        "H",
        "75.10",
        1_712_000_100_000,
    )]))
    .await;
    let c2 = sap_ctx(&pool, &store, &srv2);
    let s = pipeline::sync(&c2, Some("journal_entry_items"))
        .await
        .unwrap();
    assert_eq!((s.balance.entries, s.balance.unbalanced), (1, 0));
    assert!(
        status::status(&pool, &[])
            .await
            .unwrap()
            .unbalanced_journal_entries
            .is_empty()
    );
    assert_eq!(
        text(&pool, "select sum(amount)::text from journal_line")
            .await
            .as_deref(),
        Some("0.00")
    );

    // A replay into an empty model checks again and finds the same.
    empty_model(&pool).await;
    let r = pipeline::replay(&c2, None, false).await.unwrap();
    assert_eq!((r.balance.entries, r.balance.unbalanced), (1, 0));
}

/// Compound keys: the connector core's `primary_key` join and the model's
/// `key` transform give one id for the same record, whatever the parts hold.
#[test]
fn core_and_model_join_compound_keys_alike() {
    use canonical_model::Transform;
    let parts = [
        "A000",
        "10|1",
        "a\\b",
        "",
        "/Date(253402214400000)/",
        "/Date(1712045722000+0060)/",
        "/Date(1712045722000)/",
        "/Date(+5)/",
        "/Date(-86400000)/",
        "/Date(1+1)/",
        "/Date(x)/",
        "Zoë",
        "|",
        "\\",
    ];
    for a in parts {
        for b in parts {
            let record = json!({"a": a, "b": b, "n": 7});
            let raw = serde_json::value::to_raw_value(&record).unwrap();
            let core = connector_core::records::key_at(&raw, "/a,/b,/n").unwrap();
            let model = Transform::Key
                .apply_all(&[
                    record.pointer("/a"),
                    record.pointer("/b"),
                    record.pointer("/n"),
                ])
                .ok()
                .flatten()
                .map(|v| v.to_canonical_string());
            assert_eq!(core, model, "{a:?} {b:?}");
            if a.is_empty() || b.is_empty() {
                assert_eq!(model, None, "an empty part is no key: {a:?} {b:?}");
            }
        }
    }
}

/// One journal line row as SuiteQL answers it: `(lastmodifieddate,
/// transaction, line)` and the row.
type Row = (String, u64, u64, Value);

fn ns_row(modified: &str, t: u64, l: u64, debit: Option<&str>, credit: Option<&str>) -> Row {
    let mut r = json!({
        "links": [], "transaction": t.to_string(), "transactionline": l.to_string(),
        "tranid": format!("JE{t}"), "type": "Journal", "trandate": "2024-03-01",
        "lastmodifieddate": modified, "currency": "USD", "basecurrency": "USD", "subsidiary": "1",
        "account": if debit.is_some() { "58" } else { "25" },
        "debitcredit": if debit.is_some() { "debit" } else { "credit" },
    });
    if let Some(d) = debit {
        r["debit"] = json!(d);
        r["debitforeignamount"] = json!(d);
    }
    if let Some(c) = credit {
        r["credit"] = json!(c);
        r["creditforeignamount"] = json!(c);
    }
    (modified.to_owned(), t, l, r)
}

/// The `'…'` literal and the numbers after each `needle` in `q`.
fn after_each<'q>(q: &'q str, needle: &str) -> Vec<&'q str> {
    q.match_indices(needle)
        .map(|(i, _)| {
            let rest = &q[i + needle.len()..];
            // A time literal ends at its quote, a number at its last digit.
            let end = if needle.ends_with('\'') {
                rest.find('\'').unwrap_or(rest.len())
            } else {
                rest.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len())
            };
            &rest[..end]
        })
        .collect()
}

/// A SuiteQL-shaped server over `rows`: it evaluates the connector's own
/// keyset conditions (`(modified, transaction, line) >` a key, `modified >=`
/// a time), orders by them, and answers `limit` rows. It refuses a request
/// without `Prefer: transient` or the account's TBA realm, and answers the
/// first request with NetSuite's 400 `CONCURRENCY_LIMIT_EXCEEDED`.
async fn suiteql_server(rows: Arc<Mutex<Vec<Row>>>) -> (MockServer, Arc<Mutex<Vec<String>>>) {
    let srv = MockServer::start().await;
    let queries: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = queries.clone();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/services/rest/query/v1/suiteql"))
        .respond_with(move |r: &Request| {
            let header = |k: &str| {
                r.headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let auth = header("authorization");
            if !auth.starts_with("OAuth realm=\"1234567_SB1\"")
                || !auth.contains("oauth_signature_method=\"HMAC-SHA256\"")
            {
                return ResponseTemplate::new(401).set_body_json(json!({"status": 401,
                    "o:errorDetails": [{"detail": "Invalid login attempt.", "o:errorCode": "INVALID_LOGIN"}]}));
            }
            if header("prefer") != "transient" {
                return ResponseTemplate::new(400).set_body_string("Prefer: transient missing");
            }
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let body = std::fs::read(fixture_dir().join("../../netsuite/error-concurrency-400.json")).unwrap();
                return ResponseTemplate::new(400).set_body_raw(body, "application/json");
            }
            let q: String = serde_json::from_slice::<Value>(&r.body).unwrap()["q"]
                .as_str()
                .unwrap()
                .to_owned();
            log.lock().unwrap().push(q.clone());
            let limit: usize = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "limit")
                .unwrap()
                .1
                .parse()
                .unwrap();
            assert!(!r.url.query().unwrap().contains("offset"), "no offset is ever sent");
            let after: Vec<(String, u64, u64)> = after_each(&q, "t.lastmodifieddate > TO_DATE('")
                .into_iter()
                .zip(after_each(&q, "(t.id > "))
                .zip(after_each(&q, "tal.transactionline > "))
                .map(|((m, t), l)| (m.to_owned(), t.parse().unwrap(), l.parse().unwrap()))
                .collect();
            let from = after_each(&q, "t.lastmodifieddate >= TO_DATE('");
            let mut hits: Vec<Row> = rows
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, t, l, _)| {
                    after.iter().all(|k| (m.clone(), *t, *l) > k.clone())
                        && from.iter().all(|f| m.as_str() >= *f)
                })
                .cloned()
                .collect();
            hits.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
            let items: Vec<Value> = hits.into_iter().take(limit).map(|r| r.3).collect();
            ResponseTemplate::new(200).set_body_json(json!({
                "links": [], "count": items.len(), "hasMore": false, "offset": 0, "items": items
            }))
        })
        .mount(&srv)
        .await;
    (srv, queries)
}

fn ns_ctx(pool: &sqlx::PgPool, store: &RawStore, srv: &MockServer) -> pipeline::Ctx {
    let ns = netsuite::NetSuite::new(
        serde_json::from_value(json!({
            "account_id": "1234567-sb1",
            "base_url": srv.uri(),
            "time_zone": "America/Los_Angeles",
            "page_size": 2,
        }))
        .unwrap(),
    )
    .unwrap();
    let auth: AuthConfig = serde_json::from_value(json!({
        "strategy": "oauth1_tba", "realm": netsuite::realm("1234567-sb1"),
        "consumer_key": "ck", "consumer_secret": "cs", "token_id": "ti", "token_secret": "ts",
    }))
    .unwrap();
    pipeline::Ctx {
        connection: "ns".into(),
        ..ctx_built(pool, store, Built::new(ns).unwrap(), &auth)
    }
}

#[tokio::test]
async fn netsuite_keyset_pages_lose_nothing_at_equal_lastmodifieddate() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::in_memory();
    // Five lines changed in the same second, pages of two: page boundaries
    // fall inside the tie.
    let t0 = "2024-03-01 10:00:00";
    let rows = Arc::new(Mutex::new(vec![
        ns_row(t0, 901, 1, Some("10.00"), None),
        ns_row(t0, 901, 2, None, Some("10.00")),
        ns_row(t0, 902, 1, Some("7.25"), None),
        ns_row(t0, 902, 2, None, Some("5.00")),
        ns_row(t0, 902, 3, None, Some("2.25")),
    ]));
    let (srv, queries) = suiteql_server(rows.clone()).await;
    let c = ns_ctx(&pool, &store, &srv);
    let s = pipeline::sync(&c, Some("transactions")).await.unwrap();
    assert_eq!(
        s.outcome, "succeeded",
        "the 400 CONCURRENCY_LIMIT_EXCEEDED was retried"
    );
    assert_eq!(count(&pool, "select count(*) from journal_line").await, 5);
    assert_eq!((s.balance.entries, s.balance.unbalanced), (2, 0));
    // 10:00:00 in Los Angeles.
    assert_eq!(
        text(
            &pool,
            "select min(source_modified_at)::text from journal_line"
        )
        .await
        .as_deref(),
        Some("2024-03-01 18:00:00+00")
    );
    assert!(queries.lock().unwrap().len() >= 3, "pages of two");

    // Later: one more line in the same second as the last stored one (a
    // late commit with a higher id) and one in the next second.
    rows.lock().unwrap().extend([
        ns_row(t0, 903, 1, Some("1.00"), None),
        ns_row(t0, 903, 2, None, Some("1.00")),
        ns_row("2024-03-01 10:00:01", 904, 1, Some("3.00"), None),
        ns_row("2024-03-01 10:00:01", 904, 2, None, Some("3.00")),
    ]);
    queries.lock().unwrap().clear();
    let s = pipeline::sync(&c, Some("transactions")).await.unwrap();
    assert_eq!(count(&pool, "select count(*) from journal_line").await, 9);
    assert_eq!(s.changed, 4, "only the new lines: {s:?}");
    let q0 = queries.lock().unwrap()[0].clone();
    assert!(
        q0.contains("(t.lastmodifieddate > TO_DATE('2024-03-01 10:00:00', 'YYYY-MM-DD HH24:MI:SS') OR (t.lastmodifieddate = TO_DATE('2024-03-01 10:00:00', 'YYYY-MM-DD HH24:MI:SS') AND (t.id > 902 OR (t.id = 902 AND tal.transactionline > 3))))"),
        "the stored compound key bounds the next pull: {q0}"
    );
    assert_eq!(
        text(&pool, "select sum(amount)::text from journal_line")
            .await
            .as_deref(),
        Some("0.00")
    );
}
