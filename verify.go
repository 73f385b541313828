package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/paginator"
)

// DefaultVerifyChunks is how many of the job's chunks one comparison
// covers.
const DefaultVerifyChunks = 10

// VerifyReport is what Verify found. Its JSON form is stable
// (`backfill verify --json`).
type VerifyReport struct {
	Job     string   `json:"job"`
	Columns []string `json:"columns"` // the columns compared
	// Ranges is the number of key ranges compared; RowsSource and RowsDest
	// the rows in them on each side.
	Ranges     int              `json:"ranges"`
	RowsSource int64            `json:"rows_source"`
	RowsDest   int64            `json:"rows_dest"`
	Mismatches []VerifyMismatch `json:"mismatches"` // the first 100
	// MismatchedRanges counts every range that differs.
	MismatchedRanges int `json:"mismatched_ranges"`
	// FailedRows are the job's recorded failed rows, which explain
	// mismatches of their ranges.
	FailedRows int64 `json:"failed_rows"`
	// Unchecked is the number of committed chunks beyond a gap (a job
	// still unfinished), which were not compared.
	Unchecked int `json:"unchecked_chunks"`
}

// VerifyMismatch is one key range whose rows differ.
type VerifyMismatch struct {
	After      []string `json:"after"` // exclusive; null from the table's start
	Last       []string `json:"last"`  // inclusive
	RowsSource int64    `json:"rows_source"`
	RowsDest   int64    `json:"rows_dest"`
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// ChunksPerRange is how many chunks one comparison covers; 0 means
	// DefaultVerifyChunks.
	ChunksPerRange int
}

// Verify compares a copy job's destination with its source, range by range
// over the job's committed chunks: the row count and an md5 digest of every
// compared column's text, computed by each database. It reads only. A job
// that computes its columns (expressions, a Go transform) is refused: its
// destination is not meant to equal its source.
func Verify(ctx context.Context, j Job, opts VerifyOptions) (VerifyReport, error) {
	j.Mode = ModeResume
	j = j.withDefaults()
	rep := VerifyReport{Job: j.Name, Mismatches: []VerifyMismatch{}}
	setDefault(&opts.ChunksPerRange, DefaultVerifyChunks)
	conn, store, err := openState(ctx, j.DestURL, j.StateSchema, j.Name)
	if err != nil {
		return rep, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	job, err := store.Job(ctx, conn, j.Name)
	if err != nil {
		return rep, err
	}
	var spec Spec
	if err := json.Unmarshal(job.Spec, &spec); err != nil {
		return rep, fmt.Errorf("decode stored spec of job %q: %w", j.Name, err)
	}
	if len(spec.Columns) > 0 || spec.SkipIf != "" {
		return rep, refused(fmt.Errorf("job %q computes its destination columns (columns or skip_if in its spec): its destination is not meant to equal its source, so verify cannot compare them", j.Name))
	}
	src, err := openPool(ctx, j.SourceURL, j, "source", 1, true)
	if err != nil {
		return rep, scrub(err, j.SourceURL, j.DestURL)
	}
	defer src.Close()

	srcPag, dstPag, cols, err := verifyPlan(ctx, src, conn, spec)
	if err != nil {
		return rep, err
	}
	rep.Columns = cols
	counters, err := store.Counters(ctx, conn, j.Name)
	if err != nil {
		return rep, err
	}
	rep.FailedRows = counters.RowsFailed
	committed, _, err := store.Committed(ctx, conn, j.Name)
	if err != nil {
		return rep, err
	}
	// the chunks tile the key space from the start: follow them in order
	next := make(map[string][]string, len(committed))
	for _, c := range committed {
		next[paginator.KeyString(c.After)] = c.Last
	}
	var after []string
	for checked := 0; ; {
		var last []string
		n := 0
		for ; n < opts.ChunksPerRange; n++ {
			l, ok := next[paginator.KeyString(firstGiven(last, after))]
			if !ok {
				break
			}
			last = l
		}
		if n == 0 {
			rep.Unchecked = len(committed) - checked
			break
		}
		checked += n
		sn, ssum, err := srcPag.Digest(ctx, src, cols, after, last)
		if err != nil {
			return rep, err
		}
		dn, dsum, err := dstPag.Digest(ctx, conn, cols, after, last)
		if err != nil {
			return rep, err
		}
		rep.Ranges++
		rep.RowsSource += sn
		rep.RowsDest += dn
		if sn != dn || ssum != dsum {
			rep.MismatchedRanges++
			if len(rep.Mismatches) < 100 {
				rep.Mismatches = append(rep.Mismatches, VerifyMismatch{After: after, Last: last, RowsSource: sn, RowsDest: dn})
			}
		}
		after = last
	}
	return rep, nil
}

// verifyPlan finds the columns both tables have (those an identity copy
// writes) and builds a paginator for each side to digest key ranges.
func verifyPlan(ctx context.Context, src, dst catalog.Querier, spec Spec) (*paginator.Paginator, *paginator.Paginator, []string, error) {
	from, err := catalog.ParseTableName(spec.From)
	if err != nil {
		return nil, nil, nil, err
	}
	to, err := catalog.ParseTableName(spec.To)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := catalog.Load(ctx, src, from)
	if err != nil {
		return nil, nil, nil, refused(fmt.Errorf("source %w", err))
	}
	d, err := catalog.Load(ctx, dst, to)
	if err != nil {
		return nil, nil, nil, refused(fmt.Errorf("destination %w", err))
	}
	var cols []string
	for _, c := range d.Columns {
		if !c.Generated && s.Column(c.Name) != nil {
			cols = append(cols, c.Name)
		}
	}
	var srcKey, dstKey []paginator.KeyColumn
	for _, k := range spec.Key {
		sc, dc := s.Column(k), d.Column(k)
		if sc == nil || dc == nil || !slices.Contains(cols, k) {
			return nil, nil, nil, refused(fmt.Errorf("key column %q is not in both tables: verify compares ranges of the source's key in each", k))
		}
		srcKey = append(srcKey, paginator.KeyColumn{Name: k, Type: sc.CastType})
		dstKey = append(dstKey, paginator.KeyColumn{Name: k, Type: dc.CastType})
	}
	srcPag, err := paginator.New(paginator.Config{Table: s.Name.Identifier(), Key: srcKey, ChunkSize: 1, Where: spec.Where})
	if err != nil {
		return nil, nil, nil, err
	}
	dstPag, err := paginator.New(paginator.Config{Table: d.Name.Identifier(), Key: dstKey, ChunkSize: 1})
	if err != nil {
		return nil, nil, nil, err
	}
	return srcPag, dstPag, cols, nil
}
