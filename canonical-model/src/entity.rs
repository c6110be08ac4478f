//! Canonical entities and their field catalogue.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::CanonValue;

/// The type of a canonical field, which is also its column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Bool,
    Date,
    Timestamp,
    Decimal,
    /// A canonical id of another entity (column `<name>_id bigint`).
    Ref(EntityKind),
    /// An ISO 4217 currency code (column `char(3)`).
    Currency,
    /// An exact, signed amount (column `numeric`) in the currency held by
    /// the named `Currency` field of the same entity: the row is refused
    /// when the amount has more decimals than that currency's minor unit,
    /// or has no currency.
    Money(&'static str),
}

/// One field of an entity: its name (as in mapping rules and `explain`) and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
}

impl FieldDef {
    const fn new(name: &'static str, ty: FieldType) -> Self {
        Self { name, ty }
    }

    /// The column that stores the field: the name, or `<name>_id` for references.
    pub fn column(&self) -> String {
        match self.ty {
            FieldType::Ref(_) => format!("{}_id", self.name),
            _ => self.name.to_owned(),
        }
    }
}

/// Declares the canonical entities: each one's table name and fields, in
/// column order, once. From it follow the `EntityKind` catalogue, each
/// entity's struct (a required `source_id` first, every other field
/// optional), its `FIELDS`, and its row (`Entity::into_row`): a field cannot
/// be listed in one and missed or misplaced in another. The SQL table is
/// hand-written in `migrations/`, and `sync-daemon/tests/migrate.rs` holds it
/// to this declaration.
///
/// Field types: `Text`, `Bool`, `Date`, `Timestamp`, `Decimal`, and
/// `Ref(Kind)` (the source id of another entity; column `<name>_id bigint`).
macro_rules! entities {
    ($(
        $(#[$emeta:meta])*
        $Kind:ident = $table:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ident $( ( $target:ident ) )? ),* $(,)?
        }
    )*) => {
        /// The kinds of canonical entity. Each has one table of the same name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EntityKind {
            $($Kind),*
        }

        const KINDS: usize = [$(stringify!($Kind)),*].len();

        impl EntityKind {
            pub const ALL: [EntityKind; KINDS] = [$(EntityKind::$Kind),*];

            /// The name used in tables, the ledger and the CLI.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(EntityKind::$Kind => $table),*
                }
            }

            /// Every canonical field of this kind, in column order. `source_id` is first.
            pub fn fields(&self) -> &'static [FieldDef] {
                match self {
                    $(EntityKind::$Kind => $Kind::FIELDS),*
                }
            }
        }

        $(
            $(#[$emeta])*
            #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
            pub struct $Kind {
                pub source_id: String,
                $( $(#[$fmeta])* pub $field: entity_field!(rust $ty), )*
            }

            impl $Kind {
                /// The entity's fields, in column order.
                pub const FIELDS: &'static [FieldDef] = &[
                    FieldDef::new("source_id", FieldType::Text),
                    $( FieldDef::new(stringify!($field), entity_field!(kind $ty $(($target))?)), )*
                ];

                fn into_values(self) -> Vec<Option<CanonValue>> {
                    vec![
                        Some(CanonValue::Text(self.source_id)),
                        $( entity_field!(value $ty, self.$field), )*
                    ]
                }
            }
        )*

        /// Any canonical entity a mapper can produce.
        #[allow(clippy::large_enum_variant)] // short-lived, turned into a row at once
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Entity {
            $($Kind($Kind)),*
        }

        impl Entity {
            pub fn kind(&self) -> EntityKind {
                match self {
                    $(Entity::$Kind(_) => EntityKind::$Kind),*
                }
            }

            /// The entity's row form, the one that is hashed and stored.
            pub fn into_row(self) -> CanonicalRow {
                let kind = self.kind();
                let values = match self {
                    $(Entity::$Kind(e) => e.into_values()),*
                };
                debug_assert_eq!(values.len(), kind.fields().len());
                CanonicalRow { kind, values }
            }
        }
    };
}

/// One field's Rust type, catalogue type and canonical value, by its type word.
macro_rules! entity_field {
    (rust Text) => { Option<String> };
    (rust Bool) => { Option<bool> };
    (rust Date) => { Option<NaiveDate> };
    (rust Timestamp) => { Option<DateTime<Utc>> };
    (rust Decimal) => { Option<Decimal> };
    (rust Ref) => { Option<String> };
    (rust Currency) => { Option<String> };
    (rust Money) => { Option<Decimal> };
    (kind Currency) => { FieldType::Currency };
    (kind Money($currency:ident)) => { FieldType::Money(stringify!($currency)) };
    (value Currency, $v:expr) => { $v.map(CanonValue::Text) };
    (value Money, $v:expr) => { $v.map(CanonValue::Decimal) };
    (kind Text) => { FieldType::Text };
    (kind Bool) => { FieldType::Bool };
    (kind Date) => { FieldType::Date };
    (kind Timestamp) => { FieldType::Timestamp };
    (kind Decimal) => { FieldType::Decimal };
    (kind Ref($target:ident)) => { FieldType::Ref(EntityKind::$target) };
    (value Text, $v:expr) => { $v.map(CanonValue::Text) };
    (value Bool, $v:expr) => { $v.map(CanonValue::Bool) };
    (value Date, $v:expr) => { $v.map(CanonValue::Date) };
    (value Timestamp, $v:expr) => { $v.map(CanonValue::Timestamp) };
    (value Decimal, $v:expr) => { $v.map(CanonValue::Decimal) };
    (value Ref, $v:expr) => { $v.map(CanonValue::Ref) };
}

entities! {
    /// A person who works for the organisation (employee or contingent worker).
    Worker = "worker" {
        worker_number: Text,
        display_name: Text,
        work_email: Text,
        work_phone: Text,
        business_title: Text,
        is_manager: Bool,
        worker_type: Text,
        job_profile: Text,
        time_type: Text,
        hire_date: Date,
        /// The last day of employment of a terminated worker (a terminated
        /// worker is not deleted: deletion is the source removing the record).
        termination_date: Date,
        /// The source's employment status as it writes it (`Active`, `Inactive`).
        employment_status: Text,
        /// Full-time equivalent as an exact fraction (1 = full time).
        fte: Decimal,
        company: Text,
        cost_center: Text,
        /// Source id of the worker's primary organisation.
        org_unit: Ref(OrgUnit),
        /// Source id of the worker's primary location.
        location: Ref(Location),
        /// Source id of the worker's manager (another worker).
        manager: Ref(Worker),
        source_modified_at: Timestamp,
    }

    /// An organisational unit (supervisory organisation, department, team).
    OrgUnit = "org_unit" {
        name: Text,
        org_type: Text,
    }

    /// A work location (site, office).
    Location = "location" {
        name: Text,
        country: Text,
    }

    /// A cost center in one validity period (SAP cost centers are
    /// time-dependent: one row per period, keyed by its end date).
    CostCenter = "cost_center" {
        controlling_area: Text,
        code: Text,
        /// First day of the validity period.
        valid_from: Date,
        /// Last day of the validity period; 9999-12-31 means open-ended.
        valid_to: Date,
        name: Text,
        description: Text,
        company_code: Text,
        /// The source's cost center category code.
        category: Text,
        currency: Currency,
        profit_center: Text,
        person_responsible: Text,
    }

    /// A general-ledger account of a chart of accounts.
    GlAccount = "gl_account" {
        chart_of_accounts: Text,
        account_number: Text,
        name: Text,
        long_name: Text,
        /// True for a balance-sheet account, false for a profit-and-loss one.
        is_balance_sheet: Bool,
        /// The source's own account type code (SAP `GLAccountType`, NetSuite `accttype`).
        source_type: Text,
        /// The company code segment, where the source has one per company.
        company_code: Text,
        /// Blocked for posting, or inactive.
        blocked: Bool,
        source_modified_at: Timestamp,
    }

    /// A supplier (vendor).
    Supplier = "supplier" {
        supplier_number: Text,
        legal_name: Text,
        tax_number: Text,
        /// ISO 3166-1 alpha-2 country code, as the source gives it.
        country: Text,
        currency: Currency,
        posting_blocked: Bool,
        purchasing_blocked: Bool,
        /// Flagged for deletion (SAP) or inactive (NetSuite): still present at the source.
        deletion_flagged: Bool,
        source_modified_at: Timestamp,
    }

    /// A journal entry (accounting document) header.
    JournalEntry = "journal_entry" {
        company_code: Text,
        fiscal_year: Text,
        document_number: Text,
        posting_date: Date,
        document_date: Date,
        document_type: Text,
        /// The document number of the entry this one reverses.
        reversal_of: Text,
        /// The transaction currency of the entry.
        currency: Currency,
        source_modified_at: Timestamp,
    }

    /// One line of a journal entry. Amounts are signed: + debit, − credit.
    JournalLine = "journal_line" {
        entry: Ref(JournalEntry),
        line_number: Text,
        gl_account: Ref(GlAccount),
        /// The G/L account number as the source gives it (kept when the
        /// account is not known).
        account_number: Text,
        /// The cost center code (resolved by validity date in the view
        /// `journal_line_cost_center`).
        cost_center: Text,
        controlling_area: Text,
        profit_center: Text,
        /// Amount in the transaction currency, signed.
        amount: Money(currency),
        currency: Currency,
        /// Amount in the company code's (subsidiary's base) currency, signed.
        amount_company: Money(company_currency),
        company_currency: Currency,
        /// The source's debit/credit indicator (SAP `S`/`H`; `debit`/`credit`).
        debit_credit: Text,
        posting_date: Date,
        text: Text,
        source_modified_at: Timestamp,
    }
}

impl EntityKind {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields().iter().find(|f| f.name == name)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = EntityKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown entity {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// An entity as a row: values aligned with [`EntityKind::fields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRow {
    pub kind: EntityKind,
    pub values: Vec<Option<CanonValue>>,
}

impl CanonicalRow {
    pub fn source_id(&self) -> &str {
        match &self.values[0] {
            Some(CanonValue::Text(s)) => s,
            _ => "",
        }
    }

    pub fn get(&self, field: &str) -> Option<&CanonValue> {
        let i = self.kind.fields().iter().position(|f| f.name == field)?;
        self.values[i].as_ref()
    }

    /// Checks every value against the canonical domain ([`CanonValue::check`]);
    /// the source id must be a non-empty id. The error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (def, v) in self.kind.fields().iter().zip(&self.values) {
            if let Some(v) = v {
                v.check().map_err(|m| (def.name, m))?;
            }
        }
        self.check_money()?;
        let id = self.source_id();
        if id.is_empty() {
            return Err(("source_id", "the source id is empty".into()));
        }
        if id.len() > crate::MAX_ID_BYTES {
            return Err((
                "source_id",
                format!(
                    "the source id is {} bytes long, over the limit of {}",
                    id.len(),
                    crate::MAX_ID_BYTES
                ),
            ));
        }
        Ok(())
    }

    /// Currencies are ISO 4217 codes; every amount has a currency and no
    /// more decimals than its minor unit (JPY 0, USD 2, KWD 3).
    fn check_money(&self) -> Result<(), (&'static str, String)> {
        let fields = self.kind.fields();
        for (def, v) in fields.iter().zip(&self.values) {
            match (def.ty, v) {
                (FieldType::Currency, Some(CanonValue::Text(code))) => {
                    crate::Currency::parse(code).map_err(|e| (def.name, e.to_string()))?;
                }
                (FieldType::Money(cur), Some(CanonValue::Decimal(amount))) => {
                    let code = match self.get(cur) {
                        Some(CanonValue::Text(c)) => c,
                        _ => {
                            return Err((
                                def.name,
                                format!("the amount {amount} has no currency ({cur} is empty)"),
                            ));
                        }
                    };
                    let currency =
                        crate::Currency::parse(code).map_err(|e| (cur, e.to_string()))?;
                    crate::Money::new(*amount, currency).map_err(|e| (def.name, e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// SHA-256 over the row's canonical values: equal rows hash equal, whatever
    /// mapping version produced them.
    pub fn row_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.kind.as_str());
        for v in &self.values {
            match v {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    let s = v.to_canonical_string();
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s);
                }
            }
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_align_with_the_catalogue() {
        for e in [
            Entity::Worker(Worker {
                source_id: "w".into(),
                ..Default::default()
            }),
            Entity::OrgUnit(OrgUnit {
                source_id: "o".into(),
                ..Default::default()
            }),
            Entity::Location(Location {
                source_id: "l".into(),
                ..Default::default()
            }),
        ] {
            let row = e.into_row();
            assert_eq!(row.values.len(), row.kind.fields().len());
            assert_eq!(row.kind.fields()[0].name, "source_id");
            assert!(!row.source_id().is_empty());
        }
    }

    #[test]
    fn row_hash_sees_every_field_and_null() {
        let a = Entity::Worker(Worker {
            source_id: "w".into(),
            ..Default::default()
        })
        .into_row();
        let b = Entity::Worker(Worker {
            source_id: "w".into(),
            display_name: Some(String::new()),
            ..Default::default()
        })
        .into_row();
        assert_ne!(
            a.row_hash(),
            b.row_hash(),
            "null and empty string must differ"
        );
        assert_eq!(a.row_hash(), a.clone().row_hash());
    }

    #[test]
    fn rows_outside_the_canonical_domain_name_the_field() {
        let bad = |w: Worker| Entity::Worker(w).into_row().check().unwrap_err();
        let base = || Worker {
            source_id: "w".into(),
            ..Default::default()
        };
        let e = bad(Worker {
            work_email: Some("a\u{0}@b".into()),
            ..base()
        });
        assert_eq!(e.0, "work_email");
        assert!(e.1.contains("NUL"), "{e:?}");
        let e = bad(Worker {
            hire_date: NaiveDate::from_ymd_opt(0, 1, 1),
            ..base()
        });
        assert_eq!(e.0, "hire_date");
        let e = bad(Worker {
            source_id: "x".repeat(513),
            ..base()
        });
        assert_eq!(e.0, "source_id");
        let e = bad(Worker {
            manager: Some("m\u{0}".into()),
            ..base()
        });
        assert_eq!(e.0, "manager");
        Entity::Worker(base()).into_row().check().unwrap();
    }

    #[test]
    fn amounts_fit_their_currency_or_the_row_names_the_field() {
        use rust_decimal::Decimal;
        let line = |amount: &str, currency: Option<&str>| {
            Entity::JournalLine(JournalLine {
                source_id: "l".into(),
                amount: Some(amount.parse::<Decimal>().unwrap()),
                currency: currency.map(str::to_owned),
                ..Default::default()
            })
            .into_row()
            .check()
        };
        assert!(line("150000", Some("JPY")).is_ok());
        assert!(line("100.125", Some("KWD")).is_ok());
        assert!(
            line("12.500", Some("USD")).is_ok(),
            "trailing zeros are no precision"
        );
        let e = line("1500.5", Some("JPY")).unwrap_err();
        assert_eq!(e.0, "amount");
        assert!(e.1.contains("JPY") && e.1.contains('0'), "{e:?}");
        let e = line("0.0001", Some("KWD")).unwrap_err();
        assert_eq!(e.0, "amount");
        let e = line("1", None).unwrap_err();
        assert_eq!(e.0, "amount");
        assert!(e.1.contains("no currency"), "{e:?}");
        let e = line("1", Some("XYZ")).unwrap_err();
        assert_eq!(e.0, "currency");
    }

    /// Every `Money` field names a `Currency` field of its own entity.
    #[test]
    fn every_amount_names_a_currency_field_of_its_entity() {
        for kind in EntityKind::ALL {
            for f in kind.fields() {
                if let FieldType::Money(cur) = f.ty {
                    assert_eq!(
                        kind.field(cur).map(|c| c.ty),
                        Some(FieldType::Currency),
                        "{kind}.{}",
                        f.name
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_entity_lists_the_valid_ones() {
        let e = "wrker".parse::<EntityKind>().unwrap_err();
        assert!(e.contains("worker, org_unit, location"), "{e}");
    }
}
