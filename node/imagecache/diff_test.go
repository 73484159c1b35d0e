package imagecache

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// diffState builds a state with images and servers for diff and mustKeep.
type diffState struct {
	t  *testing.T
	st *agenttest.State
}

func newDiffState(t *testing.T) *diffState {
	d := &diffState{t: t, st: agenttest.NewState()}
	for _, m := range []string{"h1", "h2", "h3"} {
		d.apply(statedb.CmdRegisterMember, statedb.Member{ID: m, Name: m})
	}
	return d
}

func (d *diffState) apply(typ statedb.CmdType, payload any) {
	d.t.Helper()
	if err := d.st.Apply(typ, payload); err != nil {
		d.t.Fatalf("apply %d %+v: %v", typ, payload, err)
	}
}

func sumOf(c byte) string { return strings.Repeat(string(c), 64) }

// image records an active image with blob sumOf(c), holders and wanted
// holders.
func (d *diffState) image(id string, c byte, holders, wanted []string) {
	d.t.Helper()
	d.apply(statedb.CmdCreateImage, statedb.Image{ID: id, Name: id, ProjectID: "p", DiskFormat: "raw", ContainerFormat: "bare"})
	d.apply(statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: id, HostID: holders[0]})
	d.apply(statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: id, Size: 1, SHA256: sumOf(c), Holders: holders})
	if wanted != nil {
		d.apply(statedb.CmdSetImageCopies, statedb.SetImageCopiesCmd{ImageID: id, Hosts: wanted})
	}
}

// server places a server booting from image on host.
func (d *diffState) server(id, image, host string) {
	d.t.Helper()
	d.apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p", UserID: "u", ImageID: image,
			Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}},
	}}})
	d.apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{
		Placements: []statedb.PlacementRec{{InstanceID: id, HostID: host}},
		HostCaps:   map[string]statedb.HostCap{host: {VCPUs: 100, RAMMB: 1 << 20, DiskGB: 1000}},
	})
}

func TestDiff(t *testing.T) {
	d := newDiffState(t)
	d.image("wanted-missing", 'a', []string{"h2"}, []string{"h1", "h2"})
	d.image("wanted-held", 'b', []string{"h2", "h1"}, []string{"h1"})
	d.image("wanted-file-gone", 'c', []string{"h1"}, []string{"h1"})
	d.image("cache", 'd', []string{"h2", "h1"}, []string{"h2"})
	d.image("lost", 'e', []string{"h2", "h1"}, []string{"h2"})
	d.image("deleted", 'f', []string{"h1"}, nil)
	d.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "deleted"})
	d.image("deleted-in-use", 'a', []string{"h1", "h2"}, nil)
	d.server("vm", "deleted-in-use", "h1")
	d.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "deleted-in-use"})
	d.image("elsewhere", '7', []string{"h2"}, []string{"h2", "h3"})

	local := map[string]bool{sumOf('a'): true, sumOf('b'): true, sumOf('d'): true, sumOf('f'): true}
	has := func(sum string) bool { return local[sum] }
	show := func(ops []op) []string {
		var out []string
		for _, o := range ops {
			id := ""
			if o.image != nil {
				id = o.image.ID
			}
			out = append(out, fmt.Sprintf("%d:%s", o.kind, id))
		}
		slices.Sort(out)
		return out
	}
	sn := d.st.Snapshot()
	want := []string{fmt.Sprintf("%d:deleted", opRelease), fmt.Sprintf("%d:wanted-file-gone", opFetch), fmt.Sprintf("%d:wanted-missing", opFetch)}
	slices.Sort(want)
	if got := show(diff(sn, "h1", has, false)); !slices.Equal(got, want) {
		t.Errorf("diff(h1, triggered sync) = %v; want %v", got, want)
	}
	want = append(want, fmt.Sprintf("%d:", opEvict), fmt.Sprintf("%d:lost", opLost))
	slices.Sort(want)
	if got := show(diff(sn, "h1", has, true)); !slices.Equal(got, want) {
		t.Errorf("diff(h1, full sync) = %v; want %v", got, want)
	}
}

func TestMustKeep(t *testing.T) {
	d := newDiffState(t)
	d.image("wanted", 'a', []string{"h1", "h2"}, []string{"h1"})
	d.image("cache", 'b', []string{"h2", "h1"}, []string{"h2"})
	d.image("last", 'c', []string{"h1"}, []string{"h2"}) // h2 has not fetched it yet
	d.image("undecided", 'd', []string{"h1"}, nil)
	d.image("shared", 'e', []string{"h1", statedb.ImageHolderShared}, nil)
	d.image("booted", 'f', []string{"h2", "h1"}, []string{"h2"})
	d.server("vm", "booted", "h1")
	d.image("deleted", '0', []string{"h1"}, nil)
	d.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "deleted"})
	sn := d.st.Snapshot()
	for _, tc := range []struct {
		c    byte
		want bool
	}{
		{'a', true}, {'b', false}, {'c', true}, {'d', true}, {'e', false}, {'f', true}, {'0', false}, {'8', false},
	} {
		if got := mustKeep(sn, "h1", sumOf(tc.c)); got != tc.want {
			t.Errorf("mustKeep(h1, %c…) = %v; want %v", tc.c, got, tc.want)
		}
	}
}

// TestInUseCountsRescueImages: a rescued server's rescue disk is an
// overlay on its rescue image, so that image's blob is in use on its host
// (kept by eviction and by the release of a deleted image) until the
// unrescue starts.
func TestInUseCountsRescueImages(t *testing.T) {
	d := newDiffState(t)
	d.image("root", 'a', []string{"h1"}, nil)
	d.image("rescue", 'b', []string{"h1"}, nil)
	d.server("vm", "root", "h1")
	d.apply(statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: "vm", HostID: "h1",
		VMState: statedb.VMActive, PowerState: statedb.PowerRunning})
	if inUseOn(d.st.Snapshot(), "h1", sumOf('b')) {
		t.Fatal("the rescue image is in use before any rescue")
	}
	d.apply(statedb.CmdRescueServer, statedb.RescueCmd{ID: "vm", ImageID: "rescue"})
	sn := d.st.Snapshot()
	if !inUseOn(sn, "h1", sumOf('b')) || !inUseOn(sn, "h1", sumOf('a')) {
		t.Fatalf("rescued: rescue image in use %v, root image in use %v; want both", inUseOn(sn, "h1", sumOf('b')), inUseOn(sn, "h1", sumOf('a')))
	}
	if inUseOn(sn, "h2", sumOf('b')) {
		t.Fatal("the rescue image is in use on a host without the server")
	}
	d.apply(statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: "vm", HostID: "h1",
		VMState: statedb.VMRescued, PowerState: statedb.PowerRunning})
	d.apply(statedb.CmdRescueServer, statedb.RescueCmd{ID: "vm", Unrescue: true})
	if inUseOn(d.st.Snapshot(), "h1", sumOf('b')) {
		t.Fatal("the rescue image is still in use once the unrescue started")
	}
}
