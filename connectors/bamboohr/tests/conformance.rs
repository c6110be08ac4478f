//! The connector conformance suite (connector-core `testkit`) on BambooHR
//! payloads recorded in the documented shapes. `BLESS=1` rewrites the golden
//! mapping output.

use canonical_model::Mapper;
use connector_core::testkit::{Capabilities, Suite};
use connector_core::{Connector, DynConnector, Error};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bamboohr")
}

fn build(base: &str) -> Result<Box<dyn DynConnector>, Error> {
    let config = serde_json::from_value(serde_json::json!({
        "company_domain": "acme",
        "base_url": format!("{base}/api/gateway.php/acme/v1/"),
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Box::new(bamboohr::BambooHr::new(config)?))
}

// One unpaged answer per request: the source never names a next page.
const CAPS: Capabilities = Capabilities {
    body_driven_paging: false,
    next_links: false,
    incremental: true,
    deletes: false,
};

#[tokio::test(start_paused = true)]
async fn bamboohr_employees_report_conforms() {
    let pages = Suite::read_pages(&[fixtures().join("report-1.json")]);
    let mapper = bamboohr::EmployeesMapper::new();
    let mapping = format!("{}@{}", mapper.mapping().mapper, mapper.mapping().version);
    Suite::new("employees", pages, CAPS, build)
        .golden(
            fixtures().join("expected/employees.golden.json"),
            mapping,
            move |r| canonical_model::golden_line(&mapper, r),
        )
        .run()
        .await
        .assert_passed();
}

#[tokio::test(start_paused = true)]
async fn bamboohr_changed_feed_conforms() {
    let pages = Suite::read_pages(&[fixtures().join("changed-2.json")]);
    let mapper = bamboohr::ChangesMapper::new();
    let mapping = format!("{}@{}", mapper.mapping().mapper, mapper.mapping().version);
    let caps = Capabilities {
        deletes: true,
        ..CAPS
    };
    Suite::new("employee_changes", pages, caps, build)
        .golden(
            fixtures().join("expected/employee_changes.golden.json"),
            mapping,
            move |r| canonical_model::golden_line(&mapper, r),
        )
        .run()
        .await
        .assert_passed();
}
