-- Catalog queries: what backfill reads about a user's table. Names are passed
-- as values, never spliced in.

-- The last column says whether a BEFORE INSERT row trigger, on the table
-- or on any partition a row may be routed to, is enabled in some
-- session_replication_role: such a trigger may change a row's key before
-- the unique index sees it.
-- name: catalog-resolve
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relhasrules,
       EXISTS (
           SELECT 1
           FROM pg_trigger t
           WHERE (t.tgrelid = c.oid OR t.tgrelid IN (SELECT relid FROM pg_partition_tree(c.oid::regclass)))
             AND t.tgenabled <> 'D'
             AND t.tgtype & 7 = 7 -- TRIGGER_TYPE_ROW | TRIGGER_TYPE_BEFORE | TRIGGER_TYPE_INSERT
       )
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1)

-- The exact type, typmod included ("character(8)"), names the column in
-- messages and is what the transform checks values against. Values are cast
-- to the cast type: the unconstrained form of the type ("bpchar", "bit"),
-- and for a domain that of its base type, so that the column's own
-- assignment applies the typmod and the domain's checks, as INSERT … SELECT
-- does. format_type(atttypid, NULL) is no type to cast to: "character" is
-- char(1), and an explicit cast cuts a longer value to fit it, as one to a
-- domain over varchar(5) cuts to five characters.
-- name: catalog-columns
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       a.atttypid,
       format_type(base.oid, -1),
       base.oid,
       a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
       t.typcategory = 'A',
       a.attgenerated <> '',
       a.attidentity = 'a',
       travels.ok
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
CROSS JOIN LATERAL (
    WITH RECURSIVE chain (oid, typtype, typbasetype) AS (
        SELECT t.oid, t.typtype, t.typbasetype
        UNION ALL
        SELECT b.oid, b.typtype, b.typbasetype
        FROM pg_type b
        JOIN chain ON b.oid = chain.typbasetype
        WHERE chain.typtype = 'd'
    )
    SELECT chain.oid FROM chain WHERE chain.typtype <> 'd'
) base
-- Whether the base type's binary form means the same in any database: a
-- built-in base, range or multirange type with send and receive functions
-- whose element type (of an array, a name, a point) is one too. Not the
-- reg* types, whose binary form is an OID that names another object, or
-- nothing, in another database; not xml, whose stored text is read
-- through a cast (see the paginator); not int2vector and oidvector, whose
-- receive functions refuse the empty vector their send functions write.
CROSS JOIN LATERAL (
    SELECT bool_and(bt.oid < 16384 AND bt.typtype IN ('b', 'r', 'm') AND bt.typsend::oid <> 0
                    AND bt.typreceive::oid <> 0 AND bt.typname !~ '^reg'
                    AND bt.oid NOT IN ('xml'::regtype, 'int2vector'::regtype, 'oidvector'::regtype))
    FROM pg_type bt
    WHERE bt.oid = base.oid
       OR bt.oid = (SELECT e.typelem FROM pg_type e WHERE e.oid = base.oid AND e.typelem <> 0)
) travels (ok)
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum

-- name: catalog-unique-indexes
SELECT ic.relname,
       i.indisprimary,
       i.indpred IS NOT NULL,
       0 = ANY (i.indkey::int2[]),
       ARRAY(
           SELECT a.attname::text
           FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE k.ord <= i.indnkeyatts
           ORDER BY k.ord
       ),
       am.amname,
       NOT i.indimmediate
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid
ORDER BY i.indisprimary DESC, ic.relname

-- The collation of each collatable key column, so that committed ranges are
-- sorted in the order the page queries compare keys in. $1 is the quoted
-- table name, $2 the key column names.
-- name: key-collations
SELECT a.attname, n.nspname, c.collname
FROM pg_attribute a
JOIN pg_collation c ON c.oid = a.attcollation
JOIN pg_namespace n ON n.oid = c.collnamespace
WHERE a.attrelid = to_regclass($1) AND a.attname = ANY ($2::text[])

-- Whether a table has never been analyzed (reltuples is -1 then, since
-- PostgreSQL 14): the planner's row estimate is only a guess from its size.
-- name: catalog-never-analyzed
SELECT reltuples < 0 FROM pg_class WHERE oid = $1

-- Whether the role may create temporary tables here, as each worker's
-- stage is one.
-- name: catalog-may-create-temp
SELECT current_user, current_database(), has_database_privilege(current_database(), 'TEMPORARY')

-- The planner's row estimate of a table; 0 for one never analyzed.
-- name: catalog-rows-estimated
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1

-- The size of a table with its indexes and TOAST.
-- name: catalog-total-size
SELECT pg_total_relation_size($1)

-- A relation's OID from its quoted name, NULL when there is none.
-- name: relation-oid
SELECT to_regclass($1)::oid
