//! The conformance suite's own checks fail when the behaviour they check
//! breaks: here, fan-out by partition, on a small connector declared twice,
//! once right and once with a request that ignores its partition.

use connector_core::testkit::{Capabilities, Suite, Verdict};
use connector_core::{
    BaseUrl, Connector, DynConnector, Error, Pagination, Records, RequestHook, StreamDef,
};

#[derive(Debug)]
struct PerCompany(url::Url, bool);

impl PerCompany {
    fn streams_of(&self) -> Vec<StreamDef> {
        let honest = self.1;
        StreamDef {
            records: Records::Array("/data"),
            pagination: Pagination::Single,
            request: Some(RequestHook::new(move |req, page| {
                if honest {
                    let code = page.partition.unwrap_or_default();
                    req.url.query_pairs_mut().append_pair("company", code);
                }
                Ok(())
            })),
            ..StreamDef::get("entries", "entries")
        }
        .partitions(&["1000", "2000"])
    }
}

impl Connector for PerCompany {
    const NAME: &'static str = "per_company";
    type Config = BaseUrl;
    fn new(c: BaseUrl) -> Result<Self, Error> {
        Ok(Self(c.base_url, true))
    }
    fn base_url(&self) -> &url::Url {
        &self.0
    }
    fn streams(&self) -> Vec<StreamDef> {
        self.streams_of()
    }
}

const FAN: &str = "fan-out: each partition has its own key and asks for its own data";

async fn verdict(honest: bool) -> Verdict {
    let caps = Capabilities {
        body_driven_paging: false,
        next_links: false,
        incremental: false,
        deletes: false,
    };
    let pages = vec![r#"{"data": [{"id": "1"}, {"id": "2"}]}"#.to_owned()];
    let report = Suite::new("entries", pages, caps, move |base| {
        let c = PerCompany(
            url::Url::parse(base).map_err(|e| Error::Config(e.to_string()))?,
            honest,
        );
        Ok(Box::new(c) as Box<dyn DynConnector>)
    })
    .run()
    .await;
    report.verdict(FAN).cloned().expect("the fan-out check ran")
}

#[tokio::test(start_paused = true)]
async fn the_fan_out_check_passes_per_partition_requests_and_fails_shared_ones() {
    assert_eq!(verdict(true).await, Verdict::Passed);
    match verdict(false).await {
        Verdict::Failed(why) => assert!(why.contains("same data"), "{why}"),
        other => panic!("a request that ignores its partition passed: {other:?}"),
    }
}
