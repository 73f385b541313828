-- Statements about the server and the session rather than a table.

-- The server's clock, which wrote the heartbeats status judges.
-- name: server-now
SELECT now()

-- What tells two servers' databases apart: one table OID in both is one
-- table only if this is the same too.
-- name: server-identity
SELECT current_database(), coalesce(inet_server_addr()::text, ''), coalesce(inet_server_port(), 0), pg_postmaster_start_time()::text

-- A SQL_ASCII database stores bytes, not characters: the session keeps its
-- encoding, so they travel as they are.
-- name: keep-sql-ascii
SET client_encoding = SQL_ASCII
