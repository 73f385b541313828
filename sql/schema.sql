-- The state schema. {{schema}} is the quoted --state-schema name.
-- Migrations run in order inside one transaction guarded by an advisory lock;
-- schema_version records the last one applied. Never edit a released block:
-- add migration-N+1.

-- name: create-schema
CREATE SCHEMA IF NOT EXISTS {{schema}}

-- name: create-version-table
CREATE TABLE IF NOT EXISTS {{schema}}.schema_version (
    version integer NOT NULL
)

-- name: get-version
SELECT coalesce(max(version), 0) FROM {{schema}}.schema_version

-- name: set-version
INSERT INTO {{schema}}.schema_version (version) VALUES ($1)

-- name: migration-1
CREATE TABLE {{schema}}.jobs (
    name            text PRIMARY KEY,
    -- what the job copies; never holds a password
    spec            jsonb NOT NULL,
    state           text NOT NULL
                    CHECK (state IN ('running', 'paused', 'interrupted', 'failed', 'done')),
    rate            double precision NOT NULL,
    workers         integer NOT NULL,
    rows_estimated  bigint NOT NULL DEFAULT 0,
    -- the source's last key when the job started: the job's defined end.
    -- '{}' when the source was empty; NULL for --follow (read to the end,
    -- wherever it is by then).
    upper_key       text[],
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    last_error      text,
    runner_host     text,
    runner_pid      integer,
    heartbeat_at    timestamptz
);

-- One row per committed chunk, written in the same statement as the chunk's
-- rows. Job counters are sums over these rows, so no worker updates a shared
-- hot row. A chunk covers the source keys in (after_key, last_key]. A chunk
-- split after repeated timeouts commits as several rows sharing its seq.
CREATE TABLE {{schema}}.chunks (
    job             text NOT NULL REFERENCES {{schema}}.jobs (name) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    after_key       text[],
    first_key       text[] NOT NULL,
    last_key        text[] NOT NULL,
    rows_read       integer NOT NULL,
    rows_filtered   integer NOT NULL,
    rows_failed     integer NOT NULL,
    rows_inserted   integer NOT NULL,
    rows_skipped    integer NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- a second commit of the same range (a retry after a lost reply, two
    -- runners) fails instead of counting twice
    PRIMARY KEY (job, last_key)
);
CREATE INDEX ON {{schema}}.chunks (job, finished_at);

-- Rows that could not be written: a transform error or a data error
-- (CHECK, NOT NULL, FK, bad value) isolated by bisecting their chunk. They
-- commit with their chunk; resume --retry-failed tries them again.
CREATE TABLE {{schema}}.failed_rows (
    job             text NOT NULL REFERENCES {{schema}}.jobs (name) ON DELETE CASCADE,
    key             jsonb NOT NULL,   -- the source key, as a JSON array of its text form
    chunk_last_key  text[] NOT NULL,  -- the chunk whose counters include this row
    sqlstate        text,             -- NULL for a transform error
    column_name     text,
    message         text NOT NULL,
    source_row      jsonb,
    failed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job, key)
);

-- name: migration-2
-- Control from another terminal: `backfill pause` sets pause_requested and
-- `backfill set --rate` changes rate; the runner reads both with its
-- heartbeat and acts within seconds.
ALTER TABLE {{schema}}.jobs ADD COLUMN pause_requested boolean NOT NULL DEFAULT false;

-- name: migration-3
-- Fencing. The runner lock lives on one session, and a runner whose session
-- died keeps committing until it notices; so every runner also takes a new
-- generation of its job (job-claim raises it), and every chunk row carries
-- the generation that wrote it. The trigger checks, inside the statement
-- that records the chunk (and so before its rows can commit), that this
-- generation is still the job's, under a FOR KEY SHARE lock on the job row:
--  * a commit that locked the row first holds the lock until it commits, and
--    the new runner's UPDATE of generation (a key update, for generation is
--    in a unique index) waits for it; the new runner reads the committed
--    ranges and the next seq only after that, so it sees the chunk;
--  * a commit that comes after the UPDATE (committed or not yet) waits for
--    it, then finds the row's newest version no longer matching and raises
--    BF001: the statement, and with it the chunk's rows, is rolled back.
-- Neither waits for a heartbeat or an operator's UPDATE of other columns:
-- KEY SHARE conflicts only with key updates, deletes and FOR UPDATE. (A
-- foreign key from chunks to jobs (name, generation) would check the same
-- way, but then raising the generation would violate it for every chunk the
-- older generations committed, or rewrite them all.)
ALTER TABLE {{schema}}.jobs ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.jobs ADD CONSTRAINT jobs_generation_key UNIQUE (name, generation);
-- chunks committed before this migration count as generation 0; a writer
-- must name its generation, so the default goes
ALTER TABLE {{schema}}.chunks ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.chunks ALTER COLUMN generation DROP DEFAULT;
-- For a piece of a chunk split after timeouts, the last key of the whole
-- chunk: a resume that finds only its first pieces reads the rest as the
-- same chunk (same seq, ending there), so the job counts it once.
ALTER TABLE {{schema}}.chunks ADD COLUMN split_last_key text[];
-- A filtered job records the steps it walked without a matching row as
-- chunks with no rows, so a resume does not walk them again.
ALTER TABLE {{schema}}.chunks ALTER COLUMN first_key DROP NOT NULL;
-- A chunk row without a generation comes from a backfill older than this
-- migration still running beside the schema: refused as fenced, but saying
-- so, for no newer runner took its job.
CREATE FUNCTION {{schema}}.fence_chunk() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
    IF NEW.generation IS NULL THEN
        RAISE EXCEPTION 'job %: a backfill older than state schema version 3 is still writing to it: stop it, then resume the job with this version', NEW.job
            USING ERRCODE = 'BF001', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    PERFORM 1 FROM {{schema}}.jobs WHERE name = NEW.job AND generation = NEW.generation FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % has a newer runner: generation % is superseded', NEW.job, NEW.generation
            USING ERRCODE = 'BF001', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$fence$;
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON {{schema}}.chunks
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.fence_chunk();
-- session_replication_role = replica (set by bulk loads to skip the
-- destination's FK and user triggers) disables ordinary triggers, and with
-- them the fence: it must fire whatever the session's role.
ALTER TABLE {{schema}}.chunks ENABLE ALWAYS TRIGGER fence;

-- name: migration-4
-- How each chunk's rows were written: 'direct' (COPY straight into the
-- destination), 'stage' (COPY into a temporary stage, then INSERT … ON
-- CONFLICT DO NOTHING) or 'isolated' (bisected for rows that failed); NULL
-- for a chunk that wrote no row, and for those of older versions.
ALTER TABLE {{schema}}.chunks ADD COLUMN write_path text;

-- name: migration-5
-- Partitions (a job spread over several runners): contiguous key ranges
-- (after_key, last_key] of the job, each read by one runner at a time, the
-- one holding its lease. A runner claims a free or expired partition by
-- raising its token, renews the lease while it works, and commits each
-- chunk of it under that token: the fence below refuses the commit once the
-- lease has expired or another runner has claimed the partition since.
-- The fence reads the partition row FOR KEY SHARE, as it reads the job's
-- generation (migration 3): a claim (FOR UPDATE SKIP LOCKED) passes over a
-- partition while a commit of it is in flight, and a commit that comes
-- after a claim waits for it, then finds the token raised. token is in a
-- unique index so that raising it is a key update, which KEY SHARE sees.
CREATE TABLE {{schema}}.partitions (
    job             text NOT NULL REFERENCES {{schema}}.jobs (name) ON DELETE CASCADE,
    id              integer NOT NULL,
    after_key       text[],   -- NULL: the start of the table
    last_key        text[],   -- NULL: the job's end
    rows_estimated  bigint NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    owner           text,     -- the runner holding the lease
    token           bigint NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    split_requested boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job, id),
    UNIQUE (job, id, token)
);
-- The partition a chunk belongs to; NULL for a job of one runner, whose
-- chunks carry the job's generation. A partition's chunks carry its token
-- in generation.
ALTER TABLE {{schema}}.chunks ADD COLUMN partition integer;
CREATE OR REPLACE FUNCTION {{schema}}.fence_chunk() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
    IF NEW.generation IS NULL THEN
        RAISE EXCEPTION 'job %: a backfill older than state schema version 3 is still writing to it: stop it, then resume the job with this version', NEW.job
            USING ERRCODE = 'BF001', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    IF NEW.partition IS NOT NULL THEN
        PERFORM 1 FROM {{schema}}.partitions
        WHERE job = NEW.job AND id = NEW.partition AND token = NEW.generation AND lease_until > clock_timestamp()
        FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % partition %: the lease of token % has expired or another runner holds it', NEW.job, NEW.partition, NEW.generation
                USING ERRCODE = 'BF001', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
        END IF;
        RETURN NEW;
    END IF;
    PERFORM 1 FROM {{schema}}.jobs WHERE name = NEW.job AND generation = NEW.generation FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % has a newer runner: generation % is superseded', NEW.job, NEW.generation
            USING ERRCODE = 'BF001', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$fence$;

-- name: migration-6
-- Replica lag as a reader of a standby sees it: the runner writes the time
-- here on the destination each second and reads it back on each standby,
-- as pt-heartbeat does (throttle.Heartbeat, throttle.ReplicaLag). A table
-- of its own rather than jobs.heartbeat_at: that one proves the runner
-- alive every few seconds through the runner's control session and its
-- generation fence; this one is written from a connection of its own, each
-- second, by whichever runner holds the job.
CREATE TABLE {{schema}}.heartbeat (
    job text PRIMARY KEY REFERENCES {{schema}}.jobs (name) ON DELETE CASCADE,
    at  timestamptz NOT NULL
);

-- name: migration-7
-- When each partition's lease was last taken or renewed: status shows the
-- age of each runner's heartbeat, as it does the job's for one runner.
ALTER TABLE {{schema}}.partitions ADD COLUMN renewed_at timestamptz;

-- name: migration-8
-- Throttling (issue 12). rate_auto_max says the job runs with --rate auto:
-- NULL for a fixed rate (rate), else the ceiling auto may raise the rate to
-- (0: none), rate then being the one auto chose last, which the runner
-- records as it changes so that status shows it. throttle_requested is an
-- operator's throttle by hand (backfill set --throttle on|off), which the
-- runner reads each second. throttled and throttle_reason are what the
-- runner waits for, written as they change and cleared when the run ends.
ALTER TABLE {{schema}}.jobs ADD COLUMN rate_auto_max double precision;
ALTER TABLE {{schema}}.jobs ADD COLUMN throttle_requested boolean NOT NULL DEFAULT false;
ALTER TABLE {{schema}}.jobs ADD COLUMN throttled boolean NOT NULL DEFAULT false;
ALTER TABLE {{schema}}.jobs ADD COLUMN throttle_reason text;

-- name: migration-9
-- How long each chunk's write took, as the destination timed it: from its
-- transaction's BEGIN to its checkpoint row, so the COPY and the INSERT
-- (not the transform before it, nor the commit's round trip). status --job
-- shows the slowest recent chunks by it. A default, so that no statement
-- needs to name it: set after the column is added, for a volatile default
-- on ADD COLUMN would rewrite the table to give every older chunk a
-- meaningless figure; theirs stay NULL.
ALTER TABLE {{schema}}.chunks ADD COLUMN write_seconds double precision;
ALTER TABLE {{schema}}.chunks ALTER COLUMN write_seconds SET DEFAULT extract(epoch FROM clock_timestamp() - now());
