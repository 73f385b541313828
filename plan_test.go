package backfill

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/transform"
)

func column(typ, castType string, oid, castOID uint32) catalog.Column {
	return catalog.Column{Column: transform.Column{Name: "c", Type: typ, OID: oid}, CastType: castType, CastOID: castOID}
}

// TestPassthroughCast: a value passed through as text is read as the
// source's type when both types are built in and differ, so that the
// destination's assignment converts it as INSERT … SELECT would; otherwise
// the destination's type reads it.
func TestPassthroughCast(t *testing.T) {
	var (
		char6    = column("character(6)", "bpchar", pgtype.BPCharOID, pgtype.BPCharOID)
		char8    = column("character(8)", "bpchar", pgtype.BPCharOID, pgtype.BPCharOID)
		int4     = column("integer", "integer", pgtype.Int4OID, pgtype.Int4OID)
		int8     = column("bigint", "bigint", pgtype.Int8OID, pgtype.Int8OID)
		numeric  = column("numeric(10,2)", "numeric", pgtype.NumericOID, pgtype.NumericOID)
		positive = column("positive", "numeric", 16390, pgtype.NumericOID) // a domain over numeric
		text     = column("text", "text", pgtype.TextOID, pgtype.TextOID)
		varchar5 = column("character varying(5)", "character varying", pgtype.VarcharOID, pgtype.VarcharOID)
		email    = column("email", "text", 16400, pgtype.TextOID) // a domain over text
		mood     = column("mood", "mood", 16410, 16410)           // an enum
		moodElse = column("public.mood", "public.mood", 17000, 17000)
	)
	for _, c := range []struct {
		name     string
		src, dst catalog.Column
		want     string
	}{
		{"one type, typmods differ", char6, char8, "bpchar"},
		{"integer to bigint", int4, int8, "integer"},
		{"numeric to integer rounds as INSERT … SELECT does", numeric, int4, "numeric"},
		{"a domain to its base type", positive, numeric, "numeric"},
		{"a base type to its domain", numeric, positive, "numeric"},
		{"varchar to a domain over text", varchar5, email, "character varying"},
		{"text to an enum reads the enum", text, mood, "mood"},
		{"an enum to text", mood, text, "text"},
		{"an enum to another database's enum", mood, moodElse, "public.mood"},
	} {
		if got := passthroughCast(c.src, c.dst); got != c.want {
			t.Errorf("%s: cast %q; want %q", c.name, got, c.want)
		}
	}
}

// TestGoValued: only the types the transform has Go values for go as
// typed arrays; every other travels as its text.
func TestGoValued(t *testing.T) {
	for oid, want := range map[uint32]bool{
		pgtype.Int8OID: true, pgtype.NumericOID: true, pgtype.BPCharOID: true, pgtype.TimestamptzOID: true,
		pgtype.UUIDOID: true, pgtype.ByteaOID: true,
		pgtype.JSONOID: false, pgtype.JSONBOID: false, pgtype.XMLOID: false, pgtype.MacaddrOID: false,
		pgtype.Int4rangeOID: false, pgtype.Int4multirangeOID: false, pgtype.BitOID: false, pgtype.IntervalOID: false,
		pgtype.TextArrayOID: false, pgtype.BPCharArrayOID: false, 16410: false,
	} {
		if got := goValued(oid); got != want {
			t.Errorf("goValued(%d) = %v; want %v", oid, got, want)
		}
	}
}
