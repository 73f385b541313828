package paginator

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/chunk"
)

// TestBlocksNeverMoveWhatTheyHandOut: slices taken from blocks keep their
// contents however many more are taken, of whatever sizes, and after a
// reset the same memory serves again.
func TestBlocksNeverMoveWhatTheyHandOut(t *testing.T) {
	b := blocks[int]{size: 8}
	var taken [][]int
	fill := func(sizes ...int) {
		for _, n := range sizes {
			s := b.take(n)
			if len(s) != n || cap(s) != n {
				t.Fatalf("take(%d): len %d cap %d", n, len(s), cap(s))
			}
			for i := range s {
				if s[i] != 0 {
					t.Fatalf("take(%d) handed out a used element: %v", n, s)
				}
				s[i] = len(taken) + 1
			}
			taken = append(taken, s)
		}
		for i, s := range taken {
			for _, v := range s {
				if v != i+1 {
					t.Fatalf("slice %d of %d was overwritten: %v", i, len(taken), s)
				}
			}
		}
	}
	fill(3, 3, 3, 20, 1, 0, 8)
	blocksBefore := len(b.list)
	b.reset()
	taken = nil
	fill(3, 3, 3, 20, 1, 0, 8)
	if len(b.list) != blocksBefore {
		t.Fatalf("after a reset the same takes used %d blocks, before %d", len(b.list), blocksBefore)
	}
}

// TestReleasedStoreServesTheNextChunkOnly: a released chunk's storage is
// reused, and a chunk not released keeps its rows and keys.
func TestReleasedStoreServesTheNextChunkOnly(t *testing.T) {
	p := &Paginator{cfg: Config{Key: []KeyColumn{{Name: "id"}}, Columns: []ReadColumn{{Name: "v", Raw: true}}}, rawWidth: 1,
		free: make(chan *rowStore, freeStores)}
	stores := map[*chunk.Chunk]*rowStore{}
	page := func(prefix string, n int) *chunk.Chunk {
		s := p.store(n)
		for i := range n {
			vals, key := s.row()
			key[0] = prefix + string(rune('a'+i))
			vals[0] = s.raw([]byte(key[0]))
		}
		c := chunk.InStorage(s)
		c.Rows, c.Keys = s.rows, s.keyRows
		stores[c] = s
		return c
	}
	a, b := page("a", 5), page("b", 5)
	want := slices.Clone(a.Keys)
	b.Release()
	c := page("c", 5)
	if stores[c] == stores[a] {
		t.Fatal("a chunk not released lent its storage")
	}
	for i, row := range a.Rows {
		if got := string(*row[0].(*chunk.Raw)); got != want[i][0] || a.Keys[i][0] != want[i][0] {
			t.Fatalf("row %d of the chunk not released became %q, key %q; want %q", i, got, a.Keys[i][0], want[i][0])
		}
	}
	if len(p.free) != 0 {
		t.Fatalf("%d stores left free; the released one should serve the next page", len(p.free))
	}
}

// TestChunksReleasedAtOnceLoseNoKey: a consumer that releases each chunk
// the moment it has it (as a fast worker may, while the paginator still
// holds the chunk's last key to read on from) still gets every row once,
// straight copy or not.
func TestChunksReleasedAtOnceLoseNoKey(t *testing.T) {
	pool := testPool(t, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g")
	for _, straight := range []bool{false, true} {
		cfg := Config{Table: pgx.Identifier{"t"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 70,
			Columns: []ReadColumn{{Name: "id", Raw: true}, {Name: "v", Raw: true}}}
		if straight {
			cfg.CopyOrder = []int{0, 1}
		}
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		out := make(chan *chunk.Chunk)
		errc := make(chan error, 1)
		go func() { errc <- p.Run(t.Context(), pool, out); close(out) }()
		seen := map[string]bool{}
		for c := range out {
			keys := make([]string, len(c.Keys))
			for i, k := range c.Keys {
				keys[i] = k[0]
			}
			c.Release()
			for _, k := range keys {
				if seen[k] {
					t.Fatalf("straight %v: key %s read twice", straight, k)
				}
				seen[k] = true
			}
		}
		if err := <-errc; err != nil {
			t.Fatalf("straight %v: %v", straight, err)
		}
		if len(seen) != 3000 {
			t.Fatalf("straight %v: %d of 3000 keys read", straight, len(seen))
		}
	}
}

// TestRawColumnsRefuseText: over a connection that sends every column as
// text (the simple protocol), a page with a column read raw, or a straight
// copy's page, is refused by name instead of taking text for binary.
func TestRawColumnsRefuseText(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY, v int)",
		"INSERT INTO s SELECT g, g FROM generate_series(1, 10) g",
	)
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	cfg := conn.Conn().Config().Copy()
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	simple, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer simple.Close(context.Background())
	for name, c := range map[string]Config{
		"raw column":    {Columns: []ReadColumn{{Name: "v", Raw: true}}},
		"straight copy": {Columns: []ReadColumn{{Name: "v", Raw: true}}, CopyOrder: []int{0}},
	} {
		t.Run(name, func(t *testing.T) {
			c.Table, c.Key, c.ChunkSize = pgx.Identifier{"s"}, []KeyColumn{{"id", "integer"}}, 5
			p, err := New(c)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Run(t.Context(), simple, make(chan *chunk.Chunk, 10))
			if err == nil || !strings.Contains(err.Error(), `column "v": came in text form`) {
				t.Fatalf("got %v, want the text form refused naming the column", err)
			}
		})
	}
}

// TestWindowKeepsTheReadBehindTheWrites: with a window of one chunk the
// paginator reads no page while the chunk it handed out is held, and reads
// the next once it is released; every key still comes once.
func TestWindowKeepsTheReadBehindTheWrites(t *testing.T) {
	pool := testPool(t, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
	window := chunk.NewWindow(1)
	var reads atomic.Int64
	p, err := New(Config{Table: pgx.Identifier{"t"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 100, Window: window,
		Columns: []ReadColumn{{Name: "id", Raw: true}, {Name: "v", Raw: true}}, OnRead: func(time.Duration) { reads.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *chunk.Chunk, 4) // room for reading ahead, which the window must refuse
	errc := make(chan error, 1)
	go func() { errc <- p.Run(t.Context(), pool, out); close(out) }()
	keys, chunks := 0, int64(0)
	for c := range out {
		chunks++
		time.Sleep(20 * time.Millisecond) // a write, while the paginator could read on
		if got := reads.Load(); got != chunks {
			t.Fatalf("chunk %d held: %d pages read; want %d", chunks, got, chunks)
		}
		if held := window.Held(); held != 1 {
			t.Fatalf("chunk %d held: the window holds %d", chunks, held)
		}
		keys += len(c.Keys)
		c.Release()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if keys != 1000 || window.Held() != 0 {
		t.Fatalf("%d of 1000 keys read, %d slots held at the end", keys, window.Held())
	}
}
