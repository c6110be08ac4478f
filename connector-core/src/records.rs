//! Locating the records in a page body without copying them.

use serde_json::value::RawValue;
use std::collections::HashMap;

/// The records of one page: borrowed raw JSON slices, in body order.
#[derive(Debug)]
pub struct PageRecords<'a> {
    pub records: Vec<&'a RawValue>,
    pub total: Option<u64>,
}

/// Splits `body` into the records found at JSON pointer `records_at` (e.g.
/// `/data`, `/d/results`; `""` for a top-level array) and reads the total at
/// `total_at`. Errors name the pointer that did not match.
pub fn split_records<'a>(
    body: &'a [u8],
    records_at: &str,
    total_at: Option<&str>,
) -> Result<PageRecords<'a>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
    let list =
        pointer(root, records_at)?.ok_or_else(|| format!("no records array at {records_at:?}"))?;
    let records: Vec<&RawValue> = serde_json::from_str(list.get())
        .map_err(|_| format!("value at {records_at:?} is not an array"))?;
    let total = match total_at {
        None => None,
        Some(p) => match self::pointer(root, p)? {
            None => None,
            Some(v) if v.get() == "null" => None,
            Some(v) => Some(serde_json::from_str::<u64>(v.get()).map_err(|_| {
                format!("total at {p:?} is not a non-negative integer: {}", v.get())
            })?),
        },
    };
    Ok(PageRecords { records, total })
}

/// The value at JSON pointer `pointer` inside `v`, without parsing anything
/// but the objects on the way. `Ok(None)` when absent; an error when `pointer`
/// is not a JSON pointer.
pub fn pointer<'a>(mut v: &'a RawValue, pointer: &str) -> Result<Option<&'a RawValue>, String> {
    if pointer.is_empty() {
        return Ok(Some(v));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("{pointer:?} is not a JSON pointer"));
    };
    for seg in rest.split('/') {
        let key: std::borrow::Cow<str> = if seg.contains('~') {
            seg.replace("~1", "/").replace("~0", "~").into()
        } else {
            seg.into()
        };
        let obj: HashMap<std::borrow::Cow<'a, str>, &'a RawValue> =
            match serde_json::from_str(v.get()) {
                Ok(o) => o,
                Err(_) => return Ok(None),
            };
        match obj.get(key.as_ref()) {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_records_and_total() {
        let body = br#"{"total": 3, "data": [{"id":"a"}, {"id":"b"},{"id":"c"}]}"#;
        let p = split_records(body, "/data", Some("/total")).unwrap();
        assert_eq!(p.total, Some(3));
        assert_eq!(
            p.records.iter().map(|r| r.get()).collect::<Vec<_>>(),
            [r#"{"id":"a"}"#, r#"{"id":"b"}"#, r#"{"id":"c"}"#]
        );
        let nested = br#"{"d": {"results": [1, 2]}}"#;
        assert_eq!(
            split_records(nested, "/d/results", None)
                .unwrap()
                .records
                .len(),
            2
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(
            split_records(b"{\"data\": [", "/data", None)
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            split_records(b"{\"rows\": []}", "/data", None)
                .unwrap_err()
                .contains("no records array")
        );
        assert!(
            split_records(b"{\"data\": {}}", "/data", None)
                .unwrap_err()
                .contains("not an array")
        );
        assert!(
            split_records(b"{\"data\": [], \"total\": \"x\"}", "/data", Some("/total"))
                .unwrap_err()
                .contains("total")
        );
        assert!(
            split_records(&[0xff, 0xfe], "/data", None)
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
