package paginator

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Span is a part (After, Last] of a job's key range: a run of committed
// chunks, or a gap that no committed chunk covers.
type Span struct {
	After     []string // nil: from the start of the table
	Last      []string // inclusive
	Committed bool
}

// Spans tiles the key range from the start of the table to Config.Upper
// with the committed runs and the gaps between them, in the source's key
// order: the source sorts the runs, as it does for a resume, because Go
// cannot compare keys as the source does (collations, numeric, composite
// keys). Upper must be given; an empty Upper (the table was empty when the
// job began) has no keys, so only the committed runs are returned.
//
// A gap (After, Last] is bounded by keys, not rows: it may hold no row
// (rows deleted since, none matching Where); Count says how many it holds.
func (p *Paginator) Spans(ctx context.Context, q Querier) ([]Span, error) {
	if p.cfg.Upper == nil {
		return nil, fmt.Errorf("spans of %s: the job's end key is not given", p.cfg.Table.Sanitize())
	}
	if err := p.orderRuns(ctx, q); err != nil {
		return nil, err
	}
	withGaps := len(p.cfg.Upper) > 0
	var spans []Span
	var cursor []string
	for _, r := range p.runs {
		if withGaps && KeyString(r.start) != KeyString(cursor) {
			spans = append(spans, Span{After: cursor, Last: r.start})
		}
		spans = append(spans, Span{After: r.start, Last: r.end, Committed: true})
		cursor = r.end
	}
	if withGaps && KeyString(cursor) != KeyString(p.cfg.Upper) {
		spans = append(spans, Span{After: cursor, Last: p.cfg.Upper})
	}
	return spans, nil
}

// Count returns how many rows of the key range (after, last] match Where
// (after nil: from the start of the table; last nil: to its end). It
// counts in steps of at most step table rows, matching or not, so that no
// statement scans more than step rows however long the range and however
// rare the matching rows: a count of a long range in one statement would
// outlast the statement timeout.
func (p *Paginator) Count(ctx context.Context, q Querier, after, last []string, step int) (int64, error) {
	if step <= 0 {
		return 0, fmt.Errorf("count %s: step must be positive, got %d", p.cfg.Table.Sanitize(), step)
	}
	query := [2]string{p.countStepSQL(false, last != nil), p.countStepSQL(true, last != nil)}
	var total int64
	for cursor := after; ; {
		var end []string
		var read, matched int64
		err := p.retrying(ctx, func() (err error) {
			end, read, matched, err = p.countStep(ctx, q, query[b2i(cursor != nil)], p.keysetArgs(step, cursor, last))
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("count rows of %s after key %v up to %v: %w", p.cfg.Table.Sanitize(), cursor, last, err)
		}
		total += matched
		if read < int64(step) {
			return total, nil
		}
		cursor = end
	}
}

func (p *Paginator) countStep(ctx context.Context, q Querier, query string, args []any) (end []string, read, matched int64, err error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, 0, 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, 0, 0, rows.Err() // no row left in the range
	}
	end = make([]string, len(p.cfg.Key))
	ptrs := make([]any, 0, len(end)+2)
	for i := range end {
		ptrs = append(ptrs, &end[i])
	}
	if err := rows.Scan(append(ptrs, &read, &matched)...); err != nil {
		return nil, 0, 0, err
	}
	return end, read, matched, rows.Err()
}

// countStepSQL reads the next $1 table rows after the lower bound (when
// afterKey) up to the upper bound (when bounded), the bounds numbered as
// keysetWhere numbers them, and returns the last row's key, how many rows
// it read and how many of them match Where. The inner select names its
// outputs itself, so no user column name can collide with them.
func (p *Paginator) countStepSQL(afterKey, bounded bool) string {
	inner := make([]string, 0, len(p.cfg.Key)+1)
	outer := make([]string, 0, len(p.cfg.Key)+2)
	desc := make([]string, 0, len(p.cfg.Key))
	for i, k := range p.cfg.Key {
		alias := fmt.Sprintf("key%d", i+1)
		inner = append(inner, pgx.Identifier{tableAlias, k.Name}.Sanitize()+" AS "+alias)
		outer = append(outer, "s."+alias+"::text")
		desc = append(desc, "s."+alias+" DESC")
	}
	matches := "true"
	if p.cfg.Where != "" {
		matches = "(" + p.cfg.Where + ") IS TRUE"
	}
	inner = append(inner, matches+" AS matches")
	outer = append(outer, "count(*) OVER ()", "count(*) FILTER (WHERE s.matches) OVER ()")
	return fmt.Sprintf("SELECT %s FROM (SELECT %s FROM %s AS %s%s ORDER BY %s LIMIT $1) AS s ORDER BY %s LIMIT 1",
		strings.Join(outer, ", "), strings.Join(inner, ", "), p.cfg.Table.Sanitize(), tableAlias,
		p.keysetWhere(afterKey, bounded, ""), p.keyList(), strings.Join(desc, ", "))
}

// CheckKeyCast checks that key, a key's text form as read from the table,
// reads back the same through the casts the page, count and digest
// queries compare keys with. A cast that changes a key (a char(n) key cast
// to character, which is char(1)) would bound every range wrongly, and a
// verify of ranges that hold no row would find nothing to compare.
func (p *Paginator) CheckKeyCast(ctx context.Context, q Querier, key []string) error {
	if len(key) != len(p.cfg.Key) {
		return fmt.Errorf("check key cast of %s: key %v has %d parts, want %d", p.cfg.Table.Sanitize(), key, len(key), len(p.cfg.Key))
	}
	casts := make([]string, len(p.cfg.Key))
	args := make([]any, len(key))
	for i, k := range p.cfg.Key {
		casts[i] = fmt.Sprintf("$%d::text::%s::text", i+1, k.Type)
		args[i] = key[i]
	}
	rows, err := q.Query(ctx, "SELECT "+strings.Join(casts, ", "), args...)
	if err != nil {
		return fmt.Errorf("check key cast of %s: %w", p.cfg.Table.Sanitize(), err)
	}
	defer rows.Close()
	back := make([]string, len(key))
	ptrs := make([]any, len(back))
	for i := range back {
		ptrs[i] = &back[i]
	}
	if !rows.Next() {
		return fmt.Errorf("check key cast of %s: no row: %w", p.cfg.Table.Sanitize(), rows.Err())
	}
	if err := rows.Scan(ptrs...); err != nil {
		return fmt.Errorf("check key cast of %s: %w", p.cfg.Table.Sanitize(), err)
	}
	for i, k := range p.cfg.Key {
		if back[i] != key[i] {
			return fmt.Errorf("key column %q of %s: its text %q reads back as %q through the cast to %s, so key ranges cannot be bounded exactly",
				k.Name, p.cfg.Table.Sanitize(), key[i], back[i], k.Type)
		}
	}
	return rows.Err()
}
