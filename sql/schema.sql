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
