package backfill

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
)

// DefaultVerifyChunks is how many of the job's chunks one comparison
// covers.
const DefaultVerifyChunks = 10

// maxReportedRanges bounds each list of ranges in a VerifyReport.
const maxReportedRanges = 100

// What verify concluded (VerifyReport.Result).
const (
	// VerifyIdentical: every row of the job's range is in a committed
	// range, and every committed range holds the same rows with the same
	// values on both sides.
	VerifyIdentical = "identical"
	// VerifyDiffers: a committed range differs, or the job is done and
	// rows of its range were never copied.
	VerifyDiffers = "differs"
	// VerifyUnfinished: the job is not done and rows of its range are not
	// yet copied; the ranges copied so far are identical.
	VerifyUnfinished = "unfinished"
)

// VerifyReport is what Verify found. Its JSON form is stable
// (`backfill verify --json`).
type VerifyReport struct {
	Job    string `json:"job"`
	State  string `json:"state"`  // the job's state when verify read it
	Result string `json:"result"` // VerifyIdentical, VerifyDiffers or VerifyUnfinished
	// End is the inclusive last key of the job's range: the end recorded
	// when it began, or for a --follow job the source's last key now;
	// empty when the source was empty when the job began.
	End     []string `json:"end"`
	Columns []string `json:"columns"` // the columns compared
	// Ranges is the number of committed key ranges compared; RowsSource
	// and RowsDest the rows of the whole range of the job on each side,
	// committed or not (in the source, those matching the job's where).
	Ranges     int           `json:"ranges"`
	RowsSource int64         `json:"rows_source"`
	RowsDest   int64         `json:"rows_dest"`
	Mismatches []VerifyRange `json:"mismatches"` // the first 100
	// MismatchedRanges counts every committed range that differs.
	MismatchedRanges int `json:"mismatched_ranges"`
	// Uncovered are the key ranges of the job that no committed chunk
	// covers and that hold rows (the first 100): rows not yet copied.
	Uncovered       []VerifyRange `json:"uncovered"`
	UncoveredRanges int           `json:"uncovered_ranges"`
	RowsNotCopied   int64         `json:"rows_not_copied"` // source rows in the uncovered ranges
	FailedRows      int64         `json:"failed_rows"`     // the job's recorded failed rows, which explain mismatches of their ranges
}

// VerifyRange is a key range (After, Last] and its rows on each side.
type VerifyRange struct {
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

// Verify compares a copy job's destination with its source over the job's
// whole key range, from the start of the table to the job's end. Each
// committed range is compared by row count and an md5 digest of every
// compared column's text, computed by each database under the same pinned
// session settings. The rest of the range, which no committed chunk
// covers, is counted on both sides: its source rows (those matching the
// job's where) are not copied yet. It reads only. A job that computes its
// columns (expressions, a Go transform) is refused: its destination is not
// meant to equal its source.
func Verify(ctx context.Context, t Target, opts VerifyOptions) (VerifyReport, error) {
	t = t.withDefaults()
	rep := VerifyReport{Job: t.Job, Mismatches: []VerifyRange{}, Uncovered: []VerifyRange{}}
	setDefault(&opts.ChunksPerRange, DefaultVerifyChunks)
	conn, store, err := openState(ctx, t, t.Job)
	if err != nil {
		return rep, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	job, err := store.Job(ctx, conn, t.Job)
	if err != nil {
		return rep, err
	}
	rep.State = job.State
	spec, err := storedSpec(job)
	if err != nil {
		return rep, err
	}
	if len(spec.Columns) > 0 || spec.SkipIf != "" {
		return rep, refused(fmt.Errorf("job %q computes its destination columns (columns or skip_if in its spec): its destination is not meant to equal its source, so verify cannot compare them", t.Job))
	}
	src, err := openPool(ctx, t.SourceURL, session{name: t.Job, Target: t}, "source", 1, true)
	if err != nil {
		return rep, scrub(err, t.SourceURL, t.DestURL)
	}
	defer src.Close()

	counters, err := store.Counters(ctx, conn, t.Job)
	if err != nil {
		return rep, err
	}
	rep.FailedRows = counters.RowsFailed
	committed, _, err := store.Committed(ctx, conn, t.Job)
	if err != nil {
		return rep, err
	}
	v, err := verifyPlan(ctx, src, conn, spec, job.UpperKey, committed, opts.ChunksPerRange)
	if err != nil {
		return rep, err
	}
	rep.Columns, rep.End = v.cols, v.end
	if len(v.end) > 0 {
		if err := v.srcPag.CheckKeyCast(ctx, src, v.end); err != nil {
			return rep, refused(fmt.Errorf("source %w", err))
		}
		if err := v.dstPag.CheckKeyCast(ctx, conn, v.end); err != nil {
			return rep, refused(fmt.Errorf("destination %w", err))
		}
	}
	spans, err := v.srcPag.Spans(ctx, src)
	if err != nil {
		return rep, err
	}
	for _, span := range spans {
		if span.Committed {
			err = v.compareRun(ctx, src, conn, span, &rep)
		} else {
			err = v.countGap(ctx, src, conn, span, &rep)
		}
		if err != nil {
			return rep, err
		}
	}
	rep.Result = verifyResult(rep)
	return rep, nil
}

// compareRun digests a committed run on each side, a range of
// chunksPerRange chunks at a time.
func (v *verification) compareRun(ctx context.Context, src, dst paginator.Querier, run paginator.Span, rep *VerifyReport) error {
	for after := run.After; paginator.KeyString(after) != paginator.KeyString(run.Last); {
		last := after
		for n := 0; n < v.chunksPerRange && paginator.KeyString(last) != paginator.KeyString(run.Last); n++ {
			l, ok := v.next[paginator.KeyString(last)]
			if v.walked++; !ok || v.walked > len(v.next) {
				return fmt.Errorf("committed chunks of job %q: the run (%v, %v] does not chain from chunk to chunk at key %v", rep.Job, run.After, run.Last, last)
			}
			last = l
		}
		r := VerifyRange{After: after, Last: last}
		var ssum, dsum string
		var err error
		if r.RowsSource, ssum, err = v.srcPag.Digest(ctx, src, v.cols, after, last); err != nil {
			return err
		}
		if r.RowsDest, dsum, err = v.dstPag.Digest(ctx, dst, v.cols, after, last); err != nil {
			return err
		}
		rep.Ranges++
		rep.RowsSource += r.RowsSource
		rep.RowsDest += r.RowsDest
		if r.RowsSource != r.RowsDest || ssum != dsum {
			rep.MismatchedRanges++
			if len(rep.Mismatches) < maxReportedRanges {
				rep.Mismatches = append(rep.Mismatches, r)
			}
		}
		after = last
	}
	return nil
}

// countGap counts the rows of a range no committed chunk covers on each
// side: its source rows are not copied yet.
func (v *verification) countGap(ctx context.Context, src, dst paginator.Querier, gap paginator.Span, rep *VerifyReport) error {
	r := VerifyRange{After: gap.After, Last: gap.Last}
	var err error
	if r.RowsSource, err = v.srcPag.Count(ctx, src, gap.After, gap.Last, v.countStep); err != nil {
		return err
	}
	if r.RowsDest, err = v.dstPag.Count(ctx, dst, gap.After, gap.Last, v.countStep); err != nil {
		return err
	}
	if r.RowsSource == 0 && r.RowsDest == 0 {
		return nil // nothing there to copy: rows deleted since, or none matching where
	}
	rep.RowsSource += r.RowsSource
	rep.RowsDest += r.RowsDest
	rep.UncoveredRanges++
	rep.RowsNotCopied += r.RowsSource
	if len(rep.Uncovered) < maxReportedRanges {
		rep.Uncovered = append(rep.Uncovered, r)
	}
	return nil
}

// verifyResult: a committed range that differs is a difference whatever
// the job's state; rows no committed chunk covers are a difference only
// once the job says it is done, and until then rows still to copy.
func verifyResult(rep VerifyReport) string {
	switch {
	case rep.MismatchedRanges > 0, rep.UncoveredRanges > 0 && rep.State == checkpoint.StateDone:
		return VerifyDiffers
	case rep.UncoveredRanges > 0:
		return VerifyUnfinished
	default:
		return VerifyIdentical
	}
}

// verification is what Verify compares: the columns, the job's end, a
// paginator on each side to digest and count key ranges, and the job's
// committed chunks.
type verification struct {
	cols           []string
	end            []string
	srcPag, dstPag *paginator.Paginator
	next           map[string][]string // each committed chunk's last key by its after key
	walked         int                 // chunks followed, which a corrupt chain must not make endless
	chunksPerRange int
	countStep      int // table rows counted per statement
}

// verifyPlan finds the columns both tables have (those an identity copy
// writes) and the job's end, and builds a paginator for each side; the
// source's holds the job's where and its committed ranges. The end of a
// --follow job is the source's last key now: the job reads on to whatever
// end the table has when it gets there.
func verifyPlan(ctx context.Context, src, dst catalog.Querier, spec Spec, upper []string, committed []checkpoint.Range, chunksPerRange int) (*verification, error) {
	from, err := catalog.ParseTableName(spec.From)
	if err != nil {
		return nil, err
	}
	to, err := catalog.ParseTableName(spec.To)
	if err != nil {
		return nil, err
	}
	s, err := catalog.Load(ctx, src, from)
	if err != nil {
		return nil, refused(fmt.Errorf("source %w", err))
	}
	d, err := catalog.Load(ctx, dst, to)
	if err != nil {
		return nil, refused(fmt.Errorf("destination %w", err))
	}
	v := &verification{end: upper, chunksPerRange: chunksPerRange, countStep: cmp.Or(spec.ChunkSize, DefaultChunkSize) * chunksPerRange, // a job sized by time counts at its smallest size
		next: make(map[string][]string, len(committed))}
	for _, c := range d.Columns {
		if !c.Generated && s.Column(c.Name) != nil {
			v.cols = append(v.cols, c.Name)
		}
	}
	var srcKey, dstKey []paginator.KeyColumn
	for _, k := range spec.Key {
		sc, dc := s.Column(k), d.Column(k)
		if sc == nil || dc == nil || !slices.Contains(v.cols, k) {
			return nil, refused(fmt.Errorf("key column %q is not in both tables: verify compares ranges of the source's key in each", k))
		}
		srcKey = append(srcKey, paginator.KeyColumn{Name: k, Type: sc.CastType})
		dstKey = append(dstKey, paginator.KeyColumn{Name: k, Type: dc.CastType})
	}
	if v.end == nil {
		if v.end, err = paginator.LastKey(ctx, src, s.Name.Identifier(), srcKey, spec.Where); err != nil {
			return nil, err
		}
	}
	ranges := make([]paginator.Range, len(committed))
	for i, c := range committed {
		ranges[i] = paginator.Range{After: c.After, Last: c.Last}
		v.next[paginator.KeyString(c.After)] = c.Last // a run is followed from its start
	}
	// a digest or count that meets a restart or a timeout is retried, as a
	// run's reads are: verifying a long range must not fail on one blip
	srcRead := keyOrderReader(s.Name.Identifier(), srcKey, spec.Where, DefaultMaxRetries)
	srcRead.Upper, srcRead.Committed = v.end, ranges
	if v.srcPag, err = paginator.New(srcRead); err != nil {
		return nil, err
	}
	if v.dstPag, err = paginator.New(keyOrderReader(d.Name.Identifier(), dstKey, "", DefaultMaxRetries)); err != nil {
		return nil, err
	}
	return v, nil
}
