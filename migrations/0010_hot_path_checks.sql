-- The load's hot path (ADR 0014).
--
-- 1. Foreign keys checked once per written row, on tables a load writes
--    one row per record: each check is a query that locks the referenced
--    row (`for key share`), five per new worker. Their targets are never
--    deleted (mapping versions and raw pages are the permanent record),
--    and the loader writes only ids it read or allocated in the same
--    transaction; the tests check after every invariant scenario that no
--    row points at nothing (`tests/common`, `orphans`). Foreign keys on
--    tables written per page, per dead letter or per drift event stay.
alter table derivation
    drop constraint derivation_raw_page_id_fkey,
    drop constraint derivation_mapping_version_id_fkey;
alter table source_link
    drop constraint source_link_mapping_version_id_fkey,
    drop constraint source_link_derivation_id_fkey;
alter table worker drop constraint worker_mapping_version_id_fkey;
alter table org_unit drop constraint org_unit_mapping_version_id_fkey;
alter table location drop constraint location_mapping_version_id_fkey;
alter table cost_center drop constraint cost_center_mapping_version_id_fkey;
alter table gl_account drop constraint gl_account_mapping_version_id_fkey;
alter table supplier drop constraint supplier_mapping_version_id_fkey;
alter table journal_entry drop constraint journal_entry_mapping_version_id_fkey;
alter table journal_line drop constraint journal_line_mapping_version_id_fkey;

-- 2. The crosswalk's key compares bytes: source ids, entity types and
--    connection names are identifiers, not words, and a database whose
--    default collation is a language's (en_US.UTF-8) would otherwise
--    compare every key through the locale.
alter table source_link
    alter column entity_type type text collate "C",
    alter column connection type text collate "C",
    alter column source_id type text collate "C";
