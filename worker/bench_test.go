package worker_test

import (
	"context"
	"encoding/binary"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/internal/benchdata"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/transform"
	"github.com/backfill/backfill/worker"
)

const benchChunkRows = 1000

// benchColumns describe the benchmark table to the transform and to the
// workers as the plan would: jsonb travels as text.
func benchColumns() ([]transform.Column, []worker.Column) {
	var tc []transform.Column
	var wc []worker.Column
	for _, c := range benchdata.Columns {
		tc = append(tc, transform.Column{Name: c.Name, Type: c.Type, OID: c.OID})
		wc = append(wc, worker.Column{Name: c.Name, Type: c.Type, Cast: c.Type, CastOID: c.OID, OID: c.OID, AsText: c.Text, JSON: c.OID == pgtype.JSONBOID})
	}
	return tc, wc
}

// benchChunk is chunk seq of the benchmark table: keys (seq-1)·n+1 … seq·n,
// values as the paginator hands them over.
func benchChunk(seq int64, n int) *chunk.Chunk {
	c := &chunk.Chunk{Seq: seq}
	first := (seq-1)*int64(n) + 1
	for id := first; id < first+int64(n); id++ {
		c.Rows = append(c.Rows, benchdata.Row(id))
		c.Keys = append(c.Keys, []string{strconv.FormatInt(id, 10)})
	}
	if seq > 1 {
		c.After = []string{strconv.FormatInt(first-1, 10)}
	}
	c.First, c.Last = c.Keys[0], c.Keys[n-1]
	return c
}

// BenchmarkWriteChunk writes one 1,000-row chunk of the benchmark table
// per op through a one-worker pool into an empty key range of a real
// destination: transform (a straight copy), argument encoding, the one
// statement that inserts the rows and records the chunk, and its commit.
// The chunks are built before the timer starts.
func BenchmarkWriteChunk(b *testing.B) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	store, err := checkpoint.New("state")
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	gen, err := store.CreateJob(ctx, pool, checkpoint.NewJob{Name: "j", Spec: []byte(`{}`), Workers: 1, UpperKey: []string{"1"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := benchdata.Create(ctx, pool, pgx.Identifier{"public", "d"}); err != nil {
		b.Fatal(err)
	}
	tc, wc := benchColumns()
	identity, err := transform.Identity(tc, tc)
	if err != nil {
		b.Fatal(err)
	}
	workers, err := worker.New(worker.Config{Job: "j", Table: pgx.Identifier{"public", "d"}, Columns: wc,
		Transformer: identity, Checkpoint: store, Generation: gen, Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	// One Run over all b.N chunks, as a job runs: a Run per chunk would
	// charge each chunk for starting a worker.
	in := make(chan *chunk.Chunk, b.N)
	for i := range b.N {
		in <- benchChunk(int64(i+1), benchChunkRows)
	}
	close(in)
	b.ReportAllocs()
	b.ResetTimer()
	if err := workers.Run(ctx, pool, in); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(benchChunkRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkBuildCopyStream builds the COPY stream of a 1,000-row chunk of
// the benchmark table, as a worker does before it writes: for a straight
// copy (the rows as the paginator hands them over, COPY tuples of the
// source's bytes) and for a transformed chunk (every value raw, through
// the transform and into the stream). The client-side cost of a chunk's
// write, without a server.
func BenchmarkBuildCopyStream(b *testing.B) {
	tc, wc := benchColumns()
	for i := range wc {
		wc[i].AsText = false // raw: jsonb's binary form travels too
	}
	identity, err := transform.Identity(tc, tc)
	if err != nil {
		b.Fatal(err)
	}
	workers, err := worker.New(worker.Config{Job: "j", Table: pgx.Identifier{"public", "d"}, Columns: wc,
		Transformer: identity, Checkpoint: benchCheckpoint(b), Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	transformed := benchChunk(1, benchChunkRows)
	m := pgtype.NewMap()
	straight := &chunk.Chunk{Seq: 1, Keys: transformed.Keys, First: transformed.First, Last: transformed.Last}
	for _, row := range transformed.Rows {
		tuple := binary.BigEndian.AppendUint16(nil, uint16(len(row)))
		for i, v := range row {
			enc, err := m.Encode(wc[i].OID, pgtype.BinaryFormatCode, v, nil)
			if err != nil {
				b.Fatalf("encode %s: %v", wc[i].Name, err)
			}
			tuple = append(binary.BigEndian.AppendUint32(tuple, uint32(len(enc))), enc...)
			raw := chunk.Raw(enc)
			row[i] = &raw
		}
		straight.Rows = append(straight.Rows, []any{})
		straight.Tuples = append(straight.Tuples, tuple)
	}
	for name, c := range map[string]*chunk.Chunk{"straight": straight, "transformed": transformed} {
		b.Run(name, func(b *testing.B) {
			build := workers.CopyStreamBuilder()
			var size int
			b.ReportAllocs()
			for b.Loop() {
				if size, err = build(c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)/benchChunkRows, "bytes/row")
			b.ReportMetric(float64(benchChunkRows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// benchCheckpoint is a checkpoint store for a pool that writes nothing.
func benchCheckpoint(b *testing.B) *checkpoint.Store {
	store, err := checkpoint.New("state")
	if err != nil {
		b.Fatal(err)
	}
	return store
}
