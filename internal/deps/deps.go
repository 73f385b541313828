//go:build tools

// Package deps pins modules that packages will import as the work lands.
package deps

import (
	_ "github.com/expr-lang/expr"
	_ "github.com/goccy/go-yaml"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/rs/zerolog"
	_ "github.com/testcontainers/testcontainers-go"
	_ "github.com/testcontainers/testcontainers-go/modules/postgres"
	_ "github.com/urfave/cli/v2"
	_ "golang.org/x/time/rate"
)
