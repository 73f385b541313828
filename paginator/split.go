package paginator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Splitting a job's key range into partitions of about equal row counts,
// so several readers can copy one table at once.
const (
	// splitExactUpTo is the largest estimated row count whose split points
	// come from every matching row: a sort of that many keys takes a
	// fraction of a second. Above it they come from a sample.
	splitExactUpTo = 200_000
	// splitSampleRows is how many rows the sample aims at: the split
	// points of n partitions are then each within about 1/√(rows/n) of
	// their rank, a few percent for n up to a few hundred.
	splitSampleRows = 100_000
)

// SplitPoints returns keys k₁ < … < kₘ (m ≤ n-1) that cut the table's rows
// matching where, after after (nil: from the start) up to and including
// upper (nil: no bound), into m+1 ranges (after, k₁], (k₁, k₂], …,
// (kₘ, upper] of about equal row counts.
// estimate is the table's row count as the planner has it (pg_class
// reltuples; negative when unknown): up to a few hundred thousand rows the
// points are exact quantiles of every matching row, above that of a
// TABLESAMPLE SYSTEM of the table, which reads a sample of its pages
// rather than all of them. Equal keys in the sample, a small table or a
// rare predicate give fewer points; none when n < 2 or no row matches.
func SplitPoints(ctx context.Context, q Querier, table pgx.Identifier, key []KeyColumn, where string, after, upper []string, n int, estimate int64) ([][]string, error) {
	return splitPoints(ctx, q, table, key, where, after, upper, n, estimate, splitExactUpTo)
}

func splitPoints(ctx context.Context, q Querier, table pgx.Identifier, key []KeyColumn, where string, after, upper []string, n int, estimate, exactUpTo int64) ([][]string, error) {
	if n < 2 || len(key) == 0 {
		return nil, nil
	}
	if estimate > exactUpTo {
		percent := min(100, 100*float64(max(splitSampleRows, 100*int64(n)))/float64(estimate))
		points, sampled, err := queryPoints(ctx, q, table, key, where, after, upper, n, percent)
		// a rare predicate leaves too few rows in the sample to place n
		// partitions: then every matching row decides, as for a small table
		if err != nil || sampled >= splitSampleMin*int64(n) {
			return points, err
		}
	}
	points, _, err := queryPoints(ctx, q, table, key, where, after, upper, n, 100)
	return points, err
}

// splitSampleMin is the fewest sampled rows per partition the points are
// taken from; fewer, and they come from every matching row.
const splitSampleMin = 20

// queryPoints runs splitSQL and returns the points and how many rows they
// were chosen from (0 when fewer than two).
func queryPoints(ctx context.Context, q Querier, table pgx.Identifier, key []KeyColumn, where string, after, upper []string, n int, percent float64) ([][]string, int64, error) {
	query, args := splitSQL(table, key, where, after, upper, n, percent)
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("find %d partitions of %s: %w", n, table.Sanitize(), err)
	}
	var from int64
	points, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
		k := make([]string, len(key))
		dest := []any{&from}
		for i := range k {
			dest = append(dest, &k[i])
		}
		return k, r.Scan(dest...)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("find %d partitions of %s: %w", n, table.Sanitize(), err)
	}
	// rows come in key order; a key repeated in a sample (or at ties of
	// a non-unique prefix) would make an empty partition
	return slices.CompactFunc(points, slices.Equal[[]string]), from, nil
}

// splitSQL numbers the matching rows (or a sample of them) in key order and
// keeps the last of each of n equal groups but the last group: $1 is n,
// $2… the lower bound's key parts, then the upper bound's.
func splitSQL(table pgx.Identifier, key []KeyColumn, where string, after, upper []string, n int, percent float64) (string, []any) {
	cols := make([]string, len(key))
	for i, k := range key {
		cols[i] = fmt.Sprintf("%s::text AS bf_key_%d", pgx.Identifier{tableAlias, k.Name}.Sanitize(), i+1)
	}
	outer := make([]string, len(key))
	for i := range key {
		outer[i] = fmt.Sprintf("bf_key_%d", i+1)
	}
	args := []any{n}
	sample := ""
	if percent < 100 { // a number this package computed, not input
		sample = " TABLESAMPLE SYSTEM (" + strconv.FormatFloat(percent, 'g', 6, 64) + ")"
	}
	var conds []string
	bound := func(op string, b []string) {
		parts := make([]string, len(key))
		for i, k := range key {
			parts[i] = fmt.Sprintf("$%d::text::%s", len(args)+1, k.Type)
			args = append(args, b[i])
		}
		conds = append(conds, "("+qualifiedKeys(key, "")+") "+op+" ("+strings.Join(parts, ", ")+")")
	}
	if after != nil {
		bound(">", after)
	}
	if upper != nil {
		bound("<=", upper)
	}
	if where != "" {
		conds = append(conds, "("+where+")")
	}
	filter := ""
	if len(conds) > 0 {
		filter = " WHERE " + strings.Join(conds, " AND ")
	}
	return fmt.Sprintf("SELECT bf_n, %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS bf_rn, count(*) OVER () AS bf_n FROM %s AS %s%s%s) AS s "+
		"WHERE bf_rn < bf_n AND (bf_rn * $1::bigint) / bf_n > ((bf_rn - 1) * $1::bigint) / bf_n ORDER BY bf_rn",
		strings.Join(outer, ", "), strings.Join(cols, ", "), qualifiedKeys(key, ""), table.Sanitize(), tableAlias, sample, filter), args
}
