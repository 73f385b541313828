package paginator

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPartitionReadsItsRangeOnly: a partition's reader starts after Lower,
// stops at Upper, and skips what is committed inside, even where a run of
// committed chunks of its own and of the next partition chain across its
// end; a cut ends it at the key the hook gives.
func TestPartitionReadsItsRangeOnly(t *testing.T) {
	pool := testPool(t, "CREATE TABLE s (id int PRIMARY KEY)", "INSERT INTO s SELECT generate_series(1, 1000)")
	base := Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 30, Partition: true}
	// partition (200, 600]: 250…400 committed by an earlier holder, chained
	// with 400…700 of the next partition's; 100…150 of the one before
	committed := []Range{
		{After: key("100"), Last: key("150"), Seq: 1},
		{After: key("250"), Last: key("400"), Seq: 2},
		{After: key("400"), Last: key("600"), Seq: 3},
		{After: key("600"), Last: key("700"), Seq: 4},
	}
	cases := []struct {
		name  string
		lower []string
		upper []string
		cut   []string
		want  []string
	}{
		{"inside", key("200"), key("600"), nil, ints(201, 250)},
		{"first partition", nil, key("200"), nil, append(ints(1, 100), ints(151, 200)...)},
		{"last partition", key("600"), nil, nil, ints(701, 1000)},
		{"cut", key("600"), nil, key("800"), ints(701, 800)},
		{"nothing committed", key("900"), key("950"), nil, ints(901, 950)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.Lower, cfg.Upper, cfg.Committed = c.lower, c.upper, committed
			if c.upper == nil {
				cfg.Upper = key("1000")
			}
			cut := false
			if c.cut != nil {
				cfg.Cut = func(_ context.Context, cursor, upper []string) ([]string, error) {
					if cut || cursor == nil {
						return nil, nil
					}
					cut = true
					return c.cut, nil
				}
			}
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			keys, _ := readAll(t, p, pool)
			if !slices.Equal(keys, c.want) {
				t.Fatalf("read %d keys %v…, want %d: %v…", len(keys), head(keys), len(c.want), head(c.want))
			}
		})
	}
}

func head(keys []string) []string { return keys[:min(len(keys), 5)] }
