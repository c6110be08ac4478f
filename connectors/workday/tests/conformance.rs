//! The connector conformance suite (connector-core `testkit`) on the recorded
//! Workday pages. `BLESS=1` rewrites the golden mapping output.

use canonical_model::Mapper;
use connector_core::testkit::{Capabilities, Suite};
use connector_core::{Connector, DynConnector};
use std::path::Path;

#[tokio::test(start_paused = true)]
async fn workday_workers_conform() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/workday");
    let pages =
        Suite::read_pages(&[0, 100, 200].map(|o| fixtures.join(format!("workers/{o}.json"))));
    let mapper = workday::WorkersMapper::new();
    let mapping = format!("{}@{}", mapper.mapping().mapper, mapper.mapping().version);
    Suite::new(
        "workers",
        pages,
        // Offset/limit paging: the source never names the next page, so it
        // cannot send a loop or a link to another origin. Workers carry no
        // change stamp and Workday reports no deletions (they are swept).
        Capabilities {
            body_driven_paging: false,
            next_links: false,
            incremental: false,
            deletes: false,
        },
        |base| {
            let config =
                serde_json::from_value(serde_json::json!({"base_url": base, "tenant": "acme"}))
                    .map_err(|e| connector_core::Error::Config(e.to_string()))?;
            Ok(Box::new(workday::Workday::new(config)?) as Box<dyn DynConnector>)
        },
    )
    .golden(
        fixtures.join("expected/workers.golden.json"),
        mapping,
        move |record| canonical_model::golden_line(&mapper, record),
    )
    .run()
    .await
    .assert_passed();
}
