-- Statements of the checkpoint store. {{schema}} is the quoted state schema.

-- name: job-get
SELECT name, spec, state, rate, workers, rows_estimated, upper_key, started_at,
       updated_at, finished_at, last_error, runner_host, runner_pid, heartbeat_at,
       rate_auto_max, throttle_requested, throttled, throttle_reason
FROM {{schema}}.jobs
WHERE name = $1

-- name: job-list
SELECT name, spec, state, rate, workers, rows_estimated, upper_key, started_at,
       updated_at, finished_at, last_error, runner_host, runner_pid, heartbeat_at,
       rate_auto_max, throttle_requested, throttled, throttle_reason
FROM {{schema}}.jobs
ORDER BY started_at, name

-- A new job's runner is its generation 1.
-- name: job-create
INSERT INTO {{schema}}.jobs
    (name, spec, state, rate, workers, rows_estimated, upper_key, runner_host, runner_pid, heartbeat_at, started_at, generation)
VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, now(), $9, 1)
RETURNING generation

-- Takes the job for a new runner, which holds the runner lock: raising the
-- generation fences every commit of the runners before it (see the
-- migration that added it), and waits for those already in flight.
-- name: job-claim
UPDATE {{schema}}.jobs
SET state = 'running', rate = $2, workers = $3, runner_host = $4, runner_pid = $5,
    heartbeat_at = now(), updated_at = now(), finished_at = NULL, last_error = NULL,
    pause_requested = false, throttled = false, throttle_reason = NULL, generation = generation + 1
WHERE name = $1
RETURNING generation

-- Takes the job again for a runner that lost its session and took the
-- lock again: only if no other runner took it meanwhile ($2 is still the
-- job's generation). The new generation fences what the runner may still
-- have had in flight.
-- name: job-reclaim
UPDATE {{schema}}.jobs
SET generation = generation + 1, heartbeat_at = now(), updated_at = now()
WHERE name = $1 AND generation = $2
RETURNING generation

-- The heartbeat also reads what an operator asked for since the last one.
-- It finds no row once a newer runner has taken the job.
-- name: job-heartbeat
UPDATE {{schema}}.jobs SET heartbeat_at = now(), updated_at = now() WHERE name = $1 AND generation = $2
RETURNING rate, pause_requested, rate_auto_max IS NOT NULL

-- An operator's rate is fixed: it ends a --rate auto.
-- name: job-set-rate
UPDATE {{schema}}.jobs SET rate = $2, rate_auto_max = NULL, updated_at = now() WHERE name = $1
RETURNING state

-- An operator's worker count; a running job's heartbeat picks it up.
-- name: job-set-workers
UPDATE {{schema}}.jobs SET workers = $2, updated_at = now() WHERE name = $1
RETURNING state

-- The running job's worker count, which the runner and an operator both
-- write: the runner's size ($4) is stored only while the row still holds
-- the count the runner last saw there ($3); otherwise an operator has set
-- one since, which wins and is returned for the runner to apply. NULL once
-- a newer runner has taken the job.
-- name: job-sync-workers
WITH stored AS (
    UPDATE {{schema}}.jobs SET workers = $4, updated_at = now()
    WHERE name = $1 AND generation = $2 AND workers = $3 AND workers <> $4
    RETURNING workers
)
SELECT coalesce((SELECT workers FROM stored),
                (SELECT workers FROM {{schema}}.jobs WHERE name = $1 AND generation = $2))

-- How the runner of generation $2 sets the rate: fixed ($3 NULL) or auto
-- under the ceiling $3 (0: none).
-- name: job-set-rate-mode
UPDATE {{schema}}.jobs SET rate_auto_max = $3, updated_at = now() WHERE name = $1 AND generation = $2

-- The rate --rate auto chose, recorded only while the job is still the
-- runner's and still auto: an operator's fixed rate set meanwhile stays.
-- name: job-record-auto-rate
UPDATE {{schema}}.jobs SET rate = $3, updated_at = now()
WHERE name = $1 AND generation = $2 AND rate_auto_max IS NOT NULL

-- name: job-set-throttle-request
UPDATE {{schema}}.jobs SET throttle_requested = $2, updated_at = now() WHERE name = $1
RETURNING state

-- Read each second by the runner's throttle, on a connection of its own;
-- false for a job not there (a dry run's).
-- name: job-throttle-requested
SELECT coalesce((SELECT throttle_requested FROM {{schema}}.jobs WHERE name = $1), false)

-- What the runner of generation $2 waits for, as it changes.
-- name: job-set-throttled
UPDATE {{schema}}.jobs SET throttled = $3, throttle_reason = $4 WHERE name = $1 AND generation = $2

-- name: job-request-pause
UPDATE {{schema}}.jobs SET pause_requested = true, updated_at = now() WHERE name = $1 AND state = 'running'

-- A runner records how its run ended only while the job is still its own.
-- name: job-set-state
UPDATE {{schema}}.jobs
SET state = $3, last_error = $4, updated_at = now(), heartbeat_at = NULL, pause_requested = false,
    throttled = false, throttle_reason = NULL,
    finished_at = CASE WHEN $3 = 'done' THEN now() END
WHERE name = $1 AND generation = $2

-- A chunk is counted once however many pieces it committed as; the records
-- of steps without a matching row are not chunks.
-- name: job-counters
SELECT count(DISTINCT seq) FILTER (WHERE rows_read > 0),
       coalesce(sum(rows_read), 0),
       coalesce(sum(rows_filtered), 0),
       coalesce(sum(rows_failed), 0),
       coalesce(sum(rows_inserted), 0),
       coalesce(sum(rows_skipped), 0),
       (SELECT last_key FROM {{schema}}.chunks WHERE job = $1 ORDER BY finished_at DESC LIMIT 1),
       count(*) FILTER (WHERE write_path = 'direct'),
       count(*) FILTER (WHERE write_path = 'stage'),
       count(*) FILTER (WHERE write_path = 'isolated')
FROM {{schema}}.chunks
WHERE job = $1

-- Every committed range, for verify, which walks them chunk by chunk. A
-- resume reads chunk-bounds instead.
-- name: chunk-ranges
SELECT seq, after_key, last_key, split_last_key FROM {{schema}}.chunks WHERE job = $1

-- The bounds of the committed ranges: each key where more chunks begin
-- (after_key) than end (last_key), or fewer, and by how many; NULL is the
-- start of the table. Inside a run of chained chunks each key ends one and
-- begins the next, so a run of any length leaves only its two ends: a
-- resume holds these, not a row per chunk. Keys are matched by equal text,
-- which needs no key order; the source ranks the bounds and sweeps them
-- into runs. At most one chunk ends at a key (the primary key), so the
-- chunks beginning at each key are counted and joined to the one ending
-- there: two hashed passes over the job's rows, no walk from chunk to
-- chunk and so no index beyond the primary key. (Summing +1 and -1 per key
-- over a LATERAL VALUES list is the same sum, but the planner guesses a
-- handful of groups for it and sorts a million on disk: three times slower
-- at 10⁶ chunks.) The NULL group never joins: no chunk ends at the start.
-- name: chunk-bounds
SELECT coalesce(b.key, e.last_key), coalesce(b.n, 0) - (e.last_key IS NOT NULL)::int
FROM (SELECT after_key AS key, count(*) AS n FROM {{schema}}.chunks WHERE job = $1 GROUP BY after_key) AS b
FULL JOIN (SELECT last_key FROM {{schema}}.chunks WHERE job = $1) AS e ON e.last_key = b.key
WHERE coalesce(b.n, 0) <> (e.last_key IS NOT NULL)::int

-- Every piece of the chunks that were split, and the rest a resume read of
-- one as the same seq: what finding the rests of split chunks needs. Few
-- rows, for a chunk is split only after repeated timeouts.
-- name: chunk-split-pieces
SELECT seq, after_key, last_key, split_last_key FROM {{schema}}.chunks
WHERE job = $1 AND seq IN (SELECT seq FROM {{schema}}.chunks WHERE job = $1 AND split_last_key IS NOT NULL)

-- name: chunk-max-seq
SELECT coalesce(max(seq), 0) FROM {{schema}}.chunks WHERE job = $1

-- name: try-lock
SELECT pg_try_advisory_lock(hashtextextended($1, 0))

-- name: lock-holder
SELECT a.pid, coalesce(host(a.client_addr), 'local'), a.application_name
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)
LIMIT 1

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended($1, 0))

-- name: migrate-lock
SELECT pg_advisory_xact_lock(hashtextextended('backfill:migrate', 0))

-- Commits one chunk: {{insert}} is the worker's INSERT … ON CONFLICT DO
-- NOTHING (its parameters, if any, start at $14). The chunk's rows and its checkpoint row
-- commit together or not at all; the chunk row's trigger fails the
-- statement if generation $10 has been superseded.
-- name: commit-chunk
WITH ins AS (
    {{insert}}
    RETURNING 1
)
INSERT INTO {{schema}}.chunks
    (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed, rows_inserted, rows_skipped,
     generation, split_last_key, write_path, partition)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, count(*), $9 - count(*), $10, $11, $12, $13
FROM ins
RETURNING rows_inserted

-- Where the committed chunk that ends at a key begins: a retry whose commit
-- meets the checkpoint's primary key is the same chunk only if this matches.
-- name: chunk-after
SELECT after_key FROM {{schema}}.chunks WHERE job = $1 AND last_key = $2

-- name: lock-held
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted
      AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)
)

-- Records a chunk written inside a transaction (the isolating path, where
-- rows were bisected): the counts are computed by the caller. Fenced like
-- commit-chunk, so a superseded runner's transaction cannot commit.
-- name: record-chunk
INSERT INTO {{schema}}.chunks
    (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed, rows_inserted, rows_skipped,
     generation, split_last_key, write_path, partition)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)

-- name: record-failed-rows
INSERT INTO {{schema}}.failed_rows (job, key, chunk_last_key, sqlstate, column_name, message, source_row)
SELECT $1, u.key, $2, u.sqlstate, u.column_name, u.message, u.source_row
FROM unnest($3::jsonb[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
     AS u(key, sqlstate, column_name, message, source_row)
ON CONFLICT (job, key) DO UPDATE
SET sqlstate = excluded.sqlstate, column_name = excluded.column_name, message = excluded.message,
    source_row = excluded.source_row, failed_at = excluded.failed_at

-- name: failed-rows
SELECT chunk_last_key, key FROM {{schema}}.failed_rows WHERE job = $1 ORDER BY chunk_last_key, key

-- Moves the rows of one chunk that no longer fail ($3: the keys that still
-- do) out of failed_rows and into the chunk's counts, in the transaction
-- that wrote them: inserted ($4), skipped on a conflict ($5), and filtered
-- for the rest, which were not written at all (skip_if skips them now, or
-- the source no longer has them as the job reads it: deleted, or no longer
-- matching where). Setting generation $6 fires the fence.
-- name: forget-failed-rows
WITH gone AS (
    DELETE FROM {{schema}}.failed_rows
    WHERE job = $1 AND chunk_last_key = $2 AND NOT (key = ANY ($3::jsonb[]))
    RETURNING 1
)
UPDATE {{schema}}.chunks
SET rows_failed = rows_failed - (SELECT count(*) FROM gone),
    rows_inserted = rows_inserted + $4,
    rows_skipped = rows_skipped + $5,
    rows_filtered = rows_filtered + $7,
    rows_read = rows_read - ((SELECT count(*) FROM gone) - $4 - $5 - $7),
    generation = $6
WHERE job = $1 AND last_key = $2

-- Rows read in the last minute, for status's rate and ETA: measured over a
-- window, so it follows a re-tuned rate instead of the whole run's average.
-- name: job-recent-rows
SELECT coalesce(sum(rows_read), 0),
       extract(epoch FROM least(now() - min(finished_at), interval '1 minute'))
FROM {{schema}}.chunks
WHERE job = $1 AND finished_at > now() - interval '1 minute'

-- The slowest of the job's recent chunks, by the time their write took
-- (migration 9): of the last 1000 committed, the $2 slowest.
-- name: chunk-slowest
SELECT seq, first_key, last_key, rows_read, coalesce(write_path, ''), write_seconds, finished_at
FROM (SELECT * FROM {{schema}}.chunks WHERE job = $1 ORDER BY finished_at DESC LIMIT 1000) AS recent
WHERE write_seconds IS NOT NULL
ORDER BY write_seconds DESC
LIMIT $2

-- The job's first $2 failed rows, with their errors.
-- name: failed-rows-first
SELECT key, coalesce(sqlstate, ''), coalesce(column_name, ''), message, failed_at
FROM {{schema}}.failed_rows
WHERE job = $1
ORDER BY failed_at, key
LIMIT $2

-- name: partition-create
INSERT INTO {{schema}}.partitions (job, id, after_key, last_key, rows_estimated) VALUES ($1, $2, $3, $4, $5)

-- Claims one pending partition that no live lease holds, lowest id first,
-- skipping those another runner is claiming and those with a commit in
-- flight (its fence holds the row FOR KEY SHARE until it ends): what the
-- claimer reads of the checkpoint afterwards includes every commit of the
-- earlier holder, whose later ones the raised token refuses.
-- name: partition-claim
WITH free AS (
    SELECT id FROM {{schema}}.partitions
    WHERE job = $1 AND state = 'pending' AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE {{schema}}.partitions AS p
SET owner = $2, token = p.token + 1, lease_until = now() + $3::interval, renewed_at = now(), split_requested = false
FROM free
WHERE p.job = $1 AND p.id = free.id
RETURNING p.id, p.after_key, p.last_key, p.token, p.rows_estimated

-- Renews a lease that has not expired and reads what the runner acts on:
-- whether a split of the partition was asked for, the job's rate and
-- pause request, and how many leases are live (the rate's share). No row
-- once the lease has expired, or another runner took the partition. The
-- job's heartbeat is the runners' too, so status tells a live job.
-- name: partition-renew
WITH renewed AS (
    UPDATE {{schema}}.partitions
    SET lease_until = now() + $4::interval, renewed_at = now()
    WHERE job = $1 AND id = $2 AND token = $3 AND lease_until > now()
    RETURNING split_requested
), beat AS (
    UPDATE {{schema}}.jobs SET heartbeat_at = now() WHERE name = $1 AND EXISTS (SELECT 1 FROM renewed)
)
SELECT r.split_requested, j.rate, j.pause_requested,
       (SELECT count(*) FROM {{schema}}.partitions
        WHERE job = $1 AND state = 'pending' AND lease_until > now())
FROM renewed AS r, {{schema}}.jobs AS j
WHERE j.name = $1

-- name: partition-release
UPDATE {{schema}}.partitions SET owner = NULL, lease_until = NULL
WHERE job = $1 AND id = $2 AND token = $3

-- Marks a partition read to its end, under a lease still held.
-- name: partition-done
UPDATE {{schema}}.partitions SET state = 'done', owner = NULL, lease_until = NULL, split_requested = false
WHERE job = $1 AND id = $2 AND token = $3 AND lease_until > now()

-- Each partition with what its chunks read, in all and over the last
-- minute.
-- name: partition-list
SELECT p.id, p.after_key, p.last_key, p.rows_estimated, p.state, p.owner, p.token, p.lease_until,
       coalesce(p.lease_until > now(), false), p.renewed_at,
       coalesce(c.rows, 0), coalesce(c.recent, 0)
FROM {{schema}}.partitions AS p
LEFT JOIN (
    SELECT partition, sum(rows_read) AS rows,
           sum(rows_read) FILTER (WHERE finished_at > now() - interval '1 minute') AS recent
    FROM {{schema}}.chunks WHERE job = $1 AND partition IS NOT NULL GROUP BY partition
) AS c ON c.partition = p.id
WHERE p.job = $1
ORDER BY p.id

-- Hands the rest of a partition, after key $4, to a new partition: the
-- holder of a live lease ($3) ends its own at $4 and the new one reads
-- (after $4, up to $5]; $6 and $7 are their estimated rows. The new id is
-- the job's next; two splits at once collide on it, and one fails.
-- name: partition-split
WITH cut AS (
    UPDATE {{schema}}.partitions SET last_key = $4, rows_estimated = $7, split_requested = false
    WHERE job = $1 AND id = $2 AND token = $3 AND lease_until > now()
    RETURNING job
)
INSERT INTO {{schema}}.partitions (job, id, after_key, last_key, rows_estimated)
SELECT $1, (SELECT max(id) + 1 FROM {{schema}}.partitions WHERE job = $1), $4, $5, $6 FROM cut
RETURNING id

-- An idle runner asks the holder of the partition with the most rows left
-- to read (by its estimate less the rows its chunks read) to split it,
-- when that is at least $2 rows.
-- name: partition-request-split
WITH left_to_read AS (
    SELECT p.id, p.rows_estimated - coalesce((SELECT sum(c.rows_read) FROM {{schema}}.chunks AS c
                                             WHERE c.job = p.job AND c.partition = p.id), 0) AS n
    FROM {{schema}}.partitions AS p
    WHERE p.job = $1 AND p.state = 'pending' AND p.lease_until > now() AND NOT p.split_requested
    ORDER BY 2 DESC
    LIMIT 1
)
UPDATE {{schema}}.partitions AS p SET split_requested = true
FROM left_to_read AS l
WHERE p.job = $1 AND p.id = l.id AND l.n >= $2
RETURNING p.id

-- The last seq a partition's chunks took, in its own range of seqs
-- [$2, $3); $2 when none: each partition numbers its chunks apart, so
-- the pieces of a split chunk are told by seq as in a job of one runner.
-- name: chunk-max-seq-in
SELECT coalesce(max(seq), $2) FROM {{schema}}.chunks WHERE job = $1 AND seq >= $2 AND seq < $3

-- A partitioned job is running again once a runner joins it, at the rate
-- it was given ($2; the job's own when it was given none).
-- name: job-run-partitioned
UPDATE {{schema}}.jobs
SET state = 'running', rate = $2, pause_requested = false, finished_at = NULL, last_error = NULL,
    updated_at = now(), heartbeat_at = now()
WHERE name = $1

-- How a partitioned job's run ended, recorded by the runner that stops
-- last: done once no partition is left to read, another state only when no
-- other runner holds a live lease (it records its own end in turn).
-- name: job-set-state-partitioned
UPDATE {{schema}}.jobs
SET state = $2, last_error = $3, updated_at = now(), heartbeat_at = NULL, pause_requested = false,
    finished_at = CASE WHEN $2 = 'done' THEN now() END
WHERE name = $1
  AND CASE WHEN $2 = 'done'
           THEN NOT EXISTS (SELECT 1 FROM {{schema}}.partitions WHERE job = $1 AND state = 'pending')
           ELSE NOT EXISTS (SELECT 1 FROM {{schema}}.partitions WHERE job = $1 AND state = 'pending' AND lease_until > now())
      END

-- What the runners of a partitioned job read between partitions: its rate
-- cap and whether an operator asked it to pause, or it was paused by the
-- runner that stopped last (which clears the request).
-- name: job-requests
SELECT rate, pause_requested OR state = 'paused' FROM {{schema}}.jobs WHERE name = $1
