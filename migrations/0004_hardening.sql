-- Hardening (issue 7): unreadable pages, missing or corrupt objects, superseded
-- duplicates, one open dead letter per record, and leases with fencing tokens.

-- A page whose body could not be read as a page is stored and dead-lettered as
-- a page; `parse_error` says why. `object_state` is what the last read of its
-- object found (a missing or corrupt page is set aside, re-fetched when it was
-- not loaded yet, and skipped by replay). `since` is the incremental bound the
-- page was requested with, so it can be requested again; `content_type` says
-- how its bytes are read (a declared single-byte charset).
alter table raw_page
    add column parse_error text,
    add column object_state text not null default 'stored'
        check (object_state in ('stored', 'missing', 'corrupt')),
    add column since text,
    add column content_type text,
    add column replaced_by bigint references raw_page(id),
    add column records_superseded integer;
alter table raw_page drop constraint page_counts_add_up;
alter table raw_page add constraint page_counts_add_up check (
    loaded_at is null
    or record_count = records_changed + records_unchanged + records_dead + coalesce(records_superseded, 0));
drop index raw_page_unloaded;
create index raw_page_unloaded on raw_page (connection, stream, id)
    where loaded_at is null and object_state = 'stored';

-- A record is superseded when another record with the same source id wins
-- (a later occurrence on its page, or a newer version); pages skipped by a
-- replay because their object is missing or corrupt are counted, and so are
-- pages whose body could not be read.
alter table sync_run
    add column records_superseded bigint not null default 0,
    add column pages_missing integer not null default 0,
    add column pages_unreadable integer not null default 0;
alter table sync_run drop constraint counts_add_up;
alter table sync_run add constraint counts_add_up check (
    records_seen = records_changed + records_unchanged + records_dead + records_superseded);

-- One open dead letter per (connection, stream, record): `dedupe_key` is the
-- source id (`id:…`), else the record's hash (`rec:…`), or the page body's
-- hash for a page (`page:…`). A record that fails again updates it.
alter table dead_letter
    add column dedupe_key text,
    add column field text,
    add column pointer text,
    add column times_seen integer not null default 1,
    add column first_seen_at timestamptz not null default now(),
    add column last_seen_at timestamptz not null default now();
update dead_letter set dedupe_key = case
    when source_id is not null then 'id:' || source_id
    else 'legacy:' || raw_page_id || ':' || coalesce(record_ordinal, -1) end;
alter table dead_letter alter column dedupe_key set not null;
alter table dead_letter drop constraint dead_letter_status_check;
alter table dead_letter add constraint dead_letter_status_check
    check (status in ('open', 'resolved', 'merged'));
-- Older open duplicates of one record are merged into the newest.
update dead_letter d set status = 'merged'
where d.status = 'open' and exists (
    select 1 from dead_letter n where n.status = 'open' and n.connection = d.connection
      and n.stream = d.stream and n.dedupe_key = d.dedupe_key and n.id > d.id);
drop index dead_letter_once;
drop index dead_letter_open;
create unique index dead_letter_open_once on dead_letter (connection, stream, dedupe_key)
    where status = 'open';

-- Who syncs a stream. The advisory lock of the connection decides who may
-- take the lease; `fence` grows with every taking, and every write checks it
-- in its own transaction, so a process that lost its lock (a dead session, a
-- restarted server) can never write after another process took over.
create table sync_lease (
    connection   text not null references connection(name),
    stream       text not null,
    holder       text not null,
    run_id       bigint references sync_run(id),
    fence        bigint not null,
    acquired_at  timestamptz not null default now(),
    renewed_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    primary key (connection, stream)
);

-- The loader claims a new crosswalk row, complete with its derivation id, in
-- one insert before it writes the derivation; the reference is checked at
-- commit.
alter table source_link alter constraint source_link_derivation_id_fkey
    deferrable initially deferred;

-- Canonical id first: with (entity_type, canonical_id, connection), a generic
-- plan cached while source_link was nearly empty (no statistics: autovacuum
-- may be off) used this index for crosswalk lookups by source id, scanning
-- every link of the entity type per id. Only the primary key can serve those.
drop index source_link_canonical;
create unique index source_link_canonical on source_link (canonical_id, entity_type, connection);
