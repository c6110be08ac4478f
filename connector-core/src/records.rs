//! Locating the records in a page body without copying them.

use serde_json::value::RawValue;
use std::borrow::Cow;

/// The records of one page: borrowed raw JSON slices, in body order.
#[derive(Debug)]
pub struct PageRecords<'a> {
    pub root: &'a RawValue,
    pub records: Vec<&'a RawValue>,
    pub total: Option<u64>,
}

/// The most records one page may hold. A page is parsed whole and each of
/// its records costs the loader some bookkeeping, so a page of millions of
/// tiny records (`[{},{},…]`) could exhaust memory within the body limit; a
/// page over the limit is unreadable (stored and dead-lettered as a page).
pub const MAX_RECORDS_PER_PAGE: usize = 100_000;

const TOO_MANY: &str = "too many records for one page";

/// The elements of a sequence of records, collecting at most
/// [`MAX_RECORDS_PER_PAGE`] of them.
fn capped_seq<'de, A: serde::de::SeqAccess<'de>>(
    mut seq: A,
) -> Result<Vec<&'de RawValue>, A::Error> {
    let mut out = Vec::new();
    while let Some(r) = seq.next_element::<&'de RawValue>()? {
        if out.len() == MAX_RECORDS_PER_PAGE {
            return Err(serde::de::Error::custom(TOO_MANY));
        }
        out.push(r);
    }
    Ok(out)
}

/// A records array, read without collecting more than
/// [`MAX_RECORDS_PER_PAGE`] of them.
struct Capped<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Capped<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> serde::de::Visitor<'de> for Seq {
            type Value = Vec<&'de RawValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                capped_seq(seq)
            }
        }
        d.deserialize_seq(Seq).map(Capped)
    }
}

/// Why a body could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub message: String,
    /// The JSON ended early: the body was cut off, not wrong.
    pub truncated: bool,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for SplitError {
    fn from(message: String) -> Self {
        Self {
            message,
            truncated: false,
        }
    }
}

/// The body as JSON text, made readable where the source bent the rules in
/// ways with one meaning: a UTF-8 byte-order mark is dropped; a body that is
/// not UTF-8 but declares `charset=ISO-8859-1` or `windows-1252` in its
/// `content_type` is transcoded; raw control characters (U+0000 to U+001F)
/// inside strings, which JSON forbids, are escaped (`\t`, `\u0000`), so a
/// stray tab costs nothing and a NUL is one record's problem, not the page's.
/// Deterministic: the raw object is kept as sent, and a replay reads it the
/// same way. Borrows when nothing needs changing.
pub fn readable<'a>(body: &'a [u8], content_type: Option<&str>) -> Cow<'a, [u8]> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut text: Cow<'a, [u8]> = Cow::Borrowed(body);
    if std::str::from_utf8(body).is_err()
        && let Some(decode) = content_type.and_then(single_byte_charset)
    {
        text = Cow::Owned(
            body.iter()
                .map(|&b| decode(b))
                .collect::<String>()
                .into_bytes(),
        );
    }
    match escape_controls_in_strings(&text) {
        Some(fixed) => Cow::Owned(fixed),
        None => text,
    }
}

/// A decoder for the single-byte charsets sources still declare.
fn single_byte_charset(content_type: &str) -> Option<fn(u8) -> char> {
    let ct = content_type.to_ascii_lowercase();
    let charset = ct
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("charset="))
        .map(|c| c.trim_matches('"'))
        .next()?;
    match charset {
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "l1" => Some(|b| b as char),
        "windows-1252" | "cp1252" => Some(windows_1252),
        _ => None,
    }
}

/// windows-1252: Latin-1 but for 0x80–0x9F.
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => b as char,
    }
}

/// The text with raw control bytes inside JSON strings escaped, or `None`
/// when there are none (nothing is copied until the first one).
fn escape_controls_in_strings(text: &[u8]) -> Option<Vec<u8>> {
    // Most bodies hold no control byte at all (compact JSON): one pass that
    // the compiler vectorizes (no early exit within a chunk) decides.
    if !text
        .chunks(64)
        .any(|c| c.iter().fold(false, |any, &b| any | (b < 0x20)))
    {
        return None;
    }
    let (mut in_string, mut escaped) = (false, false);
    let mut out: Option<Vec<u8>> = None;
    for (i, &b) in text.iter().enumerate() {
        let control = in_string && !escaped && b < 0x20;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        if control {
            let out = out.get_or_insert_with(|| {
                let mut v = Vec::with_capacity(text.len() + 16);
                v.extend_from_slice(&text[..i]);
                v
            });
            match b {
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            }
        } else if let Some(out) = out.as_mut() {
            out.push(b);
        }
    }
    out
}

/// Like [`split_records`], telling a body that was cut off (retry) from one
/// that is wrong (fail).
pub fn split_page<'a>(
    body: &'a [u8],
    records_at: &str,
    total_at: Option<&str>,
) -> Result<PageRecords<'a>, SplitError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        // A UTF-8 sequence cut at the very end is a truncation too.
        SplitError {
            message: format!("body is not UTF-8: {e}"),
            truncated: e.error_len().is_none(),
        }
    })?;
    let root: &RawValue = serde_json::from_str(text).map_err(|e| SplitError {
        message: format!("body is not JSON: {e}"),
        truncated: e.is_eof(),
    })?;
    Ok(split_root(root, records_at, total_at)?)
}

/// Splits `body` into the records found at `records_at` (the stored form of
/// [`crate::Records`]: a JSON pointer such as `/data`, `/d/results` or `""`
/// for a top-level array; `values:/employees`; `body:`) and reads the total
/// at `total_at`. Errors name the pointer that did not match.
pub fn split_records<'a>(
    body: &'a [u8],
    records_at: &str,
    total_at: Option<&str>,
) -> Result<PageRecords<'a>, String> {
    split_page(body, records_at, total_at).map_err(|e| e.message)
}

/// Splits an already parsed body. `records_at` is the stored form of
/// [`crate::Records`]: a pointer to an array, `values:` + a pointer to an
/// object keyed by id (its values are the records, in body order), or
/// `body:` (the body is one record).
pub fn split_root<'a>(
    root: &'a RawValue,
    records_at: &str,
    total_at: Option<&str>,
) -> Result<PageRecords<'a>, String> {
    let records = if records_at == "body:" {
        if !root.get().trim_start().starts_with('{') {
            return Err("the body is not a JSON object (one record)".into());
        }
        vec![root]
    } else if let Some(at) = records_at.strip_prefix("values:") {
        let obj = pointer(root, at)?.ok_or_else(|| format!("no records object at {at:?}"))?;
        serde_json::from_str::<CappedValues>(obj.get())
            .map_err(|e| {
                if e.to_string().contains(TOO_MANY) {
                    format!(
                        "the records object at {at:?} holds more than {MAX_RECORDS_PER_PAGE} records, the limit per page"
                    )
                } else {
                    format!("value at {at:?} is not an object of records keyed by id")
                }
            })?
            .0
    } else {
        let list = pointer(root, records_at)?
            .ok_or_else(|| format!("no records array at {records_at:?}"))?;
        serde_json::from_str::<Capped>(list.get())
            .map_err(|e| {
                if e.to_string().contains(TOO_MANY) {
                    format!(
                        "the records array at {records_at:?} holds more than {MAX_RECORDS_PER_PAGE} records, the limit per page"
                    )
                } else {
                    format!("value at {records_at:?} is not an array")
                }
            })?
            .0
    };
    let total = match total_at {
        None => None,
        Some(p) => self::pointer(root, p)?.and_then(|v| parse_total(v.get())),
    };
    Ok(PageRecords {
        root,
        records,
        total,
    })
}

/// The values of an object keyed by id, in body order, without collecting
/// more than [`MAX_RECORDS_PER_PAGE`] of them.
struct CappedValues<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for CappedValues<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> serde::de::Visitor<'de> for Map {
            type Value = Vec<&'de RawValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of records keyed by id")
            }
            // Sources that key records by id often answer an empty list
            // when there is none (`[]` for `{}`): an array is read as records.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                capped_seq(seq)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((_, r)) = map.next_entry::<serde::de::IgnoredAny, &'de RawValue>()? {
                    if out.len() == MAX_RECORDS_PER_PAGE {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    out.push(r);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Map).map(CappedValues)
    }
}

/// A record's key under a stream's `primary_key`: one JSON pointer, or
/// several separated by commas for a compound key (`"/CompanyCode,/FiscalYear,/AccountingDocument"`);
/// a part may name alternatives, `/LedgerGLLineItem|/AccountingDocumentItem`
/// (the first present).
/// The parts (strings, or numbers as their text) are joined by
/// [`join_key`]. `None` when any part is absent, null or empty.
pub fn key_at(v: &RawValue, spec: &str) -> Result<Option<String>, String> {
    if !spec.contains([',', '|']) {
        return string_at(v, spec);
    }
    let mut parts = Vec::new();
    for part in spec.split(',') {
        // A part may name alternatives, `/A|/B`: the first that is not
        // absent or null (as the model's `key` transform reads them).
        let mut found = None;
        for ptr in part.split('|') {
            if let Some(p) = string_at(v, ptr)? {
                found = Some(p);
                break;
            }
        }
        match found {
            Some(p) if !p.is_empty() => parts.push(p),
            _ => return Ok(None),
        }
    }
    Ok(Some(join_key(&parts)))
}

/// Joins the parts of a compound key with `|`, a `|` or `\` inside a part
/// escaped by `\`, so that distinct part lists give distinct keys. One part
/// is itself. An OData v2 `/Date(ms)/` part reads as its UTC date
/// (`9999-12-31`) when it is a midnight, else as its RFC 3339 UTC time, so
/// a v2 and a v4 service give one key. The canonical model's
/// `Transform::Key` joins the same way (a test in the daemon holds the two
/// together).
pub fn join_key<S: AsRef<str>>(parts: &[S]) -> String {
    if let [one] = parts {
        return one.as_ref().to_owned();
    }
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in key_part(p.as_ref()).chars() {
            if c == '|' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// A compound key's part as [`join_key`] writes it.
fn key_part(p: &str) -> std::borrow::Cow<'_, str> {
    // `/Date(ms)/`, `/Date(ms+hhmm)/` or `/Date(ms-hhmm)/` exactly.
    let well_formed = p
        .strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
        .is_some_and(|inner| {
            let (ms, off) = match inner.rfind(['+', '-']).filter(|&i| i > 0) {
                Some(i) => (&inner[..i], Some(&inner[i + 1..])),
                None => (inner, None),
            };
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(ms) || ms.strip_prefix('-').is_some_and(digits))
                && off.is_none_or(|o| o.len() == 4 && digits(o))
        });
    let Some(t) = well_formed.then(|| crate::fetch::cursor_time(p)).flatten() else {
        return std::borrow::Cow::Borrowed(p);
    };
    std::borrow::Cow::Owned(if t.timestamp_millis().rem_euclid(86_400_000) == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

/// The parts of a key made by [`join_key`].
pub fn split_key(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut().expect("non-empty").extend(chars.next()),
            '|' => parts.push(String::new()),
            c => parts.last_mut().expect("non-empty").push(c),
        }
    }
    parts
}

/// A string (or a number, as its text) at `ptr`; `None` when absent or
/// null, an error for any other value.
pub fn string_at(v: &RawValue, ptr: &str) -> Result<Option<String>, String> {
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

/// True when `record` is a tombstone under a stream's [`crate::Deleted`]
/// rule: the value at its pointer (a string) is one of the listed values.
pub fn is_tombstone(record: &RawValue, rule: &crate::Deleted) -> bool {
    let crate::Deleted::When {
        pointer: at,
        values,
    } = rule;
    match pointer(record, at) {
        Ok(Some(v)) => match serde_json::from_str::<String>(v.get()) {
            Ok(s) => values.contains(&s.as_str()),
            Err(_) => false,
        },
        _ => false,
    }
}

/// A total as a source may write it: a non-negative integer, or one quoted
/// (`"250"`). Anything else (null, negative, fractional, a word) is no total:
/// paging then ends on a short page, as for a source that sends none.
fn parse_total(raw: &str) -> Option<u64> {
    let digits = raw.trim().trim_matches('"');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than u64 holds: as good as infinite (paging stops on a short page).
    Some(digits.parse().unwrap_or(u64::MAX))
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
        // One pass over the object's members, nothing collected; the last
        // member of that name wins, as in a map.
        let mut de = serde_json::Deserializer::from_str(v.get());
        match serde::de::DeserializeSeed::deserialize(Member(&key), &mut de) {
            Ok(Some(next)) => v = next,
            Ok(None) | Err(_) => return Ok(None),
        }
    }
    Ok(Some(v))
}

/// The value of an object's member named `.0` (the last one of that name),
/// `None` when it has none; an error when the value is not an object.
struct Member<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is) = map.next_key_seed(NameIs(self.0))? {
            if is {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a member's name (escaped or not) is `.0`.
struct NameIs<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for NameIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_take_the_last_member_of_a_name_and_read_escaped_names() {
        let v: &RawValue =
            serde_json::from_str(r#"{"id": "first", "a/b": {"~x": 1}, "\u0069d": "last"}"#)
                .unwrap();
        assert_eq!(pointer(v, "/id").unwrap().unwrap().get(), r#""last""#);
        assert_eq!(pointer(v, "/a~1b/~0x").unwrap().unwrap().get(), "1");
        assert!(pointer(v, "/missing").unwrap().is_none());
        assert!(
            pointer(v, "/id/deeper").unwrap().is_none(),
            "a string has no members"
        );
        assert!(pointer(v, "id").is_err());
    }

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
    fn keyed_objects_and_whole_bodies_are_records_too() {
        let body = br#"{"employees": {"7": {"id": "7", "action": "Deleted"}, "3": {"id": "3", "action": "Updated"}}, "latest": "x"}"#;
        let s = split_records(body, "values:/employees", None).unwrap();
        let ids: Vec<&str> = s.records.iter().map(|r| r.get()).collect();
        assert_eq!(
            ids,
            [
                r#"{"id": "7", "action": "Deleted"}"#,
                r#"{"id": "3", "action": "Updated"}"#
            ],
            "body order"
        );
        let rule = crate::Deleted::When {
            pointer: "/action",
            values: &["Deleted", "Removed"],
        };
        assert!(is_tombstone(s.records[0], &rule));
        assert!(!is_tombstone(s.records[1], &rule));
        assert!(
            split_records(br#"{"employees": []}"#, "values:/employees", None)
                .unwrap()
                .records
                .is_empty()
        );
        assert!(split_records(br#"{"employees": "x"}"#, "values:/employees", None).is_err());
        let one = split_records(br#"{"id": 1}"#, "body:", None).unwrap();
        assert_eq!(one.records.len(), 1);
        assert!(split_records(b"[1]", "body:", None).is_err());
        assert!(
            split_records(b"{}", "values:", None)
                .unwrap()
                .records
                .is_empty()
        );
    }

    #[test]
    fn truncated_bodies_are_told_from_malformed_ones() {
        let full = br#"{"data": [{"id": "a"}, {"id": "b"}]}"#;
        for cut in 1..full.len() {
            let e = split_page(&full[..cut], "/data", None).unwrap_err();
            assert!(e.truncated, "cut at {cut}: {e}");
        }
        let e = split_page(b"{\"data\": [}", "/data", None).unwrap_err();
        assert!(!e.truncated, "{e}");
        let e = split_page(b"<html>busy</html>", "/data", None).unwrap_err();
        assert!(!e.truncated, "{e}");
    }

    #[test]
    fn a_page_of_millions_of_tiny_records_is_refused_not_collected() {
        let n = MAX_RECORDS_PER_PAGE + 1;
        let body = format!("{{\"data\": [{}{{}}]}}", "{},".repeat(n - 1));
        let e = split_records(body.as_bytes(), "/data", None).unwrap_err();
        assert!(e.contains("more than 100000 records"), "{e}");
        let ok = format!("{{\"data\": [{}{{}}]}}", "{},".repeat(n - 2));
        assert_eq!(
            split_records(ok.as_bytes(), "/data", None)
                .unwrap()
                .records
                .len(),
            MAX_RECORDS_PER_PAGE
        );
    }

    #[test]
    fn bodies_that_bend_the_rules_in_one_way_are_read() {
        let read = |b: &[u8], ct: Option<&str>| {
            let t = readable(b, ct);
            split_records(&t, "/data", None).map(|p| {
                p.records
                    .iter()
                    .map(|r| serde_json::from_str::<serde_json::Value>(r.get()).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        // A byte-order mark.
        assert_eq!(read(b"\xEF\xBB\xBF{\"data\": [1]}", None).unwrap().len(), 1);
        // A raw tab and a raw NUL inside strings; structure untouched.
        let v = read(
            b"{\"data\": [{\"a\": \"x\ty\"}, {\"b\": \"n\x00l\"}]}",
            None,
        )
        .unwrap();
        assert_eq!(v[0]["a"], "x\ty");
        assert_eq!(v[1]["b"], "n\u{0}l");
        // Latin-1 declared: é is one byte.
        let latin = b"{\"data\": [{\"name\": \"Ren\xe9\"}]}";
        assert!(read(latin, None).is_err(), "undeclared: not UTF-8");
        let v = read(latin, Some("application/json; charset=ISO-8859-1")).unwrap();
        assert_eq!(v[0]["name"], "René");
        let v = read(
            b"{\"data\": [\"\x80\"]}",
            Some("text/json;charset=\"windows-1252\""),
        )
        .unwrap();
        assert_eq!(v[0], "€");
        // Escaped quotes and backslashes keep the scanner in step.
        let v = read(b"{\"data\": [\"a\\\"b\\\\\", \"c\td\"]}", None).unwrap();
        assert_eq!(v[1], "c\td");
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
        for (total, want) in [
            ("\"x\"", None),
            ("-5", None),
            ("2.5", None),
            ("null", None),
            ("\"250\"", Some(250)),
            ("99999999999999999999999", Some(u64::MAX)),
        ] {
            let body = format!("{{\"data\": [], \"total\": {total}}}");
            let p = split_records(body.as_bytes(), "/data", Some("/total")).unwrap();
            assert_eq!(p.total, want, "{total}");
        }
        assert!(
            split_records(&[0xff, 0xfe], "/data", None)
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
