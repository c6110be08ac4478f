//! The connector conformance suite (connector-core `testkit`) on SuiteQL
//! answers in the documented shape, keyset-paged by three rows; rows of
//! one `lastmodifieddate` straddle a page boundary. `BLESS=1` rewrites the
//! golden mapping output.

use connector_core::testkit::{Capabilities, Suite};
use connector_core::{Connector, DynConnector, Error};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/netsuite")
}

fn connector(base: &str) -> Result<netsuite::NetSuite, Error> {
    let config = serde_json::from_value(serde_json::json!({
        "account_id": "1234567_SB1",
        "base_url": base,
        "time_zone": "America/Los_Angeles",
        "page_size": 3,
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    netsuite::NetSuite::new(config)
}

fn build(base: &str) -> Result<Box<dyn DynConnector>, Error> {
    Ok(Box::new(connector(base)?))
}

async fn conforms(stream: &'static str, pages: &[&str], incremental: bool) {
    let paths: Vec<PathBuf> = pages.iter().map(|p| fixtures().join(p)).collect();
    let mapper = canonical_model::Modeled::models(&connector("http://127.0.0.1:9").unwrap())
        .into_iter()
        .find(|m| m.stream == stream)
        .unwrap()
        .mapper;
    let mapping = format!("{}@{}", mapper.mapping().mapper, mapper.mapping().version);
    let caps = Capabilities {
        // The next page is the rows after the last key the connector read,
        // not a token or link the server issues.
        body_driven_paging: false,
        next_links: false,
        incremental,
        deletes: false,
    };
    Suite::new(stream, Suite::read_pages(&paths), caps, build)
        .golden(
            fixtures().join(format!("expected/{stream}.golden.json")),
            mapping,
            move |r| canonical_model::golden_line(mapper.as_ref(), r),
        )
        .run()
        .await
        .assert_passed();
}

#[tokio::test(start_paused = true)]
async fn transactions_keyset_paged_conform() {
    conforms(
        "transactions",
        &[
            "transactions-1.json",
            "transactions-2.json",
            "transactions-3.json",
        ],
        true,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn employees_conform() {
    conforms("employees", &["employees-1.json"], false).await;
}

#[tokio::test(start_paused = true)]
async fn vendors_conform() {
    conforms("vendors", &["vendors-1.json"], false).await;
}

#[tokio::test(start_paused = true)]
async fn accounts_conform() {
    // A full page: the next query, after its last id, answers no row.
    conforms("accounts", &["accounts-1.json", "accounts-2.json"], false).await;
}
