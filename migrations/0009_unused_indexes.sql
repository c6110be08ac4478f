-- Every index on a hot table must earn its place in a read path a command
-- or a test uses (ADR 0013). These served none: every lookup by a source's
-- id goes through `source_link` (its primary key), and derivations are read
-- by id (from `source_link.derivation_id` and the rows' `prov_contributors`),
-- never by raw page. Each was one more index entry written per record.
drop index worker_by_source_id;
drop index org_unit_by_source_id;
drop index location_by_source_id;
drop index cost_center_by_source_id;
drop index gl_account_by_source_id;
drop index supplier_by_source_id;
drop index journal_entry_by_source_id;
drop index journal_line_by_source_id;
drop index derivation_by_page;
