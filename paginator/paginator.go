package paginator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/retry"
	bfsql "github.com/backfill/backfill/sql"
)

// KeyColumn is one column of the pagination key.
type KeyColumn struct {
	Name string
	// Type is what the key's text form is cast back to: the column's type
	// without its typmod (bpchar, not character(8), which an explicit cast
	// would cut a key to), and for a domain its base type.
	Type string
}

// ReadColumn is one column the paginator selects.
type ReadColumn struct {
	Name string
	// AsText reads the column as its text form, a string, instead of
	// letting pgx decode it: for values that pass through untouched,
	// json/jsonb (whose decoding into Go values is lossy), arrays and types
	// pgx has no Go value for. The server sends the text its type's output
	// function writes, as COPY would: a cast to text would trim the
	// padding of a bpchar.
	AsText bool
	// StoredText, with AsText, selects the column cast to text instead,
	// for a type whose output function rewrites the value: xml's drops an
	// XML declaration that names version 1.0 and nothing else, which the
	// cast keeps as stored.
	StoredText bool
	// Raw reads the column in its binary form and keeps the bytes, a
	// *chunk.Raw, undecoded: for a value passed through to a destination column
	// of the same built-in type, whose binary form means the same there.
	Raw bool
}

// Range is a committed chunk's key range (After, Last].
type Range struct {
	After []string // nil for the first chunk of the table
	Last  []string
	Seq   int64
	// SplitLast is, for a piece of a chunk that was split in pieces, the
	// last key of the whole chunk; nil for a whole chunk. When no piece
	// after this one was committed, the rest of the chunk is read as the
	// same chunk: same Seq, ending at SplitLast.
	SplitLast []string
}

// Bound is a key where the coverage of the committed ranges changes:
// Delta more ranges begin after Key than end at it (negative: fewer). A
// key where as many begin as end is inside a run, or no range's edge, and
// is no bound. Bounds are all a resume needs to find the runs, however
// many ranges chain between them: ranked in the source's key order, the
// running sum of the deltas is how many ranges cover the keys after each
// bound, and the runs are where it is above zero. Unlike the runs
// themselves, they are found without following chains from range to range,
// so without comparing keys: the destination, which cannot compare them as
// the source does, sums them by equal text.
type Bound struct {
	Key   []string // nil: the start of the table
	Delta int64
}

// Config says what to read.
type Config struct {
	Table     pgx.Identifier
	Key       []KeyColumn
	Columns   []ReadColumn
	ChunkSize int
	// Sizer, when set, sizes each page instead of ChunkSize (a job sized
	// by time); ChunkSize is then its smallest size.
	Sizer *Sizer
	// Window, when set, is entered before each page is read and held by
	// the chunk read until it is released: the paginator reads no further
	// ahead of the workers than the window holds. Nil reads ahead as far
	// as the channel takes.
	Window *chunk.Window
	// Upper is the inclusive last key to read; the job's defined end.
	// An empty non-nil slice means the table was empty when the job began.
	Upper []string
	// Lower, when set, is the exclusive first key to read: keys up to it
	// are some other reader's (a partition of a job spread over several
	// runners, which sets Partition too).
	Lower []string
	// Partition says that ranges beyond Upper may be committed too, by the
	// readers of the job's other partitions: a committed run that reaches
	// past Upper is read as ending there, so the read never leaves its
	// range.
	Partition bool
	// Where is an optional SQL predicate over the source row.
	Where string
	// Committed are the ranges a previous run already committed, every
	// one: for a caller that holds them anyway (verify walks them chunk by
	// chunk). A resume gives Bounds and Split instead, which the
	// checkpoint finds in SQL without reading every range into memory.
	Committed []Range
	// Bounds are the keys where the committed ranges' coverage changes
	// (see Bound): the committed runs lie between them.
	Bounds []Bound
	// Split are the committed ranges of the chunks that were split in
	// pieces, every piece of them (see Range.SplitLast).
	Split []Range
	// NextSeq is the sequence id of the first chunk emitted.
	NextSeq int64
	// CopyOrder, for a straight copy (every value written is a raw value
	// of a column, untransformed, unfiltered), lists the Columns (by
	// index) that make each row's COPY tuple, in the destination's order:
	// the paginator then builds each chunk's Tuples instead of its Rows' values.
	// Every column it names must be Raw.
	CopyOrder []int
	// Cut, when set, may end the read before Upper: it is called before
	// each page once no committed range lies ahead, with the key read up
	// to (nil: none yet) and the current end, and returns a new end, after
	// cursor and not past the current one, or nil to read on. A runner
	// hands the unread rest of its partition to another this way, at a key
	// no page it has read or is reading crosses.
	Cut func(ctx context.Context, cursor, upper []string) ([]string, error)
	// Retry is how transient read errors are retried.
	Retry retry.Policy
	// OnRetry, if set, hears of each retried error.
	OnRetry func(err error, attempt int)
	// OnRead, if set, hears how long each page's read took: the attempt
	// that succeeded, its statements and the rows' decoding.
	OnRead func(time.Duration)
}

// Querier is what the paginator needs from the source database.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Paginator reads chunks. It is used by one goroutine.
type Paginator struct {
	cfg Config
	// pages[afterKey][bounded] are the page queries: from the start of the
	// table or after a key, to the end or up to a key (the job's end, or
	// the start of a committed run that ends a gap).
	pages [2][2]string
	// steps[afterKey][bounded] find the key chunk-size table rows ahead,
	// ignoring Where: a filtered job reads one such step at a time.
	steps [2][2]string
	// formats asks for each page column's result format: text for the key
	// and the columns read AsText, binary for those pgx decodes.
	formats pgx.QueryResultFormats
	// rawWidth counts the columns read Raw.
	rawWidth int
	// free holds the storage of released chunks, for the next pages.
	free chan *rowStore
	// bounds are where the committed ranges' coverage changes; orderRuns
	// turns them into runs.
	bounds  []Bound
	runs    []committedRun // in key order, not overlapping, once ordered is set
	ordered bool
	// rest are the split chunks whose last pieces are not committed, by
	// the key their last committed piece ends at.
	rest map[string]splitRest
	// ranks are the source's key order of the runs' start keys and of the
	// ends of rest, when there is more than one run.
	ranks   map[string]int
	nextSeq int64
}

// committedRun is a run of committed ranges, which together cover every
// key in (start, end].
type committedRun struct {
	start []string // nil at the start of the table
	end   []string
}

// splitRest is the uncommitted rest of a split chunk: it ends at last and
// is read as chunk seq.
type splitRest struct {
	seq  int64
	last []string
}

// freeStores is how many released chunks' storage a paginator keeps: one
// more than the chunks the pipeline holds at once (the channel's and the
// workers'), so that a steady run allocates none.
const freeStores = 16

// New checks cfg and prepares the page queries.
func New(cfg Config) (*Paginator, error) {
	if cfg.ChunkSize <= 0 {
		return nil, fmt.Errorf("chunk size must be positive, got %d", cfg.ChunkSize)
	}
	if len(cfg.Key) == 0 {
		return nil, fmt.Errorf("paginator for %s: no key columns", cfg.Table.Sanitize())
	}
	if cfg.Committed != nil && (cfg.Bounds != nil || cfg.Split != nil) {
		return nil, fmt.Errorf("paginator for %s: committed ranges given both as ranges and as bounds", cfg.Table.Sanitize())
	}
	bounds, split := cfg.Bounds, cfg.Split
	if cfg.Committed != nil {
		bounds, split = rangeBounds(cfg.Committed), cfg.Committed
	}
	if cfg.Lower != nil { // as if (start, Lower] were committed
		bounds = append(slices.Clone(bounds), Bound{Key: nil, Delta: 1}, Bound{Key: cfg.Lower, Delta: -1})
	}
	p := &Paginator{cfg: cfg, bounds: bounds, rest: splitRests(split), nextSeq: cfg.NextSeq}
	// a resumed job of 10⁹ rows may have 10⁶ ranges; the bounds say it all
	p.cfg.Committed, p.cfg.Bounds, p.cfg.Split = nil, nil, nil
	p.free = make(chan *rowStore, freeStores)
	for range cfg.Key {
		p.formats = append(p.formats, pgx.TextFormatCode)
	}
	for _, i := range cfg.CopyOrder {
		if i < 0 || i >= len(cfg.Columns) || !cfg.Columns[i].Raw {
			return nil, fmt.Errorf("paginator for %s: a straight copy's tuple names column %d, which is not read raw", cfg.Table.Sanitize(), i)
		}
	}
	for _, c := range cfg.Columns {
		f := int16(pgx.BinaryFormatCode)
		if c.AsText {
			f = pgx.TextFormatCode
		}
		if c.Raw {
			p.rawWidth++
		}
		p.formats = append(p.formats, f)
	}
	for _, after := range []bool{false, true} {
		for _, bounded := range []bool{false, true} {
			p.pages[b2i(after)][b2i(bounded)] = p.pageSQL(after, bounded)
			p.steps[b2i(after)][b2i(bounded)] = p.stepSQL(after, bounded)
		}
	}
	return p, nil
}

// rangeBounds finds the bounds of committed ranges (see Bound), in the
// order their keys first appear. Every range counts, even where ranges
// overlap (older versions could commit overlapping chunks, two runners at
// once) or two begin at the same key: the runs orderRuns finds between the
// bounds cover their union. The checkpoint's chunk-bounds statement sums
// the same way over the chunk rows.
func rangeBounds(ranges []Range) []Bound {
	at := make(map[string]int, len(ranges)/8)
	var bounds []Bound
	add := func(key []string, delta int64) {
		k := KeyString(key)
		i, ok := at[k]
		if !ok {
			i = len(bounds)
			at[k] = i
			bounds = append(bounds, Bound{Key: key})
		}
		bounds[i].Delta += delta
	}
	for _, r := range ranges {
		add(r.After, 1)
		add(r.Last, -1)
	}
	return slices.DeleteFunc(bounds, func(b Bound) bool { return b.Delta == 0 })
}

// splitRests finds the split chunks whose last pieces were not committed:
// a piece that ends before its chunk, with no piece of the same chunk
// beginning where it ends.
func splitRests(ranges []Range) map[string]splitRest {
	type start struct {
		seq   int64
		after string
	}
	split := map[int64]bool{}
	for _, r := range ranges {
		if r.SplitLast != nil {
			split[r.Seq] = true
		}
	}
	if len(split) == 0 {
		return nil
	}
	// where the split chunks' ranges begin: their pieces, and the rest
	// read by an earlier resume
	begun := map[start]bool{}
	for _, r := range ranges {
		if split[r.Seq] {
			begun[start{r.Seq, KeyString(r.After)}] = true
		}
	}
	rest := map[string]splitRest{}
	for _, r := range ranges {
		if r.SplitLast != nil && KeyString(r.SplitLast) != KeyString(r.Last) && !begun[start{r.Seq, KeyString(r.Last)}] {
			rest[KeyString(r.Last)] = splitRest{seq: r.Seq, last: r.SplitLast}
		}
	}
	return rest
}

// orderRuns finds the committed runs, in the source's key order and not
// overlapping, from the bounds: it has the source rank their keys with the
// key columns' types and collations, the order the page queries compare
// keys in, and sweeps them in that order, summing their deltas. A run
// begins where the sum rises above zero and ends where it falls back to
// it, so runs that overlap or touch come out merged into one covering
// their union. Keys the source holds equal sum together.
func (p *Paginator) orderRuns(ctx context.Context, q Querier) error {
	if p.ordered {
		return nil
	}
	p.ordered = true
	switch len(p.bounds) {
	case 0:
		return nil
	case 2: // one run: nothing to order, and no gap after it to bound a rest
		if p.cfg.Partition {
			break // unless it may reach past Upper
		}
		first, last := p.bounds[0], p.bounds[1]
		if first.Delta < 0 {
			first, last = last, first
		}
		if first.Delta > 0 && first.Delta+last.Delta == 0 {
			p.runs, p.bounds = []committedRun{{start: first.Key, end: last.Key}}, nil
			return nil
		}
	}
	// the keys to rank: every bound's (the table's start ranks 0), and the
	// end of each split chunk's rest
	var keys [][]string
	for _, b := range p.bounds {
		if b.Key != nil {
			keys = append(keys, b.Key)
		}
	}
	for _, r := range p.rest {
		keys = append(keys, r.last)
	}
	clip := p.cfg.Partition && len(p.cfg.Upper) > 0
	if clip {
		keys = append(keys, p.cfg.Upper)
	}
	var ranks []int
	err := p.retrying(ctx, func() error {
		var err error
		ranks, err = p.rankKeys(ctx, q, keys)
		return err
	})
	if err != nil {
		return err
	}
	p.ranks = make(map[string]int, len(keys))
	for i, k := range keys {
		p.ranks[KeyString(k)] = ranks[i]
	}
	rank := func(k []string) int {
		if k == nil {
			return 0
		}
		return p.ranks[KeyString(k)]
	}
	bounds := p.bounds
	slices.SortStableFunc(bounds, func(a, b Bound) int { return rank(a.Key) - rank(b.Key) })
	var covering int64 // ranges covering the keys after the bounds swept
	var start []string
	for i := 0; i < len(bounds); {
		was := covering > 0
		// a run begins at a key where ranges begin, ends at one where
		// they end: the key a range ends at is the one a split chunk's
		// rest is found by
		opens, closes := -1, -1
		j := i
		for ; j < len(bounds) && rank(bounds[j].Key) == rank(bounds[i].Key); j++ {
			covering += bounds[j].Delta
			if bounds[j].Delta > 0 && opens < 0 {
				opens = j
			}
			if bounds[j].Delta < 0 && closes < 0 {
				closes = j
			}
		}
		switch now := covering > 0; {
		case !was && now:
			start = bounds[opens].Key
		case was && !now:
			p.runs = append(p.runs, committedRun{start: start, end: bounds[closes].Key})
		}
		i = j
	}
	if covering != 0 {
		return fmt.Errorf("order the committed ranges of %s: their bounds sum to %d, not 0: the checkpoint's ranges do not each begin and end", p.cfg.Table.Sanitize(), covering)
	}
	if clip {
		// the runs as this partition sees them: none from its end on, and
		// one that reaches past its end ending there
		end := rank(p.cfg.Upper)
		runs := p.runs[:0]
		for _, r := range p.runs {
			if r.start != nil && rank(r.start) >= end {
				continue
			}
			if rank(r.end) > end {
				r.end = p.cfg.Upper
			}
			runs = append(runs, r)
		}
		p.runs = runs
	}
	p.bounds = nil
	return nil
}

// rankKeys returns the rank of each key in the source's key order, from 1;
// keys the source holds equal share a rank.
func (p *Paginator) rankKeys(ctx context.Context, q Querier, keys [][]string) ([]int, error) {
	names := make([]string, len(p.cfg.Key))
	for i, k := range p.cfg.Key {
		names[i] = k.Name
	}
	rows, err := q.Query(ctx, bfsql.Static(bfsql.KeyCollations), p.cfg.Table.Sanitize(), names)
	if err != nil {
		return nil, fmt.Errorf("read key collations of %s: %w", p.cfg.Table.Sanitize(), err)
	}
	collations := make(map[string]string)
	for rows.Next() {
		var column, schema, name string
		if err := rows.Scan(&column, &schema, &name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read key collations of %s: %w", p.cfg.Table.Sanitize(), err)
		}
		collations[column] = pgx.Identifier{schema, name}.Sanitize()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read key collations of %s: %w", p.cfg.Table.Sanitize(), err)
	}

	args := make([]any, len(p.cfg.Key))
	for i := range p.cfg.Key {
		part := make([]string, len(keys))
		for j, k := range keys {
			part[j] = k[i]
		}
		args[i] = part
	}
	rows, err = q.Query(ctx, p.sortSQL(collations), args...)
	if err != nil {
		return nil, fmt.Errorf("order the committed ranges of %s: %w", p.cfg.Table.Sanitize(), err)
	}
	ranks := make([]int, len(keys))
	var n int
	var ord, rank int64
	_, err = pgx.ForEachRow(rows, []any{&ord, &rank}, func() error {
		if ord < 1 || int(ord) > len(keys) {
			return fmt.Errorf("position %d of %d keys", ord, len(keys))
		}
		ranks[ord-1] = int(rank)
		n++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("order the committed ranges of %s: %w", p.cfg.Table.Sanitize(), err)
	}
	if n != len(keys) {
		return nil, fmt.Errorf("order the committed ranges of %s: got %d ranks for %d keys", p.cfg.Table.Sanitize(), n, len(keys))
	}
	return ranks, nil
}

// sortSQL ranks keys given as one text[] parameter per key column: each
// key's position in the input, counting from 1, and its dense rank.
func (p *Paginator) sortSQL(collations map[string]string) string {
	var params, aliases, order []string
	for i, k := range p.cfg.Key {
		alias := fmt.Sprintf("k%d", i+1)
		params = append(params, fmt.Sprintf("$%d::text[]", i+1))
		aliases = append(aliases, alias)
		o := fmt.Sprintf("u.%s::%s", alias, k.Type)
		if c, ok := collations[k.Name]; ok {
			o += " COLLATE " + c
		}
		order = append(order, o)
	}
	return fmt.Sprintf("SELECT u.ord, dense_rank() OVER (ORDER BY %s) FROM unnest(%s) WITH ORDINALITY AS u(%s, ord)",
		strings.Join(order, ", "), strings.Join(params, ", "), strings.Join(aliases, ", "))
}

// KeyString makes a map key of a key's text form; "" stands for the start
// of the table. Key text cannot contain NUL, so NUL separates parts safely.
func KeyString(key []string) string {
	if key == nil {
		return ""
	}
	return "k" + strings.Join(key, "\x00")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Statements are the queries a run sends to the source.
type Statements struct {
	FirstPage string
	NextPage  string
	// Step, for a job with Where, finds where each chunk's scan ends.
	Step string
}

// SQL returns the statements a run without committed chunks uses.
func (p *Paginator) SQL() Statements {
	bounded := b2i(p.cfg.Upper != nil)
	st := Statements{FirstPage: p.pages[0][bounded], NextPage: p.pages[1][bounded]}
	if p.cfg.Where != "" {
		st.Step = p.steps[1][bounded]
	}
	return st
}

// tableAlias qualifies key columns in WHERE and ORDER BY: an unqualified
// ORDER BY name would bind to the select list's key::text output column
// and sort keys as text.
const tableAlias = "src"

func (p *Paginator) keyList() string { return qualifiedKeys(p.cfg.Key, "") }

func qualifiedKeys(key []KeyColumn, suffix string) string {
	names := make([]string, len(key))
	for i, k := range key {
		names[i] = pgx.Identifier{tableAlias, k.Name}.Sanitize() + suffix
	}
	return strings.Join(names, ", ")
}

// keyParams renders ($n::text::type, …) starting at parameter first.
func (p *Paginator) keyParams(first int) string {
	parts := make([]string, len(p.cfg.Key))
	for i, k := range p.cfg.Key {
		parts[i] = fmt.Sprintf("$%d::text::%s", first+i, k.Type)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// pageSQL: $1 is the limit, then the lower bound (when afterKey), then the
// inclusive upper bound (when bounded).
func (p *Paginator) pageSQL(afterKey, bounded bool) string {
	var sel []string
	for _, k := range p.cfg.Key {
		sel = append(sel, pgx.Identifier{tableAlias, k.Name}.Sanitize()+"::text")
	}
	sel = append(sel, p.columnList()...)
	return fmt.Sprintf("SELECT %s FROM %s AS %s%s ORDER BY %s LIMIT $1",
		strings.Join(sel, ", "), p.cfg.Table.Sanitize(), tableAlias, p.keysetWhere(afterKey, bounded, p.cfg.Where), p.keyList())
}

// columnList is what the page queries select of Config.Columns.
func (p *Paginator) columnList() []string {
	sel := make([]string, len(p.cfg.Columns))
	for i, c := range p.cfg.Columns {
		sel[i] = pgx.Identifier{c.Name}.Sanitize()
		if c.AsText && c.StoredText {
			sel[i] += "::text"
		}
	}
	return sel
}

// stepSQL selects the key of the $1-th row after the lower bound (when
// afterKey), up to the upper bound (when bounded), of every row, matching
// Where or not: an index-only walk of at most $1 entries however rare the
// rows that match are.
func (p *Paginator) stepSQL(afterKey, bounded bool) string {
	var sel []string
	for _, k := range p.cfg.Key {
		sel = append(sel, pgx.Identifier{tableAlias, k.Name}.Sanitize()+"::text")
	}
	return fmt.Sprintf("SELECT %s FROM %s AS %s%s ORDER BY %s LIMIT 1 OFFSET $1 - 1",
		strings.Join(sel, ", "), p.cfg.Table.Sanitize(), tableAlias, p.keysetWhere(afterKey, bounded, ""), p.keyList())
}

// keysetWhere is the WHERE clause of the page and step queries: $2… are
// the lower bound's key parts (when afterKey), then the upper bound's.
func (p *Paginator) keysetWhere(afterKey, bounded bool, predicate string) string {
	keys := "(" + p.keyList() + ")"
	next := 2
	var conds []string
	if afterKey {
		conds = append(conds, keys+" > "+p.keyParams(next))
		next += len(p.cfg.Key)
	}
	if bounded {
		conds = append(conds, keys+" <= "+p.keyParams(next))
	}
	if predicate != "" {
		conds = append(conds, "("+predicate+")")
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// lastKeySQL returns the query for the last key of the table's rows that
// match where (all rows when where is empty).
func lastKeySQL(table pgx.Identifier, key []KeyColumn, where string) string {
	var sel []string
	for _, k := range key {
		sel = append(sel, pgx.Identifier{tableAlias, k.Name}.Sanitize()+"::text")
	}
	q := fmt.Sprintf("SELECT %s FROM %s AS %s", strings.Join(sel, ", "), table.Sanitize(), tableAlias)
	if where != "" {
		q += " WHERE (" + where + ")"
	}
	return q + " ORDER BY " + qualifiedKeys(key, " DESC") + " LIMIT 1"
}

// lastKeySearch bounds the search for the last key of the rows that match
// a where predicate.
const lastKeySearch = 5 * time.Second

// LastKey returns the text form of the last key of the table's rows that
// match where, the job's end, or an empty non-nil slice when none does.
//
// The last matching key is what a predicate that bounds the key (id <=
// 1000000) needs, or the job would step through the rest of the table to
// find nothing. But for a rare predicate no index serves, finding it is a
// backward scan as long as the table; when it takes longer than
// lastKeySearch, the table's last key bounds the same rows instead.
func LastKey(ctx context.Context, q Querier, table pgx.Identifier, key []KeyColumn, where string) ([]string, error) {
	return lastKeyWithin(ctx, q, table, key, where, lastKeySearch)
}

func lastKeyWithin(ctx context.Context, q Querier, table pgx.Identifier, key []KeyColumn, where string, search time.Duration) ([]string, error) {
	if where != "" {
		searchCtx, cancel := context.WithTimeout(ctx, search)
		last, err := lastKey(searchCtx, q, lastKeySQL(table, key, where), len(key))
		cancel()
		if err == nil || ctx.Err() != nil || retry.Classify(err) != retry.Timeout && !errors.Is(err, context.DeadlineExceeded) {
			if err != nil {
				return nil, fmt.Errorf("read last key of %s where %s: %w", table.Sanitize(), where, err)
			}
			return last, nil
		}
	}
	last, err := lastKey(ctx, q, lastKeySQL(table, key, ""), len(key))
	if err != nil {
		return nil, fmt.Errorf("read last key of %s: %w", table.Sanitize(), err)
	}
	return last, nil
}

func lastKey(ctx context.Context, q Querier, query string, keyParts int) ([]string, error) {
	rows, err := q.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	last := []string{}
	if rows.Next() {
		last = make([]string, keyParts)
		ptrs := make([]any, keyParts)
		for i := range last {
			ptrs[i] = &last[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
	}
	return last, rows.Err()
}

// Run reads chunks until the end of the table (or Upper) and sends them to
// out. It returns nil at the end, ctx.Err() when cancelled, or the read error.
// It does not close out.
//
// On resume it jumps over each committed run and reads the gaps between
// them, each gap bounded by the key where the next run starts. The bound is
// a condition of the page query, not a row that must be found: a row at a
// run's boundary may have been deleted since, and a gap's read must still
// stop there rather than run on into committed keys. A gap that begins
// with the rest of a split chunk reads that rest first, as that chunk.
//
// A step of a filtered job in which no row matches is sent as a chunk
// without rows, so that the walk through it can be recorded.
func (p *Paginator) Run(ctx context.Context, q Querier, out chan<- *chunk.Chunk) error {
	if p.cfg.Upper != nil && len(p.cfg.Upper) == 0 {
		return nil // the table was empty when the job began
	}
	if err := p.orderRuns(ctx, q); err != nil {
		return err
	}
	upper := KeyString(p.cfg.Upper)
	runs := p.runs
	var cursor []string
	for {
		if len(runs) > 0 && KeyString(runs[0].start) == KeyString(cursor) {
			cursor = runs[0].end
			runs = runs[1:]
			continue
		}
		if p.cfg.Upper != nil && KeyString(cursor) == upper {
			return nil
		}
		if p.cfg.Cut != nil && len(runs) == 0 && len(p.rest) == 0 {
			end, err := p.cfg.Cut(ctx, cursor, p.cfg.Upper)
			if err != nil {
				return err
			}
			if end != nil {
				p.cfg.Upper, upper = end, KeyString(end)
			}
		}
		var before []string // nil: read to the job's end
		if len(runs) > 0 {
			before = runs[0].start
		}
		var restSeq int64 // seqs count from 1
		if rest, ok := p.rest[KeyString(cursor)]; ok && (before == nil || p.ranks[KeyString(rest.last)] <= p.ranks[KeyString(before)]) {
			before, restSeq = rest.last, rest.seq
		}
		if err := p.cfg.Window.Enter(ctx); err != nil {
			return err
		}
		st, err := p.readWithRetry(ctx, q, cursor, before)
		if err != nil {
			p.cfg.Window.Leave()
			return err
		}
		// a copy, taken before the chunk goes out: a worker may write and
		// release it, and its keys go back to the store with it
		next := slices.Clone(st.next)
		c := st.chunk
		if c == nil && st.next != nil {
			c = &chunk.Chunk{After: cursor, Last: st.next} // a step without a matching row
		}
		if c == nil {
			p.cfg.Window.Leave()
		} else {
			p.cfg.Window.Hand(c)
			c.Seq = restSeq
			if c.Seq == 0 {
				c.Seq = p.nextSeq
				p.nextSeq++
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		switch {
		case next != nil:
			cursor = next
		case before != nil:
			cursor = before // the gap is read; the next run starts here
		default:
			return nil
		}
	}
}

// readWithRetry is read, retried as retrying says.
func (p *Paginator) readWithRetry(ctx context.Context, q Querier, cursor, before []string) (st step, err error) {
	err = p.retrying(ctx, func() error {
		began := time.Now()
		st, err = p.read(ctx, q, cursor, before)
		if err == nil && p.cfg.OnRead != nil {
			p.cfg.OnRead(time.Since(began))
		}
		return err
	})
	return st, err
}

// retrying runs op until it succeeds, retrying transient errors and
// timeouts (a restart of the server, a killed connection) with backoff;
// the pool reconnects.
func (p *Paginator) retrying(ctx context.Context, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		kind := retry.Classify(err)
		if kind != retry.Transient && kind != retry.Timeout || attempt > p.cfg.Retry.MaxRetries {
			if attempt > 1 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt)
			}
			return err
		}
		if p.cfg.OnRetry != nil {
			p.cfg.OnRetry(err, attempt)
		}
		if err := p.cfg.Retry.Wait(ctx, attempt); err != nil {
			return err
		}
	}
}

// step is what one read covered: chunk (nil when no row there matched)
// and the key to read on from, nil when the range is exhausted.
type step struct {
	chunk *chunk.Chunk
	next  []string
}

// read reads on from cursor, up to and including before (when given) or
// the job's end.
func (p *Paginator) read(ctx context.Context, q Querier, cursor, before []string) (step, error) {
	bound := p.cfg.Upper
	if before != nil {
		bound = before
	}
	if p.cfg.Where != "" {
		return p.readFiltered(ctx, q, cursor, bound)
	}
	n := p.pageSize()
	c, err := p.readRows(ctx, q, p.pages[b2i(cursor != nil)][b2i(bound != nil)], p.keysetArgs(n, cursor, bound), cursor, n)
	// a page shorter than it was asked for is the range's last
	if err != nil || c == nil || len(c.Rows) < n {
		return step{chunk: c}, err
	}
	return step{chunk: c, next: c.Last}, nil
}

// pageSize is the number of rows the next page asks for: the sizer's, or
// the fixed chunk size.
func (p *Paginator) pageSize() int {
	if p.cfg.Sizer != nil {
		return p.cfg.Sizer.Next()
	}
	return p.cfg.ChunkSize
}

// readFiltered reads a job with Where one step at a time: it finds the key
// chunk-size table rows ahead, then reads the rows up to it that match. A
// page query that looked for chunk-size matching rows would scan until it
// found them, and with a rare predicate that scan outlasts any statement
// timeout on every retry, a job stuck for good. The chunk covers its whole
// step, matching rows or not, so its last key is the step's end.
//
// The step and the page are two statements, two snapshots: rows inserted
// inside the step between them can fill the page before its last rows. A
// full page therefore ends its chunk at the last row it read, never at the
// step's end, so a chunk claims no key it did not read.
func (p *Paginator) readFiltered(ctx context.Context, q Querier, cursor, bound []string) (step, error) {
	n := p.pageSize() // one size for the step and its page
	end, err := p.stepEnd(ctx, q, n, cursor, bound)
	if err != nil {
		return step{}, err
	}
	stop := end
	if end == nil {
		stop = bound // fewer than a chunk's worth of rows left: read the rest
	}
	c, err := p.readRows(ctx, q, p.pages[b2i(cursor != nil)][b2i(stop != nil)], p.keysetArgs(n, cursor, stop), cursor, n)
	if err != nil {
		return step{}, err
	}
	if c != nil && len(c.Rows) == n {
		return step{chunk: c, next: c.Last}, nil
	}
	if c != nil && stop != nil {
		c.Last = stop
	}
	return step{chunk: c, next: end}, nil
}

// stepEnd returns the key n rows after cursor (up to bound), or nil when
// fewer rows are left.
func (p *Paginator) stepEnd(ctx context.Context, q Querier, n int, cursor, bound []string) ([]string, error) {
	rows, err := q.Query(ctx, p.steps[b2i(cursor != nil)][b2i(bound != nil)], p.keysetArgs(n, cursor, bound)...)
	if err != nil {
		return nil, fmt.Errorf("find the end of the chunk after key %v in %s: %w", cursor, p.cfg.Table.Sanitize(), err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	end := make([]string, len(p.cfg.Key))
	ptrs := make([]any, len(end))
	for i := range end {
		ptrs[i] = &end[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("find the end of the chunk after key %v in %s: %w", cursor, p.cfg.Table.Sanitize(), err)
	}
	return end, rows.Err()
}

// keysetArgs are a page or step query's arguments: n, then the lower
// bound's key parts (when cursor), then the upper bound's (when bound).
func (p *Paginator) keysetArgs(n int, cursor, bound []string) []any {
	args := make([]any, 0, 1+len(cursor)+len(bound))
	args = append(args, n)
	for _, k := range cursor {
		args = append(args, k)
	}
	for _, k := range bound {
		args = append(args, k)
	}
	return args
}

// readRows runs a page query of up to size rows; nil when it returned no
// row.
func (p *Paginator) readRows(ctx context.Context, q Querier, query string, args []any, cursor []string, size int) (*chunk.Chunk, error) {
	rows, err := q.Query(ctx, query, append([]any{p.formats}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read page of %s after key %v: %w", p.cfg.Table.Sanitize(), cursor, err)
	}
	defer rows.Close()
	store := p.store(size)
	c := chunk.InStorage(store)
	c.After = cursor
	defer func() {
		if c.Rows == nil { // an error, or no row: nobody will release it
			c.Release()
		}
	}()
	var key []string
	for first := true; rows.Next(); first = false {
		if first {
			if err := p.checkRawFormats(rows.FieldDescriptions()); err != nil {
				return nil, fmt.Errorf("read page of %s after key %v: %w", p.cfg.Table.Sanitize(), cursor, err)
			}
		}
		var vals []any
		vals, key = store.row()
		if err := p.values(rows, store, key, vals); err != nil {
			return nil, fmt.Errorf("decode row of %s after key %v: %w", p.cfg.Table.Sanitize(), cursor, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read page of %s after key %v: %w", p.cfg.Table.Sanitize(), cursor, err)
	}
	if len(store.rows) == 0 {
		return nil, nil
	}
	c.Rows, c.Keys = store.rows, store.keyRows
	if p.cfg.CopyOrder != nil {
		c.Tuples = store.tuples
	}
	if p.cfg.Sizer != nil {
		p.cfg.Sizer.observePage(len(c.Rows), store.size())
	}
	c.First, c.Last = c.Keys[0], key
	return c, nil
}

// values fills a page row's key and values: the text of those asked for as
// text (the key, the columns read AsText), the bytes of those read Raw,
// the others decoded as pgx.Rows.Values decodes them. Values is not used
// because it would decode every column. A connection that uses the simple
// protocol gets every column as text, which decodes as well; the plan
// reads no column Raw over one.
func (p *Paginator) values(rows pgx.Rows, store *rowStore, key []string, vals []any) error {
	raw := rows.RawValues()
	fields := rows.FieldDescriptions()
	nk := len(key)
	for i := range key {
		key[i] = string(raw[i])
		store.keyText += int64(len(raw[i]))
	}
	if p.cfg.CopyOrder != nil {
		p.tuple(raw[nk:], store)
		return nil
	}
	for i, b := range raw[nk:] {
		v := &vals[i]
		switch fd := fields[nk+i]; {
		case b == nil:
			*v = nil
		case p.cfg.Columns[i].Raw: // in binary form: checkRawFormats
			*v = store.raw(b)
		case p.formats[nk+i] == pgx.TextFormatCode:
			*v = string(b)
		default:
			m := rows.Conn().TypeMap()
			t, ok := m.TypeForOID(fd.DataTypeOID)
			if !ok {
				return fmt.Errorf("column %q: no decoder for type OID %d", fd.Name, fd.DataTypeOID)
			}
			dv, err := t.Codec.DecodeValue(m, fd.DataTypeOID, fd.Format, b)
			if err != nil {
				return fmt.Errorf("column %q: %w", fd.Name, err)
			}
			*v = dv
		}
	}
	return nil
}

// checkRawFormats checks, once a page, that the columns read raw (every
// column of a straight copy) came in the binary form they were asked in: a
// connection in a mode that sends text would otherwise have its text taken
// for binary.
func (p *Paginator) checkRawFormats(fields []pgconn.FieldDescription) error {
	nk := len(p.cfg.Key)
	for i, fd := range fields[nk:] {
		raw := p.cfg.CopyOrder != nil || i < len(p.cfg.Columns) && p.cfg.Columns[i].Raw
		if raw && fd.Format != pgx.BinaryFormatCode {
			return fmt.Errorf("column %q: came in text form, not the binary form it was asked in", fd.Name)
		}
	}
	return nil
}

// tuple appends a straight copy's row to store as a COPY tuple: the field
// count, then each field's length (-1 for NULL) and bytes, in CopyOrder.
func (p *Paginator) tuple(raw [][]byte, store *rowStore) {
	size := 2
	for _, i := range p.cfg.CopyOrder {
		size += 4 + len(raw[i])
	}
	t := store.bytes.take(size)
	binary.BigEndian.PutUint16(t, uint16(len(p.cfg.CopyOrder)))
	at := 2
	for _, i := range p.cfg.CopyOrder {
		if raw[i] == nil {
			binary.BigEndian.PutUint32(t[at:], 0xffffffff)
			at += 4
			continue
		}
		binary.BigEndian.PutUint32(t[at:], uint32(len(raw[i])))
		at += 4 + copy(t[at+4:], raw[i])
	}
	store.tuples = append(store.tuples, t)
}

// byKeysSQL selects the rows whose keys are given as one text[] parameter
// per key column ($1…), for retrying recorded failed rows.
func (p *Paginator) byKeysSQL() string {
	var sel, casts, params, aliases []string
	for i, k := range p.cfg.Key {
		sel = append(sel, pgx.Identifier{tableAlias, k.Name}.Sanitize()+"::text")
		alias := fmt.Sprintf("k%d", i+1)
		aliases = append(aliases, alias)
		casts = append(casts, fmt.Sprintf("%s::%s", alias, k.Type))
		params = append(params, fmt.Sprintf("$%d::text[]", i+1))
	}
	sel = append(sel, p.columnList()...)
	q := fmt.Sprintf("SELECT %s FROM %s AS %s WHERE (%s) IN (SELECT %s FROM unnest(%s) AS u(%s))",
		strings.Join(sel, ", "), p.cfg.Table.Sanitize(), tableAlias, p.keyList(),
		strings.Join(casts, ", "), strings.Join(params, ", "), strings.Join(aliases, ", "))
	if p.cfg.Where != "" {
		q += " AND (" + p.cfg.Where + ")"
	}
	return q + " ORDER BY " + p.keyList()
}

// ReadKeys reads the rows with the given keys (rows since deleted, or no
// longer matching Where, are absent from the result).
func (p *Paginator) ReadKeys(ctx context.Context, q Querier, keys [][]string) (*chunk.Chunk, error) {
	nk := len(p.cfg.Key)
	args := make([]any, nk)
	for i := range nk {
		part := make([]string, len(keys))
		for j, k := range keys {
			part[j] = k[i]
		}
		args[i] = part
	}
	c, err := p.readRows(ctx, q, p.byKeysSQL(), args, nil, len(keys))
	if err != nil {
		return nil, err
	}
	if c == nil {
		c = &chunk.Chunk{}
	}
	return c, nil
}

// firstSteps bounds how far First looks for matching rows: a rare Where
// may match none in the first steps, and the trial it serves is a check,
// not a run.
const firstSteps = 100

// First reads the table's first chunk that has rows, looking no further
// than firstSteps chunks' worth of the table, for trying a transform on
// real rows before any write. The chunk is empty when none was found.
func (p *Paginator) First(ctx context.Context, q Querier) (*chunk.Chunk, error) {
	var cursor []string
	for range firstSteps {
		st, err := p.readWithRetry(ctx, q, cursor, nil)
		if err != nil {
			return nil, err
		}
		if st.chunk != nil {
			return st.chunk, nil
		}
		if st.next == nil {
			break
		}
		cursor = st.next
	}
	return &chunk.Chunk{}, nil
}

// digestSQL counts the rows of one key range and digests the text of the
// given columns in key order: $1… are the range's lower key (when
// afterKey), then its upper key.
func (p *Paginator) digestSQL(columns []string, afterKey bool) string {
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = pgx.Identifier{tableAlias, c}.Sanitize()
	}
	keys := "(" + p.keyList() + ")"
	next := 1
	var conds []string
	if afterKey {
		conds = append(conds, keys+" > "+p.keyParams(next))
		next += len(p.cfg.Key)
	}
	conds = append(conds, keys+" <= "+p.keyParams(next))
	if p.cfg.Where != "" {
		conds = append(conds, "("+p.cfg.Where+")")
	}
	return fmt.Sprintf("SELECT count(*), coalesce(md5(string_agg(ROW(%s)::text, E'\\n' ORDER BY %s)), '') FROM %s AS %s WHERE %s",
		strings.Join(cols, ", "), p.keyList(), p.cfg.Table.Sanitize(), tableAlias, strings.Join(conds, " AND "))
}

// Digest returns the row count and an md5 digest of columns over the key
// range (after, last] (after nil: from the start of the table). Two tables
// with equal digests over a range hold the same rows with the same values
// there, as PostgreSQL prints them.
func (p *Paginator) Digest(ctx context.Context, q Querier, columns []string, after, last []string) (int64, string, error) {
	var args []any
	for _, k := range after {
		args = append(args, k)
	}
	for _, k := range last {
		args = append(args, k)
	}
	var n int64
	var sum string
	err := p.retrying(ctx, func() error {
		rows, err := q.Query(ctx, p.digestSQL(columns, after != nil), args...)
		if err != nil {
			return err
		}
		_, err = pgx.ForEachRow(rows, []any{&n, &sum}, func() error { return nil })
		return err
	})
	if err != nil {
		return 0, "", fmt.Errorf("digest %s over (%v, %v]: %w", p.cfg.Table.Sanitize(), after, last, err)
	}
	return n, sum, nil
}
