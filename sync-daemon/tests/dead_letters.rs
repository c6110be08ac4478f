//! `dead-letters list | show | discard` on the SAP fixtures' two refused
//! journal items (an unknown currency, yen with decimals).

mod common;

use common::*;
use connector_core::RawStore;
use sync_daemon::{dead_letters, pipeline, status};

async fn sap_sync(pool: &sqlx::PgPool, store: &RawStore, base: &str) -> pipeline::Summary {
    pipeline::sync(&sap_ctx(pool, store, base), None)
        .await
        .unwrap()
}

#[tokio::test]
async fn dead_letters_are_listed_shown_whole_and_discarded_for_good() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let store = RawStore::in_memory();
    let (srv, _) = sap_server().await;
    let base = format!("http://{}", srv.addr);
    sap_sync(&pool, &store, &base).await;

    let open = dead_letters::list(&pool, Some("sap"), None).await.unwrap();
    let fields: Vec<Option<&str>> = open.iter().map(|d| d.field.as_deref()).collect();
    assert_eq!(fields, [Some("currency"), Some("amount")]);
    assert!(
        dead_letters::list(&pool, Some("other"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        dead_letters::list(&pool, None, Some("journal_entry_items@1010"))
            .await
            .unwrap()
            .len(),
        2
    );
    let listed = dead_letters::render_list(&open);
    assert!(listed.contains("1010|2024|100000005|000001"), "{listed}");

    // The whole dead letter: reason, field, pointer, mapping, the raw record.
    let d = dead_letters::show(&pool, &store, open[0].id).await.unwrap();
    assert_eq!(d.status, "open");
    assert_eq!(d.letter.pointer.as_deref(), Some("/TransactionCurrency"));
    assert!(d.letter.message.contains("\"XYZ\""), "{}", d.letter.message);
    assert_eq!(
        d.mapping.as_deref(),
        Some("sap_s4hana.journal_entry_items 1")
    );
    assert_eq!(d.record.as_ref().unwrap()["TransactionCurrency"], "XYZ");
    assert!(dead_letters::render_detail(&d).contains("\"AccountingDocument\": \"100000005\""));

    // Discarded with who and why; never deleted; not again.
    dead_letters::discard(
        &pool,
        d.letter.id,
        "test currency, not a real posting",
        "ops-anna",
    )
    .await
    .unwrap();
    let again = dead_letters::discard(&pool, d.letter.id, "twice", "ops-anna")
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("is discarded, not open"),
        "{again}"
    );
    assert!(
        dead_letters::discard(&pool, 999_999, "x", "y")
            .await
            .unwrap_err()
            .to_string()
            .contains("no dead letter")
    );
    assert!(
        dead_letters::discard(&pool, open[1].id, " ", "y")
            .await
            .is_err(),
        "a reason is required"
    );
    let d = dead_letters::show(&pool, &store, d.letter.id)
        .await
        .unwrap();
    assert_eq!(
        (
            d.status.as_str(),
            d.discarded_by.as_deref(),
            d.discard_reason.as_deref()
        ),
        (
            "discarded",
            Some("ops-anna"),
            Some("test currency, not a real posting")
        )
    );
    assert_eq!(
        dead_letters::list(&pool, None, None).await.unwrap().len(),
        1
    );

    // The next sync fetches the same records again: the discarded failure
    // stays discarded, the other stays open (seen twice), and the counts add up.
    let s = sap_sync(&pool, &store, &base).await;
    assert_eq!(
        s.dead_lettered, 2,
        "the record is still refused, and counted"
    );
    let open = dead_letters::list(&pool, None, None).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].field.as_deref(), open[0].times_seen),
        (Some("amount"), 2)
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from dead_letter where status = 'discarded'"
        )
        .await,
        1
    );
    let st = status::status(&pool, &[]).await.unwrap();
    let journal: i64 = st
        .streams
        .iter()
        .filter(|s| s.stream.starts_with("journal_entry_items"))
        .map(|s| s.dead_letters_open)
        .sum();
    assert_eq!(journal, 1);
}

/// A mapping that refuses every worker (`fte` read from the name), then the
/// shipped one: retrying some dead letters replays only their pages; the
/// records load, their dead letters resolve; the rest stay open until
/// retried too.
#[tokio::test]
async fn retry_replays_the_dead_letters_pages_through_the_current_mapping() {
    use canonical_model::{EntityKind, FieldRule, MappingVersion, StreamModel, Transform};
    use std::sync::Arc;
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (base, _srv) = fixture_source().await;
    let store = RawStore::in_memory();
    let auth = refresh_auth(&base, REFRESH_TOKEN);
    let shipped = MappingVersion::new(
        workday::mapper::MAPPER,
        workday::mapper::VERSION,
        workday::mapper::rules(),
    )
    .unwrap();
    let broken = shipped
        .with_rule(
            "1-broken",
            FieldRule::new(
                EntityKind::Worker,
                "fte",
                &["/descriptor"],
                Transform::Decimal,
            ),
        )
        .unwrap();
    let with = |m: MappingVersion| pipeline::Ctx {
        models: vec![StreamModel {
            stream: "workers",
            entity: EntityKind::Worker,
            mapper: Arc::new(workday::WorkersMapper::with_mapping(m)),
        }],
        ..ctx(&pool, &store, Arc::new(workday(&base)), &auth)
    };
    let s = pipeline::sync(&with(broken), None).await.unwrap();
    assert_eq!((s.changed, s.dead_lettered), (0, 260));
    let open = dead_letters::list(&pool, None, None).await.unwrap();
    assert_eq!(open.len(), 260);

    // The mapping is fixed: retry two dead letters of one page.
    let fixed = with(shipped);
    let two = [open[0].id, open[1].id];
    let r = dead_letters::retry(&fixed, &two).await.unwrap();
    assert_eq!(r.retried, two);
    assert_eq!(r.resolved, two);
    assert!(r.still_open.is_empty());
    assert_eq!(r.run.pages_loaded, 1, "only their page is replayed");
    let page_size = r.run.changed;
    assert_eq!(
        dead_letters::list(&pool, None, None).await.unwrap().len() as i64,
        260 - page_size,
        "the page's other records loaded too"
    );
    // An id that is not open is named; then every open one is retried.
    let e = dead_letters::retry(&fixed, &[two[0]]).await.unwrap_err();
    assert!(e.to_string().contains("not an open dead letter"), "{e}");
    let r = dead_letters::retry(&fixed, &[]).await.unwrap();
    assert_eq!(r.resolved.len() as i64, 260 - page_size);
    assert!(
        dead_letters::list(&pool, None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(count(&pool, "select count(*) from worker").await, 260);
    // Every run's counts still add up (the ledger's check), and none is open.
    assert_eq!(
        count(
            &pool,
            "select count(*) from sync_run where status <> 'succeeded'"
        )
        .await,
        0
    );
}
