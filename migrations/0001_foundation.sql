-- Run ledger, watermarks, design-time lineage, derivations, crosswalk, dead letters
-- and the first canonical entities (DESIGN.md §6).

create table connection (
    name        text primary key,
    connector   text not null,
    created_at  timestamptz not null default now()
);

create table sync_run (
    id                 bigserial primary key,
    connection         text not null references connection(name),
    stream             text,
    mode               text not null check (mode in ('full', 'incremental', 'reconcile', 'replay')),
    status             text not null default 'running'
                       check (status in ('running', 'succeeded', 'failed', 'deferred', 'needs_reauth', 'interrupted')),
    dry_run            boolean not null default false,
    started_at         timestamptz not null default now(),
    finished_at        timestamptz,
    pages              integer not null default 0,
    records_seen       bigint not null default 0,
    records_changed    bigint not null default 0,
    records_unchanged  bigint not null default 0,
    records_dead       bigint not null default 0,
    error              text,
    constraint counts_add_up check (records_seen = records_changed + records_unchanged + records_dead)
);
create index sync_run_by_connection on sync_run (connection, stream, id desc);

-- One row per stored response body; `id` order is fetch order.
create table raw_page (
    id                 bigserial primary key,
    run_id             bigint not null references sync_run(id),
    connection         text not null references connection(name),
    stream             text not null,
    page_token         jsonb not null,
    object_key         text not null,
    body_sha256        text not null,
    body_bytes         integer not null,
    fetched_at         timestamptz not null,
    request            jsonb not null,          -- redacted: method, path, params, status, headers
    record_path        text not null,
    record_count       integer not null,
    loaded_at          timestamptz,
    records_changed    integer,
    records_unchanged  integer,
    records_dead       integer,
    constraint page_counts_add_up check (
        loaded_at is null or record_count = records_changed + records_unchanged + records_dead)
);
create index raw_page_unloaded on raw_page (connection, stream, id) where loaded_at is null;
create index raw_page_by_stream on raw_page (connection, stream, id);

create table watermark (
    connection  text not null references connection(name),
    stream      text not null,
    cursor      jsonb not null,
    run_id      bigint references sync_run(id),
    updated_at  timestamptz not null default now(),
    primary key (connection, stream)
);

-- Every change of a watermark, by a sync or an operator.
create table watermark_history (
    id          bigserial primary key,
    connection  text not null,
    stream      text not null,
    old_cursor  jsonb,
    new_cursor  jsonb not null,
    run_id      bigint,
    changed_by  text not null,
    changed_at  timestamptz not null default now()
);

create table mapping_version (
    id          serial primary key,
    mapper      text not null,
    version     text not null,
    code_hash   text not null,
    created_at  timestamptz not null default now(),
    unique (mapper, version)
);

create table mapping_field_rule (
    mapping_version_id  integer not null references mapping_version(id),
    entity_type         text not null,
    field               text not null,
    pointers            text[] not null,
    transform           text not null,
    primary key (mapping_version_id, entity_type, field)
);

-- One row per (changed source record x mapping version).
create table derivation (
    id                  bigserial primary key,
    connection          text not null,
    stream              text not null,
    raw_page_id         bigint not null references raw_page(id),
    record_ordinal      integer not null,
    record_hash         bytea not null,
    source_id           text not null,
    source_modified_at  timestamptz,
    mapping_version_id  integer not null references mapping_version(id),
    created_at          timestamptz not null default now()
);
create index derivation_by_page on derivation (raw_page_id);

create sequence canonical_id_seq;

-- Crosswalk: (entity type, connection, source id) -> canonical id, with the
-- version of the source record last written.
create table source_link (
    entity_type         text not null,
    connection          text not null,
    source_id           text not null,
    canonical_id        bigint not null default nextval('canonical_id_seq'),
    record_hash         bytea,
    row_hash            bytea,
    mapping_version_id  integer references mapping_version(id),
    derivation_id       bigint references derivation(id),
    source_modified_at  timestamptz,
    raw_page_id         bigint,
    record_ordinal      integer,
    deleted_at          timestamptz,
    primary key (entity_type, connection, source_id)
);
create unique index source_link_canonical on source_link (entity_type, canonical_id, connection);

create table dead_letter (
    id                  bigserial primary key,
    connection          text not null,
    stream              text not null,
    raw_page_id         bigint not null references raw_page(id),
    record_ordinal      integer,              -- null: the whole page failed to parse
    source_id           text,
    error_class         text not null,
    message             text not null,
    mapping_version_id  integer references mapping_version(id),
    status              text not null default 'open' check (status in ('open', 'resolved')),
    created_at          timestamptz not null default now()
);
create unique index dead_letter_once on dead_letter (raw_page_id, coalesce(record_ordinal, -1), coalesce(mapping_version_id, 0));

-- Canonical entities. prov_contributors: derivation ids; prov_field_src: per field,
-- the index of the contributor that supplied it (NULL while one contributor supplies all).
create table org_unit (
    id                  bigint primary key,
    source_id           text not null,
    name                text,
    org_type            text,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now()
);

create table location (
    id                  bigint primary key,
    source_id           text not null,
    name                text,
    country             text,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now()
);

create table worker (
    id                  bigint primary key,
    source_id           text not null,
    worker_number       text,
    display_name        text,
    work_email          text,
    work_phone          text,
    business_title      text,
    is_manager          boolean,
    worker_type         text,
    job_profile         text,
    time_type           text,
    hire_date           date,
    fte                 numeric,
    company             text,
    cost_center         text,
    org_unit_id         bigint,
    location_id         bigint,
    manager_id          bigint,
    source_modified_at  timestamptz,
    prov_contributors   bigint[] not null,
    prov_field_src      smallint[],
    row_hash            bytea not null,
    mapping_version_id  integer not null references mapping_version(id),
    updated_at          timestamptz not null default now()
);
create index worker_by_source_id on worker (source_id);
create index worker_by_org_unit on worker (org_unit_id);
create index org_unit_by_source_id on org_unit (source_id);
create index location_by_source_id on location (source_id);
