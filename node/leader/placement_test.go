package leader

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// pinState is a state with hosts h1-h3, an image, and servers s-<host>
// booting from new volumes on that host (local storage), plus "free" that
// boots from an image.
type pinState struct {
	t   *testing.T
	s   *statedb.Store
	idx uint64
}

func (p *pinState) apply(typ statedb.CmdType, payload any) {
	p.t.Helper()
	p.idx++
	c, err := statedb.NewCommand(typ, fmt.Sprintf("r%d", p.idx), time.Unix(int64(p.idx), 0).UTC(), payload)
	if err != nil {
		p.t.Fatal(err)
	}
	b, _ := c.Encode()
	if res := p.s.Apply(p.idx, b); res.Err != nil {
		p.t.Fatalf("apply %d: %v", typ, res.Err)
	}
}

func newPinState(t *testing.T) *pinState {
	p := &pinState{t: t, s: statedb.NewStore()}
	for _, h := range []string{"h1", "h2", "h3"} {
		p.apply(statedb.CmdRegisterMember, statedb.Member{ID: h, Name: "name-" + h, Version: "0.2.0"})
	}
	p.apply(statedb.CmdCreateImage, statedb.Image{ID: "img", Name: "img", ProjectID: "p", Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"})
	return p
}

func (p *pinState) server(id, volHost, group string) {
	p.t.Helper()
	ic := statedb.InstanceCreate{Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p", GroupID: group,
		Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 128, DiskGB: 1}, ImageID: "img"}}
	if volHost != "" {
		ic.Instance.ImageID = ""
		ic.Root = &statedb.RootDisk{AttachmentID: "a-" + id, New: &statedb.Volume{ID: "v-" + id, SizeGB: 1, Format: "qcow2",
			ImageID: "img", Host: volHost, Path: "/var/lib/peerstack/volumes/vol-v-" + id + ".qcow2"}}
	}
	p.apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{ic}})
}

func liveHosts(ids ...string) []gossip.Member {
	var out []gossip.Member
	for _, id := range ids {
		out = append(out, gossip.Member{Name: id, State: gossip.StateAlive, Meta: gossip.Meta{VCPUs: 8, RAMMB: 16384, DiskGB: 100}})
	}
	return out
}

func TestPlanPlacementsPinsLocalBootVolumes(t *testing.T) {
	p := newPinState(t)
	p.apply(statedb.CmdCreateServerGroup, statedb.ServerGroup{ID: "anti", Name: "anti", ProjectID: "p", Policy: "anti-affinity"})
	for _, h := range []string{"h1", "h2", "h3"} {
		p.server("s-"+h, h, "")
	}
	p.server("free", "", "")
	p.server("g-1", "h1", "anti")
	p.server("g-2", "h1", "anti")
	sn := p.s.Snapshot()
	cmd := planPlacements(sn, liveHosts("h1", "h2", "h3"), sn.PendingInstances(), nil)
	got := map[string]string{}
	for _, pl := range cmd.Placements {
		got[pl.InstanceID] = pl.HostID
	}
	failed := map[string]string{}
	for _, f := range cmd.Failures {
		failed[f.InstanceID] = f.Reason
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if got["s-"+h] != h {
			t.Errorf("planPlacements(s-%s) = %q; want %s, where its boot volume is", h, got["s-"+h], h)
		}
	}
	if got["free"] == "" {
		t.Errorf("planPlacements(free) = failed %q; want a host", failed["free"])
	}
	// Both anti-affinity members need h1: one goes there, and the same
	// round fails the other, naming its volume's host; the state machine
	// accepts the whole plan.
	g1, g2 := got["g-1"] == "h1", got["g-2"] == "h1"
	other := map[bool]string{true: "g-2", false: "g-1"}[g1]
	if g1 == g2 || !strings.Contains(failed[other], "name-h1") {
		t.Errorf("planPlacements(g-1, g-2) = %q, %q (failed %q); want one on h1 and the other failed naming it", got["g-1"], got["g-2"], failed)
	}
	p.apply(statedb.CmdPlaceInstances, cmd)
	sn = p.s.Snapshot()
	if left := sn.PendingInstances(); len(left) != 0 {
		t.Fatalf("pending after the plan = %v; want none: the state machine accepts what the scheduler plans", left)
	}

	// The volume's host is down: no other host will do.
	p.server("s-down", "h2", "")
	sn = p.s.Snapshot()
	inst, _ := sn.Instance("s-down")
	cmd = planPlacements(sn, liveHosts("h1", "h3"), []*statedb.Instance{inst}, nil)
	if len(cmd.Placements) != 0 || len(cmd.Failures) != 1 || !strings.Contains(cmd.Failures[0].Reason, "v-s-down") ||
		!strings.HasPrefix(cmd.Failures[0].Reason, statedb.NoValidHost) {
		t.Fatalf("planPlacements(s-down, h2 down) = %+v; want No valid host naming the volume", cmd)
	}
}
