//! SuiteQL rows → canonical entities.
//!
//! Every value is a string and a null column is absent. Booleans are
//! `T`/`F`; dates arrive as `TO_CHAR(…, 'YYYY-MM-DD')` and date-times as
//! `TO_CHAR(…, 'YYYY-MM-DD HH24:MI:SS')` in the connection's time zone.
//! Journal amounts are debit − credit: `debit`/`credit` in the
//! subsidiary's base currency, `debitforeignamount`/`creditforeignamount` in
//! the transaction's currency (`currency.symbol`, an ISO code).

use canonical_model::{
    Entity, EntityKind, FieldRule, GlAccount, JournalEntry, JournalLine, Location, MapError,
    Mapper, MappingVersion, OrgUnit, Supplier, Transform, Worker,
};
use serde_json::Value;

use EntityKind::{
    GlAccount as GL, JournalEntry as JE, JournalLine as JL, Location as L, OrgUnit as O,
    Supplier as SU, Worker as W,
};

/// Bump whenever a rule below changes.
pub const VERSION: &str = "1";

pub fn employee_rules(tz: chrono_tz::Tz) -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(W, "source_id", &["/id"], Text),
        FieldRule::new(W, "worker_number", &["/entityid"], TextOrBlank),
        FieldRule::new(W, "display_name", &["/fullname", "/entityid"], TextOrBlank),
        FieldRule::new(W, "work_email", &["/email"], Lowercase),
        FieldRule::new(W, "business_title", &["/title"], TextOrBlank),
        FieldRule::new(W, "hire_date", &["/hiredate"], DateOrBlank),
        FieldRule::new(W, "termination_date", &["/releasedate"], DateOrBlank),
        FieldRule::new(W, "employment_status", &["/status"], TextOrBlank),
        FieldRule::new(W, "company", &["/subsidiary"], TextOrBlank),
        FieldRule::new(W, "org_unit", &["/department"], Ref(O)),
        FieldRule::new(W, "location", &["/location"], Ref(L)),
        FieldRule::new(W, "manager", &["/supervisor"], Ref(W)),
        FieldRule::new(
            W,
            "source_modified_at",
            &["/lastmodifieddate"],
            TimestampIn(tz),
        ),
        FieldRule::new(O, "source_id", &["/department"], Text),
        FieldRule::new(O, "name", &["/departmentname"], TextOrBlank),
        FieldRule::new(L, "source_id", &["/location"], Text),
        FieldRule::new(L, "name", &["/locationname"], TextOrBlank),
    ]
}

pub fn vendor_rules(tz: chrono_tz::Tz) -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(SU, "source_id", &["/id"], Text),
        FieldRule::new(SU, "supplier_number", &["/entityid"], TextOrBlank),
        FieldRule::new(
            SU,
            "legal_name",
            &["/legalname", "/companyname"],
            TextOrBlank,
        ),
        FieldRule::new(SU, "tax_number", &["/taxidnum"], TextOrBlank),
        FieldRule::new(SU, "country", &["/country"], TextOrBlank),
        FieldRule::new(SU, "currency", &["/currency"], Currency),
        FieldRule::new(SU, "posting_blocked", &["/isinactive"], Flag),
        FieldRule::new(SU, "purchasing_blocked", &["/isinactive"], Flag),
        FieldRule::new(SU, "deletion_flagged", &["/isinactive"], Flag),
        FieldRule::new(
            SU,
            "source_modified_at",
            &["/lastmodifieddate"],
            TimestampIn(tz),
        ),
    ]
}

pub fn account_rules() -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(GL, "source_id", &["/id"], Text),
        FieldRule::new(GL, "account_number", &["/acctnumber"], TextOrBlank),
        FieldRule::new(
            GL,
            "name",
            &["/accountsearchdisplayname", "/fullname"],
            TextOrBlank,
        ),
        FieldRule::new(GL, "long_name", &["/fullname"], TextOrBlank),
        FieldRule::new(GL, "is_balance_sheet", &["/isbalancesheet"], Flag),
        FieldRule::new(GL, "source_type", &["/accttype"], TextOrBlank),
        FieldRule::new(GL, "blocked", &["/isinactive"], Flag),
    ]
}

pub fn transaction_rules(tz: chrono_tz::Tz) -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(JL, "source_id", &["/transaction", "/transactionline"], Key),
        FieldRule::new(JL, "entry", &["/transaction"], Ref(JE)),
        FieldRule::new(JL, "line_number", &["/transactionline"], Text),
        FieldRule::new(JL, "gl_account", &["/account"], Ref(GL)),
        FieldRule::new(JL, "account_number", &["/acctnumber"], TextOrBlank),
        FieldRule::new(JL, "cost_center", &["/department"], TextOrBlank),
        FieldRule::new(
            JL,
            "amount",
            &["/debitforeignamount", "/creditforeignamount"],
            DebitMinusCredit,
        ),
        FieldRule::new(JL, "currency", &["/currency"], Currency),
        FieldRule::new(
            JL,
            "amount_company",
            &["/debit", "/credit"],
            DebitMinusCredit,
        ),
        FieldRule::new(JL, "company_currency", &["/basecurrency"], Currency),
        FieldRule::new(JL, "debit_credit", &["/debitcredit"], TextOrBlank),
        FieldRule::new(JL, "posting_date", &["/trandate"], DateOrBlank),
        FieldRule::new(JL, "text", &["/memo"], TextOrBlank),
        FieldRule::new(
            JL,
            "source_modified_at",
            &["/lastmodifieddate"],
            TimestampIn(tz),
        ),
        FieldRule::new(JE, "source_id", &["/transaction"], Text),
        FieldRule::new(JE, "company_code", &["/subsidiary"], TextOrBlank),
        FieldRule::new(JE, "document_number", &["/tranid"], TextOrBlank),
        FieldRule::new(JE, "posting_date", &["/trandate"], DateOrBlank),
        FieldRule::new(JE, "document_date", &["/trandate"], DateOrBlank),
        FieldRule::new(JE, "document_type", &["/type"], TextOrBlank),
        FieldRule::new(JE, "currency", &["/currency"], Currency),
        FieldRule::new(
            JE,
            "source_modified_at",
            &["/lastmodifieddate"],
            TimestampIn(tz),
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Employees,
    Vendors,
    Accounts,
    Transactions,
}

/// The mapper of one NetSuite stream.
#[derive(Clone, Debug)]
pub struct NetSuiteMapper {
    kind: Kind,
    mapping: MappingVersion,
}

impl NetSuiteMapper {
    fn new(kind: Kind, name: &str, rules: Vec<FieldRule>) -> Self {
        Self {
            kind,
            mapping: MappingVersion::new(name, VERSION, rules)
                .expect("the built-in NetSuite rules are valid"),
        }
    }
    pub fn employees(tz: chrono_tz::Tz) -> Self {
        Self::new(Kind::Employees, "netsuite.employees", employee_rules(tz))
    }
    pub fn vendors(tz: chrono_tz::Tz) -> Self {
        Self::new(Kind::Vendors, "netsuite.vendors", vendor_rules(tz))
    }
    pub fn accounts() -> Self {
        Self::new(Kind::Accounts, "netsuite.accounts", account_rules())
    }
    pub fn transactions(tz: chrono_tz::Tz) -> Self {
        Self::new(
            Kind::Transactions,
            "netsuite.transactions",
            transaction_rules(tz),
        )
    }
}

impl Mapper for NetSuiteMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.mapping
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        if !record.is_object() {
            return Err(MapError::NotAnObject);
        }
        let r = self.mapping.reader(record);
        Ok(match self.kind {
            Kind::Employees => {
                let worker = Worker {
                    source_id: r.required_text(W, "source_id")?,
                    worker_number: r.text(W, "worker_number")?,
                    display_name: r.text(W, "display_name")?,
                    work_email: r.text(W, "work_email")?,
                    business_title: r.text(W, "business_title")?,
                    hire_date: r.date(W, "hire_date")?,
                    termination_date: r.date(W, "termination_date")?,
                    employment_status: r.text(W, "employment_status")?,
                    company: r.text(W, "company")?,
                    org_unit: r.text(W, "org_unit")?,
                    location: r.text(W, "location")?,
                    manager: r.text(W, "manager")?,
                    source_modified_at: r.timestamp(W, "source_modified_at")?,
                    ..Worker::default()
                };
                let mut out = Vec::new();
                if worker.org_unit.is_some() {
                    out.push(Entity::OrgUnit(OrgUnit {
                        source_id: r.required_text(O, "source_id")?,
                        name: r.text(O, "name")?,
                        org_type: None,
                    }));
                }
                if worker.location.is_some() {
                    out.push(Entity::Location(Location {
                        source_id: r.required_text(L, "source_id")?,
                        name: r.text(L, "name")?,
                        country: None,
                    }));
                }
                out.insert(0, Entity::Worker(worker));
                out
            }
            Kind::Vendors => vec![Entity::Supplier(Supplier {
                source_id: r.required_text(SU, "source_id")?,
                supplier_number: r.text(SU, "supplier_number")?,
                legal_name: r.text(SU, "legal_name")?,
                tax_number: r.text(SU, "tax_number")?,
                country: r.text(SU, "country")?,
                currency: r.currency(SU, "currency")?,
                posting_blocked: r.bool(SU, "posting_blocked")?,
                purchasing_blocked: r.bool(SU, "purchasing_blocked")?,
                deletion_flagged: r.bool(SU, "deletion_flagged")?,
                source_modified_at: r.timestamp(SU, "source_modified_at")?,
            })],
            Kind::Accounts => vec![Entity::GlAccount(GlAccount {
                source_id: r.required_text(GL, "source_id")?,
                account_number: r.text(GL, "account_number")?,
                name: r.text(GL, "name")?,
                long_name: r.text(GL, "long_name")?,
                is_balance_sheet: r.bool(GL, "is_balance_sheet")?,
                source_type: r.text(GL, "source_type")?,
                blocked: r.bool(GL, "blocked")?,
                ..GlAccount::default()
            })],
            Kind::Transactions => vec![
                Entity::JournalLine(JournalLine {
                    source_id: r.required_text(JL, "source_id")?,
                    entry: r.text(JL, "entry")?,
                    line_number: r.text(JL, "line_number")?,
                    gl_account: r.text(JL, "gl_account")?,
                    account_number: r.text(JL, "account_number")?,
                    cost_center: r.text(JL, "cost_center")?,
                    amount: r.decimal(JL, "amount")?,
                    currency: r.currency(JL, "currency")?,
                    amount_company: r.decimal(JL, "amount_company")?,
                    company_currency: r.currency(JL, "company_currency")?,
                    debit_credit: r.text(JL, "debit_credit")?,
                    posting_date: r.date(JL, "posting_date")?,
                    text: r.text(JL, "text")?,
                    source_modified_at: r.timestamp(JL, "source_modified_at")?,
                    ..JournalLine::default()
                }),
                Entity::JournalEntry(JournalEntry {
                    source_id: r.required_text(JE, "source_id")?,
                    company_code: r.text(JE, "company_code")?,
                    document_number: r.text(JE, "document_number")?,
                    posting_date: r.date(JE, "posting_date")?,
                    document_date: r.date(JE, "document_date")?,
                    document_type: r.text(JE, "document_type")?,
                    currency: r.currency(JE, "currency")?,
                    source_modified_at: r.timestamp(JE, "source_modified_at")?,
                    ..JournalEntry::default()
                }),
            ],
        })
    }
}
