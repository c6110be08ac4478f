-- The finance half of the canonical model (SAP S/4HANA, NetSuite): cost
-- centers by validity period, G/L accounts, suppliers, journal entries and
-- their lines with exact signed money (numeric + ISO 4217 char(3)). Every
-- canonical column carries its meaning as a comment, the same text as
-- docs/canonical-model.md (a test holds the two together).

create table cost_center (
    id                  bigint primary key,
    source_id           text not null,
    controlling_area    text,
    code                text,
    valid_from          date,
    valid_to            date,
    name                text,
    description         text,
    company_code        text,
    category            text,
    currency            char(3),
    profit_center       text,
    person_responsible  text,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now(),
    deleted_at          timestamptz
);
create index cost_center_by_source_id on cost_center (source_id);

create table gl_account (
    id                  bigint primary key,
    source_id           text not null,
    chart_of_accounts   text,
    account_number      text,
    name                text,
    long_name           text,
    is_balance_sheet    boolean,
    source_type         text,
    company_code        text,
    blocked             boolean,
    source_modified_at  timestamptz,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now(),
    deleted_at          timestamptz
);
create index gl_account_by_source_id on gl_account (source_id);

create table supplier (
    id                  bigint primary key,
    source_id           text not null,
    supplier_number     text,
    legal_name          text,
    tax_number          text,
    country             text,
    currency            char(3),
    posting_blocked     boolean,
    purchasing_blocked  boolean,
    deletion_flagged    boolean,
    source_modified_at  timestamptz,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now(),
    deleted_at          timestamptz
);
create index supplier_by_source_id on supplier (source_id);

create table journal_entry (
    id                  bigint primary key,
    source_id           text not null,
    company_code        text,
    fiscal_year         text,
    document_number     text,
    posting_date        date,
    document_date       date,
    document_type       text,
    reversal_of         text,
    currency            char(3),
    source_modified_at  timestamptz,
    balance_checked_at  timestamptz,
    imbalance           jsonb,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now(),
    deleted_at          timestamptz
);
create index journal_entry_by_source_id on journal_entry (source_id);

create table journal_line (
    id                  bigint primary key,
    source_id           text not null,
    entry_id            bigint,
    line_number         text,
    gl_account_id       bigint,
    account_number      text,
    cost_center         text,
    controlling_area    text,
    profit_center       text,
    amount              numeric,
    currency            char(3),
    amount_company      numeric,
    company_currency    char(3),
    debit_credit        text,
    posting_date        date,
    text                text,
    source_modified_at  timestamptz,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now(),
    deleted_at          timestamptz
);
create index journal_line_by_source_id on journal_line (source_id);

create index journal_line_by_entry on journal_line (entry_id);

-- Entries whose lines changed since their balance was last checked. A
-- trigger keeps it (whatever writes a line: a sync, a replay, a delete), and
-- a run that loaded every page it fetched checks the entries listed here and
-- empties it, so an entry whose lines span pages and runs is checked once
-- they are all in.
create table journal_entry_unchecked (
    entry_id bigint primary key
);

create function journal_line_touches_entry() returns trigger language plpgsql as $$
begin
    if tg_op in ('INSERT', 'UPDATE') and new.entry_id is not null then
        insert into journal_entry_unchecked (entry_id) values (new.entry_id) on conflict do nothing;
    end if;
    if tg_op = 'UPDATE' and old.entry_id is not null and old.entry_id is distinct from new.entry_id then
        insert into journal_entry_unchecked (entry_id) values (old.entry_id) on conflict do nothing;
    end if;
    return null;
end $$;

create trigger journal_line_touches_entry
    after insert or update of entry_id, amount, currency, amount_company, company_currency, deleted_at
    on journal_line for each row execute function journal_line_touches_entry();

-- A journal line with the cost center row valid on its posting date (same
-- controlling area where the line names one).
create view journal_line_cost_center as
select l.id as journal_line_id, c.id as cost_center_id
from journal_line l
join cost_center c
  on c.code = l.cost_center
 and (l.controlling_area is null or c.controlling_area = l.controlling_area)
 and l.posting_date between coalesce(c.valid_from, '0001-01-01') and coalesce(c.valid_to, '9999-12-31')
 and c.deleted_at is null;

comment on table worker is 'A person who works for the organisation (employee or contingent worker).';
comment on column worker.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column worker.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column worker.worker_number is 'The employee number as the source shows it.';
comment on column worker.display_name is 'The worker''s name for display.';
comment on column worker.work_email is 'Work e-mail address, lower-cased.';
comment on column worker.work_phone is 'Work phone number, as the source writes it.';
comment on column worker.business_title is 'Business (job) title.';
comment on column worker.is_manager is 'True when the worker manages others.';
comment on column worker.worker_type is 'Employee or contingent worker, in the source''s words.';
comment on column worker.job_profile is 'Job profile (job code) name.';
comment on column worker.time_type is 'Full time or part time, in the source''s words.';
comment on column worker.hire_date is 'First day of employment (a calendar date).';
comment on column worker.termination_date is 'Last day of employment of a terminated worker (a terminated worker is not deleted).';
comment on column worker.employment_status is 'The source''s employment status as it writes it (Active, Inactive).';
comment on column worker.fte is 'Full-time equivalent as an exact fraction (1 = full time).';
comment on column worker.company is 'The employing company (legal entity) name or code.';
comment on column worker.cost_center is 'The worker''s cost center code as the HR source gives it.';
comment on column worker.org_unit_id is 'The worker''s primary organisation (`org_unit.id`).';
comment on column worker.location_id is 'The worker''s primary location (`location.id`).';
comment on column worker.manager_id is 'The worker''s manager (`worker.id`).';
comment on column worker.source_modified_at is 'When the source last changed the record (UTC).';
comment on column worker.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column worker.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column worker.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column worker.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column worker.updated_at is 'When the row was last written.';
comment on column worker.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table org_unit is 'An organisational unit (supervisory organisation, department, team).';
comment on column org_unit.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column org_unit.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column org_unit.name is 'The unit''s name.';
comment on column org_unit.org_type is 'The kind of unit, in the source''s words.';
comment on column org_unit.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column org_unit.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column org_unit.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column org_unit.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column org_unit.updated_at is 'When the row was last written.';
comment on column org_unit.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table location is 'A work location (site, office).';
comment on column location.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column location.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column location.name is 'The location''s name.';
comment on column location.country is 'Country, as the source gives it (an ISO 3166 code where it has one).';
comment on column location.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column location.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column location.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column location.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column location.updated_at is 'When the row was last written.';
comment on column location.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table cost_center is 'A cost center in one validity period: SAP cost centers are time-dependent, one row per period (its source id ends with the period''s end date).';
comment on column cost_center.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column cost_center.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column cost_center.controlling_area is 'SAP controlling area the cost center belongs to.';
comment on column cost_center.code is 'Cost center code, unique within its controlling area.';
comment on column cost_center.valid_from is 'First day of the validity period (a calendar date).';
comment on column cost_center.valid_to is 'Last day of the validity period; 9999-12-31 means open-ended.';
comment on column cost_center.name is 'Short name in the configured language.';
comment on column cost_center.description is 'Description in the configured language.';
comment on column cost_center.company_code is 'Company code the cost center is assigned to.';
comment on column cost_center.category is 'The source''s cost center category code.';
comment on column cost_center.currency is 'ISO 4217 code of the cost center''s currency.';
comment on column cost_center.profit_center is 'Profit center the cost center is assigned to.';
comment on column cost_center.person_responsible is 'Name of the person responsible.';
comment on column cost_center.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column cost_center.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column cost_center.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column cost_center.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column cost_center.updated_at is 'When the row was last written.';
comment on column cost_center.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table gl_account is 'A general-ledger account of a chart of accounts.';
comment on column gl_account.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column gl_account.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column gl_account.chart_of_accounts is 'Chart of accounts (SAP); null for sources with one chart.';
comment on column gl_account.account_number is 'Account number as the source shows it.';
comment on column gl_account.name is 'Short name in the configured language.';
comment on column gl_account.long_name is 'Long name (SAP) or full hierarchical name (NetSuite).';
comment on column gl_account.is_balance_sheet is 'True for a balance-sheet account, false for a profit-and-loss account.';
comment on column gl_account.source_type is 'The source''s own account type code (SAP GLAccountType, NetSuite accttype).';
comment on column gl_account.company_code is 'Company code segment, where the source has one per company.';
comment on column gl_account.blocked is 'Blocked for posting, or inactive.';
comment on column gl_account.source_modified_at is 'When the source last changed the record (UTC).';
comment on column gl_account.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column gl_account.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column gl_account.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column gl_account.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column gl_account.updated_at is 'When the row was last written.';
comment on column gl_account.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table supplier is 'A supplier (vendor).';
comment on column supplier.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column supplier.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column supplier.supplier_number is 'Supplier number as the source shows it.';
comment on column supplier.legal_name is 'Legal (company) name.';
comment on column supplier.tax_number is 'Tax number (VAT or tax id) as the source gives it.';
comment on column supplier.country is 'Country, as the source gives it (ISO 3166-1 alpha-2 where it has one).';
comment on column supplier.currency is 'ISO 4217 code of the supplier''s default currency.';
comment on column supplier.posting_blocked is 'Blocked for posting (SAP), or inactive (NetSuite).';
comment on column supplier.purchasing_blocked is 'Blocked for purchasing (SAP), or inactive (NetSuite).';
comment on column supplier.deletion_flagged is 'Flagged for deletion at the source while still present (SAP); inactive (NetSuite).';
comment on column supplier.source_modified_at is 'When the source last changed the record (UTC).';
comment on column supplier.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column supplier.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column supplier.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column supplier.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column supplier.updated_at is 'When the row was last written.';
comment on column supplier.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table journal_entry is 'A journal entry (accounting document) header. Its lines must balance per currency: `imbalance` says when they do not.';
comment on column journal_entry.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column journal_entry.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column journal_entry.company_code is 'Company code (SAP) or subsidiary (NetSuite) the entry is posted in.';
comment on column journal_entry.fiscal_year is 'Fiscal year of the document (SAP); null where the source has none.';
comment on column journal_entry.document_number is 'Document number as the source shows it.';
comment on column journal_entry.posting_date is 'Posting date (a calendar date).';
comment on column journal_entry.document_date is 'Document date (a calendar date).';
comment on column journal_entry.document_type is 'The source''s document type code (SAP AccountingDocumentType, NetSuite type).';
comment on column journal_entry.reversal_of is 'Document number of the entry this one reverses; null for an ordinary entry.';
comment on column journal_entry.currency is 'ISO 4217 code of the entry''s transaction currency.';
comment on column journal_entry.source_modified_at is 'When the source last changed the record (UTC).';
comment on column journal_entry.balance_checked_at is 'When the balance of the entry''s live lines was last checked; null until a run that loaded its lines completes.';
comment on column journal_entry.imbalance is 'Null when the entry balances; else the non-zero sums of its live lines per currency: {"transaction": {"USD": "0.01"}, "company": {...}}.';
comment on column journal_entry.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column journal_entry.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column journal_entry.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column journal_entry.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column journal_entry.updated_at is 'When the row was last written.';
comment on column journal_entry.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';

comment on table journal_line is 'One line of a journal entry. Amounts are exact and signed: + debit, − credit, whatever convention the source uses.';
comment on column journal_line.id is 'The canonical id (shared with `source_link.canonical_id`).';
comment on column journal_line.source_id is 'The record''s id at its source (a compound key joins its parts with a vertical bar).';
comment on column journal_line.entry_id is 'The entry the line belongs to (`journal_entry.id`).';
comment on column journal_line.line_number is 'Line number within the entry, as the source numbers it.';
comment on column journal_line.gl_account_id is 'The G/L account posted to (`gl_account.id`).';
comment on column journal_line.account_number is 'The G/L account number as the line gives it (kept while the account is unknown).';
comment on column journal_line.cost_center is 'Cost center code; the view journal_line_cost_center resolves it to the cost_center row valid on the posting date.';
comment on column journal_line.controlling_area is 'SAP controlling area of the cost center.';
comment on column journal_line.profit_center is 'Profit center code.';
comment on column journal_line.amount is 'Amount in the transaction currency: exact, signed (+ debit, − credit), at most the currency''s minor-unit decimals.';
comment on column journal_line.currency is 'ISO 4217 code of the transaction currency.';
comment on column journal_line.amount_company is 'Amount in the company code''s (subsidiary''s base) currency: exact, signed (+ debit, − credit).';
comment on column journal_line.company_currency is 'ISO 4217 code of the company code''s (subsidiary''s base) currency.';
comment on column journal_line.debit_credit is 'The source''s debit/credit indicator as it writes it (SAP S/H).';
comment on column journal_line.posting_date is 'Posting date (a calendar date).';
comment on column journal_line.text is 'Line text (memo).';
comment on column journal_line.source_modified_at is 'When the source last changed the record (UTC).';
comment on column journal_line.prov_contributors is 'Provenance: the `derivation` ids of the source records that wrote the row.';
comment on column journal_line.prov_field_src is 'Provenance per field: which contributor supplied it; null while one contributor supplies every field.';
comment on column journal_line.row_hash is 'SHA-256 of the row''s canonical values.';
comment on column journal_line.mapping_version_id is 'The mapping version that produced the row (`mapping_version.id`).';
comment on column journal_line.updated_at is 'When the row was last written.';
comment on column journal_line.deleted_at is 'When the source deleted the record (a tombstone, or a complete full pull that no longer listed it); null while it exists. Rows are never removed.';
