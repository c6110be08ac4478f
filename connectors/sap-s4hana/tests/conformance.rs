//! The connector conformance suite (connector-core `testkit`) on SAP OData
//! v2 payloads in the documented shapes: cost centers paged by `$skip` up to
//! `__count`, journal entry items paged by the server's `__next` link.
//! `BLESS=1` rewrites the golden mapping output.

use connector_core::testkit::{Capabilities, Suite};
use connector_core::{Connector, DynConnector, Error};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sap-s4hana")
}

fn connector(base: &str) -> Result<sap_s4hana::SapS4Hana, Error> {
    let config = serde_json::from_value(serde_json::json!({
        "base_url": base,
        "sap_client": "100",
        "company_codes": ["1010"],
        // Small pages, so that the recorded pages are the server's pages.
        "page_size": 3,
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    sap_s4hana::SapS4Hana::new(config)
}

fn build(base: &str) -> Result<Box<dyn DynConnector>, Error> {
    Ok(Box::new(connector(base)?))
}

/// A stream's suite with its golden file.
async fn conforms(stream: &'static str, pages: &[&str], caps: Capabilities) {
    let paths: Vec<PathBuf> = pages.iter().map(|p| fixtures().join(p)).collect();
    let models = canonical_model::Modeled::models(&connector("http://127.0.0.1:9").unwrap());
    let mapper = models
        .into_iter()
        .find(|m| m.stream == stream)
        .unwrap()
        .mapper;
    let mapping = format!("{}@{}", mapper.mapping().mapper, mapper.mapping().version);
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

const BY_SKIP: Capabilities = Capabilities {
    body_driven_paging: false,
    next_links: false,
    incremental: false,
    deletes: false,
};

#[tokio::test(start_paused = true)]
async fn cost_centers_paged_by_skip_conform() {
    conforms(
        "cost_centers",
        &["cost-centers-1.json", "cost-centers-2.json"],
        BY_SKIP,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn gl_accounts_conform() {
    conforms(
        "gl_accounts",
        &["gl-accounts-1.json", "gl-accounts-2.json"],
        BY_SKIP,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn suppliers_conform() {
    conforms("suppliers", &["suppliers-1.json"], BY_SKIP).await;
}

#[tokio::test(start_paused = true)]
async fn journal_entry_items_paged_by_next_link_conform() {
    conforms(
        "journal_entry_items",
        &[
            "journal-1010-1.json",
            "journal-1010-2.json",
            "journal-1010-3.json",
        ],
        Capabilities {
            body_driven_paging: true,
            next_links: true,
            incremental: true,
            deletes: false,
        },
    )
    .await;
}
