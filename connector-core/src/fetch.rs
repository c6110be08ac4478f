//! The page walker: one stream's pages, in order, through the HTTP stack.
//!
//! A connector only describes its stream ([`StreamDef`]); the [`Pager`] asks
//! for each page, checks its body (a truncated body is fetched again), reads
//! what it says about the next page, refuses next links to another origin and
//! tokens seen before (loops), and requests the following pages concurrently
//! when the strategy makes them predictable (lazily, a bounded window ahead).
//! What to do with each page (raw store, ledger, watermark) is the caller's.
//!
//! A complete body that is not a page (not JSON, not UTF-8, no records at the
//! pointer) is still handed over, marked [`FetchedPage::unparseable`], so it
//! is stored verbatim and dead-lettered as a page. The pull goes on past it
//! when the strategy can find the next page without the body (offsets or page
//! numbers under a known total); otherwise [`FetchedPage::stuck`] says why it
//! cannot, and the page after it is never guessed.

use chrono::{DateTime, Utc};
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::value::RawValue;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use url::Url;

use crate::pagination::{LinkAt, link_header_next};
use crate::records::{pointer, split_key, split_page, string_at};
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
    /// The largest `(modified, id)` on the page, for keyset streams, with
    /// the modified time as the source wrote it.
    pub max_key: Option<KeysetKey>,
    /// The next state the server issued on this page (`SyncMode::Incremental::token_at`).
    pub state_token: Option<String>,
    /// The request as sent (without auth).
    pub request: crate::Request,
    /// The incremental state the request carried, as text.
    pub since: Option<String>,
    /// Why the body could not be read as a page (it is still the verbatim
    /// response, to be stored and dead-lettered as a page).
    pub unparseable: Option<String>,
    /// Why the page after this one cannot be found (`next` is then `None`
    /// although the pull is not complete): the run must not treat the pull
    /// as finished.
    pub stuck: Option<String>,
}

struct Checked {
    facts: PageFacts,
    max_cursor: Option<DateTime<Utc>>,
    max_key: Option<KeysetKey>,
    state_token: Option<String>,
    /// The body is not a page (complete, but not what the stream reads).
    unparseable: Option<String>,
    /// The records are readable but the next-page value is not.
    bad_next: Option<String>,
}

/// Unreadable pages in a row after which a pull without a known total
/// stops guessing where the next page is.
const MAX_BLIND_PAGES: u32 = 3;

type Inflight = Pin<
    Box<
        dyn Future<
                Output = (
                    PageToken,
                    crate::Request,
                    Result<(Response, Checked), Error>,
                ),
            > + Send,
    >,
>;

/// Walks one stream's pages from a start token.
pub struct Pager {
    http: HttpClient,
    def: StreamDef,
    since: Option<serde_json::Value>,
    /// The batch of ids of a detail stream's request.
    ids: Option<Vec<String>>,
    /// The moment a snapshot stream's pages are answered as of.
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    concurrency: usize,
    queue: VecDeque<PageToken>,
    /// Predicted pages not requested yet (lazy: never materialized whole).
    ahead: Box<dyn Iterator<Item = PageToken> + Send>,
    /// The last total a page announced, and the record count of the last
    /// non-empty page (for stepping past pages that cannot be read).
    total: Option<u64>,
    page_size: Option<u64>,
    /// Unreadable pages in a row.
    blind: u32,
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
    /// `since` is the stream's incremental state (an RFC 3339 string for a
    /// time bound, the server's token otherwise), put in every page's
    /// request of an incremental stream; `concurrency` bounds the pages in flight.
    pub fn new(
        http: HttpClient,
        def: StreamDef,
        start: PageToken,
        since: Option<serde_json::Value>,
        concurrency: usize,
    ) -> Self {
        let endpoint = format!("{} {} {}", http.connection(), def.method.as_str(), def.path);
        Self {
            http,
            def,
            since,
            ids: None,
            as_of: None,
            concurrency: concurrency.max(1),
            queue: VecDeque::from([start]),
            ahead: Box::new(std::iter::empty()),
            total: None,
            page_size: None,
            blind: 0,
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

    /// Asks for these ids ([`crate::StreamDef::details`]): every page's
    /// request carries them in [`crate::PageCtx::ids`].
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Every page is asked for as of `as_of` ([`crate::StreamDef::snapshot`]).
    pub fn with_as_of(mut self, as_of: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.as_of = as_of;
        self
    }

    /// The page whose fetch failed, after `next_page` returned an error.
    pub fn failed_page(&self) -> Option<&PageToken> {
        self.failed.as_ref()
    }

    async fn step(&mut self) -> Option<Result<FetchedPage, Error>> {
        while self.inflight.len() < self.concurrency {
            let Some(token) = self.queue.pop_front().or_else(|| self.ahead.next()) else {
                break;
            };
            // Offsets and page numbers only ever grow; only tokens a body
            // names can loop (and only they are remembered: memory stays flat).
            let body_named = matches!(token, PageToken::Cursor { .. } | PageToken::Link { .. });
            // A link is the same page whatever window it was met in.
            let seen_as = match &token {
                PageToken::Link { url, .. } => PageToken::Link {
                    url: url.clone(),
                    window_end: None,
                },
                t => t.clone(),
            };
            if body_named && !self.seen.insert(seen_as) {
                self.failed = Some(token.clone());
                return Some(Err(Error::PaginationLoop {
                    endpoint: self.endpoint.clone(),
                    token: token.to_string(),
                }));
            }
            let page = crate::PageCtx {
                since: self.since.as_ref(),
                partition: self.def.partition.as_deref(),
                ids: self.ids.as_deref(),
                after: None,
                as_of: self.as_of,
            };
            let req = match self.def.request(self.http.base_url(), &token, &page) {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let http = self.http.clone();
            let def = self.def.clone();
            let endpoint = format!("{} ({token})", self.endpoint);
            self.inflight_tokens.push_back(token.clone());
            self.inflight.push_back(Box::pin(async move {
                let r = http
                    .send_checked(&req, |resp| {
                        check_page(&def, &req.url, &http, resp, &endpoint)
                    })
                    .await;
                // A body that ends early on every attempt is what the source
                // serves for this page: it is handed over as unreadable (and
                // stored), not asked for forever.
                let r = match r {
                    Err(Error::Truncated { message, .. }) if req.idempotent => {
                        http.send(&req).await.map(|resp| {
                            let why = format!("the body ended early on every attempt ({message})");
                            let checked = Checked {
                                facts: PageFacts::default(),
                                max_cursor: None,
                                max_key: None,
                                state_token: None,
                                unparseable: Some(http.scrub(&why)),
                                bad_next: None,
                            };
                            (resp, checked)
                        })
                    }
                    other => other,
                };
                (token, req, r)
            }));
        }
        let (token, request, result) = self.inflight.next().await?;
        self.inflight_tokens.pop_front();
        let (response, checked) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.failed = Some(token);
                return Some(Err(e));
            }
        };
        if checked.facts.total.is_some() {
            self.total = checked.facts.total;
        }
        if checked.facts.records > 0 {
            self.page_size = Some(checked.facts.records as u64);
        }
        self.blind = if checked.unparseable.is_some() {
            self.blind + 1
        } else {
            0
        };
        let (next, stuck) = if let (Some(_), Pagination::LinkHeader, Some(_)) = (
            &checked.unparseable,
            &self.def.pagination,
            &checked.facts.next,
        ) {
            // The header names the next page: the pull goes on past this one.
            (self.def.pagination.next(&token, &checked.facts), None)
        } else if let Some(why) = &checked.unparseable {
            match self
                .def
                .pagination
                .next_blind(&token, self.total, self.page_size)
            {
                Some(n) => (Some(n), None),
                None if self.total.is_some() => (None, None),
                // No total yet (the first page): offsets and page numbers
                // still tell the next page; a readable page then ends the
                // pull or gives the total. A source answering nothing but
                // unreadable pages is given up on after a few.
                None => match self
                    .def
                    .pagination
                    .next_blind(&token, Some(u64::MAX), self.page_size)
                {
                    // A source that may page by link is not guessed past
                    // its first page: its next page is the link's.
                    Some(_) if matches!(self.def.pagination, Pagination::LinkOrOffset { .. }) => (
                        None,
                        Some(format!(
                            "{} ({token}): the page could not be read ({why}), and the server may name the next page itself",
                            self.endpoint
                        )),
                    ),
                    Some(n) if self.blind < MAX_BLIND_PAGES => (Some(n), None),
                    _ => (
                        None,
                        Some(format!(
                            "{} ({token}): the page could not be read ({why}), so the page after it is unknown",
                            self.endpoint
                        )),
                    ),
                },
            }
        } else if let Some(why) = &checked.bad_next {
            (
                None,
                Some(format!(
                    "{} ({token}): the next-page value is unusable: {why}",
                    self.endpoint
                )),
            )
        } else if let Some(total) = self
            .def
            .pagination
            .empty_before_total(&token, &checked.facts)
        {
            (
                None,
                Some(format!(
                    "{} ({token}): the page is empty but the source reported a total of {total}; the pull is incomplete",
                    self.endpoint
                )),
            )
        } else {
            (self.def.pagination.next(&token, &checked.facts), None)
        };
        if let Some(n) = &next {
            // Keep requests in flight only while they are the pages that follow.
            if self.inflight_tokens.front() != Some(n) {
                self.inflight = FuturesOrdered::new();
                self.inflight_tokens.clear();
                let mut ahead = self.def.pagination.ahead(&token, &checked.facts).peekable();
                if ahead.peek() == Some(n) {
                    self.queue.clear();
                    self.ahead = Box::new(ahead);
                } else {
                    self.queue = VecDeque::from([n.clone()]);
                    self.ahead = Box::new(std::iter::empty());
                }
            }
        }
        Some(Ok(FetchedPage {
            token,
            next,
            response,
            facts: checked.facts,
            max_cursor: checked.max_cursor,
            max_key: checked.max_key,
            state_token: checked.state_token,
            request,
            since: crate::PageCtx {
                since: self.since.as_ref(),
                ..Default::default()
            }
            .since_text(),
            unparseable: checked.unparseable,
            stuck,
        }))
    }
}

/// Runs inside the retry loop: a truncated body is retried; a next link to
/// another origin fails; a malformed body is handed over as unparseable.
fn check_page(
    def: &StreamDef,
    page_url: &Url,
    http: &HttpClient,
    resp: &Response,
    endpoint: &str,
) -> Result<Checked, Error> {
    let mut c = facts_of(
        def,
        page_url,
        http.base_url(),
        &resp.body,
        &resp.headers,
        endpoint,
    )?;
    if let Some(next) = c.facts.next.as_mut()
        && matches!(
            def.pagination,
            Pagination::NextLink(_) | Pagination::LinkHeader | Pagination::LinkOrOffset { .. }
        )
    {
        *next = http.strip_auth_params(next);
    }
    // These messages quote what the source sent: scrubbed like errors.
    c.unparseable = c.unparseable.map(|m| http.scrub(&m));
    c.bad_next = c.bad_next.map(|m| http.scrub(&m));
    Ok(c)
}

/// What a page body (and its headers) says about paging, as the [`Pager`]
/// reads it. For test kits and tools: a body that is not a page is an error.
pub fn page_facts(
    def: &StreamDef,
    page_url: &Url,
    base: &Url,
    body: &str,
    headers: &reqwest::header::HeaderMap,
) -> Result<PageFacts, Error> {
    let c = facts_of(def, page_url, base, body.as_bytes(), headers, def.name)?;
    match c.unparseable.or(c.bad_next) {
        Some(message) => Err(Error::Body {
            endpoint: def.name.to_owned(),
            message,
        }),
        None => Ok(c.facts),
    }
}

/// The next-page value exactly as the body has it: a cursor, or a link
/// before it is resolved (body strategies only).
pub fn raw_next(def: &StreamDef, body: &str) -> Result<Option<String>, String> {
    let root: &RawValue = serde_json::from_str(body).map_err(|e| e.to_string())?;
    match (&def.pagination, def.pagination.link_at()) {
        (Pagination::Cursor { cursor_at, .. }, _) => string_at(root, cursor_at),
        (_, Some(LinkAt::Pointer(p))) => string_at(root, p),
        (_, Some(LinkAt::RelNext(p))) => rel_next(root, p),
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
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let text = crate::records::readable(body, content_type);
    let split = match split_page(&text, &def.records.stored(), def.pagination.total_at()) {
        Ok(split) => split,
        Err(e) if e.truncated => {
            return Err(Error::Truncated {
                endpoint: endpoint.to_owned(),
                message: e.message,
            });
        }
        Err(e) => {
            // A next page named by a header is known without the body.
            let raw_next = match def.pagination {
                Pagination::LinkHeader => Ok(link_from_headers(headers)),
                _ => Ok(None),
            };
            let (next, bad_next) = resolve_next(def, page_url, base, raw_next, endpoint)?;
            return Ok(Checked {
                facts: PageFacts {
                    next,
                    ..PageFacts::default()
                },
                max_cursor: None,
                max_key: None,
                state_token: None,
                unparseable: Some(e.message),
                bad_next,
            });
        }
    };
    let raw_next = match (&def.pagination, def.pagination.link_at()) {
        (Pagination::Cursor { cursor_at, .. }, _) => string_at(split.root, cursor_at),
        (_, Some(LinkAt::Pointer(p))) => string_at(split.root, p),
        (_, Some(LinkAt::RelNext(p))) => rel_next(split.root, p),
        (Pagination::LinkHeader, _) => Ok(link_from_headers(headers)),
        (Pagination::Keyset { .. }, _) => Ok(keyset_after(def, &split.records)),
        _ => Ok(None),
    };
    let (next, mut bad_next) = resolve_next(def, page_url, base, raw_next, endpoint)?;
    // A full keyset page whose records hold no usable key cannot say where
    // the next page starts: the pull must not end as complete.
    if let Pagination::Keyset { limit, .. } = def.pagination
        && next.is_none()
        && split.records.len() >= limit as usize
        && bad_next.is_none()
    {
        bad_next = Some(format!(
            "no record of this full page has a usable key ({}{}): the page after it is unknown",
            def.primary_key,
            def.cursor
                .map(|c| format!(" and a readable {c}"))
                .unwrap_or_default()
        ));
    }
    let max_cursor = match def.cursor {
        Some(ptr) => split
            .records
            .iter()
            .filter_map(|r| string_at(r, ptr).ok().flatten())
            .filter_map(|s| def.cursor_time(&s))
            .max(),
        None => None,
    };
    let max_key = match (def.mode, def.cursor) {
        (crate::SyncMode::Incremental { keyset: true, .. }, Some(_)) => {
            largest_key(def, &split.records)
        }
        _ => None,
    };
    // The server's own next state. A page without one (an empty answer may
    // carry none) leaves the stored state as it is: asking again from it is
    // always safe. One that is not a string cannot be sent back: the pull
    // cannot end as complete.
    let (state_token, bad_next) = match def.mode {
        crate::SyncMode::Incremental {
            token_at: Some(at), ..
        } => match string_at(split.root, at) {
            Ok(Some(t)) if !t.is_empty() && !t.contains('\0') => (Some(t), bad_next),
            Ok(_) => (None, bad_next),
            Err(e) => (None, bad_next.or(Some(format!("the next state: {e}")))),
        },
        _ => (None, bad_next),
    };
    Ok(Checked {
        facts: PageFacts {
            records: split.records.len(),
            total: split.total,
            next,
        },
        max_cursor,
        max_key,
        state_token,
        unparseable: None,
        bad_next,
    })
}

/// The largest `(cursor, key)` of `records` by [`keyset_order`]: records
/// without a key, or with a cursor that does not read as a time, are left
/// out. A stream without a cursor orders by the key alone (the time is the
/// epoch and the text empty).
fn largest_key(def: &StreamDef, records: &[&RawValue]) -> Option<KeysetKey> {
    records
        .iter()
        .filter_map(|r| {
            let id = crate::records::key_at(r, def.primary_key).ok().flatten()?;
            match def.cursor {
                Some(ptr) => {
                    let text = string_at(r, ptr).ok().flatten()?;
                    Some((def.cursor_time(&text)?, id, text))
                }
                None => Some((DateTime::<Utc>::UNIX_EPOCH, id, String::new())),
            }
        })
        .max_by(keyset_order)
}

/// Where the page after this one starts under [`Pagination::Keyset`]: the
/// largest `(cursor, key)` of the page as `{"modified": text or null, "id":
/// key}` (JSON text). `None` when no record has a key.
fn keyset_after(def: &StreamDef, records: &[&RawValue]) -> Option<String> {
    let (_, id, text) = largest_key(def, records)?;
    let modified = def.cursor.is_some().then_some(text);
    Some(serde_json::json!({"modified": modified, "id": id}).to_string())
}

/// A keyset key: the record's modified time, its id, and the time as the
/// source wrote it (sent back as written: some sources refuse another
/// precision).
pub type KeysetKey = (DateTime<Utc>, String, String);

/// A record cursor's time: RFC 3339, or OData v2's `/Date(ms)/` (with an
/// optional `+hhmm`/`-hhmm` display offset; the milliseconds are UTC).
pub fn cursor_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let split = inner.rfind(['+', '-']).filter(|&i| i > 0);
        let ms = split.map_or(inner, |i| &inner[..i]);
        return DateTime::<Utc>::from_timestamp_millis(ms.parse().ok()?);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The order of `(modified, id)` keys: by time, then by id, as numbers when
/// both ids are integers (`"9" < "10"`), else as text.
pub fn keyset_order(a: &KeysetKey, b: &KeysetKey) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then_with(|| {
        let (x, y) = (split_key(&a.1), split_key(&b.1));
        x.iter()
            .zip(&y)
            .map(|(p, q)| match (p.parse::<i128>(), q.parse::<i128>()) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => p.cmp(q),
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len()))
    })
}

/// The `rel="next"` target of the response's `Link` headers.
fn link_from_headers(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(link_header_next)
        .map(str::to_owned)
}

/// The next-page value as it will be requested and stored: a link resolved
/// against the page's URL (refused when on another origin), or a cursor.
/// `Ok((None, Some(why)))` when the value is there but unusable.
fn resolve_next(
    def: &StreamDef,
    page_url: &Url,
    base: &Url,
    raw_next: Result<Option<String>, String>,
    endpoint: &str,
) -> Result<(Option<String>, Option<String>), Error> {
    let raw = match raw_next {
        Err(e) => return Ok((None, Some(e))),
        Ok(r) => r,
    };
    let by_link = matches!(
        def.pagination,
        Pagination::NextLink(_) | Pagination::LinkHeader | Pagination::LinkOrOffset { .. }
    );
    match (by_link, raw) {
        (true, Some(link)) if !link.is_empty() => match page_url.join(&link) {
            Err(e) => Ok((None, Some(format!("next link is not a URL: {e}")))),
            Ok(abs) if abs.origin() != base.origin() => Err(Error::CrossOrigin {
                endpoint: endpoint.to_owned(),
                origin: abs.origin().ascii_serialization(),
            }),
            Ok(abs) => Ok((Some(abs.to_string()), None)),
        },
        (true, _) => Ok((None, None)),
        // Postgres cannot store U+0000 in the watermark: a cursor holding
        // one could never be resumed from.
        (_, Some(c)) if c.contains('\0') => Ok((
            None,
            Some(
                "the next cursor contains a NUL character (U+0000), which cannot be stored".into(),
            ),
        )),
        (_, n) => Ok((n, None)),
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

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn cursor_times_read_rfc_3339_and_odata_v2_dates() {
        let t = |s: &str| cursor_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2024-04-02T10:15:22+02:00").as_deref(),
            Some("2024-04-02T08:15:22+00:00")
        );
        // The milliseconds are UTC; the offset (in minutes) only says how it is shown.
        assert_eq!(
            t("/Date(1712045722000+0060)/").as_deref(),
            Some("2024-04-02T08:15:22+00:00")
        );
        assert_eq!(
            t("/Date(1712045722000)/").as_deref(),
            Some("2024-04-02T08:15:22+00:00")
        );
        assert_eq!(t("/Date(x)/"), None);
        assert_eq!(t("yesterday"), None);
        let k = |t: &str, id: &str| (cursor_time(t).unwrap(), id.to_owned(), t.to_owned());
        let a = k("2024-01-01T00:00:00Z", "9");
        let b = k("2024-01-01T00:00:00Z", "10");
        assert!(keyset_order(&b, &a).is_gt(), "ids as numbers");
        let c = k("2024-01-01T00:00:00Z", "b");
        let d = k("2024-01-01T00:00:00Z", "a");
        assert!(keyset_order(&c, &d).is_gt(), "ids as text");
    }
}
