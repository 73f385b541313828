package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backfill/backfill/chunk"
)

// asText replaces, in place, each raw value of rows by its text as its
// type's output function writes it on conn's server: what a person reads
// in a failed row's copy or a dry run's preview, the same text the value
// had when it travelled as text. The value's binary form means the same on
// either side, and the session's settings that shape text are pinned alike
// on both (see the backfill package's connect.go), so the destination
// prints what the source would. oids[i] types column i's raw values.
//
// It runs under a savepoint of the transaction open on conn, in one round
// trip: a value the server refuses leaves every value raw, for readable to
// decode, and the transaction as it was.
func asText(ctx context.Context, conn *pgconn.PgConn, rows [][]any, oids []uint32) error {
	b := &pgconn.Batch{}
	b.ExecParams("SAVEPOINT render", nil, nil, nil, nil)
	var rendered []int // the rows queued, in order
	for r, row := range rows {
		var sel []string
		var vals [][]byte
		var types []uint32
		var formats []int16
		for i, v := range row {
			if raw, ok := v.(*chunk.Raw); ok {
				sel = append(sel, fmt.Sprintf("$%d", len(vals)+1))
				vals, types, formats = append(vals, *raw), append(types, oids[i]), append(formats, 1)
			}
		}
		if len(vals) == 0 {
			continue
		}
		b.ExecParams("SELECT "+strings.Join(sel, ", "), vals, types, formats, nil)
		rendered = append(rendered, r)
	}
	if len(rendered) == 0 {
		return nil
	}
	b.ExecParams("RELEASE SAVEPOINT render", nil, nil, nil, nil)
	results, err := conn.ExecBatch(ctx, b).ReadAll()
	if err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return fmt.Errorf("render raw values as text: %w", err)
		}
		if _, err := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT render; RELEASE SAVEPOINT render").ReadAll(); err != nil {
			return fmt.Errorf("roll back the rendering of raw values: %w", err)
		}
		return nil
	}
	for k, r := range rendered {
		texts := results[k+1].Rows[0]
		j := 0
		for i, v := range rows[r] {
			if _, ok := v.(*chunk.Raw); ok {
				rows[r][i] = string(texts[j])
				j++
			}
		}
	}
	return nil
}

// jsonValue is v as JSON, or its Go form as a JSON string where JSON has
// no form for it (a NaN, a time beyond year 9999), so that one value does
// not cost a row its whole copy.
func jsonValue(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return b
}
