# Targets for people and CI alike; .ci/run calls `make test`.
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all test build bench bench-impact bench-tools microbench lint demo clean

all: build

# The first go test says which server the tests use (env URL,
# testcontainers or a local cluster): passing packages print no log.
# -p 2: each test binary may start its own PostgreSQL cluster; two at a time
# is what a 2-core CI machine carries.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -v -run '^TestHarnessPath$$' ./internal/pgtest
	$(GO) test -race -count=1 -p 2 -timeout 20m ./...

build:
	$(GO) build -o bin/backfill ./cmd/backfill

# Issue 9's instrument (BENCHMARKS.md says what it measures): copy methods
# side by side on a throwaway server, Markdown on stdout, then the
# micro-benchmarks. BENCHFLAGS goes to the driver, for example
#   make bench BENCHFLAGS='-rows 200000 -rounds 1 -groups methods'
#   make bench BENCHFLAGS='-groups memory,rate,profile'
BENCHFLAGS ?=
bench: build bench-tools
	$(GO) build -o bin/benchrun ./internal/benchrun
	bin/benchrun -backfill bin/backfill -go $(GO) $(BENCHFLAGS)
	$(MAKE) --no-print-directory microbench

# Issue 12's instrument: pgbench's latency at a fixed rate on the source,
# alone and beside backfill under each throttle setting (-impact-runs).
bench-impact: build
	$(GO) build -o bin/benchrun ./internal/benchrun
	bin/benchrun -backfill bin/backfill -groups impact $(BENCHFLAGS)

# What make bench compares with and profiles by, from Debian's packages:
# pgcopydb (the cross-database baseline) and perf (the server's profile).
# Best effort: without them the driver says what it could not measure.
bench-tools:
	@missing=""; \
	command -v pgcopydb >/dev/null 2>&1 || missing="$$missing pgcopydb"; \
	command -v perf >/dev/null 2>&1 || missing="$$missing linux-perf"; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		echo "installing:$$missing"; \
		{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; } \
			|| echo "bench-tools: could not install$$missing; make bench goes on without them"; \
	fi

# Micro-benchmarks with allocations: page read, chunk write, argument
# encoding, transform, key encoding, and the in-process copies. -p 1: one
# package at a time, or two benchmark binaries share the two cores.
# BenchmarkRateCap waits 30 s for a figure the driver's rate group measures.
microbench:
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -skip '^BenchmarkRateCap$$' ./paginator ./worker ./transform .

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo:
	$(GO) run ./internal/demo

clean:
	rm -rf bin
