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
            PageToken::Link { url } => match url::Url::parse(url) {
                Ok(u) => write!(f, "link {}", u.path()),
                Err(_) => f.write_str("link (unparsable)"),
            },
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

    pub fn first(&self) -> PageToken {
        match self {
            Pagination::OffsetLimit { .. } => PageToken::Offset { offset: 0 },
            Pagination::PageNumber { first_page, .. } => PageToken::Page { page: *first_page },
            Pagination::Cursor { .. } | Pagination::NextLink(_) | Pagination::LinkHeader => {
                PageToken::Start
            }
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
            _ => Vec::new(),
        }
    }

    /// JSON pointer of the total in the body, if the strategy uses one.
    pub fn total_at(&self) -> Option<&'static str> {
        match self {
            Pagination::OffsetLimit { total_at, .. } => *total_at,
            Pagination::PageNumber { total_pages_at, .. } => *total_pages_at,
            _ => None,
        }
    }

    /// The page after `token`, or `None` when `token`'s page was the last.
    pub fn next(&self, token: &PageToken, facts: &PageFacts) -> Option<PageToken> {
        let short = |size: u32| facts.records == 0 || (facts.records as u64) < u64::from(size);
        match (self, token) {
            (Pagination::OffsetLimit { limit, .. }, PageToken::Offset { offset }) => {
                let next = offset + facts.records as u64;
                let done = short(*limit) || facts.total.is_some_and(|t| next >= t);
                (!done).then_some(PageToken::Offset { offset: next })
            }
            (
                Pagination::PageNumber {
                    size, first_page, ..
                },
                PageToken::Page { page },
            ) => {
                // `total` counts pages; the last has number first + total - 1.
                let last = facts.total.map(|t| first_page + t.saturating_sub(1));
                let done = short(*size) || last.is_some_and(|l| *page >= l);
                (!done).then_some(PageToken::Page { page: page + 1 })
            }
            (Pagination::Cursor { .. }, _) => facts
                .next
                .clone()
                .filter(|c| !c.is_empty())
                .map(|cursor| PageToken::Cursor { cursor }),
            (Pagination::NextLink(_) | Pagination::LinkHeader, _) => {
                facts.next.clone().map(|url| PageToken::Link { url })
            }
            _ => None,
        }
    }

    /// Pages that can be requested now, ahead of the bodies before them, given
    /// the total the first page announced: every full page up to the total.
    /// Empty when the strategy needs each body to find the next page.
    pub fn predictable_after(&self, token: &PageToken, total: Option<u64>) -> Vec<PageToken> {
        match (self, token, total) {
            (Pagination::OffsetLimit { limit, .. }, PageToken::Offset { offset }, Some(total)) => {
                let step = u64::from(*limit).max(1);
                (1..)
                    .map(|k| offset + k * step)
                    .take_while(|o| *o < total)
                    .map(|offset| PageToken::Offset { offset })
                    .collect()
            }
            (
                Pagination::PageNumber { first_page, .. },
                PageToken::Page { page },
                Some(total_pages),
            ) => (page + 1..first_page + total_pages)
                .map(|page| PageToken::Page { page })
                .collect(),
            _ => Vec::new(),
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
        assert!(
            p.next(&t0, &facts(100, None)).is_some(),
            "full page, no total: keep going"
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
            p.predictable_after(&t, Some(3)),
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
                url: "https://h/p?sig=x".into()
            }
            .to_string(),
            "link /p"
        );
    }
}
