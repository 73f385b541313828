package worker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/backfill/backfill/chunk"
)

// copyHeader begins a binary COPY stream: the signature, no flags, no
// header extension.
const copyHeader = "PGCOPY\n\xff\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"

// copyTrailer ends a binary COPY stream.
const copyTrailer = "\xff\xff"

// ordinalColumn numbers a stage's rows by their position among those
// written, for the statements that write some of them (isolate).
const ordinalColumn = "bf_row"

// statements are the SQL a pool sends.
type statements struct {
	stage       string // creates the connection's stage, once per session
	clearStage  string // empties it inside a transaction that outlives a chunk
	copyStage   string // COPY of a chunk into the stage
	copyRows    string // the same, numbering the rows
	copyDest    string // COPY of a chunk straight into the destination
	commit      string // inserts the stage into the destination and records the chunk
	insertRange string // inserts the stage's rows $1 <= bf_row < $2, counting them
	probe       [2]string
}

// stageColumn is the type a column's values have in the stage: the cast
// type, whose binary form carries them, or text for those sent as text.
func stageColumn(c Column) string {
	if c.AsText {
		return "text"
	}
	return c.Cast
}

func stageColumnName(i int) string { return fmt.Sprintf("c%d", i+1) }

// insertSQL is the INSERT … SELECT that moves rows from the relation from,
// whose columns c1… hold the destination columns' values as stageColumn
// types them. where, if not empty, restricts the rows.
func insertSQL(table pgx.Identifier, cols []Column, overriding bool, from, where string) string {
	names := make([]string, len(cols))
	sel := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		sel[i] = stageColumnName(i)
		if c.AsText {
			sel[i] += "::" + c.Cast
		}
	}
	override := ""
	if overriding {
		override = " OVERRIDING SYSTEM VALUE"
	}
	if where != "" {
		where = " WHERE " + where
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s SELECT %s FROM %s%s ON CONFLICT DO NOTHING",
		table.Sanitize(), strings.Join(names, ", "), override, strings.Join(sel, ", "), from, where)
}

// CheckSQL is the chunk's INSERT from a relation of one row of NULLs typed
// as the stage types them: planning it checks, without a stage or a row,
// that the destination takes what the job writes.
func CheckSQL(table pgx.Identifier, cols []Column, overriding bool) string {
	nulls := make([]string, len(cols))
	for i, c := range cols {
		nulls[i] = "NULL::" + stageColumn(c) + " AS " + stageColumnName(i)
	}
	return insertSQL(table, cols, overriding, "(SELECT "+strings.Join(nulls, ", ")+") AS s", "")
}

func buildStatements(cfg Config, commitChunk func(insert string) string) statements {
	defs := []string{ordinalColumn + " int4"}
	stageCols := make([]string, len(cfg.Columns))
	destCols := make([]string, len(cfg.Columns))
	for i, c := range cfg.Columns {
		defs = append(defs, stageColumnName(i)+" "+stageColumn(c))
		stageCols[i] = stageColumnName(i)
		destCols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	body := "(" + strings.Join(defs, ", ") + ")"
	// the stage's name comes from its shape, so that pools of other shapes
	// sharing a session never meet a stage not their own
	h := fnv.New32a()
	h.Write([]byte(body))
	stage := fmt.Sprintf("pg_temp.%s", pgx.Identifier{fmt.Sprintf("backfill_stage_%08x", h.Sum32())}.Sanitize())
	binaryCopy := " FROM STDIN (FORMAT binary)"
	st := statements{
		stage:       "CREATE TEMP TABLE IF NOT EXISTS " + strings.TrimPrefix(stage, "pg_temp.") + " " + body + " ON COMMIT DELETE ROWS",
		clearStage:  "DELETE FROM " + stage,
		copyStage:   "COPY " + stage + " (" + strings.Join(stageCols, ", ") + ")" + binaryCopy,
		copyRows:    "COPY " + stage + " (" + ordinalColumn + ", " + strings.Join(stageCols, ", ") + ")" + binaryCopy,
		copyDest:    "COPY " + cfg.Table.Sanitize() + " (" + strings.Join(destCols, ", ") + ")" + binaryCopy,
		commit:      commitChunk(insertSQL(cfg.Table, cfg.Columns, cfg.OverridingSystemValue, stage, "")),
		insertRange: "WITH ins AS (" + insertSQL(cfg.Table, cfg.Columns, cfg.OverridingSystemValue, stage, ordinalColumn+" >= $1 AND "+ordinalColumn+" < $2") + " RETURNING 1) SELECT count(*) FROM ins",
	}
	if len(cfg.RangeKey) > 0 {
		st.probe = RangeProbeSQL(cfg.Table, cfg.RangeKey)
	}
	return st
}

// RangeProbeSQL lists the keys of the destination's rows in a chunk's key
// range, each part as text: [0] up to key $1…, [1] after key $1… and up
// to key $n+1…, as many as the parameter after the keys. An empty list
// lets the chunk go straight into the table; a short one lets it go there
// without those rows (see KeysByText).
func RangeProbeSQL(table pgx.Identifier, key []KeyPart) [2]string {
	names := make([]string, len(key))
	texts := make([]string, len(key))
	lower := make([]string, len(key))
	upper := make([]string, len(key))
	for i, k := range key {
		names[i] = pgx.Identifier{k.Name}.Sanitize()
		texts[i] = names[i] + "::text"
		lower[i] = fmt.Sprintf("$%d::text::%s", i+1, k.Cast)
		upper[i] = fmt.Sprintf("$%d::text::%s", len(key)+i+1, k.Cast)
	}
	cols := "(" + strings.Join(names, ", ") + ")"
	probe := func(where string, limit int) string {
		return fmt.Sprintf("SELECT %s FROM %s WHERE %s LIMIT $%d::int", strings.Join(texts, ", "), table.Sanitize(), where, limit)
	}
	return [2]string{
		probe(cols+" <= ("+strings.Join(lower, ", ")+")", len(key)+1),
		probe(cols+" > ("+strings.Join(lower, ", ")+") AND "+cols+" <= ("+strings.Join(upper, ", ")+")", 2*len(key)+1),
	}
}

// KeysByText says whether two values of every part of key that have the
// same text are equal under the type's btree equality, so that a source
// row whose key text the range probe lists is certain to conflict on the
// destination's unique index and may be left out of a direct COPY, as
// INSERT … ON CONFLICT DO NOTHING would skip it. Integers, uuid and
// strings qualify; a type whose text can round (float) or follows the
// session's settings (timestamptz) does not, and a range that holds a row
// of such a key goes through the stage. (Equal values with different
// texts only make the COPY fail on the index, which sends the chunk
// through the stage too.)
func KeysByText(key []KeyPart) bool {
	for _, k := range key {
		switch {
		case k.Cast == "smallint", k.Cast == "integer", k.Cast == "bigint", k.Cast == "uuid", k.Cast == "text",
			k.Cast == "character varying", strings.HasPrefix(k.Cast, "character varying("):
		default:
			return false
		}
	}
	return len(key) > 0
}

// appendRow appends one row to a binary COPY stream; ordinal < 0 leaves the
// stage's row number out.
func (w *worker) appendRow(buf []byte, vals []any, ordinal int) ([]byte, error) {
	n := len(vals)
	if ordinal >= 0 {
		n++
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	if ordinal >= 0 {
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(ordinal))
	}
	for i, v := range vals {
		var err error
		if buf, err = w.appendValue(buf, w.p.cfg.Columns[i], v); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// appendValue appends one field: raw bytes as the source sent them, text
// as it is (to a text column of the stage), and a Go value in the binary
// form of the column's cast type.
func (w *worker) appendValue(buf []byte, col Column, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return binary.BigEndian.AppendUint32(buf, 0xffffffff), nil
	case *chunk.Raw:
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(*x)))
		return append(buf, *x...), nil
	case string:
		if col.AsText {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(x)))
			return append(buf, x...), nil
		}
	}
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	out, err := w.types.Encode(col.CastOID, pgtype.BinaryFormatCode, v, buf)
	if err != nil {
		return buf[:start], &rowError{column: col.Name, err: fmt.Errorf("encode %T as %s: %w", v, col.Type, err)}
	}
	if out == nil {
		return binary.BigEndian.AppendUint32(buf[:start], 0xffffffff), nil
	}
	binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start-4))
	return out, nil
}

// rowError is a value of one row that cannot be put in the COPY stream.
type rowError struct {
	column string
	err    error
}

func (e *rowError) Error() string { return fmt.Sprintf("column %q: %v", e.column, e.err) }
func (e *rowError) Unwrap() error { return e.err }

// stream returns the COPY stream of the rows being written.
func (w *worker) stream() io.Reader {
	if w.tuples == nil {
		return bytes.NewReader(w.copy)
	}
	w.bufs = append(append(append(w.bufs[:0], []byte(copyHeader)), w.tuples...), []byte(copyTrailer))
	bufs := w.bufs // Read consumes its own copy of the slice headers
	return &bufs
}

// streamWithout returns the COPY stream of the rows being written but
// those whose key present holds (keyText).
func (w *worker) streamWithout(pc piece, present map[string]struct{}) io.Reader {
	w.bufs = append(w.bufs[:0], []byte(copyHeader))
	for i, r := range w.rows {
		if _, ok := present[keyText(pc.chunk.Keys[r])]; ok {
			continue
		}
		if w.tuples != nil {
			w.bufs = append(w.bufs, w.tuples[i])
			continue
		}
		start := len(copyHeader)
		if i > 0 {
			start = w.ends[i-1]
		}
		w.bufs = append(w.bufs, w.copy[start:w.ends[i]])
	}
	w.bufs = append(w.bufs, []byte(copyTrailer))
	bufs := w.bufs
	return &bufs
}

// keyText is a key's parts' texts joined by a NUL, which no text holds.
func keyText(parts []string) string {
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts, "\x00")
}

// tupleFields splits a COPY tuple into its fields, nil for NULL.
func tupleFields(t []byte) [][]byte {
	n := int(binary.BigEndian.Uint16(t))
	fields := make([][]byte, n)
	at := 2
	for i := range fields {
		size := int32(binary.BigEndian.Uint32(t[at:]))
		at += 4
		if size >= 0 {
			fields[i] = t[at : at+int(size)]
			at += int(size)
		}
	}
	return fields
}

// rawField is a tuple's field as a value: nil for NULL.
func rawField(f []byte) any {
	if f == nil {
		return nil
	}
	r := chunk.Raw(f)
	return &r
}

// copyRows builds the COPY stream of the stage positions [lo, hi), numbered.
func (w *worker) copyRows(lo, hi int) ([]byte, error) {
	buf := append(w.numbered[:0], copyHeader...)
	if w.tuples != nil {
		for _, t := range w.tuples[lo:hi] {
			buf = binary.BigEndian.AppendUint16(buf, binary.BigEndian.Uint16(t)+1)
			buf = binary.BigEndian.AppendUint32(buf, 4)
			buf = binary.BigEndian.AppendUint32(buf, uint32(lo))
			buf = append(buf, t[2:]...)
			lo++
		}
		w.numbered = append(buf, copyTrailer...)
		return w.numbered, nil
	}
	row := make([]any, len(w.cols))
	for r := lo; r < hi; r++ {
		for i := range w.cols {
			row[i] = w.cols[i][r]
		}
		var err error
		if buf, err = w.appendRow(buf, row, r); err != nil {
			return nil, err
		}
	}
	w.numbered = append(buf, copyTrailer...)
	return w.numbered, nil
}
