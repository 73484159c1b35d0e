package faults

import (
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// The volume judge must catch a lost create, a lost delete and a volume
// stuck in a transitional status, and let through what the history
// allows: a create whose delete was sent, a delete that failed as
// error_deleting, another run's volume in any status.
func TestJudgeVolumes(t *testing.T) {
	vol := func(id, name, status string) volumes.Volume {
		return volumes.Volume{ID: id, Name: name, Status: status}
	}
	ops := []Op{
		{Seq: 1, Kind: opVolCreate, Key: "fz1-v0-1", ID: "a", Outcome: outOK, Host: 1},   // there
		{Seq: 2, Kind: opVolCreate, Key: "fz1-v0-2", ID: "b", Outcome: outOK, Host: 2},   // gone, deleted
		{Seq: 3, Kind: opVolDelete, ID: "b", Outcome: outInfo, Host: 3},                  //
		{Seq: 4, Kind: opVolCreate, Key: "fz1-v0-4", ID: "c", Outcome: outOK, Host: 4},   // failed to delete
		{Seq: 5, Kind: opVolDelete, ID: "c", Outcome: outOK, Host: 5},                    //
		{Seq: 6, Kind: opVolCreate, Key: "fz1-v0-6", ID: "d", Outcome: outFail, Host: 1}, // refused
		{Seq: 7, Kind: opAttach, Key: "srv", ID: "a", Outcome: outOK, Host: 2},
	}
	ok := map[string]volumes.Volume{
		"a": vol("a", "fz1-v0-1", "available"),
		"c": vol("c", "fz1-v0-4", "error_deleting"),
		"x": vol("x", "other", "creating"), // not this run's
	}
	if bad, created, _ := judgeVolumes(ops, ok, "fz1", true); len(bad) != 0 || created != 3 {
		t.Fatalf("a consistent end state: %v (%d created); want no violation, 3 created", bad, created)
	}
	for name, tc := range map[string]struct {
		vols map[string]volumes.Volume
		want string
	}{
		"lost create": {map[string]volumes.Volume{"c": ok["c"]}, "lost create: volume fz1-v0-1"},
		"lost delete": {map[string]volumes.Volume{"a": ok["a"], "c": vol("c", "fz1-v0-4", "available")}, "lost delete: volume c"},
		"stuck":       {map[string]volumes.Volume{"a": vol("a", "fz1-v0-1", "creating"), "c": ok["c"]}, "transitional status"},
		"stuck delete": {map[string]volumes.Volume{"a": ok["a"], "c": vol("c", "fz1-v0-4", "deleting")},
			"fz1-v0-4 (c) deleting"},
	} {
		bad, _, _ := judgeVolumes(ops, tc.vols, "fz1", true)
		if len(bad) != 1 || !strings.Contains(bad[0], tc.want) {
			t.Errorf("%s: %v; want one violation saying %q", name, bad, tc.want)
		}
	}
	// Vacuous runs: nothing acknowledged proves nothing.
	if bad, _, _ := judgeVolumes(ops[:6], ok, "fz1", true); len(bad) != 1 || !strings.Contains(bad[0], "no volume attach") {
		t.Errorf("no attach acknowledged, with servers: %v; want one violation", bad)
	}
	if bad, _, _ := judgeVolumes(ops[:6], ok, "fz1", false); len(bad) != 0 {
		t.Errorf("no attach acknowledged, without servers: %v; want none", bad)
	}
	refused := []Op{ops[5]}
	if bad, created, _ := judgeVolumes(refused, map[string]volumes.Volume{}, "fz1", false); created != 0 || len(bad) != 1 || !strings.Contains(bad[0], "no volume create") {
		t.Errorf("no create acknowledged: %v; want one violation", bad)
	}
}
