-- Dead-letter admin: an operator may discard a dead letter, with a reason.
-- A discarded dead letter is recorded, never deleted; the same failure of
-- the same record (its class, field and mapping version) does not open it
-- again: a different failure, or the record under a new mapping, does.
alter table dead_letter drop constraint dead_letter_status_check;
alter table dead_letter add constraint dead_letter_status_check
    check (status in ('open', 'resolved', 'merged', 'discarded'));
alter table dead_letter
    add column discarded_at   timestamptz,
    add column discarded_by   text,
    add column discard_reason text;
