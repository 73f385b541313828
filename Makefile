# Targets for people and CI alike; .ci/run calls `make test`.
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all test build bench lint demo clean

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo:
	$(GO) run ./internal/demo

clean:
	rm -rf bin
