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
		ImportPath string
		Imports    []string
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
		case from == "node/imagecache":
			return to == "consensus/statedb" || to == "hv/storage"
		case from == "node/membership":
			return to == "consensus/statedb" || to == "gossip" || to == "rest" || to == "rest/cluster"
		case under(from, "rest"):
			return to == "consensus/statedb" || under(to, "rest")
		case under(from, "e2e"):
			return under(to, "e2e")
		}
		return false
	}
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			if to := rel(imp); !allowed(from, to) {
				t.Errorf("%s imports %s: not allowed by docs/architecture.md", p.ImportPath, imp)
			}
		}
	}
}
