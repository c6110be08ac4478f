//! SAP OData records → canonical finance entities.
//!
//! Values as SAP's OData v2 writes them: `Edm.Decimal` as strings (read
//! exactly), `Edm.DateTime` as `/Date(ms)/` (a calendar date read in UTC),
//! `Edm.DateTimeOffset` as `/Date(ms+0060)/` (the milliseconds are UTC),
//! flags as `"X"`/`""` in older services and booleans in newer ones, an empty
//! string for "no value", and `9999-12-31` as an open-ended validity. v4
//! writes ISO dates and booleans, which the same rules read.
//!
//! Journal item amounts are signed (+ debit, − credit). With `amount_sign =
//! "auto"` (the default) a positive amount marked credit (`DebitCreditCode`
//! `H`) is negated and an amount the source already signs keeps its sign;
//! with `"signed"` SAP's signed amounts are taken as they are, which is right
//! for negative postings too (a credit line with a positive amount, marked `H`). The entry (`journal_entry`) is the item's document:
//! company code, fiscal year and document number.

use canonical_model::{
    CostCenter, Entity, EntityKind, FieldRule, GlAccount, JournalEntry, JournalLine, Language,
    MapError, Mapper, MappingVersion, Supplier, Transform,
};
use serde_json::Value;

use crate::AmountSign;

use EntityKind::{
    CostCenter as CC, GlAccount as GL, JournalEntry as JE, JournalLine as JL, Supplier as SU,
};

/// Bump whenever a rule below changes.
pub const VERSION: &str = "1";

/// The document's key. Services that name the fiscal year `LedgerFiscalYear`
/// and the line `AccountingDocumentItem` are read too.
const ENTRY_KEY: [&str; 3] = [
    "/CompanyCode",
    "/FiscalYear|/LedgerFiscalYear",
    "/AccountingDocument",
];
const LINE_KEY: [&str; 4] = [
    "/CompanyCode",
    "/FiscalYear|/LedgerFiscalYear",
    "/AccountingDocument",
    "/LedgerGLLineItem|/AccountingDocumentItem",
];

/// The cost center rules; names and descriptions in `lang`.
pub fn cost_center_rules(lang: Language) -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(
            CC,
            "source_id",
            &["/ControllingArea", "/CostCenter", "/ValidityEndDate"],
            Key,
        ),
        FieldRule::new(CC, "controlling_area", &["/ControllingArea"], Text),
        FieldRule::new(CC, "code", &["/CostCenter"], Text),
        FieldRule::new(CC, "valid_from", &["/ValidityStartDate"], DateOrBlank),
        FieldRule::new(CC, "valid_to", &["/ValidityEndDate"], DateOrBlank),
        FieldRule::new(
            CC,
            "name",
            &["/to_Text|/_Text", "/CostCenterName"],
            Localized(lang),
        ),
        FieldRule::new(
            CC,
            "description",
            &["/to_Text|/_Text", "/CostCenterDescription"],
            Localized(lang),
        ),
        FieldRule::new(CC, "company_code", &["/CompanyCode"], TextOrBlank),
        FieldRule::new(CC, "category", &["/CostCenterCategory"], TextOrBlank),
        FieldRule::new(CC, "currency", &["/CostCenterCurrency"], Currency),
        FieldRule::new(CC, "profit_center", &["/ProfitCenter"], TextOrBlank),
        FieldRule::new(
            CC,
            "person_responsible",
            &["/CostCtrResponsiblePersonName"],
            TextOrBlank,
        ),
    ]
}

/// The G/L account rules; names in `lang`.
pub fn gl_account_rules(lang: Language) -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(GL, "source_id", &["/ChartOfAccounts", "/GLAccount"], Key),
        FieldRule::new(GL, "chart_of_accounts", &["/ChartOfAccounts"], Text),
        FieldRule::new(GL, "account_number", &["/GLAccount"], Text),
        FieldRule::new(
            GL,
            "name",
            &["/to_Text|/_Text", "/GLAccountName"],
            Localized(lang),
        ),
        FieldRule::new(
            GL,
            "long_name",
            &["/to_Text|/_Text", "/GLAccountLongName"],
            Localized(lang),
        ),
        FieldRule::new(GL, "is_balance_sheet", &["/IsBalanceSheetAccount"], Flag),
        FieldRule::new(GL, "source_type", &["/GLAccountType"], TextOrBlank),
        FieldRule::new(GL, "blocked", &["/AccountIsBlockedForPosting"], Flag),
        FieldRule::new(
            GL,
            "source_modified_at",
            &["/LastChangeDateTime"],
            Timestamp,
        ),
    ]
}

/// The supplier rules.
pub fn supplier_rules() -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(SU, "source_id", &["/Supplier"], Text),
        FieldRule::new(SU, "supplier_number", &["/Supplier"], Text),
        FieldRule::new(
            SU,
            "legal_name",
            &["/SupplierFullName", "/SupplierName"],
            TextOrBlank,
        ),
        FieldRule::new(
            SU,
            "tax_number",
            &["/TaxNumber1", "/VATRegistration"],
            TextOrBlank,
        ),
        FieldRule::new(SU, "country", &["/Country"], TextOrBlank),
        FieldRule::new(SU, "posting_blocked", &["/PostingIsBlocked"], Flag),
        FieldRule::new(SU, "purchasing_blocked", &["/PurchasingIsBlocked"], Flag),
        FieldRule::new(SU, "deletion_flagged", &["/DeletionIndicator"], Flag),
    ]
}

/// The journal item rules; `changed` is the change timestamp's pointer.
pub fn journal_rules(changed: &str, sign: AmountSign) -> Vec<FieldRule> {
    use Transform::*;
    let dc = "/DebitCreditCode|/ControllingDebitCreditCode";
    let amount = |at: &'static str| -> (Vec<&'static str>, Transform) {
        match sign {
            AmountSign::Auto => (vec![at, dc], SignedBy),
            AmountSign::Signed => (vec![at], Decimal),
        }
    };
    let (tc, tc_t) = amount("/AmountInTransactionCurrency");
    let (cc, cc_t) = amount("/AmountInCompanyCodeCurrency");
    vec![
        FieldRule::new(JL, "source_id", &LINE_KEY, Key),
        FieldRule::new(JL, "entry", &ENTRY_KEY, KeyRef(JE)),
        FieldRule::new(
            JL,
            "line_number",
            &["/LedgerGLLineItem", "/AccountingDocumentItem"],
            Text,
        ),
        FieldRule::new(
            JL,
            "gl_account",
            &["/ChartOfAccounts", "/GLAccount"],
            KeyRef(GL),
        ),
        FieldRule::new(JL, "account_number", &["/GLAccount"], TextOrBlank),
        FieldRule::new(JL, "cost_center", &["/CostCenter"], TextOrBlank),
        FieldRule::new(JL, "controlling_area", &["/ControllingArea"], TextOrBlank),
        FieldRule::new(JL, "profit_center", &["/ProfitCenter"], TextOrBlank),
        FieldRule::new(JL, "amount", &tc, tc_t),
        FieldRule::new(JL, "currency", &["/TransactionCurrency"], Currency),
        FieldRule::new(JL, "amount_company", &cc, cc_t),
        FieldRule::new(JL, "company_currency", &["/CompanyCodeCurrency"], Currency),
        FieldRule::new(
            JL,
            "debit_credit",
            &["/DebitCreditCode", "/ControllingDebitCreditCode"],
            TextOrBlank,
        ),
        FieldRule::new(JL, "posting_date", &["/PostingDate"], DateOrBlank),
        FieldRule::new(JL, "text", &["/DocumentItemText"], TextOrBlank),
        FieldRule::new(JL, "source_modified_at", &[changed], Timestamp),
        FieldRule::new(JE, "source_id", &ENTRY_KEY, Key),
        FieldRule::new(JE, "company_code", &["/CompanyCode"], Text),
        FieldRule::new(
            JE,
            "fiscal_year",
            &["/FiscalYear", "/LedgerFiscalYear"],
            Text,
        ),
        FieldRule::new(JE, "document_number", &["/AccountingDocument"], Text),
        FieldRule::new(JE, "posting_date", &["/PostingDate"], DateOrBlank),
        FieldRule::new(JE, "document_date", &["/DocumentDate"], DateOrBlank),
        FieldRule::new(
            JE,
            "document_type",
            &["/AccountingDocumentType"],
            TextOrBlank,
        ),
        FieldRule::new(
            JE,
            "reversal_of",
            &["/ReversalReferenceDocument"],
            TextOrBlank,
        ),
        FieldRule::new(JE, "currency", &["/TransactionCurrency"], Currency),
        FieldRule::new(JE, "source_modified_at", &[changed], Timestamp),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    CostCenters,
    GlAccounts,
    Suppliers,
    Journal,
}

/// The mapper of one SAP stream.
#[derive(Clone, Debug)]
pub struct SapMapper {
    kind: Kind,
    mapping: MappingVersion,
}

impl SapMapper {
    fn new(kind: Kind, name: &str, rules: Vec<FieldRule>) -> Self {
        Self {
            kind,
            mapping: MappingVersion::new(name, VERSION, rules)
                .expect("the built-in SAP rules are valid"),
        }
    }
    pub fn cost_centers(lang: Language) -> Self {
        Self::new(
            Kind::CostCenters,
            "sap_s4hana.cost_centers",
            cost_center_rules(lang),
        )
    }
    pub fn gl_accounts(lang: Language) -> Self {
        Self::new(
            Kind::GlAccounts,
            "sap_s4hana.gl_accounts",
            gl_account_rules(lang),
        )
    }
    pub fn suppliers() -> Self {
        Self::new(Kind::Suppliers, "sap_s4hana.suppliers", supplier_rules())
    }
    pub fn journal_items(changed: &str, sign: AmountSign) -> Self {
        Self::new(
            Kind::Journal,
            "sap_s4hana.journal_entry_items",
            journal_rules(changed, sign),
        )
    }
}

impl Mapper for SapMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.mapping
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        if !record.is_object() {
            return Err(MapError::NotAnObject);
        }
        let r = self.mapping.reader(record);
        Ok(match self.kind {
            Kind::CostCenters => vec![Entity::CostCenter(CostCenter {
                source_id: r.required_text(CC, "source_id")?,
                controlling_area: r.text(CC, "controlling_area")?,
                code: r.text(CC, "code")?,
                valid_from: r.date(CC, "valid_from")?,
                valid_to: r.date(CC, "valid_to")?,
                name: r.text(CC, "name")?,
                description: r.text(CC, "description")?,
                company_code: r.text(CC, "company_code")?,
                category: r.text(CC, "category")?,
                currency: r.currency(CC, "currency")?,
                profit_center: r.text(CC, "profit_center")?,
                person_responsible: r.text(CC, "person_responsible")?,
            })],
            Kind::GlAccounts => vec![Entity::GlAccount(GlAccount {
                source_id: r.required_text(GL, "source_id")?,
                chart_of_accounts: r.text(GL, "chart_of_accounts")?,
                account_number: r.text(GL, "account_number")?,
                name: r.text(GL, "name")?,
                long_name: r.text(GL, "long_name")?,
                is_balance_sheet: r.bool(GL, "is_balance_sheet")?,
                source_type: r.text(GL, "source_type")?,
                company_code: None,
                blocked: r.bool(GL, "blocked")?,
                source_modified_at: r.timestamp(GL, "source_modified_at")?,
            })],
            Kind::Suppliers => vec![Entity::Supplier(Supplier {
                source_id: r.required_text(SU, "source_id")?,
                supplier_number: r.text(SU, "supplier_number")?,
                legal_name: r.text(SU, "legal_name")?,
                tax_number: r.text(SU, "tax_number")?,
                country: r.text(SU, "country")?,
                currency: None,
                posting_blocked: r.bool(SU, "posting_blocked")?,
                purchasing_blocked: r.bool(SU, "purchasing_blocked")?,
                deletion_flagged: r.bool(SU, "deletion_flagged")?,
                source_modified_at: None,
            })],
            Kind::Journal => {
                let line = JournalLine {
                    source_id: r.required_text(JL, "source_id")?,
                    entry: r.text(JL, "entry")?,
                    line_number: r.text(JL, "line_number")?,
                    gl_account: r.text(JL, "gl_account")?,
                    account_number: r.text(JL, "account_number")?,
                    cost_center: r.text(JL, "cost_center")?,
                    controlling_area: r.text(JL, "controlling_area")?,
                    profit_center: r.text(JL, "profit_center")?,
                    amount: r.decimal(JL, "amount")?,
                    currency: r.currency(JL, "currency")?,
                    amount_company: r.decimal(JL, "amount_company")?,
                    company_currency: r.currency(JL, "company_currency")?,
                    debit_credit: r.text(JL, "debit_credit")?,
                    posting_date: r.date(JL, "posting_date")?,
                    text: r.text(JL, "text")?,
                    source_modified_at: r.timestamp(JL, "source_modified_at")?,
                };
                let entry = JournalEntry {
                    source_id: r.required_text(JE, "source_id")?,
                    company_code: r.text(JE, "company_code")?,
                    fiscal_year: r.text(JE, "fiscal_year")?,
                    document_number: r.text(JE, "document_number")?,
                    posting_date: r.date(JE, "posting_date")?,
                    document_date: r.date(JE, "document_date")?,
                    document_type: r.text(JE, "document_type")?,
                    reversal_of: r.text(JE, "reversal_of")?,
                    currency: r.currency(JE, "currency")?,
                    source_modified_at: r.timestamp(JE, "source_modified_at")?,
                };
                vec![Entity::JournalLine(line), Entity::JournalEntry(entry)]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn amount(sign: AmountSign, value: &str, dc: &str) -> String {
        let rec = json!({
            "CompanyCode": "1010", "FiscalYear": "2024", "AccountingDocument": "1", "LedgerGLLineItem": "2",
            "AmountInTransactionCurrency": value, "TransactionCurrency": "EUR", "DebitCreditCode": dc,
        });
        let out = SapMapper::journal_items("/LastChangeDateTime", sign)
            .map(&rec)
            .unwrap();
        let Entity::JournalLine(l) = &out[0] else {
            panic!("a line first")
        };
        l.amount.unwrap().to_string()
    }

    /// A negative posting (Storno) keeps the original side's code with the
    /// opposite sign: a credit line with a positive amount, marked `H`.
    #[test]
    fn signs_by_indicator_or_as_sap_signs_them() {
        assert_eq!(amount(AmountSign::Auto, "300.00", "H"), "-300");
        assert_eq!(amount(AmountSign::Auto, "-300.00", "H"), "-300");
        assert_eq!(amount(AmountSign::Auto, "-300.00", "S"), "-300");
        assert_eq!(amount(AmountSign::Signed, "300.00", "H"), "300");
        assert_eq!(amount(AmountSign::Signed, "-300.00", "S"), "-300");
    }

    /// OData v4 (`A_CostCenter_2`): ISO dates, texts under `_Text` as a plain
    /// array; the same key as v2's `/Date(ms)/` end date.
    #[test]
    fn a_v4_cost_center_keys_and_names_like_a_v2_one() {
        let v4 = json!({
            "ControllingArea": "A000", "CostCenter": "10101101", "ValidityEndDate": "9999-12-31",
            "ValidityStartDate": "2024-01-01", "CostCenterCurrency": "EUR",
            "_Text": [{"Language": "DE", "CostCenterName": "Vertrieb"}, {"Language": "EN", "CostCenterName": "Sales"}],
        });
        let v2 = json!({
            "ControllingArea": "A000", "CostCenter": "10101101", "ValidityEndDate": "/Date(253402214400000)/",
            "to_Text": {"results": [{"Language": "EN", "CostCenterName": "Sales"}]},
        });
        let m = SapMapper::cost_centers(Language::parse("EN").unwrap());
        let cc = |r: &Value| match &m.map(r).unwrap()[0] {
            Entity::CostCenter(c) => (c.source_id.clone(), c.name.clone(), c.valid_to),
            _ => panic!("a cost center"),
        };
        assert_eq!(cc(&v4), cc(&v2));
        assert_eq!(cc(&v4).1.as_deref(), Some("Sales"));
    }

    #[test]
    fn alternative_names_of_the_document_fields_are_read() {
        let rec = json!({
            "CompanyCode": "1710", "LedgerFiscalYear": "2025", "AccountingDocument": "9", "AccountingDocumentItem": "3",
            "AmountInTransactionCurrency": "5", "TransactionCurrency": "JPY", "ControllingDebitCreditCode": "H",
        });
        let out = SapMapper::journal_items("/LastChangeDateTime", AmountSign::Auto)
            .map(&rec)
            .unwrap();
        let Entity::JournalLine(l) = &out[0] else {
            panic!("a line first")
        };
        assert_eq!(l.source_id, "1710|2025|9|3");
        assert_eq!(l.entry.as_deref(), Some("1710|2025|9"));
        assert_eq!(l.amount.unwrap().to_string(), "-5");
    }
}
