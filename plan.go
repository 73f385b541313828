package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/retry"
	bfsql "github.com/backfill/backfill/sql"
	"github.com/backfill/backfill/transform"
	"github.com/backfill/backfill/worker"
)

// Spec is what a job copies: the part of a Job that must not change between
// runs. It is stored in the job's row, without any password.
type Spec struct {
	Source string   `json:"source"` // connection strings, password removed
	Dest   string   `json:"dest"`
	From   string   `json:"from"` // resolved, quoted: "public"."users"
	To     string   `json:"to"`
	Key    []string `json:"key"`
	Where  string   `json:"where,omitempty"`
	// ChunkSize is the fixed rows per chunk; 0 sizes chunks by time while
	// the job has no rate cap. Jobs stored before sizing by time have the
	// size they ran with (1000 by default), and keep it.
	ChunkSize int  `json:"chunk_size"`
	Follow    bool `json:"follow,omitempty"`
	// Partitions is how many key ranges the job was split into at start;
	// 0 (jobs stored before partitions) and 1 are one runner's.
	Partitions int `json:"partitions,omitempty"`
	// Columns and SkipIf are the expression transform; a Go transform
	// is not recorded (its code is not data), so changing one is on
	// the embedding program.
	Columns []transform.Mapping `json:"columns,omitempty"`
	SkipIf  string              `json:"skip_if,omitempty"`
}

// chunkSizeText names a spec's chunk size.
func chunkSizeText(n int) string {
	if n == 0 {
		return "sized by time"
	}
	return fmt.Sprint(n)
}

func mappingsText(ms []transform.Mapping) string {
	if len(ms) == 0 {
		return "(same-named columns)"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s: %s", m.Column, m.Expr)
	}
	return "{" + strings.Join(parts, "; ") + "}"
}

// plan is a validated job: everything the paginator and workers need.
type plan struct {
	spec          Spec
	source        *catalog.Table
	dest          *catalog.Table
	key           []paginator.KeyColumn
	read          []paginator.ReadColumn
	sourceColumns []worker.SourceColumn
	write         []worker.Column
	transformer   transform.Transformer
	overriding    bool
	// direct: a chunk whose key range the destination holds no row in, or
	// few, may be copied straight into it (see worker.Config.DirectCopy),
	// probed by rangeKey when not empty. writePath says which path, and
	// why, for the log and the dry run.
	direct   bool
	rangeKey []worker.KeyPart
	// leaveOutPresent lets a direct COPY leave out the rows whose keys the
	// range probe found (worker.Config.LeaveOutPresent)
	leaveOutPresent bool
	writePath       string
	// straight, for a straight copy (each written value a raw source value,
	// no row filtered), gives each written column's source column: the
	// paginator then reads rows as COPY tuples and nothing transforms them.
	straight []int
}

// goValued reports whether values of the type are Go values to the
// transform (see its documentation) and, when an expression computed them,
// go to the destination in the binary form pgx encodes them in. Every other
// computed value travels as its text form, which PostgreSQL's own input
// function reads: json and jsonb, whose decoding would lose their exact
// text; arrays; and the types the driver has no Go value for (macaddr8,
// ranges, multiranges, enums, domains…). The catalog's type OID decides,
// never the value at hand. (Values only moved travel raw or as text: see
// rawColumns.)
func goValued(oid uint32) bool {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID,
		pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.BoolOID,
		pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.DateOID, pgtype.UUIDOID, pgtype.ByteaOID:
		return true
	}
	return false
}

// firstUserOID is PostgreSQL's FirstNormalObjectId: types below it are
// built in, the same in every database.
const firstUserOID = 16384

// passthroughCast is the type the text form of source column s is cast to
// on its way into destination column d. The text is written by s's type, so
// when both are built-in types and differ, it is read as s's type and d's
// assignment converts it exactly as INSERT … SELECT would (numeric to
// integer rounds, varchar to char(n) pads, and a value that does not fit
// fails). A type of the user's (an enum, a composite, an extension's type)
// has no conversion but through its text: d's type reads it.
func passthroughCast(s, d catalog.Column) string {
	if s.CastOID != d.CastOID && s.CastOID < firstUserOID && d.CastOID < firstUserOID {
		return s.CastType
	}
	return d.CastType
}

// buildPlan validates the job against both catalogs before anything is
// written. Problems that can be found together are reported together.
//
// startedAt is the job's start, which now() returns in expressions: fixed,
// so a chunk redone after a crash computes the same values.
func buildPlan(ctx context.Context, src, dst catalog.Querier, j Job, startedAt time.Time) (*plan, error) {
	var errs []error
	from, err := catalog.ParseTableName(j.From)
	if err != nil {
		errs = append(errs, fmt.Errorf("source %w", err))
	}
	to, err := catalog.ParseTableName(j.To)
	if err != nil {
		errs = append(errs, fmt.Errorf("destination %w", err))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidJob, errors.Join(errs...))
	}
	p := &plan{}
	if p.source, err = catalog.Load(ctx, src, from); err != nil {
		errs = append(errs, fmt.Errorf("source %w", err))
	}
	if p.dest, err = catalog.Load(ctx, dst, to); err != nil {
		errs = append(errs, fmt.Errorf("destination %w", err))
	}
	if len(errs) > 0 {
		return nil, refused(errs...)
	}
	if same, err := sameTable(ctx, src, dst, p.source, p.dest); err != nil {
		return nil, err
	} else if same {
		return nil, refused(fmt.Errorf("source and destination are the same table %s", p.source.Name))
	}
	if !p.dest.IsTable() {
		errs = append(errs, fmt.Errorf("destination %s is not a table (relkind %q): rows can only be inserted into a table", p.dest.Name, p.dest.Kind))
	}

	key := j.Key
	if len(key) == 0 {
		key = p.source.PrimaryKey()
	}
	if err := p.source.CheckKey(key); err != nil {
		errs = append(errs, err)
	} else {
		for _, k := range key {
			p.key = append(p.key, paginator.KeyColumn{Name: k, Type: p.source.Column(k).CastType})
		}
	}
	if err := p.dest.CheckConflictTarget(); err != nil {
		errs = append(errs, err)
	}

	var writable []catalog.Column
	for _, c := range p.dest.Columns {
		if !c.Generated {
			writable = append(writable, c)
		}
	}
	sourceCols := p.source.Columns
	expressions := len(j.Columns) > 0 || j.SkipIf != ""
	if j.Transform == nil && !expressions {
		// identity: read only the columns that will be written
		sourceCols = nil
		for _, c := range p.source.Columns {
			if slices.ContainsFunc(writable, func(d catalog.Column) bool { return d.Name == c.Name }) {
				sourceCols = append(sourceCols, c)
			}
		}
	}
	srcT := columnsOf(sourceCols)
	dstT := columnsOf(writable)
	switch {
	case j.Transform != nil:
		p.transformer, err = j.Transform(srcT, dstT)
	case expressions:
		p.transformer, sourceCols, err = compileReadingOnlyNeeded(j, sourceCols, dstT, startedAt)
	default:
		p.transformer, err = transform.Identity(srcT, dstT)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("transform from %s to %s: %w", p.source.Name, p.dest.Name, err))
	}
	if len(errs) > 0 {
		return nil, refused(errs...)
	}

	written := p.transformer.Columns()
	passes, decoded, err := passthrough(p.transformer, sourceCols)
	if err != nil {
		return nil, err
	}
	raw := rawColumns(sourceCols, passes, decoded, written, p.dest, sendsBinary(src))
	for i, name := range written {
		c := p.dest.Column(name)
		if c == nil || c.Generated {
			errs = append(errs, fmt.Errorf("destination column %q does not exist in %s or is generated", name, p.dest.Name))
			continue
		}
		w := worker.Column{
			Name: c.Name, Type: c.Type, Cast: c.CastType, CastOID: c.CastOID, OID: c.OID,
			AsText: !goValued(c.OID),
			JSON:   c.OID == pgtype.JSONOID || c.OID == pgtype.JSONBOID,
		}
		switch s := passes[i]; {
		case s >= 0 && raw[s]:
			w.AsText = false // the source's bytes, of the same cast type
		case s >= 0 && !decoded[s]:
			w.AsText, w.Cast = true, passthroughCast(sourceCols[s], *c)
		}
		p.write = append(p.write, w)
		p.overriding = p.overriding || c.IdentityAlways
	}
	for _, c := range writable {
		if c.NotNull && !c.HasDefault && !slices.Contains(written, c.Name) {
			errs = append(errs, fmt.Errorf("destination column %q of %s is NOT NULL without a default, and nothing is written to it: add a source column of that name, a mapping, or a default", c.Name, p.dest.Name))
		}
	}
	for i, c := range sourceCols {
		p.read = append(p.read, paginator.ReadColumn{Name: c.Name, Raw: raw[i], AsText: !raw[i] && (!decoded[i] || !goValued(c.OID)), StoredText: c.CastOID == pgtype.XMLOID})
		p.sourceColumns = append(p.sourceColumns, worker.SourceColumn{Name: c.Name, JSON: c.OID == pgtype.JSONOID || c.OID == pgtype.JSONBOID, OID: c.CastOID})
	}
	if len(errs) > 0 {
		return nil, refused(errs...)
	}
	p.chooseWritePath(sourceCols, passes, raw)
	p.straight = straightCopy(j, passes, raw)
	if err := p.checkStatements(ctx, src, dst, j); err != nil {
		return nil, err
	}
	p.spec = j.storedSpec()
	p.spec.Source, p.spec.Dest = RedactURL(j.SourceURL), RedactURL(j.DestURL)
	p.spec.From, p.spec.To, p.spec.Key = p.source.Name.String(), p.dest.Name.String(), key
	return p, nil
}

// passthrough returns, for each column t writes, the index of the source
// column it copies untouched (-1 where t computes the value), and which
// source columns t must have decoded: the others are read as their text
// form and written through it, never decoded and encoded again. A
// transformer that does not say (a Go transform) has every column decoded.
func passthrough(t transform.Transformer, source []catalog.Column) (passes []int, decoded []bool, err error) {
	passes = make([]int, len(t.Columns()))
	decoded = make([]bool, len(source))
	pt, ok := t.(transform.Passthrough)
	if !ok {
		for i := range passes {
			passes[i] = -1
		}
		for i := range decoded {
			decoded[i] = true
		}
		return passes, decoded, nil
	}
	passes = pt.Passes()
	if len(passes) != len(t.Columns()) {
		return nil, nil, fmt.Errorf("transform passes %d columns through and writes %d", len(passes), len(t.Columns()))
	}
	for _, name := range pt.Decodes() {
		i := slices.IndexFunc(source, func(c catalog.Column) bool { return c.Name == name })
		if i < 0 {
			return nil, nil, fmt.Errorf("transform decodes source column %q, which it was not given", name)
		}
		decoded[i] = true
	}
	return passes, decoded, nil
}

// compileReadingOnlyNeeded compiles the job's expressions, then compiles
// them again against just the source columns they read, which it returns:
// those are all the paginator needs to select.
func compileReadingOnlyNeeded(j Job, source []catalog.Column, dest []transform.Column, startedAt time.Time) (transform.Transformer, []catalog.Column, error) {
	compile := func(source []catalog.Column) (transform.Transformer, error) {
		return transform.Compile(transform.Spec{Columns: j.Columns, SkipIf: j.SkipIf}, columnsOf(source), dest,
			transform.Options{Now: startedAt})
	}
	t, err := compile(source)
	if err != nil {
		return nil, nil, err
	}
	partial, ok := t.(transform.PartialReader)
	if !ok {
		return t, source, nil
	}
	reads := partial.Reads()
	if len(reads) == len(source) {
		return t, source, nil
	}
	var needed []catalog.Column
	for _, c := range source {
		if slices.Contains(reads, c.Name) {
			needed = append(needed, c)
		}
	}
	t, err = compile(needed)
	return t, needed, err
}

func columnsOf(cols []catalog.Column) []transform.Column {
	out := make([]transform.Column, len(cols))
	for i, c := range cols {
		out[i] = c.Column
	}
	return out
}

// sameTable reports whether both names resolve to one table in one
// database, which a backfill must never read and write at once.
func sameTable(ctx context.Context, src, dst catalog.Querier, s, d *catalog.Table) (bool, error) {
	if s.OID != d.OID {
		return false, nil
	}
	q := bfsql.Static(bfsql.ServerIdentity)
	var a, b [4]string
	var pa, pb int
	if err := src.QueryRow(ctx, q).Scan(&a[0], &a[1], &pa, &a[3]); err != nil {
		return false, fmt.Errorf("identify source database: %w", err)
	}
	if err := dst.QueryRow(ctx, q).Scan(&b[0], &b[1], &pb, &b[3]); err != nil {
		return false, fmt.Errorf("identify destination database: %w", err)
	}
	return a == b && pa == pb, nil
}

func marshalSpec(s Spec) (json.RawMessage, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode job spec: %w", err)
	}
	return b, nil
}

// storedSpec decodes the spec a job's row keeps, as marshalSpec wrote it.
func storedSpec(j *checkpoint.Job) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(j.Spec, &s); err != nil {
		return s, fmt.Errorf("decode stored spec of job %q: %w", j.Name, err)
	}
	return s, nil
}

// trial applies the transform to the source's first chunk before anything
// is written: a mistake that fails every row (a type the catalog check
// could not see) is refused now, with an example key, instead of after
// millions of failed rows. Rows that fail alone are only reported.
func (p *plan) trial(ctx context.Context, src paginator.Querier, j Job, log zerolog.Logger) error {
	read := p.reading(j)
	read.CopyOrder = nil // the transform reads the rows' values, not COPY tuples
	pag, err := paginator.New(read)
	if err != nil {
		return err
	}
	c, err := pag.First(ctx, src)
	if err != nil {
		return fmt.Errorf("read the first chunk to try the transform: %w", err)
	}
	dst := make([]any, len(p.transformer.Columns()))
	failures := map[string]int{}
	var first error
	var firstKey []string
	for i, row := range c.Rows {
		if err := tryApply(p.transformer, row, dst); err != nil {
			var re *transform.RowError
			col := ""
			if errors.As(err, &re) {
				col = re.Column
			}
			failures[col]++
			if first == nil {
				first, firstKey = err, c.Keys[i]
			}
		}
	}
	if first == nil {
		return nil
	}
	for col, n := range failures {
		if n == len(c.Rows) {
			return refused(fmt.Errorf("every row of the first chunk (%d rows) fails to transform: %w (example key %v); fix the mapping of column %q", n, first, firstKey, col))
		}
	}
	log.Warn().Err(first).Strs("example_key", firstKey).Int("rows", len(c.Rows)).
		Msg("some rows of the first chunk fail to transform; they will be recorded as failed rows")
	return nil
}

// tryApply applies t to one row, turning a panic into an error: in the
// trial, a transform that panics on every row is refused before any write.
func tryApply(t transform.Transformer, row, dst []any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("transform panicked: %v", r)
		}
	}()
	_, err = t.Apply(row, dst)
	return err
}

// checkStatements has each database plan, without running, the statements
// the job will send it: a page of the source and a chunk's insert into the
// destination. What the catalog checks cannot see is refused here, before
// the job's row exists, naming the table: a destination column with no
// assignment cast from what is written to it (text into integer, 42804), a
// key type without the comparison operators keyset paging needs (hstore's
// are #<=# and so on, 42883), a where predicate that does not compile.
func (p *plan) checkStatements(ctx context.Context, src, dst catalog.Querier, j Job) error {
	read := p.reading(j)
	read.Upper = make([]string, len(p.key))
	pag, err := paginator.New(read)
	if err != nil {
		return err
	}
	page := pag.SQL().NextPage // after a key and up to one: every comparison
	if err := explain(ctx, src, page, 1+2*len(p.key)); err != nil {
		names := make([]string, len(p.key))
		for i, k := range p.key {
			names[i] = k.Name
		}
		return refused(fmt.Errorf("source %s cannot be read in key order (%s): %w", p.source.Name, strings.Join(names, ", "), err))
	}
	var role, database string
	var mayStage bool
	err = dst.QueryRow(ctx, bfsql.Static(bfsql.CatalogMayCreateTemp)).Scan(&role, &database, &mayStage)
	if err != nil {
		return fmt.Errorf("read the destination role's privileges: %w", err)
	}
	if !mayStage {
		return refused(fmt.Errorf("destination role %s may not create temporary tables in database %s, and each worker stages its chunks in one: "+
			"GRANT TEMPORARY ON DATABASE %s TO %s", pgx.Identifier{role}.Sanitize(), pgx.Identifier{database}.Sanitize(),
			pgx.Identifier{database}.Sanitize(), pgx.Identifier{role}.Sanitize()))
	}
	if p.rangeKey != nil {
		// the probe needs SELECT on the key, which writing does not
		probe := worker.RangeProbeSQL(p.dest.Name.Identifier(), p.rangeKey)[1]
		if err := explain(ctx, dst, probe, 2*len(p.rangeKey)+1); err != nil {
			p.rangeKey = nil
			p.writePath = directPath(fmt.Sprintf("the key ranges cannot be probed (%v), so each chunk tries the COPY", err))
		}
	}
	insert := worker.CheckSQL(p.dest.Name.Identifier(), p.write, p.overriding)
	if err := explain(ctx, dst, insert, 0); err != nil {
		return refused(fmt.Errorf("destination %s cannot take the rows the job writes: %w", p.dest.Name, err))
	}
	return nil
}

// explain plans statement with params NULL parameters, running nothing.
func explain(ctx context.Context, q catalog.Querier, statement string, params int) error {
	var line string
	err := q.QueryRow(ctx, "EXPLAIN "+statement, make([]any, params)...).Scan(&line)
	var pgErr *pgconn.PgError
	if kind := retry.Classify(err); errors.As(err, &pgErr) && kind != retry.Transient && kind != retry.Timeout {
		return err
	}
	return nil // a lost connection or a timeout here is the run's to retry
}
