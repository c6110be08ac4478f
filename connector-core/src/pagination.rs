//! Pagination strategies, built once in core; a connector only picks one.

use serde::{Deserialize, Serialize};

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
}

/// Where a page starts. Stored in the watermark while a pull is in progress,
/// so an interrupted pull resumes where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageToken {
    Offset { offset: u64 },
}

impl std::fmt::Display for PageToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageToken::Offset { offset } => write!(f, "offset {offset}"),
        }
    }
}

/// What a fetched page says about paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFacts {
    pub records: usize,
    pub total: Option<u64>,
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

    pub fn first(&self) -> PageToken {
        match self {
            Pagination::OffsetLimit { .. } => PageToken::Offset { offset: 0 },
        }
    }

    /// Query parameters that select the page.
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
            ) => {
                vec![
                    (*limit_param, limit.to_string()),
                    (*offset_param, offset.to_string()),
                ]
            }
        }
    }

    /// JSON pointer of the total record count in the body, if the strategy uses one.
    pub fn total_at(&self) -> Option<&'static str> {
        match self {
            Pagination::OffsetLimit { total_at, .. } => *total_at,
        }
    }

    /// The page after `token`, or `None` when `token`'s page was the last.
    pub fn next(&self, token: &PageToken, facts: PageFacts) -> Option<PageToken> {
        match (self, token) {
            (Pagination::OffsetLimit { limit, .. }, PageToken::Offset { offset }) => {
                let next = offset + facts.records as u64;
                let short = facts.records == 0 || (facts.records as u64) < u64::from(*limit);
                let done = short || facts.total.is_some_and(|t| next >= t);
                (!done).then_some(PageToken::Offset { offset: next })
            }
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
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(records: usize, total: Option<u64>) -> PageFacts {
        PageFacts { records, total }
    }

    #[test]
    fn offset_limit_ends_on_total_short_or_empty_page() {
        let p = Pagination::offset_limit(100);
        let t0 = p.first();
        assert_eq!(
            p.params(&t0),
            vec![("limit", "100".into()), ("offset", "0".into())]
        );
        let t1 = p.next(&t0, facts(100, Some(250))).unwrap();
        assert_eq!(t1, PageToken::Offset { offset: 100 });
        assert_eq!(
            p.next(&PageToken::Offset { offset: 200 }, facts(50, Some(250))),
            None,
            "short page"
        );
        assert_eq!(
            p.next(&PageToken::Offset { offset: 100 }, facts(100, Some(200))),
            None,
            "total reached"
        );
        assert_eq!(p.next(&t0, facts(0, None)), None, "empty page");
        assert!(
            p.next(&t0, facts(100, None)).is_some(),
            "full page, no total: keep going"
        );
    }

    #[test]
    fn predictable_pages_stop_before_the_total() {
        let p = Pagination::offset_limit(100);
        let ahead = p.predictable_after(&p.first(), Some(250));
        assert_eq!(
            ahead,
            vec![
                PageToken::Offset { offset: 100 },
                PageToken::Offset { offset: 200 }
            ]
        );
        assert!(p.predictable_after(&p.first(), None).is_empty());
    }

    #[test]
    fn tokens_round_trip_as_json() {
        let t = PageToken::Offset { offset: 300 };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "offset", "offset": 300}));
        assert_eq!(serde_json::from_value::<PageToken>(v).unwrap(), t);
    }
}
