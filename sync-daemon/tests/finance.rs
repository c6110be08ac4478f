//! Finance end to end: SAP S/4HANA (OData v2) and NetSuite (SuiteQL)
//! shaped sources on loopback, into the canonical finance model with exact
//! money, balanced-or-flagged journal entries and provenance.

mod common;

use common::*;
use connector_core::{AuthConfig, Connector, RawStore};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use sync_daemon::fixture_finance::NetSuiteData;
use sync_daemon::fixture_server::{self, FixtureOptions};
use sync_daemon::{explain, pipeline, registry::Built, status};

fn base(srv: &fixture_server::FixtureServer) -> String {
    format!("http://{}", srv.addr)
}

/// Company codes 1010 and 1710, three records a page, two days' lookback.
fn sap_ctx(pool: &sqlx::PgPool, store: &RawStore, base: &str) -> pipeline::Ctx {
    sap_ctx_with(
        pool,
        store,
        base,
        json!({"company_codes": ["1010", "1710"], "page_size": 3, "journal_lookback": "2d"}),
    )
}

async fn text(pool: &sqlx::PgPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sap_entries_spanning_pages_balance_and_the_unbalanced_are_flagged_and_counted() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (srv, sap) = sap_server().await;
    let store = RawStore::in_memory();
    let c = sap_ctx(&pool, &store, &base(&srv));

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
                Some(
                    "/AmountInTransactionCurrency, /DebitCreditCode|/ControllingDebitCreditCode"
                        .into()
                )
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
    let configured = [status::Configured {
        connection: "sap".into(),
        streams: vec![
            "journal_entry_items@1010".into(),
            "journal_entry_items@1710".into(),
        ],
        entities: [
            (
                "journal_entry_items@1010".to_owned(),
                "journal_line".to_owned(),
            ),
            (
                "journal_entry_items@1710".to_owned(),
                "journal_line".to_owned(),
            ),
        ]
        .into(),
    }];
    let st = status::status(&pool, &configured).await.unwrap();
    assert_eq!(st.unbalanced_journal_entries.get("sap"), Some(&2));
    let records = |key: &str| {
        st.streams
            .iter()
            .find(|s| s.stream == key)
            .and_then(|s| s.records_in_model)
    };
    assert_eq!(
        (
            records("journal_entry_items@1010"),
            records("journal_entry_items@1710")
        ),
        (Some(9), Some(0)),
        "each company code counts its own lines"
    );
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
        Some("/d/results/0/AmountInTransactionCurrency")
    );
    // The server paged inside each `$top` window (a link to the window's
    // rest); after each window, the connector went on by `$skip`.
    let asked = sap.journal_queries.lock().unwrap().clone();
    assert!(
        asked.iter().any(|q| q.contains("$skiptoken=2")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|q| q.contains("$skip=9")), "{asked:?}");

    let e = explain::explain_in(
        &pool,
        &store,
        "journal_entry",
        "1010|2024|100000004",
        None,
        Some("sap"),
    )
    .await
    .unwrap();
    assert!(
        e.to_string().contains(r#"UNBALANCED: its live lines sum to {"company":{"EUR":"0.01"},"transaction":{"EUR":"0.01"}}"#),
        "{e}"
    );

    // The next run asks for what changed since the newest item less the lookback.
    sap.journal_queries.lock().unwrap().clear();
    let s2 = pipeline::sync(&c, None).await.unwrap();
    assert_eq!((s2.changed, s2.dead_lettered), (0, 2));
    assert_eq!(
        s2.balance.entries, 0,
        "nothing changed, nothing to check again"
    );
    let first = sap.journal_queries.lock().unwrap()[0].clone();
    assert!(
        first.contains("$filter=CompanyCode%20eq%20%271010%27%20and%20LastChangeDateTime%20ge%20datetimeoffset%272024-04-01T08:00:00Z%27"),
        "{first}"
    );
    assert_eq!(orphans(&pool).await, Vec::<String>::new());
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

#[tokio::test]
async fn an_entry_whose_lines_arrive_in_two_runs_is_flagged_then_balances() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::in_memory();
    let (srv, sap) = sap_server().await;
    let journal = |items: Vec<Value>| {
        sap.sets
            .lock()
            .unwrap()
            .insert("A_JournalEntryItemBasic".into(), items);
    };
    journal(vec![item(
        "200000001",
        "000001",
        "S",
        "75.10",
        1_712_000_000_000,
    )]);
    let c = sap_ctx(&pool, &store, &base(&srv));
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
    journal(vec![
        item("200000001", "000001", "S", "75.10", 1_712_000_000_000),
        item("200000001", "000002", "H", "75.10", 1_712_000_100_000),
    ]);
    let s = pipeline::sync(&c, Some("journal_entry_items"))
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
    let r = pipeline::replay(&c, None, false).await.unwrap();
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
    // The model reads a key through a mapping's rule, as a mapper does;
    // the middle part names alternatives (`/x` first, else `/b`).
    let mapping = canonical_model::MappingVersion::new(
        "t",
        "1",
        vec![canonical_model::FieldRule::new(
            canonical_model::EntityKind::JournalLine,
            "source_id",
            &["/a", "/x|/b", "/n"],
            Transform::Key,
        )],
    )
    .unwrap();
    for a in parts {
        for b in parts {
            for x in [None, Some(Value::Null), Some(json!("X1"))] {
                let mut record = json!({"a": a, "b": b, "n": 7});
                if let Some(x) = &x {
                    record["x"] = x.clone();
                }
                let raw = serde_json::value::to_raw_value(&record).unwrap();
                let core = connector_core::records::key_at(&raw, "/a,/x|/b,/n").unwrap();
                let model = mapping
                    .reader(&record)
                    .text(canonical_model::EntityKind::JournalLine, "source_id")
                    .ok()
                    .flatten();
                assert_eq!(core, model, "{a:?} {b:?} {x:?}");
                if a.is_empty() || (b.is_empty() && x != Some(json!("X1"))) {
                    assert_eq!(model, None, "an empty part is no key: {a:?} {b:?}");
                }
            }
        }
    }
}

/// One journal line row as SuiteQL answers it.
fn ns_row(modified: &str, t: u64, l: u64, debit: Option<&str>, credit: Option<&str>) -> Value {
    let mut r = json!({
        "transaction": t.to_string(), "transactionline": l.to_string(),
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
    r
}

/// The fixture server's NetSuite account over `rows` (realm `1234567_SB1`),
/// answering every third request with NetSuite's 400 `CONCURRENCY_LIMIT_EXCEEDED`.
async fn suiteql_server(rows: Vec<Value>) -> (fixture_server::FixtureServer, NetSuiteData) {
    let data = NetSuiteData {
        realm: "1234567_SB1".into(),
        tables: Arc::new(Mutex::new([("transaction".to_owned(), rows)].into())),
        throttle_every: Some(3),
        ..Default::default()
    };
    let srv = fixture_server_with(FixtureOptions {
        netsuite: Some(data.clone()),
        ..Default::default()
    })
    .await;
    (srv, data)
}

fn ns_ctx(pool: &sqlx::PgPool, store: &RawStore, base: &str) -> pipeline::Ctx {
    let ns = netsuite::NetSuite::new(
        serde_json::from_value(json!({
            "account_id": "1234567-sb1",
            "base_url": base,
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
    let (srv, ns) = suiteql_server(vec![
        ns_row(t0, 901, 1, Some("10.00"), None),
        ns_row(t0, 901, 2, None, Some("10.00")),
        ns_row(t0, 902, 1, Some("7.25"), None),
        ns_row(t0, 902, 2, None, Some("5.00")),
        ns_row(t0, 902, 3, None, Some("2.25")),
    ])
    .await;
    let c = ns_ctx(&pool, &store, &base(&srv));
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
    let asked = ns.queries.lock().unwrap().len() as u64;
    assert!(asked >= 3, "pages of two");
    assert!(
        ns.requests.load(std::sync::atomic::Ordering::SeqCst) > asked,
        "a throttled request was asked again"
    );
    assert!(
        ns.queries
            .lock()
            .unwrap()
            .iter()
            .all(|q| !q.contains("OFFSET")),
        "no query pages by offset"
    );

    // Later: one more line in the same second as the last stored one (a
    // late commit with a higher id) and one in the next second.
    ns.tables
        .lock()
        .unwrap()
        .get_mut("transaction")
        .unwrap()
        .extend([
            ns_row(t0, 903, 1, Some("1.00"), None),
            ns_row(t0, 903, 2, None, Some("1.00")),
            ns_row("2024-03-01 10:00:01", 904, 1, Some("3.00"), None),
            ns_row("2024-03-01 10:00:01", 904, 2, None, Some("3.00")),
        ]);
    ns.queries.lock().unwrap().clear();
    let s = pipeline::sync(&c, Some("transactions")).await.unwrap();
    assert_eq!(count(&pool, "select count(*) from journal_line").await, 9);
    assert_eq!(s.changed, 4, "only the new lines: {s:?}");
    let q0 = ns.queries.lock().unwrap()[0].clone();
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
