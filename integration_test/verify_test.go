package integration_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
)

// verifyReport runs `backfill verify --json`, fails the test unless it
// exits with wantCode, and returns the report.
func verifyReport(t *testing.T, wantCode int, args ...string) backfill.VerifyReport {
	t.Helper()
	r := cli(t, append([]string{"verify", "--json"}, args...)...)
	if r.code != wantCode {
		t.Fatalf("verify %v: want exit %d, got %s", args, wantCode, r)
	}
	var rep backfill.VerifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("decode verify --json: %v\n%s", err, r.stdout)
	}
	return rep
}

// rangeLine is how verify names a key range in its text report.
func rangeLine(r backfill.VerifyRange) string {
	after := "the start"
	if r.After != nil {
		after = strings.Join(r.After, ",")
	}
	return fmt.Sprintf("keys after %s up to %s: %d rows in the source, %d in the destination",
		after, strings.Join(r.Last, ","), r.RowsSource, r.RowsDest)
}

// verifyText runs `backfill verify`, fails the test unless it exits with
// wantCode and prints every line in want, and returns its output.
func verifyText(t *testing.T, wantCode int, want []string, args ...string) string {
	t.Helper()
	r := cli(t, append([]string{"verify"}, args...)...)
	if r.code != wantCode {
		t.Fatalf("verify %v: want exit %d, got %s", args, wantCode, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("verify %v does not say %q:\n%s", args, w, r.stdout)
		}
	}
	return r.stdout
}

// TestVerifyAccountsForRowsNoChunkCovers: verify accounts for every source
// row of the job's range, not only those of its committed chunks. A done
// job that committed nothing over 5,000 rows differs (exit 3) and names the
// whole range; the same job interrupted says the rows are not yet copied
// (exit 4); after the resume it is identical. Chunks undone in the middle
// (rows and checkpoint rows) are named range by range, in key order.
func TestVerifyAccountsForRowsNoChunkCovers(t *testing.T) {
	db := itemsDatabase(t, 5_000)
	job := []string{"--source", db, "--job", "uncovered"}
	mustSucceed(t, append([]string{"start", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "500"}, job...)...)
	sql(t, db, "DELETE FROM backfill.chunks WHERE job = 'uncovered'", "TRUNCATE dst")

	whole := backfill.VerifyRange{After: nil, Last: []string{"5000"}, RowsSource: 5000, RowsDest: 0}
	rep := verifyReport(t, 3, job...)
	if rep.Result != backfill.VerifyDiffers || rep.State != "done" || rep.Ranges != 0 || rep.RowsSource != 5000 || rep.RowsDest != 0 ||
		rep.UncoveredRanges != 1 || rep.RowsNotCopied != 5000 || len(rep.Uncovered) != 1 || !sameRange(rep.Uncovered[0], whole) {
		t.Fatalf("verify of a done job that committed nothing: %+v", rep)
	}
	verifyText(t, 3, []string{"5000 source rows were never copied, yet the job is done", rangeLine(whole), "differs"}, job...)

	sql(t, db, "UPDATE backfill.jobs SET state = 'interrupted' WHERE name = 'uncovered'")
	rep = verifyReport(t, 4, job...)
	if rep.Result != backfill.VerifyUnfinished || rep.RowsNotCopied != 5000 || len(rep.Uncovered) != 1 || !sameRange(rep.Uncovered[0], whole) {
		t.Fatalf("verify of an interrupted job that committed nothing: %+v", rep)
	}
	verifyText(t, 4, []string{"not yet copied: 5000 source rows", rangeLine(whole), "unfinished: the job is interrupted and 5000 rows are still to copy"}, job...)

	mustSucceed(t, append([]string{"resume", "--rate", "0"}, job...)...)
	rep = verifyReport(t, 0, job...)
	if rep.Result != backfill.VerifyIdentical || rep.Ranges != 1 || rep.RowsSource != 5000 || rep.RowsDest != 5000 || rep.UncoveredRanges != 0 {
		t.Fatalf("verify after the resume: %+v", rep)
	}

	// undo chunks 3 and 7 (keys 1001…1500 and 3001…3500), rows and all
	sql(t, db,
		"DELETE FROM dst WHERE id BETWEEN 1001 AND 1500 OR id BETWEEN 3001 AND 3500",
		"DELETE FROM backfill.chunks WHERE job = 'uncovered' AND last_key[1]::bigint IN (1500, 3500)")
	want := []backfill.VerifyRange{
		{After: []string{"1000"}, Last: []string{"1500"}, RowsSource: 500},
		{After: []string{"3000"}, Last: []string{"3500"}, RowsSource: 500},
	}
	rep = verifyReport(t, 3, job...)
	if rep.Result != backfill.VerifyDiffers || rep.MismatchedRanges != 0 || rep.RowsNotCopied != 1000 || rep.RowsSource != 5000 || rep.RowsDest != 4000 ||
		!slices.EqualFunc(rep.Uncovered, want, sameRange) {
		t.Fatalf("verify of a done job with two chunks undone: %+v", rep)
	}
	verifyText(t, 3, []string{rangeLine(want[0]), rangeLine(want[1])}, job...)
}

func sameRange(a, b backfill.VerifyRange) bool {
	return slices.Equal(a.After, b.After) && (a.After == nil) == (b.After == nil) && slices.Equal(a.Last, b.Last) &&
		a.RowsSource == b.RowsSource && a.RowsDest == b.RowsDest
}

// TestVerifyOfAnInterruptedJob: a job stopped early by SIGINT is
// unfinished (exit 4): the rows it copied compare identical and the rest
// are reported as still to copy, as many as the destination lacks.
func TestVerifyOfAnInterruptedJob(t *testing.T) {
	db := itemsDatabase(t, 30_000)
	r := runUntilKilled(t, db, "early", 2, 0, syscall.SIGINT,
		"start", "--source", db, "--job", "early", "--from", "src", "--to", "dst", "--rate", "5000", "--chunk-size", "500")
	if r.code != 130 {
		t.Fatalf("want exit 130 after SIGINT, got %s", r)
	}
	copied := queryInt(t, db, "SELECT count(*) FROM dst")
	rep := verifyReport(t, 4, "--source", db, "--job", "early")
	if rep.Result != backfill.VerifyUnfinished || rep.State != "interrupted" || rep.MismatchedRanges != 0 || rep.Ranges == 0 ||
		rep.RowsNotCopied != 30_000-copied || rep.RowsSource != 30_000 || rep.RowsDest != copied || rep.UncoveredRanges == 0 {
		t.Fatalf("verify of a job interrupted after %d rows: %+v", copied, rep)
	}
	verifyText(t, 4, []string{fmt.Sprintf("unfinished: the job is interrupted and %d rows are still to copy", 30_000-copied)}, "--source", db, "--job", "early")
	mustSucceed(t, "resume", "--source", db, "--job", "early", "--rate", "0")
	verifyText(t, 0, []string{"identical", "30000 rows in the source, 30000 in the destination"}, "--source", db, "--job", "early")
}

// TestVerifyOfFilteredAndFollowingJobs: source rows that a job's where
// excludes are not missing, even where no chunk was recorded (steps with
// no matching row); an undone chunk counts only its matching rows. A
// --follow job's range ends at the source's last key now, so rows added
// after it finished are not copied.
func TestVerifyOfFilteredAndFollowingJobs(t *testing.T) {
	db := itemsDatabase(t, 10_000)
	const where = "id > 6000 AND id % 4 <> 0"
	filtered := []string{"--source", db, "--job", "filtered"}
	mustSucceed(t, append([]string{"start", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "500", "--where", where}, filtered...)...)
	matching := queryInt(t, db, "SELECT count(*) FROM src WHERE "+where)
	rep := verifyReport(t, 0, filtered...)
	if rep.Result != backfill.VerifyIdentical || rep.Ranges == 0 || rep.RowsSource != matching || rep.RowsDest != matching || rep.UncoveredRanges != 0 {
		t.Fatalf("verify of a filtered copy (%d matching rows): %+v", matching, rep)
	}
	var after, last int64
	row := connect(t, db).QueryRow(t.Context(), "SELECT after_key[1]::bigint, last_key[1]::bigint FROM backfill.chunks WHERE job = 'filtered' AND after_key IS NOT NULL AND rows_inserted > 0 ORDER BY seq LIMIT 1")
	if err := row.Scan(&after, &last); err != nil {
		t.Fatal(err)
	}
	inChunk := fmt.Sprintf("id > %d AND id <= %d", after, last)
	sql(t, db, "DELETE FROM dst WHERE "+inChunk, fmt.Sprintf("DELETE FROM backfill.chunks WHERE job = 'filtered' AND last_key = '{%d}'", last))
	// the uncovered range reaches back over the unrecorded steps before
	// the chunk, which hold no matching row
	want := queryInt(t, db, "SELECT count(*) FROM src WHERE "+inChunk+" AND "+where)
	rep = verifyReport(t, 3, filtered...)
	if rep.RowsNotCopied != want || len(rep.Uncovered) != 1 || !slices.Equal(rep.Uncovered[0].Last, []string{fmt.Sprint(last)}) ||
		rep.Uncovered[0].RowsSource != want || rep.Uncovered[0].RowsDest != 0 {
		t.Fatalf("verify of a filtered job with chunk (%d, %d] undone: want one range up to %d with its %d matching rows uncovered, got %+v", after, last, last, want, rep)
	}

	sql(t, db, "CREATE TABLE dst2 (LIKE src INCLUDING ALL)")
	following := []string{"--source", db, "--job", "following"}
	mustSucceed(t, append([]string{"start", "--from", "src", "--to", "dst2", "--rate", "0", "--follow"}, following...)...)
	verifyText(t, 0, []string{"identical", "10000 rows in the source, 10000 in the destination"}, following...)
	sql(t, db, "INSERT INTO src (id, name) SELECT g, 'late' FROM generate_series(10001, 10005) g")
	rep = verifyReport(t, 3, following...)
	late := backfill.VerifyRange{After: []string{"10000"}, Last: []string{"10005"}, RowsSource: 5}
	if !slices.Equal(rep.End, []string{"10005"}) || len(rep.Uncovered) != 1 || !sameRange(rep.Uncovered[0], late) {
		t.Fatalf("verify of a --follow job after 5 rows were added: want %+v uncovered, got %+v", late, rep)
	}
}

// TestVerifyForEveryKeyType: for each kind of key (char(n), text with a
// non-default collation, numeric, bytea, uuid, timestamptz, and a
// composite (timestamptz, collated text)), a copy of 2,500 rows verifies
// identical; 10 destination rows deleted make verify exit 3 naming the
// range that holds them; chunks undone (rows and checkpoint rows) are named
// as uncovered, range by range in the source's key order, with their rows;
// interrupted, the job is unfinished (exit 4); resumed, identical.
func TestVerifyForEveryKeyType(t *testing.T) {
	db := pgtest.NewDatabase(t)
	collation := `"C"`
	if queryBool(t, db, "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')") {
		collation = `"und-x-icu"` // "a" < "B" < "c", where byte order says "B" < "a"
	} else {
		t.Log("this server has no ICU collations: the collated keys use C")
	}
	cases := []struct {
		name, ddl, fill string
		// keys and cast let SQL compare a row with a stored key: cast
		// turns a text[] (%[1]s) back into the key's row
		keys, cast string
	}{
		{"char(8)", "k char(8) PRIMARY KEY", "lpad(g::text, 8, '0')", "k", "%[1]s[1]::char(8)"},
		// the char(8) case's keys as text, whose copy does not depend on the type's length
		{"text", "k text PRIMARY KEY", "lpad(g::text, 8, '0')", "k", "%[1]s[1]::text"},
		{"collated text", "k text COLLATE " + collation + " PRIMARY KEY", "(ARRAY['a', 'B', 'c', 'D'])[g % 4 + 1] || g", "k", "%[1]s[1]::text"},
		{"numeric", "k numeric PRIMARY KEY", "g / 7.0 - 100.5", "k", "%[1]s[1]::numeric"},
		{"bytea", "k bytea PRIMARY KEY", "decode(md5(g::text), 'hex')", "k", "%[1]s[1]::bytea"},
		{"uuid", "k uuid PRIMARY KEY", "md5(g::text)::uuid", "k", "%[1]s[1]::uuid"},
		{"timestamptz", "k timestamptz PRIMARY KEY", "timestamptz '2020-02-29 23:59:59.999999+00' + g * interval '1.5 seconds'", "k", "%[1]s[1]::timestamptz"},
		{"composite timestamptz, collated text", "ts timestamptz, name text COLLATE " + collation + ", PRIMARY KEY (ts, name)",
			"timestamptz '2024-01-01 00:00:00+00' + (g % 50) * interval '1 hour', (ARRAY['a', 'B', 'c', 'D'])[g % 4 + 1] || g",
			"(ts, name)", "(%[1]s[1]::timestamptz, %[1]s[2]::text)"},
	}
	const n = 2500
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst, job := fmt.Sprintf("src_%d", i), fmt.Sprintf("dst_%d", i), fmt.Sprintf("verify_%d", i)
			sql(t, db,
				fmt.Sprintf("CREATE TABLE %s (%s, v text)", src, c.ddl),
				fmt.Sprintf("CREATE TABLE %s (%s, v text)", dst, c.ddl),
				fmt.Sprintf("INSERT INTO %s SELECT %s, 'v' || g FROM generate_series(1, %d) g", src, c.fill, n))
			args := []string{"--source", db, "--job", job}
			mustSucceed(t, append([]string{"start", "--from", src, "--to", dst, "--rate", "0", "--chunk-size", "100", "--workers", "3"}, args...)...)
			if s := status(t, db, job); s.State != "done" || s.RowsInserted != n {
				t.Fatalf("copy of %d rows: %+v", n, s)
			}
			verifyText(t, 0, []string{"identical", fmt.Sprintf("%d rows in the source, %d in the destination", n, n)}, args...)

			// inRange holds a row whose key is in (after, last], given as
			// text[] parameters $1 and $2; after NULL: from the start
			inRange := fmt.Sprintf("($1::text[] IS NULL OR %[1]s > %[2]s) AND %[1]s <= %[3]s",
				c.keys, fmt.Sprintf(c.cast, "($1::text[])"), fmt.Sprintf(c.cast, "($2::text[])"))
			rowsIn := func(table string, r backfill.VerifyRange) int64 {
				return queryInt(t, db, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", table, inRange), r.After, r.Last)
			}

			// 10 rows in the middle of the source's key order
			keyList := strings.Trim(c.keys, "()")
			gone := fmt.Sprintf("SELECT %s FROM %s ORDER BY %s OFFSET 1200 LIMIT 10", keyList, src, keyList)
			sql(t, db, fmt.Sprintf("DELETE FROM %s WHERE %s IN (%s)", dst, c.keys, gone))
			rep := verifyReport(t, 3, args...)
			if rep.Result != backfill.VerifyDiffers || rep.MismatchedRanges != 1 || len(rep.Mismatches) != 1 || rep.UncoveredRanges != 0 ||
				rep.RowsSource-rep.RowsDest != 10 {
				t.Fatalf("verify after 10 destination rows were deleted: %+v", rep)
			}
			m := rep.Mismatches[0]
			holds := queryInt(t, db, fmt.Sprintf("SELECT count(*) FROM (%s) g WHERE %s", gone, inRange), m.After, m.Last)
			if holds != 10 || m.RowsSource != rowsIn(src, m) || m.RowsDest != m.RowsSource-10 {
				t.Fatalf("the differing range (%v, %v] holds %d of the 10 deleted rows: %+v", m.After, m.Last, holds, m)
			}
			verifyText(t, 3, []string{rangeLine(m)}, args...)
			sql(t, db, fmt.Sprintf("INSERT INTO %s SELECT * FROM %s WHERE %s IN (%s)", dst, src, c.keys, gone))

			// Undo every third chunk, rows and checkpoint row, as if they
			// had been in flight at a kill. verify must list each as
			// uncovered, in the source's key order: here, the order of how
			// many source rows lie up to each one's end.
			inUndone := fmt.Sprintf("c.job = '%s' AND c.seq %% 3 = 1", job)
			rows, err := connect(t, db).Query(t.Context(), "SELECT c.after_key, c.last_key FROM backfill.chunks c WHERE "+inUndone)
			if err != nil {
				t.Fatal(err)
			}
			var want []backfill.VerifyRange
			for rows.Next() {
				var r backfill.VerifyRange
				if err := rows.Scan(&r.After, &r.Last); err != nil {
					t.Fatal(err)
				}
				want = append(want, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			upTo := make(map[string]int64, len(want))
			for j := range want {
				want[j].RowsSource = rowsIn(src, want[j])
				upTo[strings.Join(want[j].Last, "\x00")] = queryInt(t, db,
					fmt.Sprintf("SELECT count(*) FROM %s WHERE %s <= %s", src, c.keys, fmt.Sprintf(c.cast, "($1::text[])")), want[j].Last)
			}
			slices.SortFunc(want, func(a, b backfill.VerifyRange) int {
				return int(upTo[strings.Join(a.Last, "\x00")] - upTo[strings.Join(b.Last, "\x00")])
			})
			sql(t, db,
				fmt.Sprintf("DELETE FROM %s d USING backfill.chunks c WHERE %s AND (c.after_key IS NULL OR %s > %s) AND %s <= %s",
					dst, inUndone, c.keys, fmt.Sprintf(c.cast, "c.after_key"), c.keys, fmt.Sprintf(c.cast, "c.last_key")),
				"DELETE FROM backfill.chunks c WHERE "+inUndone)
			var notCopied int64
			for _, w := range want {
				notCopied += w.RowsSource
			}
			rep = verifyReport(t, 3, args...)
			if rep.Result != backfill.VerifyDiffers || rep.MismatchedRanges != 0 || rep.RowsNotCopied != notCopied ||
				rep.RowsSource != n || rep.RowsDest != n-notCopied || !slices.EqualFunc(rep.Uncovered, want, sameRange) {
				t.Fatalf("verify with every third chunk undone: want uncovered %v (%d rows), got %+v", want, notCopied, rep)
			}
			verifyText(t, 3, []string{rangeLine(want[0]), rangeLine(want[len(want)-1])}, args...)

			sql(t, db, fmt.Sprintf("UPDATE backfill.jobs SET state = 'interrupted' WHERE name = '%s'", job))
			if rep := verifyReport(t, 4, args...); rep.Result != backfill.VerifyUnfinished || rep.RowsNotCopied != notCopied {
				t.Fatalf("verify of the interrupted job: want %d rows still to copy, got %+v", notCopied, rep)
			}
			mustSucceed(t, append([]string{"resume", "--rate", "0"}, args...)...)
			verifyText(t, 0, []string{"identical", fmt.Sprintf("%d rows in the source, %d in the destination", n, n)}, args...)
		})
	}
}

// TestVerifyUnderDifferentSessionDefaults: the two databases print values
// differently by default (TimeZone, DateStyle, IntervalStyle,
// extra_float_digits, bytea_output and, where the server has a locale for
// it, lc_monetary set per database); verify's digests, computed by each,
// agree on identical data, and still find a changed row.
func TestVerifyUnderDifferentSessionDefaults(t *testing.T) {
	src, dst := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	const ddl = `CREATE TABLE t (id bigint PRIMARY KEY, ts timestamptz, stamp timestamp(3), day date, at time, attz timetz,
		span interval, r real, d double precision, b bytea, n numeric, m money, tss timestamptz[], bs bytea[])`
	sql(t, src, ddl, `INSERT INTO t SELECT g,
		timestamptz '2024-03-10 01:59:59.123456+00' + g * interval '37 minutes 0.000001 second',
		timestamp '1999-12-31 23:59:59.999' + g * interval '1 day',
		date '0044-03-15 BC' + g * 400,
		time '00:00:00.5' + g * interval '13 seconds',
		timetz '23:59:59.999999+05:30',
		g * interval '1 year 2 months 3 days 04:05:06.789',
		g / 3.0, g::float8 / 7 * 1e-300, decode(md5(g::text), 'hex') || '\x00ff'::bytea, g / 9.0, g * 1.01,
		ARRAY[timestamptz 'epoch' + g * interval '1 hour', NULL, 'infinity'], ARRAY['\x'::bytea, decode(md5(g::text), 'hex')]
		FROM generate_series(1, 3000) g`)
	sql(t, dst, ddl)
	// source and destination sessions print every one of these otherwise
	settings := map[string][2]string{
		"TimeZone":           {"'America/St_Johns'", "'Asia/Kathmandu'"},
		"DateStyle":          {"'SQL, DMY'", "'German'"},
		"IntervalStyle":      {"'sql_standard'", "'iso_8601'"},
		"extra_float_digits": {"-3", "3"},
		"bytea_output":       {"'escape'", "'hex'"},
	}
	// lc_monetary takes a locale the server has besides C, which many
	// have none of
	for _, locale := range []string{"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"} {
		if _, err := connect(t, src).Exec(t.Context(), "SET lc_monetary = "+quoteLiteral(locale)); err == nil {
			settings["lc_monetary"] = [2]string{quoteLiteral(locale), "'C'"}
			break
		}
	}
	if _, ok := settings["lc_monetary"]; !ok {
		t.Log("the server has no de_DE or fr_FR locale: lc_monetary is the same on both sides")
	}
	for name, v := range settings {
		sql(t, src, fmt.Sprintf("ALTER DATABASE %s SET %s = %s", queryString(t, src, "SELECT current_database()"), name, v[0]))
		sql(t, dst, fmt.Sprintf("ALTER DATABASE %s SET %s = %s", queryString(t, dst, "SELECT current_database()"), name, v[1]))
	}
	const literals = `SELECT (timestamptz '2024-03-10 02:36:59.123457+00', timestamp '2000-01-01 23:59:59.999', date '2024-03-10',
		interval '1 year 2 months 3 days 04:05:06.789', 1 / 3.0::float8, '\x00ff'::bytea, 1234.56::money)::text`
	if s, d := queryString(t, src, literals), queryString(t, dst, literals); s == d {
		t.Fatalf("the databases' default sessions print values alike (%s): the test needs them to differ", s)
	} else {
		t.Logf("default sessions print\n source %s\n destination %s", s, d)
	}

	job := []string{"--source", src, "--dest", dst, "--job", "settings"}
	mustSucceed(t, append([]string{"start", "--from", "t", "--to", "t", "--rate", "0", "--chunk-size", "250"}, job...)...)
	rep := verifyReport(t, 0, job...)
	if rep.Result != backfill.VerifyIdentical || rep.RowsSource != 3000 || rep.RowsDest != 3000 || rep.Ranges != 2 || len(rep.Columns) != 14 {
		t.Fatalf("verify of an exact copy across databases with different session defaults: %+v", rep)
	}
	sql(t, dst, "UPDATE t SET ts = ts + interval '1 microsecond' WHERE id = 2999")
	rep = verifyReport(t, 3, job...)
	if rep.MismatchedRanges != 1 || rep.Mismatches[0].RowsSource != rep.Mismatches[0].RowsDest {
		t.Fatalf("verify after a microsecond changed in one row: %+v", rep)
	}
}
