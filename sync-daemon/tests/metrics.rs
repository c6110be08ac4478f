//! `/metrics` and `/healthz` (in a test binary of their own: the run
//! counters are per process).

mod common;

use common::*;
use std::time::Duration;

/// One `name{labels} value` sample of an OpenMetrics text, parsed.
/// (name, labels, value).
type Sample = (String, Vec<(String, String)>, f64);

fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closed labels")),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("k=v");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    out
}

#[tokio::test]
async fn metrics_are_openmetrics_with_bounded_labels_and_healthz_says_why_it_is_not_ok() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool.clone();
    let (ctx, _store, _base, _srv) = fixture_ctx(&pool).await;
    sync_daemon::pipeline::sync(&ctx, None).await.unwrap();
    let streams = vec![("wd".to_owned(), "workers".to_owned())];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = sync_daemon::metrics::Health::new(Duration::from_secs(1));
    let _server = sync_daemon::metrics::serve(listener, pool.clone(), streams, health.clone());

    let r = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert_eq!(text.matches("# EOF").count(), 1, "one end marker");
    assert!(text.trim_end().ends_with("# EOF"));
    let s = samples(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        s.iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|x| x.2)
    };
    let wd = [("connection", "wd"), ("stream", "workers")];
    assert!(get("sync_last_success_timestamp_seconds", &wd).unwrap() > 1.7e9);
    assert!(get("sync_raw_stored_bytes", &wd).unwrap() > 0.0);
    assert_eq!(
        get(
            "sync_runs_total",
            &[
                ("connection", "wd"),
                ("work", "sync"),
                ("outcome", "succeeded")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "sync_records_total",
            &[("connection", "wd"), ("outcome", "changed")]
        ),
        Some(260.0)
    );
    assert!(get("connector_requests_total", &[("connection", "wd")]).unwrap() >= 1.0);
    assert_eq!(get("sync_leases_held", &[]), Some(0.0));
    assert_eq!(get("sync_database_up", &[]), Some(1.0));
    // Bounded labels: names from the config and closed outcome lists only.
    for (name, labels, _) in &s {
        for (k, v) in labels {
            match k.as_str() {
                "connection" => assert_eq!(v, "wd", "{name}"),
                "stream" => assert!(["workers", "*"].contains(&v.as_str()), "{name}: {v}"),
                "outcome" | "work" | "kind" | "host" | "strategy" => {
                    assert!(v.len() < 40 && !v.contains(' '), "{name}: {k}={v}")
                }
                other => panic!("{name}: unexpected label {other}"),
            }
        }
    }

    // Without OpenMetrics in Accept: the classic text format, counters
    // typed under their `_total` names.
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let plain = r.text().await.unwrap();
    assert!(!plain.contains("# EOF"));
    assert!(plain.contains("# TYPE sync_runs_total counter"), "{plain}");
    assert!(plain.contains("# TYPE sync_leases_held gauge"), "{plain}");
    assert_eq!(samples(&plain).len(), s.len(), "the same samples");

    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    health.tick(Err("pool timed out".into()));
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("pool timed out"));
    health.tick(Ok(()));
    pool.close().await;
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("database"));
}
