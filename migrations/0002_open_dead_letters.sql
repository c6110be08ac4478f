-- Loading a record resolves its open dead letters: find them by source id.
create index dead_letter_open on dead_letter (connection, stream, source_id) where status = 'open';
