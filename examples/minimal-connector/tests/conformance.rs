//! The conformance suite on Peoplebox's recorded pages (`BLESS=1` rewrites the golden file).

use connector_core::testkit::{Capabilities, Suite};
use connector_core::{Connector, DynConnector, Error};
use std::path::Path;

#[tokio::test(start_paused = true)]
async fn peoplebox_employees_conform() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let pages = Suite::read_pages(&[1, 2, 3].map(|i| dir.join(format!("pages/{i}.json"))));
    let caps = Capabilities {
        body_driven_paging: true,
        next_links: true,
        incremental: true,
        deletes: false,
    };
    let mapper = minimal_connector::mapper::EmployeesMapper::new();
    Suite::new("employees", pages, caps, |base| {
        let config = serde_json::from_value(serde_json::json!({ "base_url": base }))
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Box::new(minimal_connector::Peoplebox::new(config)?) as Box<dyn DynConnector>)
    })
    .golden(
        dir.join("employees.golden.json"),
        "peoplebox.employees@1",
        move |r| canonical_model::golden_line(&mapper, r),
    )
    .run()
    .await
    .assert_passed();
}
