package compute_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// An admin names the host of a new server with 2.74's host or
// hypervisor_hostname, or the availability zone "nova:host"; the server's
// first placement is pinned there, in the scheduler and the state's
// check alike. Others, earlier versions and unknown hosts are refused with
// nothing written.
func TestServerCreateRequestedHost(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.seed.Project.ID, "public", 0, 0, nil, true)
	net := e.network(e.seed.Project.ID, "n", true, true)
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"name": "s", "imageRef": img, "flavorRef": "1", "networks": []any{map[string]any{"uuid": net}}}
		for k, v := range extra {
			b[k] = v
		}
		return map[string]any{"server": b}
	}
	before := len(e.b.State().Instances())
	for _, c := range []struct {
		name    string
		client  string
		version string
		extra   map[string]any
		status  int
		msg     string
	}{
		{"before 2.74", "admin", "2.73", map[string]any{"host": "host2"}, http.StatusBadRequest, "'host' was unexpected"},
		{"not admin", "member", "2.74", map[string]any{"host": "host2"}, http.StatusForbidden, "requested_destination"},
		{"unknown host", "admin", "2.74", map[string]any{"host": "nope"}, http.StatusBadRequest, "Compute host nope could not be found."},
		{"host and node differ", "admin", "2.74", map[string]any{"host": "host1", "hypervisor_hostname": "host2"}, http.StatusBadRequest, "not the same compute node"},
		{"zone form, not admin", "member", "2.1", map[string]any{"availability_zone": "nova:host2"}, http.StatusForbidden, "requested_destination"},
		{"other zone", "admin", "2.1", map[string]any{"availability_zone": "az9:host2"}, http.StatusBadRequest, "availability zone"},
	} {
		cl := e.admin
		if c.client == "member" {
			cl = e.member
		}
		r := cl.Do("POST", api+"/servers", body(c.extra), "X-OpenStack-Nova-API-Version", c.version)
		if r.Status != c.status || !strings.Contains(errMessage(t, r, map[int]string{400: "badRequest", 403: "forbidden"}[c.status]), c.msg) {
			t.Fatalf("%s: %d %s; want %d with %q", c.name, r.Status, r.Body, c.status, c.msg)
		}
	}
	if n := len(e.b.State().Instances()); n != before {
		t.Fatalf("refused creates left %d instances", n-before)
	}

	for _, extra := range []map[string]any{{"host": "host2"}, {"hypervisor_hostname": "host2"}, {"availability_zone": "nova:host2"}} {
		r := e.admin.Do("POST", api+"/servers", body(extra), "X-OpenStack-Nova-API-Version", "2.74")
		if r.Status != http.StatusAccepted {
			t.Fatalf("create with %v = %d %s", extra, r.Status, r.Body)
		}
		id := r.JSON(t)["server"].(map[string]any)["id"].(string)
		sn := e.b.State()
		inst, _ := sn.Instance(id)
		if inst.RequestedHost != "host2" || sn.PlacementPin(inst) != "host2" {
			t.Fatalf("create with %v: requested %q, pin %q; want host2", extra, inst.RequestedHost, sn.PlacementPin(inst))
		}
		// The state refuses any other host for its first placement.
		caps := map[string]statedb.HostCap{"host1": {VCPUs: 4, RAMMB: 8192, DiskGB: 100}}
		e.b.MustApply(t, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: caps,
			Placements: []statedb.PlacementRec{{InstanceID: id, HostID: "host1"}}})
		if inst, _ := e.b.State().Instance(id); inst.Host == "host1" {
			t.Fatalf("create with %v: placed on host1 against the requested host", extra)
		}
	}
}
