package backfill_test

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill"
)

// TestResumeOverManyChunksReadsOnlyTheGaps: a job whose checkpoint holds
// about 20,000 committed chunks of two keys each, with gaps between runs of
// them, a range overlapping a run's end into the next gap, two ranges
// beginning at one key, and a chunk split in pieces of which the last was
// not committed. The destination is emptied first, so what it holds after
// the resume is exactly what the resume read: the gaps and the split
// chunk's rest, which is recorded as that chunk again.
func TestResumeOverManyChunksReadsOnlyTheGaps(t *testing.T) {
	ctx := context.Background()
	f := setup(t, 40_000)
	j := f.job("many")
	j.ChunkSize = 1000
	if rep, err := backfill.Run(ctx, j); err != nil || rep.State != "done" {
		t.Fatalf("first run: state %q, err %v", rep.State, err)
	}
	f.exec(t,
		"DELETE FROM backfill.chunks WHERE job = 'many'",
		"TRUNCATE dst",
		// chunk i is (2i-2, 2i], seq i, but for those of the gaps (1000,
		// 1010], (20000, 20100] and (39900, 40000], and chunk 5001…5010's
		// (10000, 10020], split
		`INSERT INTO backfill.chunks (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed,
			rows_inserted, rows_skipped, generation)
		 SELECT 'many', i, CASE WHEN i > 1 THEN ARRAY[(2 * i - 2)::text] END, ARRAY[(2 * i - 1)::text], ARRAY[(2 * i)::text],
			2, 0, 0, 2, 0, (SELECT generation FROM backfill.jobs WHERE name = 'many')
		 FROM generate_series(1, 20000) i
		 WHERE i NOT BETWEEN 501 AND 505 AND i NOT BETWEEN 5001 AND 5010 AND i NOT BETWEEN 10001 AND 10050 AND i NOT BETWEEN 19951 AND 20000`,
		// the split chunk's first two pieces of three: its rest, (10010,
		// 10020], is to be read as seq 5001
		`INSERT INTO backfill.chunks (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed,
			rows_inserted, rows_skipped, generation, split_last_key)
		 SELECT 'many', 5001, ARRAY[a::text], ARRAY[(a + 1)::text], ARRAY[(a + 5)::text], 5, 0, 0, 5, 0,
			(SELECT generation FROM backfill.jobs WHERE name = 'many'), '{10020}'
		 FROM unnest(ARRAY[10000, 10005]) a`,
		// (19990, 20050] overlaps the run before the gap (20000, 20100]
		// and covers its first half; (30000, 30003] begins where the chunk
		// (30000, 30002] does
		`INSERT INTO backfill.chunks (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed,
			rows_inserted, rows_skipped, generation)
		 SELECT 'many', s, ARRAY[a::text], ARRAY[(a + 1)::text], ARRAY[l::text], l - a, 0, 0, l - a, 0,
			(SELECT generation FROM backfill.jobs WHERE name = 'many')
		 FROM (VALUES (20001, 19990, 20050), (20002, 30000, 30003)) AS v (s, a, l)`,
		"UPDATE backfill.jobs SET state = 'interrupted' WHERE name = 'many'",
	)
	if n := f.count(t, "SELECT count(*) FROM backfill.chunks WHERE job = 'many'"); n < 19_800 {
		t.Fatalf("the checkpoint holds %d chunks; the test means about 20,000", n)
	}

	j.Mode, j.Rate = backfill.ModeResume, 0
	if rep, err := backfill.Run(ctx, j); err != nil || rep.State != "done" {
		t.Fatalf("resume: state %q, err %v", rep.State, err)
	}
	rows, err := f.conn.Query(ctx, "SELECT id FROM dst ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, gap := range [][2]int64{{1000, 1010}, {10010, 10020}, {20050, 20100}, {39900, 40000}} {
		for k := gap[0] + 1; k <= gap[1]; k++ {
			want = append(want, k)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the resume wrote keys %s;\nwant only the gaps' and the split chunk's rest, %s", ranges(got), ranges(want))
	}
	var seq int64
	var after []string
	if err := f.conn.QueryRow(ctx, "SELECT seq, after_key FROM backfill.chunks WHERE job = 'many' AND last_key = '{10020}'").Scan(&seq, &after); err != nil {
		t.Fatalf("the split chunk's rest: %v", err)
	}
	if seq != 5001 || !slices.Equal(after, []string{"10010"}) {
		t.Fatalf("the split chunk's rest was recorded as seq %d after %v; want seq 5001 after [10010]", seq, after)
	}
}

// ranges prints ascending keys as runs, a-b.
func ranges(keys []int64) string {
	var out []byte
	for i := 0; i < len(keys); {
		j := i
		for j+1 < len(keys) && keys[j+1] == keys[j]+1 {
			j++
		}
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = strconv.AppendInt(out, keys[i], 10)
		if j > i {
			out = append(append(out, '-'), strconv.FormatInt(keys[j], 10)...)
		}
		i = j + 1
	}
	return string(out)
}
