//! The SuiteQL of each stream, and the keyset conditions the request hook
//! adds to it.
//!
//! Every page is a new query `… WHERE <stream's filter> AND <after> ORDER BY
//! <modified>, <ids>`: the rows after the largest key of the page before,
//! so no query pages by `offset` (SuiteQL stops at 100,000 rows) and rows
//! with the same `lastmodifieddate` are told apart by their ids. Values
//! spliced into a query are checked first: a time must read
//! `YYYY-MM-DD HH24:MI:SS`, an id must be digits.

use chrono::{DateTime, NaiveDateTime, TimeZone};
use connector_core::Error;
use connector_core::records::split_key;
use serde_json::Value;

/// The format every date-time is selected and compared in.
pub const TIME_FORMAT: &str = "YYYY-MM-DD HH24:MI:SS";
const CHRONO_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// One stream's query.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    /// `SELECT … FROM … [JOIN …]`.
    pub select: &'static str,
    /// The stream's own filter (`tal.posting = 'T'`), or `""`.
    pub filter: &'static str,
    /// The modified-time column, for incremental streams.
    pub modified: Option<&'static str>,
    /// The columns of the key, in the order of the stream's `primary_key`.
    pub ids: &'static [&'static str],
}

impl Query {
    /// The query of a page: `since` is the stream's stored state (a
    /// `{"modified", "id"}` keyset or its held form with a null id), `after`
    /// the key the page starts after.
    pub fn text(
        &self,
        tz: chrono_tz::Tz,
        since: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<String, Error> {
        let mut conds: Vec<String> = Vec::new();
        if !self.filter.is_empty() {
            conds.push(self.filter.to_owned());
        }
        for (what, key) in [("state", since), ("page position", after)] {
            if let Some(k) = key {
                conds.push(
                    self.after(tz, k)
                        .map_err(|m| Error::Config(format!("SuiteQL {what} {k}: {m}")))?,
                );
            }
        }
        let mut q = self.select.to_owned();
        if !conds.is_empty() {
            q.push_str(" WHERE ");
            q.push_str(&conds.join(" AND "));
        }
        let order: Vec<&str> = self
            .modified
            .iter()
            .copied()
            .chain(self.ids.iter().copied())
            .collect();
        q.push_str(" ORDER BY ");
        q.push_str(&order.join(", "));
        Ok(q)
    }

    /// The rows after `key`: `{"modified": m, "id": i}` (either may be null).
    fn after(&self, tz: chrono_tz::Tz, key: &Value) -> Result<String, String> {
        let modified = match key.get("modified") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(local_time(m, tz)?),
            Some(other) => return Err(format!("modified is {other}, not a time")),
        };
        let ids = match key.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(self.id_parts(id)?),
            Some(other) => return Err(format!("id is {other}, not a key")),
        };
        match (self.modified, modified, ids) {
            (Some(col), Some(m), Some(ids)) => {
                let t = format!("TO_DATE('{m}', '{TIME_FORMAT}')");
                Ok(format!(
                    "({col} > {t} OR ({col} = {t} AND {}))",
                    self.ids_after(&ids)
                ))
            }
            // The held state: everything from the time on.
            (Some(col), Some(m), None) => Ok(format!("{col} >= TO_DATE('{m}', '{TIME_FORMAT}')")),
            (_, _, Some(ids)) => Ok(self.ids_after(&ids)),
            _ => Err("neither a time nor an id".into()),
        }
    }

    fn id_parts(&self, id: &str) -> Result<Vec<String>, String> {
        let parts = split_key(id);
        if parts.len() != self.ids.len()
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "{id:?} is not a key of {} numeric part(s)",
                self.ids.len()
            ));
        }
        Ok(parts)
    }

    /// `(a > x OR (a = x AND (b > y …)))` over the key columns.
    fn ids_after(&self, parts: &[String]) -> String {
        let mut out = String::new();
        for (i, (col, v)) in self.ids.iter().zip(parts).enumerate().rev() {
            out = if i + 1 == self.ids.len() {
                format!("{col} > {v}")
            } else {
                format!("({col} > {v} OR ({col} = {v} AND {out}))")
            };
        }
        out
    }
}

/// A time as the query compares it: the source's own text
/// (`YYYY-MM-DD HH:MM:SS`, checked), or an RFC 3339 time (core's held
/// state) turned into the connection's time zone.
pub fn local_time(m: &str, tz: chrono_tz::Tz) -> Result<String, String> {
    if NaiveDateTime::parse_from_str(m, CHRONO_FORMAT).is_ok() && m.len() == 19 {
        return Ok(m.to_owned());
    }
    let t = DateTime::parse_from_rfc3339(m)
        .map_err(|_| format!("{m:?} is neither YYYY-MM-DD HH:MM:SS nor RFC 3339"))?;
    Ok(tz
        .from_utc_datetime(&t.naive_utc())
        .format(CHRONO_FORMAT)
        .to_string())
}

/// A `TO_CHAR` time read in the connection's time zone (the earlier instant
/// of a time that occurs twice; `None` for one that does not exist).
pub fn parse_local(text: &str, tz: chrono_tz::Tz) -> Option<DateTime<chrono::Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), CHRONO_FORMAT).ok()?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub const EMPLOYEES: Query = Query {
    select: "SELECT e.id, e.entityid, TRIM(e.firstname || ' ' || e.lastname) AS fullname, e.email, e.title, \
             CASE WHEN e.isinactive = 'T' THEN 'Inactive' ELSE 'Active' END AS status, \
             e.supervisor, e.department, BUILTIN.DF(e.department) AS departmentname, \
             e.location, BUILTIN.DF(e.location) AS locationname, e.subsidiary, \
             TO_CHAR(e.hiredate, 'YYYY-MM-DD') AS hiredate, TO_CHAR(e.releasedate, 'YYYY-MM-DD') AS releasedate, \
             TO_CHAR(e.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodifieddate \
             FROM employee e",
    filter: "",
    modified: None,
    ids: &["e.id"],
};

pub const VENDORS: Query = Query {
    select: "SELECT v.id, v.entityid, v.companyname, v.legalname, v.taxidnum, v.isinactive, \
             c.symbol AS currency, a.country, \
             TO_CHAR(v.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodifieddate \
             FROM vendor v LEFT JOIN currency c ON c.id = v.currency \
             LEFT JOIN entityaddress a ON a.nkey = v.defaultbillingaddress",
    filter: "",
    modified: None,
    ids: &["v.id"],
};

pub const ACCOUNTS: Query = Query {
    select: "SELECT a.id, a.acctnumber, a.accountsearchdisplayname, a.fullname, a.accttype, a.isinactive, \
             CASE WHEN a.accttype IN ('Income', 'OthIncome', 'COGS', 'Expense', 'OthExpense') THEN 'F' ELSE 'T' END AS isbalancesheet \
             FROM account a",
    filter: "",
    modified: None,
    ids: &["a.id"],
};

pub const TRANSACTIONS: Query = Query {
    select: "SELECT t.id AS transaction, tal.transactionline, t.tranid, t.type, \
             TO_CHAR(t.trandate, 'YYYY-MM-DD') AS trandate, \
             TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodifieddate, \
             c.symbol AS currency, bc.symbol AS basecurrency, tl.subsidiary, \
             tal.account, a.acctnumber, tal.debit, tal.credit, \
             tl.debitforeignamount, tl.creditforeignamount, \
             CASE WHEN tal.debit IS NOT NULL THEN 'debit' ELSE 'credit' END AS debitcredit, \
             tl.department, tl.memo \
             FROM transaction t \
             JOIN transactionaccountingline tal ON tal.transaction = t.id \
             JOIN transactionline tl ON tl.transaction = tal.transaction AND tl.id = tal.transactionline \
             JOIN accountingbook ab ON ab.id = tal.accountingbook AND ab.isprimary = 'T' \
             JOIN subsidiary s ON s.id = tl.subsidiary \
             JOIN currency c ON c.id = t.currency \
             JOIN currency bc ON bc.id = s.currency \
             LEFT JOIN account a ON a.id = tal.account",
    filter: "tal.posting = 'T'",
    modified: Some("t.lastmodifieddate"),
    ids: &["t.id", "tal.transactionline"],
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_starts_after_the_compound_key_and_ties_on_time_are_split_by_id() {
        let tz: chrono_tz::Tz = "America/Los_Angeles".parse().unwrap();
        let q = TRANSACTIONS
            .text(
                tz,
                None,
                Some(&json!({"modified": "2024-03-01 10:00:00", "id": "42|3"})),
            )
            .unwrap();
        assert!(q.ends_with(
            "WHERE tal.posting = 'T' AND (t.lastmodifieddate > TO_DATE('2024-03-01 10:00:00', 'YYYY-MM-DD HH24:MI:SS') \
             OR (t.lastmodifieddate = TO_DATE('2024-03-01 10:00:00', 'YYYY-MM-DD HH24:MI:SS') \
             AND (t.id > 42 OR (t.id = 42 AND tal.transactionline > 3)))) \
             ORDER BY t.lastmodifieddate, t.id, tal.transactionline"
        ), "{q}");
        // Core's held state (UTC, no id) is read from that time on, in the user's zone.
        let held = TRANSACTIONS
            .text(
                tz,
                Some(&json!({"modified": "2024-07-01T17:00:00Z", "id": null})),
                None,
            )
            .unwrap();
        assert!(
            held.contains("t.lastmodifieddate >= TO_DATE('2024-07-01 10:00:00'"),
            "{held}"
        );
        let first = EMPLOYEES.text(tz, None, None).unwrap();
        assert!(first.ends_with("FROM employee e ORDER BY e.id"), "{first}");
        let next = EMPLOYEES
            .text(tz, None, Some(&json!({"modified": null, "id": "1000"})))
            .unwrap();
        assert!(next.ends_with("WHERE e.id > 1000 ORDER BY e.id"), "{next}");
    }

    #[test]
    fn nothing_but_checked_values_reaches_a_query() {
        let tz = chrono_tz::UTC;
        for bad in [
            json!({"modified": "2024-03-01 10:00:00'); DROP", "id": "1|2"}),
            json!({"modified": "2024-03-01 10:00:00", "id": "1 OR 1=1|2"}),
            json!({"modified": "2024-03-01 10:00:00", "id": "1"}),
            json!({"modified": 5, "id": "1|2"}),
        ] {
            assert!(TRANSACTIONS.text(tz, None, Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_times_read_in_the_zone_far_from_utc() {
        let kiritimati: chrono_tz::Tz = "Pacific/Kiritimati".parse().unwrap();
        let t = parse_local("2024-03-01 01:30:00", kiritimati).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-02-29T11:30:00+00:00");
        let la: chrono_tz::Tz = "America/Los_Angeles".parse().unwrap();
        // 02:30 does not exist on 2024-03-10 in Los Angeles; 01:30 on 2024-11-03 occurs twice.
        assert_eq!(parse_local("2024-03-10 02:30:00", la), None);
        assert_eq!(
            parse_local("2024-11-03 01:30:00", la).unwrap().to_rfc3339(),
            "2024-11-03T08:30:00+00:00"
        );
        assert_eq!(
            local_time("2024-11-03T08:30:00Z", la).unwrap(),
            "2024-11-03 01:30:00"
        );
    }
}
