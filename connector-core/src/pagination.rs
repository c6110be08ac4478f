//! Pagination strategies, built once in core; a connector only picks one.
//!
//! | strategy | request | ends when |
//! |---|---|---|
//! | [`Pagination::OffsetLimit`] | `?limit=L&offset=O` | total reached, short or empty page |
//! | [`Pagination::PageNumber`] | `?page=N&per_page=S` | last page by total pages, short or empty page |
//! | [`Pagination::Cursor`] | `?cursor=<token from the previous body>` | no or empty token |
//! | [`Pagination::NextLink`] | the URL the body names (OData v2 `d.__next`, v4 `@odata.nextLink`, Salesforce `nextRecordsUrl`, NetSuite `links[rel=next]`) | no link |
//! | [`Pagination::LinkHeader`] | the RFC 8288 `Link: <…>; rel="next"` URL | no such link |
//!
//! Links may be relative (resolved against the page's URL) or absolute; a link
//! to another origin is refused before any request ([`crate::Error::CrossOrigin`]).
//! A token or link requested twice in one pull is a loop ([`crate::Error::PaginationLoop`]).

use serde::{Deserialize, Serialize};

/// Where a next-page link is in a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkAt {
    /// A string at this JSON pointer.
    Pointer(&'static str),
    /// An array at this JSON pointer of `{"rel": …, "href": …}` objects; the
    /// one with `rel == "next"` (NetSuite REST).
    RelNext(&'static str),
}

/// How a stream pages through its endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pagination {
    /// `?limit=L&offset=O`. Ends when the body's total (at `total_at`, when
    /// given) is reached, on a short page, or on an empty page.
    OffsetLimit {
        limit: u32,
        limit_param: &'static str,
        offset_param: &'static str,
        total_at: Option<&'static str>,
    },
    /// `?page=N&size=S`, pages counted from `first_page`. Ends on the last page
    /// (by the total page count at `total_pages_at`), a short or an empty page.
    PageNumber {
        size: u32,
        page_param: &'static str,
        size_param: &'static str,
        first_page: u64,
        total_pages_at: Option<&'static str>,
    },
    /// An opaque cursor at `cursor_at` in each body, sent back as `cursor_param`.
    /// Ends when the body has no cursor (absent, null or empty).
    Cursor {
        cursor_param: &'static str,
        cursor_at: &'static str,
        /// A fixed page size parameter, when the API takes one.
        limit: Option<(&'static str, u32)>,
    },
    /// The body names the next page's URL.
    NextLink(LinkAt),
    /// The `Link` response header names the next page's URL (RFC 8288).
    LinkHeader,
    /// One answer holds everything (a report, a change feed): no paging.
    Single,
    /// OData: the server's next link (at `link`) when the body has one,
    /// followed as it is (servers page by themselves, with a `$skiptoken`);
    /// otherwise `?$top=L&$skip=O`, ending at the total (at `total_at`), on
    /// a short page or on an empty one. An incremental stream paging this
    /// way must order by an immutable key, not by its change stamp, so that
    /// a change during the pull cannot move a record across the offset
    /// (docs/connector-contract.md).
    LinkOrOffset {
        link: LinkAt,
        limit: u32,
        limit_param: &'static str,
        offset_param: &'static str,
        total_at: Option<&'static str>,
    },
    /// Keyset paging: each page asks for the records after the largest key
    /// of the page before, `{"modified": …, "id": …}` (the record cursor as
    /// the source wrote it, or null without one, and the primary key),
    /// handed to the stream's [`crate::RequestHook`] as
    /// [`crate::PageCtx::after`]; `limit_param` carries the page size. No
    /// offset ever grows, so a source's cap on offsets (NetSuite's 100,000
    /// rows) is never reached. Ends on a page shorter than `limit`.
    Keyset {
        limit: u32,
        limit_param: &'static str,
    },
}

/// Where a page starts. Stored in the watermark while a pull is in progress,
/// so an interrupted pull resumes where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageToken {
    /// The first page of a cursor or link strategy.
    Start,
    Offset {
        offset: u64,
    },
    Page {
        page: u64,
    },
    Cursor {
        cursor: String,
    },
    /// An absolute URL on the connection's origin.
    Link {
        url: String,
        /// Under [`Pagination::LinkOrOffset`]: the offset where the pull goes
        /// on by `$skip` when the server's links end (the records before it
        /// are read); the server pages within the client's `$top` window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_end: Option<u64>,
    },
}

impl std::fmt::Display for PageToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageToken::Start => f.write_str("first page"),
            PageToken::Offset { offset } => write!(f, "offset {offset}"),
            PageToken::Page { page } => write!(f, "page {page}"),
            PageToken::Cursor { cursor } => write!(f, "cursor {}", shorten(cursor)),
            // The path only: a query could carry anything.
            PageToken::Link { url, .. } => match url::Url::parse(url) {
                Ok(u) => write!(f, "link {}", u.path()),
                Err(_) => f.write_str("link (unparsable)"),
            },
        }
    }
}

impl PageToken {
    /// The token as it may be stored (ledger, watermark, `status`): a link's
    /// query parameters named in `names` (exact, case-insensitive) have their
    /// values replaced by `***`. Other tokens are returned as they are.
    pub fn redacted(&self, names: &[String]) -> PageToken {
        let PageToken::Link { url, window_end } = self else {
            return self.clone();
        };
        let Ok(mut u) = url::Url::parse(url) else {
            return self.clone();
        };
        if !u
            .query_pairs()
            .any(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(&k)))
        {
            return self.clone();
        }
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let masked = names.iter().any(|n| n.eq_ignore_ascii_case(&k));
                let v = if masked {
                    crate::secret::MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        PageToken::Link {
            url: u.into(),
            window_end: *window_end,
        }
    }

    /// True for a stored link whose masked values make it unusable: a pull
    /// resuming from it starts over from the first page instead.
    pub fn is_redacted(&self) -> bool {
        match self {
            PageToken::Link { url, .. } => url::Url::parse(url)
                .map(|u| u.query_pairs().any(|(_, v)| v == crate::secret::MASK))
                .unwrap_or(false),
            _ => false,
        }
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// What a fetched page says about paging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageFacts {
    pub records: usize,
    /// The total the body announces (records for offset/limit, pages for page numbers).
    pub total: Option<u64>,
    /// The next cursor or the next link (already resolved to an absolute URL).
    pub next: Option<String>,
}

impl Pagination {
    pub fn offset_limit(limit: u32) -> Self {
        Pagination::OffsetLimit {
            limit,
            limit_param: "limit",
            offset_param: "offset",
            total_at: Some("/total"),
        }
    }

    /// `?page=N&per_page=S` from page 1.
    pub fn page_number(size: u32) -> Self {
        Pagination::PageNumber {
            size,
            page_param: "page",
            size_param: "per_page",
            first_page: 1,
            total_pages_at: None,
        }
    }

    /// A cursor at `cursor_at`, sent back as `cursor_param`.
    pub fn cursor(cursor_param: &'static str, cursor_at: &'static str) -> Self {
        Pagination::Cursor {
            cursor_param,
            cursor_at,
            limit: None,
        }
    }

    /// OData v2 (SAP): `d.__next`.
    pub fn odata_v2() -> Self {
        Pagination::NextLink(LinkAt::Pointer("/d/__next"))
    }
    /// OData v4: `@odata.nextLink`.
    pub fn odata_v4() -> Self {
        Pagination::NextLink(LinkAt::Pointer("/@odata.nextLink"))
    }
    /// Salesforce REST query: `nextRecordsUrl` (relative).
    pub fn salesforce() -> Self {
        Pagination::NextLink(LinkAt::Pointer("/nextRecordsUrl"))
    }
    /// NetSuite REST: `links[rel=next].href`.
    pub fn netsuite() -> Self {
        Pagination::NextLink(LinkAt::RelNext("/links"))
    }

    /// OData v2 with `$inlinecount=allpages`: `d.__next` when the server
    /// pages by itself, else `$top`/`$skip` up to `d.__count`.
    pub fn odata_v2_or_skip(top: u32) -> Self {
        Pagination::LinkOrOffset {
            link: LinkAt::Pointer("/d/__next"),
            limit: top,
            limit_param: "$top",
            offset_param: "$skip",
            total_at: Some("/d/__count"),
        }
    }

    /// OData v4 with `$count=true`: `@odata.nextLink`, else `$top`/`$skip`
    /// up to `@odata.count`.
    pub fn odata_v4_or_skip(top: u32) -> Self {
        Pagination::LinkOrOffset {
            link: LinkAt::Pointer("/@odata.nextLink"),
            limit: top,
            limit_param: "$top",
            offset_param: "$skip",
            total_at: Some("/@odata.count"),
        }
    }

    /// The link a body names, for the strategies that read one.
    pub fn link_at(&self) -> Option<LinkAt> {
        match self {
            Pagination::NextLink(l) | Pagination::LinkOrOffset { link: l, .. } => Some(*l),
            _ => None,
        }
    }

    pub fn first(&self) -> PageToken {
        match self {
            Pagination::OffsetLimit { .. } | Pagination::LinkOrOffset { .. } => {
                PageToken::Offset { offset: 0 }
            }
            Pagination::PageNumber { first_page, .. } => PageToken::Page { page: *first_page },
            Pagination::Cursor { .. }
            | Pagination::NextLink(_)
            | Pagination::LinkHeader
            | Pagination::Keyset { .. }
            | Pagination::Single => PageToken::Start,
        }
    }

    /// Query parameters that select the page (none for a link: the link is the URL).
    pub fn params(&self, token: &PageToken) -> Vec<(&'static str, String)> {
        match (self, token) {
            (
                Pagination::OffsetLimit {
                    limit,
                    limit_param,
                    offset_param,
                    ..
                }
                | Pagination::LinkOrOffset {
                    limit,
                    limit_param,
                    offset_param,
                    ..
                },
                PageToken::Offset { offset },
            ) => vec![
                (*limit_param, limit.to_string()),
                (*offset_param, offset.to_string()),
            ],
            (
                Pagination::PageNumber {
                    size,
                    page_param,
                    size_param,
                    ..
                },
                PageToken::Page { page },
            ) => vec![
                (*page_param, page.to_string()),
                (*size_param, size.to_string()),
            ],
            (
                Pagination::Cursor {
                    cursor_param,
                    limit,
                    ..
                },
                t,
            ) => {
                let mut p: Vec<(&'static str, String)> =
                    limit.iter().map(|(k, v)| (*k, v.to_string())).collect();
                if let PageToken::Cursor { cursor } = t {
                    p.push((*cursor_param, cursor.clone()));
                }
                p
            }
            (Pagination::Keyset { limit, limit_param }, _) => {
                vec![(*limit_param, limit.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// JSON pointer of the total in the body, if the strategy uses one.
    pub fn total_at(&self) -> Option<&'static str> {
        match self {
            Pagination::OffsetLimit { total_at, .. }
            | Pagination::LinkOrOffset { total_at, .. } => *total_at,
            Pagination::PageNumber { total_pages_at, .. } => *total_pages_at,
            _ => None,
        }
    }

    /// The page after `token`, or `None` when `token`'s page was the last.
    ///
    /// Offsets and page numbers: an empty page ends the pull; when the body
    /// announces a total, the pull goes on until it is reached even after a
    /// short page (a server that caps the page size below the requested
    /// limit), by the number of records actually received; without a total,
    /// a short page is the last. Arithmetic saturates: a source's absurd
    /// total or offset cannot overflow.
    pub fn next(&self, token: &PageToken, facts: &PageFacts) -> Option<PageToken> {
        let records = facts.records as u64;
        match (self, token) {
            // The server's link, with where its window ends so far.
            (Pagination::LinkOrOffset { .. }, t) if facts.next.is_some() => {
                let read = match t {
                    PageToken::Offset { offset } => Some(*offset),
                    PageToken::Link { window_end, .. } => *window_end,
                    _ => None,
                };
                facts.next.clone().map(|url| PageToken::Link {
                    url,
                    window_end: read.and_then(|r| r.checked_add(records)),
                })
            }
            // The links ended: the next window by `$skip`, unless the total
            // is reached or the window's last page was empty.
            (
                Pagination::LinkOrOffset { .. },
                PageToken::Link {
                    window_end: Some(read),
                    ..
                },
            ) => {
                let next = read.checked_add(records)?;
                let done = match facts.total {
                    Some(t) => next >= t,
                    None => records == 0,
                };
                (!done).then_some(PageToken::Offset { offset: next })
            }
            (Pagination::LinkOrOffset { .. }, PageToken::Link { .. }) => None,
            (
                Pagination::OffsetLimit { limit, .. } | Pagination::LinkOrOffset { limit, .. },
                PageToken::Offset { offset },
            ) => {
                let next = offset.checked_add(records)?;
                let done = records == 0
                    || match facts.total {
                        Some(t) => next >= t,
                        None => records < u64::from(*limit),
                    };
                (!done).then_some(PageToken::Offset { offset: next })
            }
            (
                Pagination::PageNumber {
                    size, first_page, ..
                },
                PageToken::Page { page },
            ) => {
                // `total` counts pages; the last has number first + total - 1.
                let last = facts
                    .total
                    .map(|t| first_page.saturating_add(t.saturating_sub(1)));
                let done = records == 0
                    || match last {
                        Some(l) => *page >= l,
                        None => records < u64::from(*size),
                    };
                (!done).then(|| page.checked_add(1).map(|page| PageToken::Page { page }))?
            }
            (Pagination::Cursor { .. }, _) => facts
                .next
                .clone()
                .filter(|c| !c.is_empty())
                .map(|cursor| PageToken::Cursor { cursor }),
            (Pagination::NextLink(_) | Pagination::LinkHeader, _) => {
                facts.next.clone().map(|url| PageToken::Link {
                    url,
                    window_end: None,
                })
            }
            (Pagination::Keyset { limit, .. }, _) => {
                if records < u64::from(*limit) {
                    return None;
                }
                facts
                    .next
                    .clone()
                    .map(|cursor| PageToken::Cursor { cursor })
            }
            _ => None,
        }
    }

    /// The total a page announced when the page is empty although the total
    /// says more remain at its position (offsets and page numbers): a
    /// source that stops serving before its own total (an offset window, a
    /// stale count). Ending the pull there would truncate it silently.
    pub fn empty_before_total(&self, token: &PageToken, facts: &PageFacts) -> Option<u64> {
        let total = facts.total?;
        if facts.records > 0 {
            return None;
        }
        match (self, token) {
            (
                Pagination::OffsetLimit { .. } | Pagination::LinkOrOffset { .. },
                PageToken::Offset { offset },
            )
            | (
                Pagination::LinkOrOffset { .. },
                PageToken::Link {
                    window_end: Some(offset),
                    ..
                },
            ) => (*offset < total).then_some(total),
            (Pagination::PageNumber { first_page, .. }, PageToken::Page { page }) => {
                let last = first_page.saturating_add(total.saturating_sub(1));
                (*page <= last).then_some(total)
            }
            _ => None,
        }
    }

    /// The page after one that could not be read, when the strategy can tell
    /// it without the body: the next offset (`step` ahead: the page size the
    /// server used so far, else the limit) or page number, while `total`
    /// (from an earlier page) says more remain.
    pub fn next_blind(
        &self,
        token: &PageToken,
        total: Option<u64>,
        step: Option<u64>,
    ) -> Option<PageToken> {
        let total = total?;
        match (self, token) {
            (
                Pagination::OffsetLimit { limit, .. } | Pagination::LinkOrOffset { limit, .. },
                PageToken::Offset { offset },
            ) => {
                let step = step.filter(|s| *s > 0).unwrap_or(u64::from(*limit)).max(1);
                let next = offset.checked_add(step)?;
                (next < total).then_some(PageToken::Offset { offset: next })
            }
            (Pagination::PageNumber { first_page, .. }, PageToken::Page { page }) => {
                let last = first_page.saturating_add(total.saturating_sub(1));
                (*page < last).then(|| PageToken::Page { page: page + 1 })
            }
            _ => None,
        }
    }

    /// The pages after `token` that can be requested before the bodies in
    /// between arrive, given what `token`'s page said (its total and how many
    /// records it held): offsets a page apart (the page size the server
    /// actually used) or page numbers, up to the total. Lazy: a total of
    /// 10^13 costs nothing until the pages are asked for. Empty when the
    /// strategy needs each body to find the next page.
    pub fn ahead(
        &self,
        token: &PageToken,
        facts: &PageFacts,
    ) -> Box<dyn Iterator<Item = PageToken> + Send> {
        let none = || Box::new(std::iter::empty()) as Box<dyn Iterator<Item = PageToken> + Send>;
        let Some(total) = facts.total else {
            return none();
        };
        match (self, token) {
            (Pagination::OffsetLimit { limit, .. }, PageToken::Offset { offset }) => {
                let step = match facts.records as u64 {
                    0 => u64::from(*limit).max(1),
                    n => n,
                };
                Box::new(
                    std::iter::successors(offset.checked_add(step), move |o| o.checked_add(step))
                        .take_while(move |o| *o < total)
                        .map(|offset| PageToken::Offset { offset }),
                )
            }
            (Pagination::PageNumber { first_page, .. }, PageToken::Page { page }) => {
                let last = first_page.saturating_add(total.saturating_sub(1));
                Box::new(
                    std::iter::successors(page.checked_add(1), |p| p.checked_add(1))
                        .take_while(move |p| *p <= last)
                        .map(|page| PageToken::Page { page }),
                )
            }
            _ => none(),
        }
    }
}

/// The `rel="next"` target of an RFC 8288 `Link` header value, if any.
pub fn link_header_next(value: &str) -> Option<&str> {
    // Link: <https://a/x?page=2>; rel="next", <https://a/x?page=9>; rel="last"
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|v| {
                v.trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(target);
        }
        rest = &rest[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(records: usize, total: Option<u64>) -> PageFacts {
        PageFacts {
            records,
            total,
            next: None,
        }
    }

    #[test]
    fn offset_limit_ends_on_total_short_or_empty_page() {
        let p = Pagination::offset_limit(100);
        let t0 = p.first();
        assert_eq!(
            p.params(&t0),
            vec![("limit", "100".into()), ("offset", "0".into())]
        );
        let t1 = p.next(&t0, &facts(100, Some(250))).unwrap();
        assert_eq!(t1, PageToken::Offset { offset: 100 });
        assert_eq!(
            p.next(&PageToken::Offset { offset: 200 }, &facts(50, Some(250))),
            None,
            "short page"
        );
        assert_eq!(
            p.next(&PageToken::Offset { offset: 100 }, &facts(100, Some(200))),
            None,
            "total reached"
        );
        assert_eq!(p.next(&t0, &facts(0, None)), None, "empty page");
        assert_eq!(
            p.empty_before_total(&PageToken::Offset { offset: 100 }, &facts(0, Some(250))),
            Some(250),
            "an empty page the total says is not the end"
        );
        assert_eq!(
            p.empty_before_total(&PageToken::Offset { offset: 250 }, &facts(0, Some(250))),
            None
        );
        assert!(
            p.next(&t0, &facts(100, None)).is_some(),
            "full page, no total: keep going"
        );
        assert_eq!(
            p.next(&PageToken::Offset { offset: 100 }, &facts(50, None)),
            None,
            "short page without a total"
        );
    }

    #[test]
    fn a_short_page_does_not_end_a_pull_the_total_says_is_unfinished() {
        // A server that caps pages at 40 although 100 were asked for.
        let p = Pagination::offset_limit(100);
        let mut t = p.first();
        let mut seen = 0;
        while let Some(n) = p.next(&t, &facts(40.min(250 - seen), Some(250))) {
            seen += 40;
            t = n;
        }
        assert_eq!(t, PageToken::Offset { offset: 240 });
        // Predictions follow the page size the server used, not the limit.
        let ahead: Vec<_> = p.ahead(&p.first(), &facts(40, Some(250))).collect();
        assert_eq!(ahead.len(), 6);
        assert_eq!(ahead[0], PageToken::Offset { offset: 40 });
        assert_eq!(ahead[5], PageToken::Offset { offset: 240 });
        let q = Pagination::page_number(50);
        assert_eq!(
            q.next(&PageToken::Page { page: 1 }, &facts(20, None)),
            None,
            "short page without a page count"
        );
    }

    #[test]
    fn absurd_totals_are_walked_lazily_without_overflow() {
        let p = Pagination::offset_limit(100);
        let mut ahead = p.ahead(&p.first(), &facts(100, Some(10_000_000_000_000)));
        assert_eq!(ahead.next(), Some(PageToken::Offset { offset: 100 }));
        let mut near_end = p.ahead(
            &PageToken::Offset {
                offset: u64::MAX - 150,
            },
            &facts(100, Some(u64::MAX)),
        );
        assert_eq!(
            near_end.next(),
            Some(PageToken::Offset {
                offset: u64::MAX - 50
            })
        );
        assert_eq!(near_end.next(), None, "no overflow past u64::MAX");
        assert_eq!(
            p.next(
                &PageToken::Offset {
                    offset: u64::MAX - 10
                },
                &facts(100, None)
            ),
            None
        );
        let q = Pagination::PageNumber {
            size: 10,
            page_param: "page",
            size_param: "size",
            first_page: u64::MAX - 1,
            total_pages_at: Some("/pages"),
        };
        let all: Vec<_> = q
            .ahead(
                &PageToken::Page { page: u64::MAX - 1 },
                &facts(10, Some(u64::MAX)),
            )
            .collect();
        assert_eq!(all, vec![PageToken::Page { page: u64::MAX }]);
        assert_eq!(
            q.next(
                &PageToken::Page { page: u64::MAX },
                &facts(10, Some(u64::MAX))
            ),
            None
        );
        assert_eq!(
            p.next_blind(&PageToken::Offset { offset: 200 }, Some(250), None),
            None,
            "a full page ahead is past the total"
        );
        assert_eq!(
            p.next_blind(&PageToken::Offset { offset: 100 }, Some(250), None),
            Some(PageToken::Offset { offset: 200 })
        );
        assert_eq!(
            p.next_blind(&PageToken::Offset { offset: 100 }, Some(250), Some(40)),
            Some(PageToken::Offset { offset: 140 }),
            "a server capping pages at 40 is followed 40 at a time"
        );
        assert_eq!(
            p.next_blind(&PageToken::Offset { offset: 100 }, None, None),
            None
        );
    }

    #[test]
    fn page_numbers_end_on_the_last_page_short_or_empty() {
        let mut p = Pagination::page_number(50);
        let t = p.first();
        assert_eq!(t, PageToken::Page { page: 1 });
        assert_eq!(
            p.params(&t),
            vec![("page", "1".into()), ("per_page", "50".into())]
        );
        assert_eq!(
            p.next(&t, &facts(50, None)),
            Some(PageToken::Page { page: 2 })
        );
        assert_eq!(p.next(&t, &facts(49, None)), None, "short page");
        assert_eq!(p.next(&t, &facts(0, None)), None, "empty page");
        if let Pagination::PageNumber { total_pages_at, .. } = &mut p {
            *total_pages_at = Some("/meta/pages");
        }
        assert_eq!(
            p.next(&PageToken::Page { page: 3 }, &facts(50, Some(3))),
            None,
            "last page"
        );
        assert_eq!(
            p.ahead(&t, &facts(50, Some(3))).collect::<Vec<_>>(),
            vec![PageToken::Page { page: 2 }, PageToken::Page { page: 3 }]
        );
    }

    #[test]
    fn cursor_and_links_follow_the_body_until_it_has_none() {
        let p = Pagination::cursor("cursor", "/next_cursor");
        assert_eq!(p.first(), PageToken::Start);
        assert!(p.params(&PageToken::Start).is_empty());
        let f = PageFacts {
            records: 10,
            total: None,
            next: Some("abc".into()),
        };
        let t = p.next(&PageToken::Start, &f).unwrap();
        assert_eq!(p.params(&t), vec![("cursor", "abc".into())]);
        let empty = PageFacts {
            next: Some(String::new()),
            ..f.clone()
        };
        assert_eq!(p.next(&t, &empty), None);
        assert_eq!(p.next(&t, &facts(10, None)), None);
        let l = Pagination::odata_v4();
        let f = PageFacts {
            next: Some("https://h/x?$skiptoken=2".into()),
            ..f
        };
        assert_eq!(
            l.next(&PageToken::Start, &f),
            Some(PageToken::Link {
                window_end: None,
                url: "https://h/x?$skiptoken=2".into()
            })
        );
    }

    #[test]
    fn link_headers_are_parsed_per_rfc_8288() {
        let v =
            r#"<https://api.test/x?page=2>; rel="next", <https://api.test/x?page=9>; rel="last""#;
        assert_eq!(link_header_next(v), Some("https://api.test/x?page=2"));
        let v =
            r#"<https://api.test/x?page=1>; rel="prev first", </x?page=3>; title="n"; rel=next"#;
        assert_eq!(link_header_next(v), Some("/x?page=3"));
        assert_eq!(
            link_header_next(r#"<https://api.test/x>; rel="last""#),
            None
        );
        assert_eq!(link_header_next("garbage"), None);
    }

    #[test]
    fn tokens_round_trip_as_json_and_display_without_queries() {
        for t in [
            PageToken::Offset { offset: 300 },
            PageToken::Page { page: 2 },
            PageToken::Cursor { cursor: "c".into() },
            PageToken::Link {
                window_end: None,
                url: "https://h/p?token=x".into(),
            },
            PageToken::Start,
        ] {
            let v = serde_json::to_value(&t).unwrap();
            assert_eq!(serde_json::from_value::<PageToken>(v).unwrap(), t);
        }
        assert_eq!(
            serde_json::to_value(PageToken::Offset { offset: 300 }).unwrap(),
            serde_json::json!({"kind": "offset", "offset": 300})
        );
        assert_eq!(
            PageToken::Link {
                window_end: None,
                url: "https://h/p?sig=x".into()
            }
            .to_string(),
            "link /p"
        );
    }

    #[test]
    fn stored_links_mask_named_parameters_only() {
        let names = vec!["api_key".to_owned(), "SIG".to_owned()];
        let t = PageToken::Link {
            window_end: None,
            url: "https://h/p?%24skiptoken=abc&Api_Key=s3cr3t&sig=zz&page=2".into(),
        };
        let r = t.redacted(&names);
        let PageToken::Link { url, .. } = &r else {
            panic!()
        };
        assert!(!url.contains("s3cr3t") && !url.contains("zz"), "{url}");
        assert!(
            url.contains("skiptoken=abc") && url.contains("page=2"),
            "{url}"
        );
        assert!(r.is_redacted() && !t.is_redacted());
        let plain = PageToken::Link {
            window_end: None,
            url: "https://h/p?%24skiptoken=abc".into(),
        };
        assert_eq!(plain.redacted(&names), plain);
        assert_eq!(
            PageToken::Offset { offset: 5 }.redacted(&names),
            PageToken::Offset { offset: 5 }
        );
    }

    /// OData: the server pages inside the client's `$top` window and names
    /// the rest of the window with a link; when the links end, the pull goes
    /// on by `$skip` after what was read, up to the count.
    #[test]
    fn link_or_offset_follows_the_servers_window_then_skips_on() {
        let p = Pagination::odata_v2_or_skip(3);
        let facts = |records: usize, total: Option<u64>, next: Option<&str>| PageFacts {
            records,
            total,
            next: next.map(str::to_owned),
        };
        let link = |w: u64| PageToken::Link {
            url: "https://h/x?$skiptoken=2".into(),
            window_end: Some(w),
        };
        let first = p.first();
        assert_eq!(first, PageToken::Offset { offset: 0 });
        // 2 of the 3 asked for, and a link to the third.
        let t = p
            .next(
                &first,
                &facts(2, Some(17), Some("https://h/x?$skiptoken=2")),
            )
            .unwrap();
        assert_eq!(t, link(2));
        assert!(p.params(&t).is_empty(), "a link is the whole URL");
        // The link's page ends the window: on by $skip after the 3 read.
        assert_eq!(
            p.next(&t, &facts(1, Some(17), None)),
            Some(PageToken::Offset { offset: 3 })
        );
        // The count reached: done; without a count, an empty page ends it.
        assert_eq!(p.next(&link(16), &facts(1, Some(17), None)), None);
        assert_eq!(p.next(&link(5), &facts(0, None, None)), None);
        assert_eq!(
            p.next(&link(5), &facts(1, None, None)),
            Some(PageToken::Offset { offset: 6 })
        );
        // A link met on its own (not from a window) ends with its chain.
        let bare = PageToken::Link {
            url: "https://h/x".into(),
            window_end: None,
        };
        assert_eq!(p.next(&bare, &facts(3, Some(17), None)), None);
        // An empty link page before the count is an incomplete pull.
        assert_eq!(
            p.empty_before_total(&link(4), &facts(0, Some(17), None)),
            Some(17)
        );
    }
}
