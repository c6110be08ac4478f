//! Finance sources of the fixture server, over recorded records:
//! - SAP S/4HANA-shaped (OData v2): `GET /sap/opu/odata/sap/<service>/<entity
//!   set>` with HTTP Basic, `$format=json` required, `$inlinecount`, `$top`
//!   and `$skip`, `$filter` of `CompanyCode eq '…'` and `<field> ge
//!   datetimeoffset'…'`; the journal pages by itself (`__next` with a
//!   `$skiptoken`) past a few rows; errors in SAP's v2 error body.
//! - NetSuite-shaped: `POST /services/rest/query/v1/suiteql` with the
//!   account's TBA realm and `Prefer: transient`; it answers the queries of
//!   the NetSuite connector (the table after `FROM`, its keyset conditions,
//!   `limit`), refuses an `offset` past 100,000 like SuiteQL, and can answer
//!   every n-th request with `CONCURRENCY_LIMIT_EXCEEDED` (HTTP 400).

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fixture_server::reply;

/// Recorded records by file prefix, in file-name order: `prefix-1.json`, `prefix-2.json`, ….
fn load(dir: &Path, prefix: &str, records_at: &str) -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("finance fixtures {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")) && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        if let Some(items) = v.pointer(records_at).and_then(Value::as_array) {
            out.extend(items.iter().cloned());
        }
    }
    Ok(out)
}

/// The SAP system served: records by entity set.
#[derive(Clone, Debug, Default)]
pub struct SapData {
    pub user: String,
    pub password: String,
    /// The client every request must name (`sap-client`), when set.
    pub client: Option<String>,
    pub sets: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    /// The journal's server-side page size (it names the next page itself).
    pub journal_page: usize,
    /// The journal requests' queries, as received.
    pub journal_queries: Arc<Mutex<Vec<String>>>,
}

/// Reads `fixtures/sap-s4hana`-shaped pages (`cost-centers-N.json`, …).
pub fn load_sap(dir: &Path, user: &str, password: &str) -> anyhow::Result<SapData> {
    let mut sets = HashMap::new();
    for (prefix, set) in [
        ("cost-centers", "A_CostCenter"),
        ("gl-accounts", "A_GLAccountInChartOfAccounts"),
        ("suppliers", "A_Supplier"),
        ("journal", "A_JournalEntryItemBasic"),
    ] {
        sets.insert(set.to_owned(), load(dir, prefix, "/d/results")?);
    }
    Ok(SapData {
        user: user.into(),
        password: password.into(),
        client: Some("100".into()),
        sets: Arc::new(Mutex::new(sets)),
        journal_page: 2,
        journal_queries: Arc::default(),
    })
}

fn sap_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": {"code": code, "message": {"lang": "en", "value": message},
            "innererror": {"transactionid": format!("{:032X}", fastrand::u128(..)), "errordetails": []}}})
        .to_string(),
    )
}

fn basic_user(req: &Request<hyper::body::Incoming>) -> Option<(String, String)> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let d = base64::engine::general_purpose::STANDARD
        .decode(v.strip_prefix("Basic ")?)
        .ok()?;
    let (u, p) = String::from_utf8(d)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((u, p))
}

/// A `/Date(ms)/` or RFC 3339 value as milliseconds.
fn millis(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    connector_core::fetch::cursor_time(s).map(|t| t.timestamp_millis())
}

/// Serves the SAP-shaped endpoints; `Err(req)` when the request is not one.
pub async fn sap(
    data: &SapData,
    origin: &str,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Request<hyper::body::Incoming>> {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/sap/opu/odata/sap/") {
        return Err(req);
    }
    if basic_user(&req) != Some((data.user.clone(), data.password.clone())) {
        return Ok(sap_error(
            StatusCode::UNAUTHORIZED,
            "/IWFND/CM_CONSUMER/101",
            "Logon failed",
        ));
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if params.get("$format").map(String::as_str) != Some("json") {
        return Ok(sap_error(
            StatusCode::BAD_REQUEST,
            "/IWBEP/CM_MGW_RT/004",
            "this system answers JSON only with $format=json",
        ));
    }
    if let Some(c) = &data.client
        && params.get("sap-client") != Some(c)
    {
        // A real system would answer from its default client, silently.
        return Ok(sap_error(
            StatusCode::BAD_REQUEST,
            "/IWFND/CM_BEC/026",
            &format!("this system serves client {c} only: send sap-client={c}"),
        ));
    }
    let set = path.rsplit('/').next().unwrap_or("");
    let sets = data.sets.lock().expect("sap sets");
    let Some(all) = sets.get(set) else {
        return Ok(sap_error(
            StatusCode::NOT_FOUND,
            "/IWBEP/CM_MGW_RT/020",
            &format!("Resource not found for segment '{set}'"),
        ));
    };
    let journal = set == "A_JournalEntryItemBasic";
    if journal {
        data.journal_queries
            .lock()
            .expect("log")
            .push(query.clone());
    }
    // `$filter`: `A eq 'x'` and `F ge datetimeoffset'…'` terms, joined by `and`.
    let mut keep: Vec<&Value> = all.iter().collect();
    if let Some(f) = params.get("$filter") {
        for term in f.split(" and ") {
            let parts: Vec<&str> = term.splitn(3, ' ').collect();
            let [field, op, lit] = parts[..] else {
                return Ok(sap_error(
                    StatusCode::BAD_REQUEST,
                    "/IWBEP/CM_MGW_RT/022",
                    "Invalid filter",
                ));
            };
            match op {
                "eq" => {
                    let want = lit.trim_matches('\'');
                    keep.retain(|r| r.get(field).and_then(Value::as_str) == Some(want));
                }
                "ge" => {
                    let at = lit
                        .strip_prefix("datetimeoffset'")
                        .and_then(|l| l.strip_suffix('\''))
                        .and_then(connector_core::fetch::cursor_time)
                        .map(|t| t.timestamp_millis());
                    let Some(at) = at else {
                        return Ok(sap_error(
                            StatusCode::BAD_REQUEST,
                            "/IWBEP/CM_MGW_RT/022",
                            "Invalid datetimeoffset literal",
                        ));
                    };
                    keep.retain(|r| r.get(field).and_then(millis).is_some_and(|m| m >= at));
                }
                _ => {
                    return Ok(sap_error(
                        StatusCode::BAD_REQUEST,
                        "/IWBEP/CM_MGW_RT/022",
                        "Unsupported filter",
                    ));
                }
            }
        }
    }
    let num = |k: &str| params.get(k).and_then(|v| v.parse::<usize>().ok());
    let start = num("$skiptoken").or(num("$skip")).unwrap_or(0);
    let top = num("$top").unwrap_or(usize::MAX).min(5000);
    // The journal pages by itself within the client's `$top` window, as
    // OData servers do: a page of at most `journal_page` rows, and a link to
    // the rest of the window while some of it is left.
    let size = if journal {
        top.min(data.journal_page)
    } else {
        top
    };
    let page: Vec<&Value> = keep.iter().skip(start).take(size).copied().collect();
    let mut d = json!({"results": page});
    if params.get("$inlinecount").map(String::as_str) == Some("allpages") {
        d["__count"] = json!(keep.len().to_string());
    }
    if journal && size < top && start + size < keep.len() {
        // The rest of the window: the query without its paging (and, like
        // some servers, without `$format` and `sap-client`), the window's
        // remaining `$top` and a skip token.
        let rest: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "$skip" | "$top" | "$skiptoken" | "$format" | "sap-client"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut next = url::Url::parse(&format!("{origin}{path}")).expect("origin URL");
        next.query_pairs_mut().extend_pairs(rest);
        if top < 5000 {
            next.query_pairs_mut()
                .append_pair("$top", &(top - size).to_string());
        }
        next.query_pairs_mut()
            .append_pair("$skiptoken", &(start + size).to_string());
        d["__next"] = json!(next.as_str());
    }
    Ok(reply(
        StatusCode::OK,
        json!({ "d": d }).to_string().replace("{{base}}", origin),
    ))
}

/// The NetSuite account served: SuiteQL rows by table.
#[derive(Clone, Debug, Default)]
pub struct NetSuiteData {
    /// The TBA realm the account accepts (`1234567_SB1`).
    pub realm: String,
    pub tables: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    /// Every n-th request is answered with `CONCURRENCY_LIMIT_EXCEEDED` (400).
    pub throttle_every: Option<u64>,
    pub requests: Arc<AtomicU64>,
    /// The queries received.
    pub queries: Arc<Mutex<Vec<String>>>,
}

/// Reads `fixtures/netsuite`-shaped answers (`transactions-N.json`, …).
pub fn load_netsuite(dir: &Path, realm: &str) -> anyhow::Result<NetSuiteData> {
    let mut tables = HashMap::new();
    for (prefix, table) in [
        ("employees", "employee"),
        ("vendors", "vendor"),
        ("accounts", "account"),
        ("transactions", "transaction"),
    ] {
        tables.insert(table.to_owned(), load(dir, prefix, "/items")?);
    }
    Ok(NetSuiteData {
        realm: realm.into(),
        tables: Arc::new(Mutex::new(tables)),
        ..Default::default()
    })
}

fn ns_error(status: StatusCode, code: &str, detail: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
            "title": if status == StatusCode::UNAUTHORIZED { "Unauthorized" } else { "Bad Request" },
            "status": status.as_u16(),
            "o:errorDetails": [{"detail": detail, "o:errorCode": code}]})
        .to_string(),
    )
}

/// The literal after each `needle` in `q`: up to the quote for a time
/// (`needle` ends with `'`), the digits for an id.
fn after_each<'q>(q: &'q str, needle: &str) -> Vec<&'q str> {
    q.match_indices(needle)
        .map(|(i, _)| {
            let rest = &q[i + needle.len()..];
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

/// A row's key in a table's order: `(lastmodifieddate, transaction, line)`
/// for transactions, `("", id, 0)` otherwise.
fn row_key(table: &str, r: &Value) -> (String, u64, u64) {
    let n = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    if table == "transaction" {
        let m = r
            .get("lastmodifieddate")
            .and_then(Value::as_str)
            .unwrap_or("");
        (m.to_owned(), n("transaction"), n("transactionline"))
    } else {
        (String::new(), n("id"), 0)
    }
}

/// Serves the SuiteQL endpoint; `Err(req)` when the request is not for it.
pub async fn netsuite(
    data: &NetSuiteData,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Request<hyper::body::Incoming>> {
    if req.uri().path() != "/services/rest/query/v1/suiteql" {
        return Err(req);
    }
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let auth = header("authorization");
    if !auth.starts_with(&format!("OAuth realm=\"{}\"", data.realm))
        || !auth.contains("oauth_signature_method=\"HMAC-SHA256\"")
    {
        return Ok(ns_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_LOGIN",
            "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.",
        ));
    }
    let n = data.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if data
        .throttle_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k))
    {
        return Ok(ns_error(
            StatusCode::BAD_REQUEST,
            "CONCURRENCY_LIMIT_EXCEEDED",
            "Concurrent request limit exceeded. Request blocked.",
        ));
    }
    if req.method() != hyper::Method::POST || header("prefer") != "transient" {
        return Ok(ns_error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
            "SuiteQL is a POST with the header Prefer: transient.",
        ));
    }
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let offset: usize = params
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    if offset >= 100_000 {
        return Ok(ns_error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
            "Invalid value for parameter offset: a query answers at most 100000 results.",
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some(q) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("q").and_then(Value::as_str).map(str::to_owned))
    else {
        return Ok(ns_error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
            "Invalid search query. Provide a valid search query.",
        ));
    };
    data.queries.lock().expect("log").push(q.clone());
    let table = q
        .split(" FROM ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .to_owned();
    let tables = data.tables.lock().expect("tables");
    let Some(rows) = tables.get(&table) else {
        return Ok(ns_error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
            &format!(
                "Invalid search query. Search error occurred: Record '{table}' was not found."
            ),
        ));
    };
    // The connector's keyset conditions: strictly after each key, from each time.
    let times = after_each(&q, "lastmodifieddate > TO_DATE('");
    let firsts = after_each(&q, ".id > ");
    let lines = after_each(&q, "transactionline > ");
    let after: Vec<(String, u64, u64)> = if table == "transaction" {
        times
            .iter()
            .zip(&firsts)
            .zip(&lines)
            .map(|((m, t), l)| {
                (
                    (*m).to_owned(),
                    t.parse().unwrap_or(0),
                    l.parse().unwrap_or(0),
                )
            })
            .collect()
    } else {
        firsts
            .iter()
            .map(|i| (String::new(), i.parse().unwrap_or(0), 0))
            .collect()
    };
    let from = after_each(&q, "lastmodifieddate >= TO_DATE('");
    let mut hits: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            let k = row_key(&table, r);
            after.iter().all(|a| k > *a) && from.iter().all(|f| k.0.as_str() >= *f)
        })
        .collect();
    hits.sort_by_key(|r| row_key(&table, r));
    let total = hits.len();
    let items: Vec<Value> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let mut r = r.clone();
            r["links"] = json!([]);
            r
        })
        .collect();
    let more = offset + items.len() < total;
    Ok(reply(
        StatusCode::OK,
        json!({"links": [], "count": items.len(), "hasMore": more, "offset": offset,
               "totalResults": total, "items": items})
        .to_string(),
    ))
}
