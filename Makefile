# peerstack — see README.md. `make run` and `make test` are each the whole set-up.
SHELL := /bin/bash
GO ?= go
BIN := bin/peerstack
DATA ?= ./data
PKGS := ./...

.PHONY: all build run test test-unit bench bench-all lint deps deps-run deps-guest guest-image clean

all: build

deps:
	@scripts/deps.sh test

deps-run:
	@scripts/deps.sh run

deps-guest:
	@scripts/deps.sh guest

build:
	$(GO) build -o $(BIN) .

# A single-host cluster on the embedded defaults, state in $(DATA); extra
# agent flags in ARGS (e.g. ARGS='--api-addr 127.0.0.1:8470').
run: deps-run build
	$(BIN) agent --data-dir $(DATA) $(ARGS)

# As root with QEMU (CI), this includes real VMs and the full cluster-in-a-box
# scenario. The process-level tests (e2e) run after the others, so their
# guests do not compete with the hypervisor tests' guests for the CPU.
test: deps build guest-image
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 40m $$($(GO) list $(PKGS) | grep -v '/e2e\(/faults\)\?$$')
	PEERSTACK_E2E_FULL=1 $(GO) test -race -count=1 -timeout 40m ./e2e
	$(GO) test -race -count=1 -timeout 15m ./e2e/faults
	$(MAKE) test-arm64

test-unit: build
	$(GO) test -race -count=1 -short $(PKGS)

# bench: the control-plane table (joins, writes, failover, placements)
# measured between real processes; bench-all: every benchmark.
bench: deps build guest-image
	GO=$(GO) bash scripts/benchtable.sh

bench-all: build
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)

guest-image: deps-guest build/guest.qcow2

build/guest.qcow2: scripts/build-guest-image.sh $(wildcard scripts/guestio/*.go)
	scripts/build-guest-image.sh build

clean:
	rm -rf bin build

.PHONY: deb test-arm64

# Debian packages for amd64 and arm64 in build/deb (dpkg-deb; see packaging/).
VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"/\1/p' node/config.go)
deb:
	scripts/mkdeb.sh $(VERSION) amd64 build/deb
	scripts/mkdeb.sh $(VERSION) arm64 build/deb

# The pure packages' unit tests, cross-compiled for arm64 and run under qemu-user.
ARM64_PKGS := ./consensus/statedb/ ./node/scheduler/ ./node/identity/ ./gossip/
test-arm64:
	CGO_ENABLED=0 GOARCH=arm64 $(GO) test -count=1 -short -exec qemu-aarch64 $(ARM64_PKGS)

.PHONY: demo demo-down e2e

# A 3-host cluster in a box (network namespaces, NFS storage) left running.
demo: deps build guest-image
	scripts/demo.sh up

demo-down:
	scripts/demo.sh down

# The whole cluster-in-a-box scenario through the openstack CLI (root, QEMU, ganesha).
# Without PEERSTACK_E2E_FULL=1 (as in `make test`) only the steps whose
# features exist run: cluster formation, identity, leader kill, cleanup.
e2e: deps build guest-image
	PEERSTACK_E2E_FULL=1 $(GO) test -count=1 -timeout 30m -run '^TestClusterInABox$$' -v ./e2e

.PHONY: xterm
# Refresh the dashboard's vendored xterm.js (checked in; the build never
# fetches it): make xterm XTERM_VERSION=6.0.0
XTERM_VERSION ?= 6.0.0
xterm:
	rm -rf build/xterm && mkdir -p build/xterm
	cd build/xterm && npm install --no-save --ignore-scripts @xterm/xterm@$(XTERM_VERSION)
	sed '/^\/\/# sourceMappingURL=/d' build/xterm/node_modules/@xterm/xterm/lib/xterm.js > rest/dashboard/static/xterm.js
	cp build/xterm/node_modules/@xterm/xterm/css/xterm.css rest/dashboard/static/xterm.css
	cp build/xterm/node_modules/@xterm/xterm/LICENSE rest/dashboard/static/XTERM-LICENSE
	sed -i 's/@xterm\/xterm [0-9.]*/@xterm\/xterm $(XTERM_VERSION)/' rest/dashboard/static/XTERM.md

.PHONY: faults
# The fault suite (docs/faults.md): five daemons in a box under partitions,
# crashes, pauses, packet loss, clock shifts and NFS stops for DURATION,
# with HA guests on the NAS; FAULTS_SEED replays a run.
DURATION ?= 5m
faults: deps build guest-image
	FAULTS_DURATION=$(DURATION) FAULTS_SEED=$(FAULTS_SEED) $(GO) test -count=1 -timeout 3h -run '^TestFaults$$' -v ./e2e/faults
