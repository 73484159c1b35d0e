package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirections enforces the import rules of docs/architecture.md: imports point
// down only; consensus, gossip, hv/* and consensus/statedb import nothing
// else of the project; the scheduler only the state types; rest never node
// or hv; nothing but main and tests imports node; the leader routines
// only consensus, gossip, the state, the scheduler and token keys.
func TestImportDirections(t *testing.T) {
	const mod = "github.com/peerstack/peerstack"
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath   string
		Imports      []string
		TestImports  []string // the package's own _test.go files
		XTestImports []string // its package_test files
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	rel := func(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, mod), "/") }
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	// allowed reports whether package from may import project package to.
	allowed := func(from, to string) bool {
		// A test-helper package (…/xxxtest) may use the package it fakes.
		if i := strings.LastIndex(from, "/"); i > 0 && strings.HasSuffix(from, "test") && under(to, from[:i]) {
			return true
		}
		if from == "rest/resttest" && to == "node/access" {
			return true // the REST test backend decides with the real policy
		}
		switch {
		case from == "":
			return to == "node" || under(to, "rest/client") || under(to, "rest/cluster")
		case under(from, "node/nodetest"):
			return true
		case from == "node":
			return to != "node/nodetest"
		case from == "node/scheduler":
			return to == "consensus/statedb" // the state types and their placement rule
		case from == "consensus/statedb", under(from, "hv"), from == "gossip":
			return false
		case from == "consensus":
			return to == "consensus/statedb"
		case from == "node/identity":
			return false
		case from == "node/leader":
			// Leader routines decide and propose: consensus, gossip, the
			// state types, the pure scheduler and token keys; never the
			// host (hv), the API (rest) or the agents.
			return to == "consensus" || to == "consensus/statedb" || to == "gossip" || to == "node/scheduler" || to == "node/identity"
		case under(from, "node/agent"):
			return to == "consensus/statedb"
		case from == "node/hvagent":
			// Adapters from the host drivers to the agent's interfaces.
			return to == "node/agent" || under(to, "hv")
		case from == "node/hostfail":
			// This host's lease, guard, duplicate check and drain: Raft's
			// status, the state, the agents' hypervisor and fence types
			// and the API's routes; never the daemon (node).
			return to == "consensus" || to == "consensus/statedb" || to == "node/agent" || to == "rest"
		case from == "node/access":
			// Who a request is, from the local state: token keys and
			// policy (node/identity), the API's credential types.
			return to == "consensus/statedb" || to == "node/identity" || to == "rest" || to == "rest/identity"
		case from == "node/forward":
			// Forwarding to the leader and admitting what is forwarded:
			// consensus's interfaces and state, the caller's roles, the
			// internal API's shapes.
			return to == "consensus" || to == "consensus/statedb" || to == "node/identity" || to == "rest" || to == "rest/cluster"
		case from == "node/readiness":
			// The catch-up gate: Raft's status and the API's routes.
			return to == "consensus" || to == "rest"
		case from == "node/imagecache":
			// The blob side of the images API is the cache's.
			return to == "consensus/statedb" || to == "hv/storage" || to == "rest/image"
		case from == "node/membership":
			return to == "consensus/statedb" || to == "gossip" || to == "rest" || to == "rest/cluster"
		case under(from, "rest"):
			return to == "consensus/statedb" || under(to, "rest")
		case under(from, "e2e"):
			return under(to, "e2e")
		}
		return false
	}
	// Tests may also use the package under test, any test-helper package
	// (…test: fakes and servers such as agenttest, resttest, nfstest) and
	// the few real parts listed here, each for a stated reason.
	testAllowed := func(from, to string) bool {
		if to == from || (strings.HasSuffix(to, "test") && to != "node/nodetest") {
			return true
		}
		for _, e := range testOnlyEdges {
			if e.from == from && e.to == to {
				return true
			}
		}
		return allowed(from, to)
	}
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		from := rel(p.ImportPath)
		check := func(imports []string, ok func(from, to string) bool, what string) {
			for _, imp := range imports {
				if !strings.HasPrefix(imp, mod) {
					continue
				}
				if to := rel(imp); !ok(from, to) {
					t.Errorf("%s%s imports %s: not allowed by docs/architecture.md", p.ImportPath, what, imp)
				}
			}
		}
		check(p.Imports, allowed, "")
		check(p.TestImports, testAllowed, " (tests)")
		check(p.XTestImports, testAllowed, " (tests)")
	}
}

// testOnlyEdges are imports only tests make, against the direction of the
// rules, each for a reason. A new one needs a reason too.
var testOnlyEdges = []struct{ from, to, why string }{
	{"", "node/nodetest", "the CLI's tests run against an in-process cluster"},
	{"consensus/statedb", "node/scheduler", "property tests check the FSM's claim check against the scheduler's plans"},
	{"hv/qemu", "hv/storage", "real-QEMU tests put volumes on a real NFS share"},
	{"rest/image", "hv/storage", "upload tests stream into the real blob store"},
	{"node/imagecache", "node/agent/agenttest", "the copier and reconciler tests use the agents' fake state and proposer"},
	{"node/membership", "node/agent/agenttest", "admission tests use the agents' fake state and proposer"},
}
