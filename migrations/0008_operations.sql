-- Operations: the scheduler's shared state, audited watermark changes, and
-- the per-stream field catalogue with its drift events.

-- One row per scheduled (connection, stream): when it is next due, shared by
-- every `run` replica. A replica claims a due row only while it holds the
-- connection's advisory lock, and sets the next due time before it lets the
-- lock go, so each due time is run once; a row left claimed by a replica
-- that died is still due, and the next replica to take the lock runs it.
create table sync_schedule (
    connection        text not null references connection(name),
    stream            text not null,
    -- The schedule as configured (`every 15m`, `cron */15 * * * *`): a
    -- changed schedule recomputes `next_at`.
    spec              text not null,
    next_at           timestamptz not null,
    -- Failed runs in a row (the backoff's exponent); 0 after a success.
    failures          integer not null default 0,
    claimed_by        text,
    claimed_at        timestamptz,
    last_run_id       bigint references sync_run(id),
    last_outcome      text,
    last_finished_at  timestamptz,
    primary key (connection, stream)
);

-- An operator's change says why.
alter table watermark_history add column reason text;

-- The fields each stream's records carried, as JSON pointers (array
-- positions as `*`) with their JSON type: one row per (pointer, type).
create table field_catalogue (
    connection     text not null references connection(name),
    stream         text not null,
    pointer        text not null,
    json_type      text not null check (json_type in ('string', 'number', 'boolean', 'object', 'array', 'null')),
    first_seen_at  timestamptz not null default now(),
    last_seen_at   timestamptz not null default now(),
    first_page_id  bigint references raw_page(id),
    last_page_id   bigint references raw_page(id),
    -- Records that carried the pointer with this type, over every sync.
    records_seen   bigint not null default 0,
    primary key (connection, stream, pointer, json_type)
);

-- Records the catalogue has seen per stream (the denominator of a field's share).
create table field_catalogue_stream (
    connection     text not null references connection(name),
    stream         text not null,
    records_seen   bigint not null default 0,
    runs           bigint not null default 0,
    primary key (connection, stream)
);

-- A change of a stream's shape: a field that appeared, vanished, or changed type.
create table drift_event (
    id             bigserial primary key,
    connection     text not null references connection(name),
    stream         text not null,
    kind           text not null check (kind in ('added', 'removed', 'type_changed')),
    pointer        text not null,
    old_types      text[] not null default '{}',
    new_types      text[] not null default '{}',
    -- The raw page that showed it (for `removed`, the run's last page).
    raw_page_id    bigint references raw_page(id),
    run_id         bigint references sync_run(id),
    -- The mapping reads this pointer: the run's summary warned about it.
    mapped         boolean not null default false,
    detected_at    timestamptz not null default now()
);
create index drift_event_stream on drift_event (connection, stream, id);
