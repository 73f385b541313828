package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/transform"
)

// DefaultDrainTimeout bounds how long in-flight chunks may take to finish
// once the run is told to stop.
const DefaultDrainTimeout = 30 * time.Second

// Column is one destination column the workers write.
type Column struct {
	Name string
	Type string // format_type, without typmod
	OID  uint32
	// AsText sends the value as its text form and lets PostgreSQL's input
	// function convert it: for json/jsonb, arrays (which unnest would
	// flatten) and types pgx does not know.
	AsText bool
	JSON   bool
}

// Committer supplies the statement that records a chunk with its rows.
type Committer interface {
	CommitChunkSQL(insert string) string
}

// DB runs the commit statement; a pool.
type DB interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Result is what one chunk did.
type Result struct {
	Seq      int64
	Read     int
	Filtered int
	Failed   int
	Inserted int
	Skipped  int
	Last     []string
}

// Config says how to write.
type Config struct {
	Job   string
	Table pgx.Identifier
	// Columns are the destination columns, in the order of
	// Transformer.Columns().
	Columns []Column
	// OverridingSystemValue writes values into GENERATED ALWAYS identity
	// columns, which a copy must preserve.
	OverridingSystemValue bool
	Transformer           transform.Transformer
	Committer             Committer
	Workers               int
	// Limiter caps rows per second across all workers; nil means no cap.
	Limiter      *rate.Limiter
	DrainTimeout time.Duration
	// OnChunk is called after each committed chunk, from the worker's
	// goroutine.
	OnChunk func(Result)
}

// Pool is a set of workers.
type Pool struct {
	cfg Config
	sql string
}

// New checks cfg and builds the commit statement.
func New(cfg Config) (*Pool, error) {
	if cfg.Workers <= 0 {
		return nil, fmt.Errorf("workers must be positive, got %d", cfg.Workers)
	}
	if len(cfg.Columns) != len(cfg.Transformer.Columns()) {
		return nil, fmt.Errorf("%d destination columns for a transform writing %d", len(cfg.Columns), len(cfg.Transformer.Columns()))
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	return &Pool{cfg: cfg, sql: cfg.Committer.CommitChunkSQL(InsertSQL(cfg.Table, cfg.Columns, cfg.OverridingSystemValue, checkpoint.ChunkParams+1))}, nil
}

// SQL returns the statement that commits a chunk.
func (p *Pool) SQL() string { return p.sql }

// InsertSQL builds the chunk's INSERT; its array parameters start at $first.
func InsertSQL(table pgx.Identifier, cols []Column, overriding bool, first int) string {
	names := make([]string, len(cols))
	sel := make([]string, len(cols))
	arrays := make([]string, len(cols))
	aliases := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		aliases[i] = fmt.Sprintf("c%d", i+1)
		if c.AsText {
			arrays[i] = fmt.Sprintf("$%d::text[]", first+i)
			sel[i] = aliases[i] + "::" + c.Type
		} else {
			arrays[i] = fmt.Sprintf("$%d::%s[]", first+i, c.Type)
			sel[i] = aliases[i]
		}
	}
	override := ""
	if overriding {
		override = " OVERRIDING SYSTEM VALUE"
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s SELECT %s FROM unnest(%s) AS u(%s) ON CONFLICT DO NOTHING",
		table.Sanitize(), strings.Join(names, ", "), override, strings.Join(sel, ", "),
		strings.Join(arrays, ", "), strings.Join(aliases, ", "))
}

// Run starts cfg.Workers workers that take chunks from in until it is closed
// or ctx is cancelled. Cancelling ctx stops workers from taking chunks;
// chunks being written finish within DrainTimeout. The first error stops all
// workers and is returned.
func (p *Pool) Run(ctx context.Context, db DB, in <-chan *paginator.Chunk) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.DrainTimeout, cancelDrain) })
	defer stopDrainTimer()

	g, gctx := errgroup.WithContext(ctx)
	for range p.cfg.Workers {
		g.Go(func() error {
			w := p.newWorker()
			for {
				select {
				case <-gctx.Done():
					return nil
				case c, ok := <-in:
					if !ok {
						return nil
					}
					if err := w.process(gctx, drainCtx, db, c); err != nil {
						return err
					}
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return nil
}

type worker struct {
	p      *Pool
	dst    []any
	arrays [][]any
	types  *pgtype.Map
}

func (p *Pool) newWorker() *worker {
	n := len(p.cfg.Columns)
	w := &worker{p: p, dst: make([]any, n), arrays: make([][]any, n), types: pgtype.NewMap()}
	return w
}

// process waits for the rate limiter (abandoning the chunk if ctx ends), then
// writes it under writeCtx, which outlives ctx by the drain timeout.
func (w *worker) process(ctx, writeCtx context.Context, db DB, c *paginator.Chunk) error {
	if lim := w.p.cfg.Limiter; lim != nil {
		if err := lim.WaitN(ctx, len(c.Rows)); err != nil {
			if ctx.Err() != nil {
				return nil // stopping: the chunk is left for resume
			}
			return fmt.Errorf("rate limiter for chunk %d: %w", c.Seq, err)
		}
	}
	res, err := w.write(writeCtx, db, c)
	if err != nil {
		return err
	}
	if w.p.cfg.OnChunk != nil {
		w.p.cfg.OnChunk(res)
	}
	return nil
}

func (w *worker) write(ctx context.Context, db DB, c *paginator.Chunk) (Result, error) {
	res := Result{Seq: c.Seq, Read: len(c.Rows), Last: c.Last}
	for i := range w.arrays {
		w.arrays[i] = w.arrays[i][:0] // the previous chunk's statement has returned
	}
	for _, row := range c.Rows {
		keep, err := w.p.cfg.Transformer.Apply(row, w.dst)
		if err != nil {
			return res, fmt.Errorf("chunk %d (keys %v..%v): %w", c.Seq, c.First, c.Last, err)
		}
		if !keep {
			res.Filtered++
			continue
		}
		for i, col := range w.p.cfg.Columns {
			v := w.dst[i]
			if col.AsText {
				if v, err = w.textForm(col, v); err != nil {
					return res, fmt.Errorf("chunk %d (keys %v..%v): column %q: %w", c.Seq, c.First, c.Last, col.Name, err)
				}
			}
			w.arrays[i] = append(w.arrays[i], v)
		}
	}
	written := res.Read - res.Filtered - res.Failed
	args := checkpoint.CommitChunkArgs(w.p.cfg.Job, checkpoint.ChunkRecord{
		Seq: c.Seq, After: c.After, First: c.First, Last: c.Last,
		RowsRead: res.Read, RowsFiltered: res.Filtered, RowsFailed: res.Failed, RowsWritten: written,
	})
	for _, a := range w.arrays {
		args = append(args, a)
	}
	if err := db.QueryRow(ctx, w.p.sql, args...).Scan(&res.Inserted); err != nil {
		return res, fmt.Errorf("write chunk %d (keys %v..%v) to %s: %w", c.Seq, c.First, c.Last, w.p.cfg.Table.Sanitize(), err)
	}
	res.Skipped = written - res.Inserted
	return res, nil
}

// errNoTextForm is returned for a value that has no text form we can make.
var errNoTextForm = errors.New("no text form")

// textForm renders v as PostgreSQL's input function for col expects.
func (w *worker) textForm(col Column, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case json.RawMessage:
		return string(x), nil
	}
	if col.JSON {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %T as JSON: %w", v, err)
		}
		return string(b), nil
	}
	if _, ok := w.types.TypeForOID(col.OID); ok {
		b, err := w.types.Encode(col.OID, pgtype.TextFormatCode, v, nil)
		if err != nil {
			return nil, fmt.Errorf("encode %T as %s: %w", v, col.Type, err)
		}
		if b == nil {
			return nil, nil
		}
		return string(b), nil
	}
	if s, ok := v.(fmt.Stringer); ok {
		return s.String(), nil
	}
	return nil, fmt.Errorf("%w for a %T in a %s column", errNoTextForm, v, col.Type)
}
