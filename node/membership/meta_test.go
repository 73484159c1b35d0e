package membership_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/membership"
)

// metaGossip records the metadata handed to gossip.
type metaGossip struct {
	mu  sync.Mutex
	got []gossip.Meta
}

func (g *metaGossip) UpdateMeta(_ context.Context, m gossip.Meta) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.got = append(g.got, m)
	return nil
}

func (g *metaGossip) updates() []gossip.Meta {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gossip.Meta(nil), g.got...)
}

// placeServer creates a server with flavor f and places it on host.
func placeServer(t *testing.T, r *raft, id, host string, f statedb.Flavor) {
	t.Helper()
	if err := r.st.Apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p", UserID: "u", Flavor: f}}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: id, HostID: host}},
		HostCaps: map[string]statedb.HostCap{host: {VCPUs: 1000, RAMMB: 1 << 20, DiskGB: 10000}}}); err != nil {
		t.Fatal(err)
	}
}

// The metadata counts the claims of the servers placed on this host only,
// with the configured capacity, and goes to gossip only when it changed.
func TestAdvertiserCountsThisHostsClaims(t *testing.T) {
	r := twoMembers(t)
	if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: "m2", Name: "second"}); err != nil {
		t.Fatal(err)
	}
	placeServer(t, r, "a", "m1", statedb.Flavor{ID: "f1", Name: "small", VCPUs: 2, RAMMB: 512, DiskGB: 10, EphemeralGB: 5})
	placeServer(t, r, "b", "m1", statedb.Flavor{ID: "f2", Name: "tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1})
	placeServer(t, r, "c", "m2", statedb.Flavor{ID: "f3", Name: "big", VCPUs: 16, RAMMB: 65536, DiskGB: 500})

	var probes atomic.Int32
	g := &metaGossip{}
	a := &membership.Advertiser{
		Self:    gossip.Meta{NodeID: "m1", Name: "first", APIAddr: "10.0.0.1:8470", RaftAddr: "10.0.0.1:8471", VTEPAddr: "10.0.0.1", SWVersion: "0.3.0"},
		DataDir: t.TempDir(), VCPUs: 8, RAMMB: 16384, DiskGB: 200,
		Accel: func() string { probes.Add(1); return "tcg" },
		State: r.State, Changed: r.st.Changed, Gossip: g, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	m := a.Meta()
	want := gossip.Meta{Version: 1, NodeID: "m1", Name: "first", APIAddr: "10.0.0.1:8470", RaftAddr: "10.0.0.1:8471", VTEPAddr: "10.0.0.1",
		VCPUs: 8, RAMMB: 16384, DiskGB: 200, UsedVCPUs: 3, UsedRAMMB: 640, UsedDiskGB: 16, Accel: "tcg", Arch: membership.Arch(), SWVersion: "0.3.0"}
	if m != want {
		t.Fatalf("meta =\n%+v\nwant\n%+v", m, want)
	}

	a.Update(context.Background())
	a.Update(context.Background())
	if u := g.updates(); len(u) != 1 || u[0] != want {
		t.Fatalf("two updates with nothing changed sent %d: %+v; want the metadata once", len(u), u)
	}
	placeServer(t, r, "d", "m1", statedb.Flavor{ID: "f2", Name: "tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1})
	a.Update(context.Background())
	if u := g.updates(); len(u) != 2 || u[1].UsedVCPUs != 4 || u[1].UsedRAMMB != 768 || u[1].UsedDiskGB != 17 {
		t.Fatalf("after a server was placed here, updates = %+v; want a second one counting it", u)
	}
	if n := probes.Load(); n != 1 {
		t.Fatalf("accelerator probed %d times; want once", n)
	}
}

// Without overrides the capacity is the host's, and without a state no
// claim is counted.
func TestAdvertiserMeasuresTheHost(t *testing.T) {
	dir := t.TempDir()
	a := &membership.Advertiser{Self: gossip.Meta{NodeID: "m1"}, DataDir: dir}
	m := a.Meta()
	vcpus, ram, disk := membership.HostCapacity(dir)
	if vcpus < 1 || ram < 1 || disk < 1 {
		t.Fatalf("host capacity %d vCPUs, %d MB, %d GB; want every one measured", vcpus, ram, disk)
	}
	if m.VCPUs != vcpus || m.RAMMB != ram || m.DiskGB != disk || m.UsedVCPUs != 0 || m.Accel != "" {
		t.Fatalf("meta = %+v; want the host's capacity (%d, %d, %d), nothing used", m, vcpus, ram, disk)
	}
}

// Run refreshes the metadata soon after the state places a server here.
func TestAdvertiserRunFollowsTheState(t *testing.T) {
	r := twoMembers(t)
	g := &metaGossip{}
	waiting := make(chan struct{}, 1) // Run watches the state
	changed := func() <-chan struct{} {
		ch := r.st.Changed()
		select {
		case waiting <- struct{}{}:
		default:
		}
		return ch
	}
	a := &membership.Advertiser{Self: gossip.Meta{NodeID: "m1"}, DataDir: t.TempDir(), VCPUs: 4, RAMMB: 4096, DiskGB: 50,
		State: r.State, Changed: changed, Gossip: g, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a.Update(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-waiting

	placeServer(t, r, "a", "m1", statedb.Flavor{ID: "f1", Name: "small", VCPUs: 2, RAMMB: 512, DiskGB: 10})
	deadline := time.Now().Add(5 * time.Second)
	for {
		u := g.updates()
		if last := u[len(u)-1]; last.UsedVCPUs == 2 && last.UsedRAMMB == 512 && last.UsedDiskGB == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("updates = %+v; want one counting the placed server within seconds", u)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
