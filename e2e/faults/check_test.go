package faults

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func op(kind, key, value string, call, ret int64, outcome, got string, rev, host int) Op {
	return Op{Kind: kind, Key: key, Value: value, Call: call, Return: ret, Outcome: outcome, Got: got, Rev: rev, Host: host}
}

// The register checker must reject a read of an overwritten value and
// accept the same history when the overwrite's outcome is unknown.
func TestLinearizabilityChecker(t *testing.T) {
	dir := t.TempDir()
	stale := []Op{
		op(opWrite, "r", "a", 0, 10, outOK, "", 0, 1),
		op(opWrite, "r", "b", 20, 30, outOK, "", 0, 2),
		op(opRead, "r", "", 40, 50, outOK, "a", 0, 3),
	}
	if _, bad := checkLinearizable(stale, initDesc, dir, 0); len(bad) != 1 || !strings.Contains(bad[0], dir) {
		t.Errorf("stale read: %v; want one violation naming %s", bad, dir)
	}
	// A linearizable GET is held to the same standard; a local one is not.
	staleL := []Op{
		op(opWrite, "r", "a", 0, 10, outOK, "", 0, 1),
		op(opWrite, "r", "b", 20, 30, outOK, "", 0, 2),
		op(opLRead, "r", "", 40, 50, outOK, "a", 0, 3),
	}
	if _, bad := checkLinearizable(staleL, initDesc, dir, 0); len(bad) != 1 {
		t.Errorf("stale linearizable read: %v; want one violation", bad)
	}
	staleL[2].Kind = opGet
	if _, bad := checkLinearizable(staleL, initDesc, dir, 0); len(bad) != 0 {
		t.Errorf("stale local read: %v; want none (local reads may lag)", bad)
	}
	ok := []Op{
		op(opWrite, "r", "a", 0, 10, outOK, "", 0, 1),
		op(opWrite, "r", "b", 20, 30, outInfo, "", 0, 2),
		op(opRead, "r", "", 40, 50, outOK, "a", 0, 3),
		op(opRead, "r", "", 60, 70, outOK, "b", 0, 3),
		op(opRead, "q", "", 60, 70, outOK, initDesc, 0, 3),
	}
	if _, bad := checkLinearizable(ok, initDesc, dir, 0); len(bad) != 0 {
		t.Errorf("indeterminate write: %v; want none", bad)
	}
}

// Answers must agree on each revision's value and never go back on one
// host unless it restarted.
func TestVersionChecker(t *testing.T) {
	ops := []Op{
		op(opGet, "r", "", 0, 10, outOK, "a", 2, 1),
		op(opGet, "r", "", 20, 30, outOK, "b", 2, 2),
		op(opGet, "r", "", 40, 50, outOK, "x", 1, 1),
	}
	for i := range ops {
		ops[i].Seq = i + 1
	}
	bad, _ := checkVersions(ops, nil)
	if len(bad) != 2 || !strings.Contains(strings.Join(bad, "\n"), "divergent") || !strings.Contains(strings.Join(bad, "\n"), "stale answer on h1") {
		t.Errorf("got %q; want a divergence and a stale answer", bad)
	}
	if bad, n := checkVersions(ops, map[int][]int64{1: {35}}); len(bad) != 1 || n != 1 {
		t.Errorf("after a restart: %q, %d excused; want only the divergence, 1 excused", bad, n)
	}
}

// Lost, duplicate, phantom and double-allocated resources are found.
func TestResourceChecker(t *testing.T) {
	vni := 1000
	st := finalState{Networks: map[string]netInfo{
		"n1": {ID: "n1", Name: "p-c0-1", VNI: &vni},
		"n2": {ID: "n2", Name: "p-c0-1", VNI: &vni},
		"n3": {ID: "n3", Name: "p-c9-9"},
		"n4": {ID: "n4", Name: "p-c0-4"},
	}, Ports: map[string]portInfo{}}
	ops := []Op{
		{Kind: opCreate, Key: "p-c0-1", ID: "n1", Outcome: outOK},
		{Kind: opCreate, Key: "p-c0-2", ID: "n5", Outcome: outOK},
		{Kind: opCreate, Key: "p-c0-4", ID: "n4", Outcome: outOK},
		{Kind: opDelete, ID: "n4", Outcome: outOK},
		{Kind: opPort, ID: "port1", Outcome: outOK},
	}
	got := strings.Join(checkResources(ops, "p", st), "\n")
	for _, want := range []string{"double allocation: VNI 1000", "duplicate: network p-c0-1", "phantom network p-c9-9",
		"lost create: network p-c0-2", "lost delete: network n4", "lost create: port port1"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// A side is cut when it holds no majority of the voters, whatever its
// number of hosts; a write it acknowledges while cut is a violation.
func TestMinorityChecker(t *testing.T) {
	voters := []string{"h1", "h2", "h3"}
	if got := cutOff([]string{"h1", "h3"}, []string{"h2", "h4", "h5"}, voters); strings.Join(got, ",") != "h2,h4,h5" {
		t.Errorf("two voters of three against the rest: cut %v; want h2,h4,h5", got)
	}
	if got := cutOff([]string{"h4"}, []string{"h1", "h2", "h3", "h5"}, voters); strings.Join(got, ",") != "h4" {
		t.Errorf("a non-voter alone: cut %v; want h4", got)
	}
	ev := NemesisEvent{Kind: nemPartitionSplit, Hosts: []string{"h1", "h3"}, Voters: voters, Cut: []string{"h2", "h4", "h5"},
		Start: 10 * time.Second, Heal: 20 * time.Second}
	ops := []Op{
		{Seq: 1, Kind: opWrite, Host: 2, Call: int64(12 * time.Second), Return: int64(13 * time.Second), Outcome: outOK},
		{Seq: 2, Kind: opWrite, Host: 1, Call: int64(12 * time.Second), Return: int64(13 * time.Second), Outcome: outOK},
		{Seq: 3, Kind: opGet, Host: 4, Call: int64(12 * time.Second), Return: int64(13 * time.Second), Outcome: outOK},
		{Seq: 4, Kind: opWrite, Host: 4, Call: int64(10 * time.Second), Return: int64(10200 * time.Millisecond), Outcome: outOK},
		{Seq: 5, Kind: opLRead, Host: 5, Call: int64(14 * time.Second), Return: int64(15 * time.Second), Outcome: outOK},
	}
	bad := checkMinority(ops, []NemesisEvent{ev})
	if len(bad) != 2 || !strings.Contains(bad[0], "h2 acknowledged write (op 1)") || !strings.Contains(bad[1], "h5 acknowledged lread (op 5)") {
		t.Errorf("got %q; want op 1 and the linearizable read of op 5 (a cut host cannot confirm one)", bad)
	}
}

// A failing run leaves one folder with the history, the faults, the
// final states, the visualization, the data dirs and the logs.
func TestFailureFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "h1")
	logs := filepath.Join(t.TempDir(), "logs")
	for _, d := range []string{data, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "raft.db"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Result{Seed: 9, LogDir: logs, Ops: []Op{
		op(opWrite, "r", "a", 0, 10, outOK, "", 0, 1),
		op(opRead, "r", "", 20, 30, outOK, "b", 0, 2),
	}}
	st := finalState{Host: "h1", Networks: map[string]netInfo{}, Ports: map[string]portInfo{}}
	r.check(&workload{prefix: "p"}, []finalState{st}, []string{data}, t.Logf)
	if len(r.Failures) < 2 {
		t.Fatalf("failures %q; want the folder line and a linearizability violation", r.Failures)
	}
	m := regexp.MustCompile(`in (/\S+)$`).FindStringSubmatch(r.Failures[0])
	if m == nil {
		t.Fatalf("first failure names no folder: %q", r.Failures[0])
	}
	t.Cleanup(func() { os.RemoveAll(m[1]) })
	for _, f := range []string{"history.json", "nemeses.json", "final.json", "failures.txt", "summary.txt",
		"linearizability.html", "h1/raft.db", "logs"} {
		if _, err := os.Stat(filepath.Join(m[1], f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
