-- Statements of the throttle signals (package throttle). Those naming
-- {{schema}} write or read the job's heartbeat in the state schema; the
-- others read the server's statistics views, on connections of their own.

-- The job's heartbeat, on the destination. The server's clock, read as the
-- statement runs, for a standby to compare with its own.
-- name: heartbeat-beat
INSERT INTO {{schema}}.heartbeat (job, at) VALUES ($1, clock_timestamp())
ON CONFLICT (job) DO UPDATE SET at = excluded.at
RETURNING at

-- On a standby: is it one, its clock, the job's heartbeat it has replayed
-- (NULL before the first), the commit time of the last transaction it
-- replayed, and whether it has received WAL it has not replayed yet.
-- name: replica-lag
SELECT pg_is_in_recovery(),
       clock_timestamp(),
       (SELECT at FROM {{schema}}.heartbeat WHERE job = $1),
       pg_last_xact_replay_timestamp(),
       coalesce(pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), false)

-- On the destination primary: the role reading, and the primary's physical
-- standbys (a logical walsender feeds a subscriber or a change-data-capture
-- client, whose pace is not a reader's lag) with the primary's WAL position
-- and each standby's replay position as byte offsets. Without
-- pg_read_all_stats a role sees the rows of other roles' walsenders with
-- state and positions NULL.
-- name: standby-lag
SELECT current_user,
       r.application_name,
       coalesce(host(r.client_addr), 'local'),
       r.state,
       r.replay_lag,
       (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
       (r.replay_lsn - '0/0'::pg_lsn)::bigint
FROM pg_stat_replication r
WHERE NOT EXISTS (SELECT FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical')

-- Client sessions running a statement now, apart from this one, backfill's
-- own ($1: its application_name) and the backends listed in $2; and how
-- many backends the role may not see (pg_read_all_stats shows them), whose
-- rows hold neither their state nor even their backend_type.
-- name: active-sessions
SELECT count(*) FILTER (WHERE backend_type = 'client backend'
                          AND state = 'active'
                          AND pid <> pg_backend_pid()
                          AND application_name IS DISTINCT FROM $1
                          AND pid <> ALL ($2::int[])),
       count(*) FILTER (WHERE backend_type IS NULL),
       current_user
FROM pg_stat_activity
