package backfill

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/worker"
)

// rawColumns says which source columns travel raw: in their binary form,
// undecoded, to destination columns of the same cast type. A column does
// when the transform only moves it, every destination column it moves to
// has its cast type, and that type's binary form means the same in both
// databases (catalog.Column.BinaryTravels). The others travel as their
// text, or as Go values where the transform reads them. The source must
// send binary results: over the simple protocol or in exec mode every
// column comes as text.
func rawColumns(source []catalog.Column, passes []int, decoded []bool, written []string, dest *catalog.Table, binaryResults bool) []bool {
	raw := make([]bool, len(source))
	for s, c := range source {
		raw[s] = binaryResults && !decoded[s] && c.BinaryTravels
	}
	for i, name := range written {
		if s := passes[i]; s >= 0 {
			if d := dest.Column(name); d == nil || d.CastOID != source[s].CastOID {
				raw[s] = false
			}
		}
	}
	return raw
}

// straightCopy returns, when every column written is a raw source value
// moved untouched and no row can be filtered, the source column of each:
// the rows can go from the source's bytes to the COPY stream with nothing
// in between. Otherwise nil.
func straightCopy(j Job, passes []int, raw []bool) []int {
	if j.Transform != nil || j.SkipIf != "" {
		return nil
	}
	for _, s := range passes {
		if s < 0 || !raw[s] {
			return nil
		}
	}
	return slices.Clone(passes)
}

// sendsBinary reports whether q's connections send results in the formats
// a query asks for: all but those whose mode sends every column as text,
// the simple protocol and exec (which executes without a statement
// description, so pgx asks for text whatever the query asks).
func sendsBinary(q catalog.Querier) bool {
	var mode pgx.QueryExecMode
	switch q := q.(type) {
	case interface{ Config() *pgxpool.Config }:
		mode = q.Config().ConnConfig.DefaultQueryExecMode
	case interface{ Config() *pgx.ConnConfig }:
		mode = q.Config().DefaultQueryExecMode
	default:
		return false
	}
	return mode != pgx.QueryExecModeSimpleProtocol && mode != pgx.QueryExecModeExec
}

// chooseWritePath decides whether chunks may be copied straight into the
// destination, and with which range probe. COPY writes what INSERT would
// only when every column goes in its binary form (a text form would need
// the cast the stage's INSERT makes) and the table honours COPY as it does
// INSERT: COPY refuses a table with row-level security and ignores rules.
func (p *plan) chooseWritePath(source []catalog.Column, passes []int, raw []bool) {
	var why []string
	for _, c := range p.write {
		if c.AsText {
			why = append(why, fmt.Sprintf("column %q (%s) is written from its text", c.Name, c.Type))
		}
	}
	if p.dest.RowSecurity {
		why = append(why, "row-level security is enabled on "+p.dest.Name.String())
	}
	if p.dest.HasRules {
		why = append(why, p.dest.Name.String()+" has rules, which COPY ignores")
	}
	if len(why) > 0 {
		p.writePath = "stage (COPY into a temporary table, then INSERT … ON CONFLICT DO NOTHING): " + strings.Join(why, "; ")
		return
	}
	p.direct = true
	p.rangeKey = p.keyInDest(source, passes, raw)
	// a trigger that may change a row's key before the index sees it
	// makes a key the destination holds no sure conflict, and so does a
	// key whose text may not stand for its value
	p.leaveOutPresent = p.rangeKey != nil && !p.dest.BeforeInsertTriggers && worker.KeysByText(p.rangeKey)
	probe := "each chunk's key range probed first, and the rows whose keys it holds left out of the COPY"
	switch {
	case p.rangeKey != nil && p.dest.BeforeInsertTriggers:
		probe = "each chunk's key range probed first; a BEFORE INSERT row trigger on " + p.dest.Name.String() +
			" may change keys, so a range that holds any row goes through the stage"
	case p.rangeKey != nil && !p.leaveOutPresent:
		probe = "each chunk's key range probed first; the key's text may not stand for its value, so a range that holds any row goes through the stage"
	case p.rangeKey == nil:
		probe = "no unique index on the key in the destination to probe a range with, so each chunk tries the COPY"
	}
	p.writePath = directPath(probe)
}

// directPath describes the direct path, probing as probe says.
func directPath(probe string) string {
	return "direct COPY into key ranges the destination holds no row in, or few (" + probe + "); the stage for the others"
}

// keyInDest returns the destination columns that the source's key is
// passed to raw, when a plain unique btree index covers exactly them in
// key order and checks each row as it goes in (not deferrable): a range
// probe on them is one index scan, and a row of a key it finds would fail
// the COPY. Otherwise nil.
func (p *plan) keyInDest(source []catalog.Column, passes []int, raw []bool) []worker.KeyPart {
	var parts []worker.KeyPart
	var names []string
	for _, k := range p.key {
		s := slices.IndexFunc(source, func(c catalog.Column) bool { return c.Name == k.Name })
		if s < 0 || !raw[s] {
			return nil
		}
		i := slices.Index(passes, s)
		if i < 0 {
			return nil
		}
		d := p.write[i]
		parts = append(parts, worker.KeyPart{Name: d.Name, Cast: d.Cast})
		names = append(names, d.Name)
	}
	for _, u := range p.dest.Unique {
		if !u.Partial && !u.Expression && !u.Deferrable && u.Method == "btree" && slices.Equal(u.Columns, names) {
			return parts
		}
	}
	return nil
}
