//! The page walker: one stream's pages, in order, through the HTTP stack.
//!
//! A connector only describes its stream ([`StreamDef`]); the [`Pager`] asks
//! for each page, checks its body (a truncated body is fetched again, a
//! malformed one fails), reads what it says about the next page, refuses next
//! links to another origin and tokens seen before (loops), and requests the
//! following pages concurrently when the strategy makes them predictable.
//! What to do with each page (raw store, ledger, watermark) is the caller's.

use chrono::{DateTime, Utc};
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::value::RawValue;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use url::Url;

use crate::pagination::{LinkAt, link_header_next};
use crate::records::{pointer, split_page};
use crate::{Error, HttpClient, PageFacts, PageToken, Pagination, Response, StreamDef};

/// One fetched page: its token, the one after it, the response and its facts.
#[derive(Debug)]
pub struct FetchedPage {
    pub token: PageToken,
    /// `None` when this page was the last.
    pub next: Option<PageToken>,
    pub response: Response,
    pub facts: PageFacts,
    /// The latest record cursor (modified time) on the page, for incremental streams.
    pub max_cursor: Option<DateTime<Utc>>,
}

struct Checked {
    facts: PageFacts,
    max_cursor: Option<DateTime<Utc>>,
}

type Inflight =
    Pin<Box<dyn Future<Output = (PageToken, Result<(Response, Checked), Error>)> + Send>>;

/// Walks one stream's pages from a start token.
pub struct Pager {
    http: HttpClient,
    def: StreamDef,
    since: Option<String>,
    concurrency: usize,
    queue: VecDeque<PageToken>,
    inflight: FuturesOrdered<Inflight>,
    inflight_tokens: VecDeque<PageToken>,
    seen: HashSet<PageToken>,
    endpoint: String,
    done: bool,
    failed: Option<PageToken>,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager")
            .field("stream", &self.def.name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Pager {
    /// `since` is the incremental lower bound (RFC 3339), sent on every page
    /// of an incremental stream; `concurrency` bounds the pages in flight.
    pub fn new(
        http: HttpClient,
        def: StreamDef,
        start: PageToken,
        since: Option<String>,
        concurrency: usize,
    ) -> Self {
        let endpoint = format!("{} GET {}", http.connection(), def.path);
        Self {
            http,
            def,
            since,
            concurrency: concurrency.max(1),
            queue: VecDeque::from([start]),
            inflight: FuturesOrdered::new(),
            inflight_tokens: VecDeque::new(),
            seen: HashSet::new(),
            endpoint,
            done: false,
            failed: None,
        }
    }

    /// The next page in order, `None` after the last one. After an error the
    /// pager is finished.
    pub async fn next_page(&mut self) -> Option<Result<FetchedPage, Error>> {
        if self.done {
            return None;
        }
        let r = self.step().await;
        if !matches!(r, Some(Ok(FetchedPage { next: Some(_), .. }))) {
            self.done = true;
        }
        r
    }

    /// The page whose fetch failed, after `next_page` returned an error.
    pub fn failed_page(&self) -> Option<&PageToken> {
        self.failed.as_ref()
    }

    async fn step(&mut self) -> Option<Result<FetchedPage, Error>> {
        while self.inflight.len() < self.concurrency {
            let Some(token) = self.queue.pop_front() else {
                break;
            };
            if !self.seen.insert(token.clone()) {
                self.failed = Some(token.clone());
                return Some(Err(Error::PaginationLoop {
                    endpoint: self.endpoint.clone(),
                    token: token.to_string(),
                }));
            }
            let url = match self
                .def
                .page_url(self.http.base_url(), &token, self.since.as_deref())
            {
                Ok(u) => u,
                Err(e) => return Some(Err(e)),
            };
            let http = self.http.clone();
            let def = self.def.clone();
            let endpoint = format!("{} ({token})", self.endpoint);
            self.inflight_tokens.push_back(token.clone());
            self.inflight.push_back(Box::pin(async move {
                let page_url = url.clone();
                let r = http
                    .get_checked(url, |resp| {
                        check_page(&def, &page_url, http.base_url(), resp, &endpoint)
                    })
                    .await;
                (token, r)
            }));
        }
        let (token, result) = self.inflight.next().await?;
        self.inflight_tokens.pop_front();
        let (response, checked) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.failed = Some(token);
                return Some(Err(e));
            }
        };
        let next = self.def.pagination.next(&token, &checked.facts);
        if let Some(n) = &next {
            // Keep requests in flight only while they are the pages that follow.
            if self.inflight_tokens.front() != Some(n) {
                self.inflight = FuturesOrdered::new();
                self.inflight_tokens.clear();
                let ahead = self
                    .def
                    .pagination
                    .predictable_after(&token, checked.facts.total);
                self.queue = if ahead.first() == Some(n) {
                    ahead.into()
                } else {
                    VecDeque::from([n.clone()])
                };
            }
        }
        Some(Ok(FetchedPage {
            token,
            next,
            response,
            facts: checked.facts,
            max_cursor: checked.max_cursor,
        }))
    }
}

/// Runs inside the retry loop: a truncated body is retried, a malformed one
/// or a next link to another origin fails.
fn check_page(
    def: &StreamDef,
    page_url: &Url,
    base: &Url,
    resp: &Response,
    endpoint: &str,
) -> Result<Checked, Error> {
    facts_of(def, page_url, base, &resp.body, &resp.headers, endpoint)
}

/// What a page body (and its headers) says about paging, as the [`Pager`]
/// reads it. For test kits and tools.
pub fn page_facts(
    def: &StreamDef,
    page_url: &Url,
    base: &Url,
    body: &str,
    headers: &reqwest::header::HeaderMap,
) -> Result<PageFacts, Error> {
    facts_of(def, page_url, base, body.as_bytes(), headers, def.name).map(|c| c.facts)
}

/// The next-page value exactly as the body has it: a cursor, or a link
/// before it is resolved (body strategies only).
pub fn raw_next(def: &StreamDef, body: &str) -> Result<Option<String>, String> {
    let root: &RawValue = serde_json::from_str(body).map_err(|e| e.to_string())?;
    match &def.pagination {
        Pagination::Cursor { cursor_at, .. } => string_at(root, cursor_at),
        Pagination::NextLink(LinkAt::Pointer(p)) => string_at(root, p),
        Pagination::NextLink(LinkAt::RelNext(p)) => rel_next(root, p),
        _ => Ok(None),
    }
}

fn facts_of(
    def: &StreamDef,
    page_url: &Url,
    base: &Url,
    body: &[u8],
    headers: &reqwest::header::HeaderMap,
    endpoint: &str,
) -> Result<Checked, Error> {
    let split = split_page(body, def.records_at, def.pagination.total_at()).map_err(|e| {
        if e.truncated {
            Error::Truncated {
                endpoint: endpoint.to_owned(),
                message: e.message,
            }
        } else {
            Error::Body {
                endpoint: endpoint.to_owned(),
                message: e.message,
            }
        }
    })?;
    let body_err = |message: String| Error::Body {
        endpoint: endpoint.to_owned(),
        message,
    };
    let raw_next = match &def.pagination {
        Pagination::Cursor { cursor_at, .. } => {
            string_at(split.root, cursor_at).map_err(body_err)?
        }
        Pagination::NextLink(LinkAt::Pointer(p)) => string_at(split.root, p).map_err(body_err)?,
        Pagination::NextLink(LinkAt::RelNext(p)) => rel_next(split.root, p).map_err(body_err)?,
        Pagination::LinkHeader => headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(link_header_next)
            .map(str::to_owned),
        Pagination::OffsetLimit { .. } | Pagination::PageNumber { .. } => None,
    };
    let next = match (&def.pagination, raw_next) {
        (Pagination::NextLink(_) | Pagination::LinkHeader, Some(link)) if !link.is_empty() => {
            let abs = page_url
                .join(&link)
                .map_err(|e| body_err(format!("next link is not a URL: {e}")))?;
            if abs.origin() != base.origin() {
                return Err(Error::CrossOrigin {
                    endpoint: endpoint.to_owned(),
                    origin: abs.origin().ascii_serialization(),
                });
            }
            Some(abs.to_string())
        }
        (Pagination::NextLink(_) | Pagination::LinkHeader, _) => None,
        (_, n) => n,
    };
    let max_cursor = match def.cursor {
        Some(ptr) => split
            .records
            .iter()
            .filter_map(|r| string_at(r, ptr).ok().flatten())
            .filter_map(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|d| d.with_timezone(&Utc))
            .max(),
        None => None,
    };
    Ok(Checked {
        facts: PageFacts {
            records: split.records.len(),
            total: split.total,
            next,
        },
        max_cursor,
    })
}

/// A string (or number) at `ptr`; `None` when absent or null.
fn string_at(v: &RawValue, ptr: &str) -> Result<Option<String>, String> {
    let Some(raw) = pointer(v, ptr)? else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::String(s)) => Ok(Some(s)),
        Ok(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        _ => Err(format!(
            "value at {ptr:?} is not a string: {}",
            crate::snippet(raw.get().as_bytes())
        )),
    }
}

/// The `href` of the `rel == "next"` entry of the array at `ptr`.
fn rel_next(v: &RawValue, ptr: &str) -> Result<Option<String>, String> {
    let Some(raw) = pointer(v, ptr)? else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct Link {
        rel: String,
        href: String,
    }
    let links: Vec<Link> = serde_json::from_str(raw.get())
        .map_err(|e| format!("links at {ptr:?} are not [{{rel, href}}]: {e}"))?;
    Ok(links.into_iter().find(|l| l.rel == "next").map(|l| l.href))
}
