package catalog

import (
	"strings"
	"testing"
)

func TestParseTableName(t *testing.T) {
	cases := []struct {
		in      string
		want    TableName
		wantErr string
	}{
		{in: "users", want: TableName{Name: "users"}},
		{in: "Users", want: TableName{Name: "users"}},
		{in: "public.Users", want: TableName{Schema: "public", Name: "users"}},
		{in: `sales."Order Items"`, want: TableName{Schema: "sales", Name: "Order Items"}},
		{in: `"Sales"."a.b"`, want: TableName{Schema: "Sales", Name: "a.b"}},
		{in: `"say ""hi"""`, want: TableName{Name: `say "hi"`}},
		{in: "  spaced . name  ", want: TableName{Schema: "spaced", Name: "name"}},
		{in: "ÜBER", want: TableName{Name: "Über"}}, // only ASCII letters fold, as in a UTF-8 PostgreSQL
		{in: "t$1", want: TableName{Name: "t$1"}},
		{in: "_x", want: TableName{Name: "_x"}},
		{in: "", wantErr: "empty name"},
		{in: "a.", wantErr: "empty name"},
		{in: ".a", wantErr: "empty name"},
		{in: "a.b.c", wantErr: "3 dot-separated parts"},
		{in: `"unterminated`, wantErr: "unterminated"},
		{in: `""`, wantErr: "zero-length"},
		{in: "1abc", wantErr: "not a valid unquoted name"},
		{in: "users; DROP TABLE x", wantErr: "not a valid unquoted name"},
		{in: `a"b"`, wantErr: "quote in the middle"},
		{in: `"a"b`, wantErr: "after a quoted name"},
		{in: strings.Repeat("x", 64), wantErr: "longer than 63 bytes"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseTableName(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseTableName(%q) = %+v, %v; want error containing %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseTableName(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			}
		})
	}
}

func TestTableNameQuoting(t *testing.T) {
	cases := map[TableName]string{
		{Name: "users"}:                        `"users"`,
		{Schema: "sales", Name: "Order Items"}: `"sales"."Order Items"`,
		{Name: `x"; DROP TABLE y; --`}:         `"x""; DROP TABLE y; --"`,
		{Schema: "a.b", Name: `q"uote`}:        `"a.b"."q""uote"`,
	}
	for in, want := range cases {
		if got := in.String(); got != want {
			t.Errorf("%+v quotes as %s, want %s", in, got, want)
		}
	}
}

func TestParseColumnList(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "id", want: []string{"id"}},
		{in: "Tenant_ID, id", want: []string{"tenant_id", "id"}},
		{in: `"Order No",line`, want: []string{"Order No", "line"}},
		{in: `"a,b", c`, want: []string{"a,b", "c"}},
		{in: "a,,b", wantErr: "empty name"},
		{in: "a, A", wantErr: "appears twice"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseColumnList(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseColumnList(%q) = %v, %v; want error containing %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("ParseColumnList(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
}
