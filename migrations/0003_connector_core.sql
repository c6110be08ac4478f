-- Connector core (issue 3): durable rotated credentials, circuit breaker
-- state for `status`, and deferred runs with a resume time.

-- Credentials that change at run time (rotated OAuth2 refresh tokens). The key
-- names the connection and the config value the credential descends from;
-- the value is a secret and is never logged or shown by `status`.
create table credential (
    key         text primary key,
    connection  text not null references connection(name),
    value       text not null,
    updated_at  timestamptz not null default now()
);

-- The last known state of each circuit breaker of a connection, written when a
-- run ends (a breaker lives in the process; this is what `status` reports).
create table circuit_breaker (
    connection            text not null references connection(name),
    host                  text not null,
    state                 text not null check (state in ('closed', 'open', 'half_open')),
    consecutive_failures  integer not null,
    times_opened          bigint not null,
    retry_at              timestamptz,
    updated_at            timestamptz not null default now(),
    primary key (connection, host)
);

-- A deferred run ends early because the source asked for a wait longer than
-- the run's budget; it resumes from its watermark at or after `resume_at`.
alter table sync_run add column resume_at timestamptz;
alter table sync_run add constraint deferred_has_resume_time
    check ((status = 'deferred') = (resume_at is not null));
