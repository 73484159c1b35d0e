# peerstack — see README.md. `make run` and `make test` are each the whole set-up.
SHELL := /bin/bash
GO ?= go
BIN := bin/peerstack
DATA ?= ./data
PKGS := ./...

.PHONY: all build run test test-unit bench lint deps deps-run guest-image clean

all: build

deps:
	@scripts/deps.sh test

deps-run:
	@scripts/deps.sh run

build:
	$(GO) build -o $(BIN) .

# A single-host cluster on the embedded defaults, state in $(DATA).
run: deps-run build
	$(BIN) agent --data-dir $(DATA)

test: deps build guest-image
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

test-unit: build
	$(GO) test -race -count=1 -short $(PKGS)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)

guest-image: build/guest.qcow2

build/guest.qcow2: scripts/build-guest-image.sh
	scripts/build-guest-image.sh build

clean:
	rm -rf bin build
