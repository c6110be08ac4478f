//! Named, pure value transforms from a source JSON value to a canonical value.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

use crate::EntityKind;

/// A canonical field value. Dates are dates (never midnight timestamps), money
/// and fractions are exact decimals, timestamps are UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CanonValue {
    Bool(bool),
    Text(String),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Decimal(Decimal),
    /// A reference to another entity by the *source's* id, resolved to a
    /// canonical id when the row is stored.
    Ref(String),
}

impl CanonValue {
    /// A stable textual form, used for row hashes and for comparing values.
    pub fn to_canonical_string(&self) -> String {
        match self {
            CanonValue::Bool(b) => b.to_string(),
            CanonValue::Text(s) | CanonValue::Ref(s) => s.clone(),
            CanonValue::Date(d) => d.format("%Y-%m-%d").to_string(),
            CanonValue::Timestamp(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            CanonValue::Decimal(d) => d.normalize().to_string(),
        }
    }
}

/// The longest id (a source id, a reference) a canonical row holds, in
/// bytes: ids are indexed, and an index entry has a size limit.
pub const MAX_ID_BYTES: usize = 512;
/// The longest text value, in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

impl CanonValue {
    /// Checks that the value fits the canonical domain, which every column
    /// of the model accepts: text without NUL characters (U+0000) and at
    /// most [`MAX_TEXT_BYTES`], ids of at most [`MAX_ID_BYTES`], dates and
    /// timestamps in the years 1 to 9999. A value outside it is a data
    /// error of its record, found before the database sees it.
    pub fn check(&self) -> Result<(), String> {
        let text = |s: &str, max: usize, what: &str| {
            if s.contains('\0') {
                Err(format!(
                    "{what} contains a NUL character (U+0000), which text columns cannot store"
                ))
            } else if s.len() > max {
                Err(format!(
                    "{what} is {} bytes long, over the limit of {max}",
                    s.len()
                ))
            } else {
                Ok(())
            }
        };
        let year = |y: i32, what: &str| {
            if (1..=9999).contains(&y) {
                Ok(())
            } else {
                Err(format!("{what} has year {y}, outside 1 to 9999"))
            }
        };
        match self {
            CanonValue::Text(s) => text(s, MAX_TEXT_BYTES, "text"),
            CanonValue::Ref(s) => text(s, MAX_ID_BYTES, "reference id"),
            CanonValue::Date(d) => year(d.year(), "date"),
            CanonValue::Timestamp(t) => year(t.year(), "timestamp"),
            CanonValue::Bool(_) | CanonValue::Decimal(_) => Ok(()),
        }
    }
}

impl fmt::Display for CanonValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_string())
    }
}

/// A transform by name. The name is stored in `mapping_field_rule` and shown by
/// `explain`, so renaming a variant is a mapping change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// A JSON string, verbatim.
    Text,
    /// Like `text`, but an empty or blank string is no value (sources that
    /// send every field as a string, BambooHR).
    TextOrBlank,
    /// A JSON string, trimmed and lower-cased (e-mail addresses).
    Lowercase,
    /// A JSON string, trimmed and upper-cased (codes).
    Uppercase,
    /// A JSON boolean, or the strings "true"/"false"/"1"/"0".
    Bool,
    /// `YYYY-MM-DD`, optionally with an offset suffix as Workday writes it
    /// (`2024-01-01-07:00`, `2024-01-01Z`); the offset is dropped, the date kept.
    /// SAP's `/Date(ms)/` is read as its UTC calendar date.
    Date,
    /// Like `date`, but an empty string and the zero date `0000-00-00` are
    /// no value (BambooHR writes both for "no date").
    DateOrBlank,
    /// RFC 3339, Workday `2024-01-01T10:00:00.000-07:00`, `+0000` without a colon,
    /// SAP `/Date(ms)/` and `/Date(ms+0000)/`; a timestamp without an offset is UTC.
    Timestamp,
    /// An exact decimal from a JSON number or a numeric string (never via `f64`
    /// arithmetic: the number's text is parsed).
    Decimal,
    /// A reference to another entity by its source id (a string).
    Ref(EntityKind),
    /// A flag as older sources write it: `"X"`/`""` (SAP), `"T"`/`"F"`
    /// (NetSuite), or what `bool` reads.
    Flag,
    /// An ISO 4217 currency code (trimmed, upper-cased); an unknown code is
    /// a data error, a blank one no value.
    Currency,
    /// A compound source id: every pointer of the rule is read (a string or
    /// a number) and the parts are joined with `|` (a `|` or `\` inside a
    /// part escaped by `\`), as the connector core joins a stream's compound
    /// `primary_key`. Absent when any part is.
    Key,
    /// A reference to another entity by a compound source id, joined as by `key`.
    KeyRef(EntityKind),
    /// A signed amount from two pointers: the amount, then the source's
    /// debit/credit indicator (`S`/`H` in SAP, `D`/`C`, `debit`/`credit`).
    /// Credit is negative: a positive amount marked credit is negated; an
    /// amount the source already signs keeps its sign (a negative posting).
    SignedBy,
    /// A signed amount from two pointers, a debit column and a credit column
    /// (either may be absent): debit − credit.
    DebitMinusCredit,
    /// A local date-time without an offset (`YYYY-MM-DD HH:MM:SS`, as a
    /// SuiteQL `TO_CHAR` writes it), read in this IANA time zone; a time
    /// that does not exist (a DST gap) is an error, an ambiguous one (a DST
    /// fold) is the earlier instant.
    TimestampIn(chrono_tz::Tz),
    /// A text of one language from a list of texts (SAP's expanded
    /// `to_Text`): the rule's first pointer is the list (an array, or
    /// OData v2's `{"results": [...]}`), its second the text within the
    /// entry whose `/Language` is this language (case ignored).
    Localized(Language),
}

/// A language key as SAP's OData APIs write it (`EN`, `DE`, `ZH`): up to
/// four ASCII letters, kept upper-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Language([u8; 4], u8);

impl Language {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "language {s:?} is not a language key (letters, e.g. \"EN\")"
            ));
        }
        let mut b = [0u8; 4];
        b[..s.len()].copy_from_slice(s.to_ascii_uppercase().as_bytes());
        Ok(Self(b, s.len() as u8))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..usize::from(self.1)]).unwrap_or("")
    }
}

impl Serialize for Language {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Language::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Transform {
    /// The stored name, e.g. `text`, `date`, `ref:org_unit`.
    pub fn name(&self) -> String {
        match self {
            Transform::Ref(kind) => format!("ref:{}", kind.as_str()),
            Transform::KeyRef(kind) => format!("key_ref:{}", kind.as_str()),
            Transform::TimestampIn(tz) => format!("timestamp_in:{}", tz.name()),
            Transform::Localized(lang) => format!("localized:{}", lang.as_str()),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        }
    }

    /// True when `v` means "no value" under this transform (a blank string
    /// for `text_or_blank`, also `0000-00-00` for `date_or_blank`): the
    /// canonical value is absent, as for `null`.
    pub fn is_blank(&self, v: &Value) -> bool {
        match (self, v) {
            (Transform::TextOrBlank | Transform::Currency, Value::String(s)) => s.trim().is_empty(),
            (Transform::DateOrBlank, Value::String(s)) => {
                let s = s.trim();
                s.is_empty() || s.starts_with("0000-00-00")
            }
            _ => false,
        }
    }

    /// True for the transforms that read every pointer of their rule
    /// together ([`Transform::apply_all`]) instead of the first present one.
    pub fn reads_all_pointers(&self) -> bool {
        matches!(
            self,
            Transform::Key
                | Transform::KeyRef(_)
                | Transform::SignedBy
                | Transform::DebitMinusCredit
        )
    }

    /// Applies a transform that reads every pointer ([`Self::reads_all_pointers`])
    /// to the values found there (`None` for absent or null). `Ok(None)`: no value.
    pub fn apply_all(
        &self,
        values: &[Option<&Value>],
    ) -> Result<Option<CanonValue>, TransformError> {
        let out = match self {
            Transform::Key | Transform::KeyRef(_) => {
                let mut parts = Vec::with_capacity(values.len());
                for v in values {
                    match v {
                        None => return Ok(None),
                        Some(Value::String(s)) if !s.is_empty() => parts.push(s.clone()),
                        Some(Value::Number(n)) => parts.push(n.to_string()),
                        Some(other) => {
                            return Err(TransformError::new(
                                *self,
                                format!(
                                    "a key part is {}, not a non-empty string or a number",
                                    kind_of(other)
                                ),
                            ));
                        }
                    }
                }
                let key = join_key(&parts);
                if matches!(self, Transform::KeyRef(_)) {
                    CanonValue::Ref(key)
                } else {
                    CanonValue::Text(key)
                }
            }
            Transform::SignedBy => {
                let Some(amount) = values.first().copied().flatten() else {
                    return Ok(None);
                };
                let CanonValue::Decimal(a) = Transform::Decimal
                    .apply(amount)
                    .map_err(|e| TransformError::new(*self, e.message))?
                else {
                    unreachable!("decimal gives a decimal")
                };
                let credit = match values.get(1).copied().flatten() {
                    None => false,
                    Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                        "h" | "c" | "cr" | "credit" => true,
                        "s" | "d" | "dr" | "debit" | "" => false,
                        other => {
                            return Err(TransformError::new(
                                *self,
                                format!(
                                    "{:?} is not a debit/credit indicator (S/H, D/C, debit/credit)",
                                    other.chars().take(20).collect::<String>()
                                ),
                            ));
                        }
                    },
                    Some(other) => {
                        return Err(TransformError::new(
                            *self,
                            format!(
                                "the debit/credit indicator is {}, not a string",
                                kind_of(other)
                            ),
                        ));
                    }
                };
                CanonValue::Decimal(if credit && a.is_sign_positive() && !a.is_zero() {
                    -a
                } else {
                    a
                })
            }
            Transform::DebitMinusCredit => {
                let read = |i: usize| -> Result<Option<Decimal>, TransformError> {
                    match values.get(i).copied().flatten() {
                        None => Ok(None),
                        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                        Some(v) => match Transform::Decimal.apply(v) {
                            Ok(CanonValue::Decimal(d)) => Ok(Some(d)),
                            Ok(_) => unreachable!("decimal gives a decimal"),
                            Err(e) => Err(TransformError::new(*self, e.message)),
                        },
                    }
                };
                match (read(0)?, read(1)?) {
                    (None, None) => return Ok(None),
                    (d, c) => {
                        let (d, c) = (d.unwrap_or_default(), c.unwrap_or_default());
                        CanonValue::Decimal(
                            d.checked_sub(c)
                                .ok_or_else(|| {
                                    TransformError::new(*self, format!("{d} − {c} overflows"))
                                })?
                                .normalize(),
                        )
                    }
                }
            }
            other => {
                return match values.first().copied().flatten() {
                    Some(v) => other.apply(v).map(Some),
                    None => Ok(None),
                };
            }
        };
        out.check().map_err(|m| TransformError::new(*self, m))?;
        Ok(Some(out))
    }

    /// Applies the transform to one source value. `null` is handled by the caller
    /// (an absent or null source value is an absent canonical value). The
    /// result is within the canonical domain ([`CanonValue::check`]).
    pub fn apply(&self, v: &Value) -> Result<CanonValue, TransformError> {
        let out = self.apply_unchecked(v)?;
        out.check().map_err(|m| TransformError::new(*self, m))?;
        Ok(out)
    }

    fn apply_unchecked(&self, v: &Value) -> Result<CanonValue, TransformError> {
        let s = || match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(TransformError::new(
                *self,
                format!("expected a string, found {}", kind_of(other)),
            )),
        };
        match self {
            Transform::Text | Transform::TextOrBlank => Ok(CanonValue::Text(s()?.to_owned())),
            Transform::Lowercase => Ok(CanonValue::Text(s()?.trim().to_lowercase())),
            Transform::Uppercase => Ok(CanonValue::Text(s()?.trim().to_uppercase())),
            Transform::Ref(_) => {
                let id = s()?;
                if id.is_empty() {
                    return Err(TransformError::new(*self, "empty reference id".into()));
                }
                Ok(CanonValue::Ref(id.to_owned()))
            }
            Transform::Flag => match v {
                Value::String(s) => match s.trim() {
                    "X" | "x" | "T" | "t" | "true" | "1" | "Y" | "y" => Ok(CanonValue::Bool(true)),
                    "" | "F" | "f" | "false" | "0" | "N" | "n" => Ok(CanonValue::Bool(false)),
                    other => Err(TransformError::new(
                        *self,
                        format!(
                            "{:?} is not a flag (X/blank, T/F, true/false)",
                            other.chars().take(20).collect::<String>()
                        ),
                    )),
                },
                Value::Bool(b) => Ok(CanonValue::Bool(*b)),
                other => Err(TransformError::new(
                    *self,
                    format!("expected a flag, found {}", kind_of(other)),
                )),
            },
            Transform::Currency => crate::Currency::parse(s()?)
                .map(|c| CanonValue::Text(c.code().to_owned()))
                .map_err(|e| TransformError::new(*self, e.to_string())),
            Transform::TimestampIn(tz) => parse_local(s()?, *tz)
                .map(CanonValue::Timestamp)
                .map_err(|m| TransformError::new(*self, m)),
            Transform::Localized(_) => Err(TransformError::new(
                *self,
                "reads a list of texts through its rule's two pointers".into(),
            )),
            Transform::Key
            | Transform::KeyRef(_)
            | Transform::SignedBy
            | Transform::DebitMinusCredit => self
                .apply_all(&[Some(v)])
                .and_then(|o| o.ok_or_else(|| TransformError::new(*self, "no value".into()))),
            Transform::Bool => match v {
                Value::Bool(b) => Ok(CanonValue::Bool(*b)),
                Value::String(s) if s == "true" || s == "1" => Ok(CanonValue::Bool(true)),
                Value::String(s) if s == "false" || s == "0" => Ok(CanonValue::Bool(false)),
                other => Err(TransformError::new(
                    *self,
                    format!("expected a boolean, found {}", kind_of(other)),
                )),
            },
            Transform::Date | Transform::DateOrBlank => parse_date(s()?.trim())
                .map(CanonValue::Date)
                .map_err(|m| TransformError::new(*self, m)),
            Transform::Timestamp => parse_timestamp(s()?)
                .map(CanonValue::Timestamp)
                .map_err(|m| TransformError::new(*self, m)),
            Transform::Decimal => {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_owned(),
                    other => {
                        return Err(TransformError::new(
                            *self,
                            format!("expected a number, found {}", kind_of(other)),
                        ));
                    }
                };
                exact_decimal(&text)
                    .map(|d| CanonValue::Decimal(d.normalize()))
                    .ok_or_else(|| {
                        let shown: String = text.chars().take(40).collect();
                        let more = if text.chars().count() > 40 { "…" } else { "" };
                        TransformError::new(
                            *self,
                            format!(
                                "\"{shown}{more}\" is not a decimal number that can be held exactly \
                                 (at most 28 decimal places, magnitude below 7.9e28)"
                            ),
                        )
                    })
            }
        }
    }
}

impl Transform {
    /// Under [`Transform::Localized`]: the entry of the list at `list` whose
    /// `Language` is the transform's, as `(its index, the entry)`; `None`
    /// when there is none. `list` is an array or `{"results": [...]}`.
    pub fn pick_language<'v>(&self, list: &'v Value) -> Option<(String, &'v Value)> {
        let Transform::Localized(lang) = self else {
            return None;
        };
        let (prefix, items) = match list {
            Value::Array(a) => ("", a),
            Value::Object(o) => match o.get("results") {
                Some(Value::Array(a)) => ("/results", a),
                _ => return None,
            },
            _ => return None,
        };
        items.iter().enumerate().find_map(|(i, e)| {
            e.get("Language")
                .and_then(Value::as_str)
                .filter(|l| l.trim().eq_ignore_ascii_case(lang.as_str()))
                .map(|_| (format!("{prefix}/{i}"), e))
        })
    }
}

/// Joins a compound key's parts: `|` between parts, a `|` or `\` inside a
/// part escaped by `\`; one part is itself; an OData v2 `/Date(ms)/` part
/// as its UTC date when it is a midnight, else its RFC 3339 UTC time. The
/// same join as the connector core's `records::join_key` for a compound
/// `primary_key`.
pub fn join_key<S: AsRef<str>>(parts: &[S]) -> String {
    if let [one] = parts {
        return one.as_ref().to_owned();
    }
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        let part = p.as_ref();
        let part = match part
            .strip_prefix("/Date(")
            .and_then(|r| r.strip_suffix(")/"))
            .and_then(parse_ms_date)
        {
            Some(t) if t.timestamp_millis().rem_euclid(86_400_000) == 0 => {
                t.format("%Y-%m-%d").to_string()
            }
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => part.to_owned(),
        };
        for c in part.chars() {
            if c == '|' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// A local date-time (`YYYY-MM-DD HH:MM:SS`, a `T` or fractions allowed) in `tz`.
fn parse_local(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    use chrono::TimeZone;
    use chrono::offset::LocalResult;
    let s = s.trim();
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .ok_or_else(|| format!("{s:?} is not a local date-time (expected YYYY-MM-DD HH:MM:SS)"))?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Ok(a.min(b).with_timezone(&Utc)),
        LocalResult::None => Err(format!(
            "{s} does not exist in {} (a daylight-saving gap)",
            tz.name()
        )),
    }
}

impl FromStr for Transform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = s.strip_prefix("ref:") {
            return EntityKind::from_str(kind).map(Transform::Ref);
        }
        if let Some(kind) = s.strip_prefix("key_ref:") {
            return EntityKind::from_str(kind).map(Transform::KeyRef);
        }
        if let Some(lang) = s.strip_prefix("localized:") {
            return Language::parse(lang).map(Transform::Localized);
        }
        if let Some(tz) = s.strip_prefix("timestamp_in:") {
            return tz
                .parse::<chrono_tz::Tz>()
                .map(Transform::TimestampIn)
                .map_err(|_| format!("unknown time zone {tz:?}"));
        }
        serde_json::from_value(Value::String(s.to_owned()))
            .map_err(|_| format!("unknown transform {s:?}"))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a source value could not be transformed; names the transform and the value's problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transform {transform}: {message}")]
pub struct TransformError {
    pub transform: String,
    pub message: String,
}

impl TransformError {
    fn new(t: Transform, message: String) -> Self {
        Self {
            transform: t.name(),
            message,
        }
    }
}

/// The exact decimal a number's text says, or `None` when it cannot be held
/// exactly (more than 28 decimal places, too large, not a number). The text
/// is the source's own (JSON numbers are kept as written), so nothing passes
/// through binary floating point.
fn exact_decimal(text: &str) -> Option<Decimal> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let mut d = Decimal::from_str_exact(mantissa).ok()?;
    if exp > 0 {
        for _ in 0..exp {
            // Overflows (and returns) within 29 steps whatever the exponent.
            d = d.checked_mul(Decimal::TEN)?;
        }
    } else if exp < 0 {
        d = d.normalize();
        let scale = i64::from(d.scale()).checked_add(exp.checked_neg()?)?;
        d.set_scale(u32::try_from(scale).ok().filter(|s| *s <= 28)?)
            .ok()?;
    }
    Some(d)
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    // SAP OData v2 `Edm.DateTime` for a date: UTC midnight in milliseconds;
    // the calendar date is read in UTC, never in a local time zone.
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        return parse_ms_date(inner)
            .map(|t| t.date_naive())
            .ok_or_else(|| format!("{s:?} is not a /Date(ms)/ date"));
    }
    // Keep the calendar date; an offset suffix (Workday) or a time part is dropped.
    let head = s
        .get(..10)
        .ok_or_else(|| format!("{s:?} is not a date (expected YYYY-MM-DD)"))?;
    let rest = &s[10..];
    let suffix_ok = rest.is_empty()
        || rest == "Z"
        || ((rest.starts_with('-') || rest.starts_with('+')) && rest.len() == 6)
        || rest.starts_with('T');
    if !suffix_ok {
        return Err(format!("{s:?} is not a date (expected YYYY-MM-DD)"));
    }
    NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a valid date: {e}"))
}

fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        return parse_ms_date(inner).ok_or_else(|| format!("{s:?} is not a /Date(ms)/ timestamp"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("{s:?} is not a timestamp"))
}

/// `ms`, `ms+0000` or `ms-0130` as SAP OData v2 writes them.
fn parse_ms_date(inner: &str) -> Option<DateTime<Utc>> {
    let split = inner.rfind(['+', '-']).filter(|&i| i > 0);
    let (ms, offset) = match split {
        Some(i) => (&inner[..i], Some(&inner[i..])),
        None => (inner, None),
    };
    // Digits, with a minus before them at most (no `+5`).
    let digits = ms.strip_prefix('-').unwrap_or(ms);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = ms.parse().ok()?;
    let t = DateTime::<Utc>::from_timestamp_millis(ms)?;
    // The milliseconds are UTC already; the offset only says how the source displays it.
    if let Some(o) = offset
        && (o.len() != 5 || !o[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(t: Transform, v: Value) -> String {
        t.apply(&v).unwrap().to_canonical_string()
    }

    #[test]
    fn blank_transforms_read_blanks_and_zero_dates_as_no_value() {
        assert!(Transform::DateOrBlank.is_blank(&json!("0000-00-00")));
        assert!(Transform::DateOrBlank.is_blank(&json!("")));
        assert!(!Transform::Date.is_blank(&json!("")));
        assert!(Transform::TextOrBlank.is_blank(&json!("  ")));
        assert!(!Transform::TextOrBlank.is_blank(&json!("x")));
        assert_eq!(
            Transform::DateOrBlank.apply(&json!("2024-02-29")).unwrap(),
            CanonValue::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
        );
        assert!(Transform::DateOrBlank.apply(&json!("2024-02-30")).is_err());
        assert_eq!(
            "date_or_blank".parse::<Transform>(),
            Ok(Transform::DateOrBlank)
        );
    }

    #[test]
    fn sap_dates_are_utc_calendar_dates_and_offsets_are_minutes_of_display() {
        let d = |v: &str| {
            Transform::Date
                .apply(&json!(v))
                .unwrap()
                .to_canonical_string()
        };
        // 2024-03-31T00:00:00Z, whatever time zone the machine is in.
        assert_eq!(d("/Date(1711843200000)/"), "2024-03-31");
        assert_eq!(d("/Date(1711843200000+0540)/"), "2024-03-31");
        assert_eq!(
            d("/Date(253402214400000)/"),
            "9999-12-31",
            "open-ended validity"
        );
        assert!(Transform::Date.apply(&json!("/Date(x)/")).is_err());
        // Edm.DateTimeOffset: the milliseconds are UTC; +0060 is the display offset in minutes.
        let t = Transform::Timestamp
            .apply(&json!("/Date(1712045722000+0060)/"))
            .unwrap()
            .to_canonical_string();
        assert!(t.starts_with("2024-04-02T08:15:22"), "{t}");
    }

    #[test]
    fn dates_keep_the_calendar_day() {
        assert_eq!(ok(Transform::Date, json!("2024-01-01")), "2024-01-01");
        assert_eq!(ok(Transform::Date, json!("2024-01-01-07:00")), "2024-01-01");
        assert_eq!(ok(Transform::Date, json!("2024-01-01Z")), "2024-01-01");
        assert!(Transform::Date.apply(&json!("2024-02-30")).is_err());
        assert!(Transform::Date.apply(&json!("01/02/2024")).is_err());
        assert!(Transform::Date.apply(&json!(20240101)).is_err());
    }

    #[test]
    fn timestamps_apply_the_offset() {
        assert_eq!(
            ok(Transform::Timestamp, json!("2024-01-01T10:00:00-07:00")),
            "2024-01-01T17:00:00Z"
        );
        assert_eq!(
            ok(Transform::Timestamp, json!("2024-01-01T10:00:00.250+0000")),
            "2024-01-01T10:00:00.250Z"
        );
        assert_eq!(
            ok(Transform::Timestamp, json!("/Date(1704067200000)/")),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            ok(Transform::Timestamp, json!("/Date(1704067200000+0000)/")),
            "2024-01-01T00:00:00Z"
        );
        assert!(Transform::Timestamp.apply(&json!("yesterday")).is_err());
        assert!(Transform::Timestamp.apply(&json!("/Date(abc)/")).is_err());
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(ok(Transform::Decimal, json!(0.1)), "0.1");
        assert_eq!(ok(Transform::Decimal, json!("1.50")), "1.5");
        assert_eq!(ok(Transform::Decimal, json!(1.0)), "1");
        assert!(Transform::Decimal.apply(&json!("one")).is_err());
        assert!(Transform::Decimal.apply(&json!(true)).is_err());
        // Numbers are read as written, never through f64.
        let n = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert_eq!(
            ok(Transform::Decimal, n("12345678901234567890.5")),
            "12345678901234567890.5"
        );
        assert_eq!(
            ok(Transform::Decimal, n("0.30000000000000004441")),
            "0.30000000000000004441"
        );
        assert_eq!(ok(Transform::Decimal, n("1.5e3")), "1500");
        assert_eq!(ok(Transform::Decimal, n("25e-2")), "0.25");
        // What cannot be held exactly is refused, not rounded.
        for t in [
            "1e-400",
            "1e400",
            "1e999999999999",
            "123456789012345678901234567890",
        ] {
            let e = Transform::Decimal.apply(&n(t)).unwrap_err().to_string();
            assert!(e.contains("held exactly"), "{t}: {e}");
        }
        let tiny = format!("0.{}1", "0".repeat(20_000));
        let e = Transform::Decimal.apply(&n(&tiny)).unwrap_err().to_string();
        assert!(e.contains("held exactly") && e.len() < 300, "{e}");
    }

    #[test]
    fn wrong_types_name_what_was_found() {
        let e = Transform::Text.apply(&json!(42)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "transform text: expected a string, found a number"
        );
        assert!(Transform::Bool.apply(&json!("yes")).is_err());
        assert_eq!(ok(Transform::Bool, json!("true")), "true");
    }

    #[test]
    fn values_postgres_cannot_store_are_refused_with_the_reason() {
        for (t, v, why) in [
            (Transform::Text, json!("a\u{0}b"), "NUL"),
            (Transform::Lowercase, json!("\u{0}"), "NUL"),
            (Transform::Date, json!("0000-01-01"), "year 0"),
            (
                Transform::Timestamp,
                json!("/Date(-99999999999999)/"),
                "year -1199",
            ),
            (
                Transform::Timestamp,
                json!("/Date(253402300800000)/"),
                "year 10000",
            ),
            (
                Transform::Ref(EntityKind::Worker),
                json!("x".repeat(600)),
                "600 bytes",
            ),
        ] {
            let e = t.apply(&v).unwrap_err().to_string();
            assert!(e.contains(why), "{v}: {e}");
        }
        assert!(Transform::Date.apply(&json!("0001-01-01")).is_ok());
        assert!(Transform::Date.apply(&json!("9999-12-31")).is_ok());
    }

    #[test]
    fn finance_transforms_sign_amounts_read_flags_codes_and_keys() {
        let all = |t: Transform, vs: &[Value]| {
            let refs: Vec<Option<&Value>> =
                vs.iter().map(|v| (!v.is_null()).then_some(v)).collect();
            t.apply_all(&refs)
                .map(|o| o.map(|v| v.to_canonical_string()))
        };
        // A credit marked H is negative however the source signs it; a
        // negative posting (S with a negative amount) keeps its sign.
        let signed = |a: &str, dc: &str| all(Transform::SignedBy, &[json!(a), json!(dc)]).unwrap();
        assert_eq!(signed("150000", "H").as_deref(), Some("-150000"));
        assert_eq!(signed("-1000.00", "H").as_deref(), Some("-1000"));
        assert_eq!(signed("-5.00", "S").as_deref(), Some("-5"));
        assert_eq!(signed("0.00", "H").as_deref(), Some("0"));
        assert_eq!(signed("12.5", "credit").as_deref(), Some("-12.5"));
        assert!(
            all(Transform::SignedBy, &[json!("1"), json!("Q")])
                .unwrap_err()
                .message
                .contains("indicator")
        );
        assert!(all(Transform::SignedBy, &[json!("1e400"), json!("S")]).is_err());
        let dmc = |d: Value, c: Value| all(Transform::DebitMinusCredit, &[d, c]).unwrap();
        assert_eq!(dmc(json!("108.70"), Value::Null).as_deref(), Some("108.7"));
        assert_eq!(dmc(Value::Null, json!("0.10")).as_deref(), Some("-0.1"));
        assert_eq!(dmc(Value::Null, Value::Null), None);
        assert_eq!(dmc(json!(""), json!("2")).as_deref(), Some("-2"));
        for (v, want) in [("X", true), ("", false), ("T", true), ("F", false)] {
            assert_eq!(ok(Transform::Flag, json!(v)), want.to_string());
        }
        assert_eq!(ok(Transform::Flag, json!(true)), "true");
        assert!(Transform::Flag.apply(&json!("yes please")).is_err());
        assert_eq!(ok(Transform::Currency, json!(" kwd ")), "KWD");
        assert!(
            Transform::Currency
                .apply(&json!("XYZ"))
                .unwrap_err()
                .message
                .contains("XYZ")
        );
        // Compound keys: parts escaped, OData dates as dates, a missing part is no key.
        let key = |vs: &[Value]| all(Transform::Key, vs).unwrap();
        assert_eq!(
            key(&[json!("1010"), json!(2024), json!("a|b\\c")]).as_deref(),
            Some("1010|2024|a\\|b\\\\c")
        );
        assert_eq!(
            key(&[json!("A000"), json!("/Date(253402214400000)/")]).as_deref(),
            Some("A000|9999-12-31")
        );
        assert_eq!(key(&[json!("A000"), Value::Null]), None);
        assert!(all(Transform::Key, &[json!("A"), json!({"x": 1})]).is_err());
    }

    #[test]
    fn local_times_read_in_their_zone_and_texts_in_their_language() {
        let la = Transform::TimestampIn("America/Los_Angeles".parse().unwrap());
        assert_eq!(ok(la, json!("2024-03-01 10:00:00")), "2024-03-01T18:00:00Z");
        assert!(
            la.apply(&json!("2024-03-10 02:30:00"))
                .unwrap_err()
                .message
                .contains("daylight-saving gap")
        );
        let kiritimati = Transform::TimestampIn("Pacific/Kiritimati".parse().unwrap());
        assert_eq!(
            ok(kiritimati, json!("2024-01-01 00:30:00")),
            "2023-12-31T10:30:00Z"
        );
        let en = Transform::Localized(Language::parse("en").unwrap());
        let texts = json!({"results": [{"Language": "DE", "Name": "Vertrieb"}, {"Language": "EN", "Name": "Sales"}]});
        let (at, entry) = en.pick_language(&texts).unwrap();
        assert_eq!(
            (at.as_str(), &entry["Name"]),
            ("/results/1", &json!("Sales"))
        );
        assert!(en.pick_language(&json!([{"Language": "JA"}])).is_none());
        assert!(Language::parse("E N").is_err());
    }

    /// SAP's `/Date(ms)/` is a UTC instant: its calendar date is read in UTC,
    /// whatever display offset the value carries (+14:00 or −06:00) and
    /// whatever the machine's zone (nothing here reads the local zone).
    #[test]
    fn odata_dates_are_utc_calendar_dates_whatever_the_local_zone() {
        for (v, want) in [
            ("/Date(1711843200000)/", "2024-03-31"),
            ("/Date(1711843200000+0840)/", "2024-03-31"),
            ("/Date(1711929599999-0600)/", "2024-03-31"),
            ("/Date(-86400000)/", "1969-12-31"),
        ] {
            assert_eq!(ok(Transform::Date, json!(v)), want, "{v}");
        }
        assert_eq!(
            ok(Transform::Timestamp, json!("/Date(1712045722000+0060)/")),
            "2024-04-02T08:15:22Z"
        );
        assert!(Transform::Date.apply(&json!("/Date(+5)/")).is_err());
    }

    #[test]
    fn names_round_trip() {
        for t in [
            Transform::Text,
            Transform::Date,
            Transform::Ref(EntityKind::OrgUnit),
            Transform::Decimal,
            Transform::KeyRef(EntityKind::JournalEntry),
            Transform::TimestampIn("Asia/Tokyo".parse().unwrap()),
            Transform::Localized(Language::parse("DE").unwrap()),
            Transform::SignedBy,
            Transform::Currency,
        ] {
            assert_eq!(t.name().parse::<Transform>().unwrap(), t);
        }
        assert_eq!(Transform::Ref(EntityKind::OrgUnit).name(), "ref:org_unit");
    }
}
