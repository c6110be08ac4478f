-- Deletes (connector contract v2). A source says a record was deleted (a
-- tombstone), or a complete full pull no longer lists it (mark and sweep):
-- the canonical row is soft-deleted, never removed, and the crosswalk keeps
-- what said so. A record of the entity that arrives later, newer than the
-- deletion, revives it (`deleted_at` back to null; the `deleted_*`
-- provenance stays, as the last deletion).
-- (`source_link.deleted_at` exists since 0001.)
alter table source_link
    -- A tombstone: the raw page and position that said so.
    add column deleted_page_id bigint references raw_page(id),
    add column deleted_ordinal int,
    -- A sweep: the complete run that no longer saw it.
    add column deleted_run_id  bigint references sync_run(id),
    -- The stream (or partition, `name@partition`) that deleted it.
    add column deleted_stream  text;

alter table worker   add column deleted_at timestamptz;
alter table org_unit add column deleted_at timestamptz;
alter table location add column deleted_at timestamptz;

-- A terminated worker is not a deleted one: sources say so with a status and
-- a termination date (BambooHR `status` Inactive, `terminationDate`).
alter table worker
    add column termination_date  date,
    add column employment_status text;
