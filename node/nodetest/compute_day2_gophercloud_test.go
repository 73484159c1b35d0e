package nodetest

import (
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestComputeSnapshotResizeGophercloud runs createImage, resize with
// revert and confirm, and rescue through gophercloud v2's own packages,
// at 2.1 (the image id from Location) and at 2.79 (from the body).
func TestComputeSnapshotResizeGophercloud(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	ctx := t.Context()
	img := cpSeedImage(ctx, t, c.Node(0))
	cc := cpGophercloud(ctx, t, c, 0)
	disk := 2
	big, err := flavors.Create(ctx, cc, flavors.CreateOpts{Name: "gc.big", RAM: 256, VCPUs: 2, Disk: &disk}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	for _, mv := range []string{"", "2.79"} {
		cc.Microversion = mv
		srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "gc2-" + mv, ImageRef: img, FlavorRef: "1", Networks: "none"}, nil).Extract()
		if err != nil {
			t.Fatalf("%s: servers.Create: %v", mv, err)
		}
		wait := func(want string) *servers.Server {
			t.Helper()
			var s *servers.Server
			c.Eventually(20*time.Second, mv+" server "+want, func() bool {
				s, err = servers.Get(ctx, cc, srv.ID).Extract()
				return err == nil && s.Status == want
			})
			return s
		}
		wait("ACTIVE")
		imageID, err := servers.CreateImage(ctx, cc, srv.ID, servers.CreateImageOpts{Name: "gc-snap", Metadata: map[string]string{"k": "v"}}).ExtractImageID()
		if err != nil || imageID == "" {
			t.Fatalf("%s: CreateImage = %q, %v", mv, imageID, err)
		}
		c.Eventually(20*time.Second, "snapshot active", func() bool {
			i, ok := c.Node(0).State().Image(imageID)
			return ok && i.Status == statedb.ImageActive
		})
		wait("ACTIVE")
		if err := servers.Resize(ctx, cc, srv.ID, servers.ResizeOpts{FlavorRef: big.ID}).ExtractErr(); err != nil {
			t.Fatalf("%s: Resize: %v", mv, err)
		}
		wait("VERIFY_RESIZE")
		if err := servers.RevertResize(ctx, cc, srv.ID).ExtractErr(); err != nil {
			t.Fatalf("%s: RevertResize: %v", mv, err)
		}
		wait("ACTIVE")
		if err := servers.Resize(ctx, cc, srv.ID, servers.ResizeOpts{FlavorRef: big.ID}).ExtractErr(); err != nil {
			t.Fatalf("%s: Resize: %v", mv, err)
		}
		wait("VERIFY_RESIZE")
		if err := servers.ConfirmResize(ctx, cc, srv.ID).ExtractErr(); err != nil {
			t.Fatalf("%s: ConfirmResize: %v", mv, err)
		}
		c.Eventually(20*time.Second, "confirmed", func() bool {
			in, _ := c.Node(0).State().Instance(srv.ID)
			return in.VMState == statedb.VMActive && in.Flavor.ID == big.ID && in.Resize == nil
		})
		if _, err := servers.Rescue(ctx, cc, srv.ID, servers.RescueOpts{AdminPass: "pw"}).Extract(); err != nil {
			t.Fatalf("%s: Rescue: %v", mv, err)
		}
		wait("RESCUE")
		if err := servers.Unrescue(ctx, cc, srv.ID).ExtractErr(); err != nil {
			t.Fatalf("%s: Unrescue: %v", mv, err)
		}
		wait("ACTIVE")
		if err := servers.Delete(ctx, cc, srv.ID).ExtractErr(); err != nil {
			t.Fatalf("%s: Delete: %v", mv, err)
		}
	}
}
