package backfill

import (
	"errors"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"postgres://app:s3cret@db:5432/shop?sslmode=require":     "postgres://app:xxxxx@db:5432/shop?sslmode=require",
		"postgresql://app@db/shop":                               "postgresql://app@db/shop",
		"postgres://db/shop?password=s3cret&sslmode=verify-full": "postgres://db/shop?password=xxxxx&sslmode=verify-full",
		"postgres://app:s3cret@db:notaport/shop":                 "postgres://app:xxxxx@db:notaport/shop",
		"host=db user=app password=s3cret dbname=shop":           "host=db user=app password=xxxxx dbname=shop",
		"host=db password='s3 cret' dbname=shop":                 "host=db password=xxxxx dbname=shop",
		"":                                                       "",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestScrubRemovesPasswordsFromErrors(t *testing.T) {
	url := "postgres://app:s3cret@db/shop"
	base := errors.New("cannot parse postgres://app:s3cret@db/shop: boom (password s3cret)")
	err := scrub(base, url)
	if strings.Contains(err.Error(), "s3cret") || !errors.Is(err, base) {
		t.Fatalf("scrub: %v (wraps the original: %v)", err, errors.Is(err, base))
	}
}
