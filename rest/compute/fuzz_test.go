package compute_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
	"github.com/peerstack/peerstack/rest/resttest"
)

// FuzzServerCreate throws arbitrary bodies at POST /servers and at the
// action endpoint of an existing server: never a panic, never a 5xx.
func FuzzServerCreate(f *testing.F) {
	b := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{}}
	seed := b.Bootstrap(f, statedb.Settings{}, "secret")
	b.MustApply(f, statedb.CmdCreateFlavor, statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1, Public: true})
	img := "11111111-2222-3333-4444-555555555555"
	b.MustApply(f, statedb.CmdCreateImage, statedb.Image{ID: img, Name: "i", ProjectID: seed.Project.ID, Visibility: "public",
		DiskFormat: "qcow2", ContainerFormat: "bare"})
	b.MustApply(f, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: img, HostID: "host1"})
	b.MustApply(f, statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: img, Size: 1, SHA256: strings.Repeat("a", 64), Holders: []string{"host1"}})
	net := "22222222-2222-3333-4444-555555555555"
	b.MustApply(f, statedb.CmdCreateNetwork, statedb.Network{ID: net, Name: "n", ProjectID: seed.Project.ID})
	b.MustApply(f, statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "s", NetworkID: net,
		ProjectID: seed.Project.ID, IPVersion: 4, CIDR: "10.9.0.0/28"}, GatewayAuto: true, PoolsAuto: true})
	tok := b.Token(seed.Admin.ID, seed.Project.ID)
	srv := rest.NewServer(b, resttest.Logger(nil))
	for _, s := range compute.Services(b) {
		srv.Mount(s)
	}
	h := srv.Handler()
	seeds := []string{
		`{"server":{"name":"vm1","imageRef":"` + img + `","flavorRef":"1","user_data":"I2Nsb3VkLWNvbmZpZwo=","key_name":null,"min_count":1,"max_count":1,"networks":[{"uuid":"` + net + `"}]}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":1,"networks":"none","max_count":"3"}}`,
		`{"server":{"name":"vm","flavorRef":"1","block_device_mapping_v2":[{"boot_index":0,"uuid":"` + img + `","source_type":"image","destination_type":"local"}]}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":[{"port":"x"},{"uuid":null}],"metadata":{"a":"b"}}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1"},"os:scheduler_hints":{"group":"` + img + `"}}`,
		`{"server":{"name":"vm","imageRef":"","flavorRef":"","min_count":-1,"max_count":1e9,"config_drive":"yes","security_groups":[{"name":1}]}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":[{"uuid":"` + net + `","fixed_ip":"10.9.0.5"}]}}`,
		`{"server":{"name":"vm","imageRef":"","flavorRef":"1","networks":"none","block_device_mapping_v2":[{"boot_index":"0","uuid":"` + img + `","source_type":"image","destination_type":"volume","volume_size":1}]}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","max_count":2,"block_device_mapping_v2":[{"boot_index":0,"uuid":"` + img + `","source_type":"image","destination_type":"local"},{"boot_index":0,"uuid":"` + img + `","source_type":"image","destination_type":"volume","volume_size":"2","delete_on_termination":"true"}]}}`,
		`{"server":{"name":"vm","flavorRef":"1","block_device_mapping_v2":[{"boot_index":0,"uuid":"` + img + `","source_type":"image","destination_type":"volume","volume_size":-5,"delete_on_termination":7,"volume_type":"x"}]}}`,
		`{"server":{"name":"vm","flavorRef":"1","block_device_mapping_v2":[{"boot_index":0,"uuid":"` + net + `","source_type":"volume","destination_type":"volume"},{"source_type":"blank"}]}}`,
		// The forms the real clients send: counts and booleans as strings.
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":"none","min_count":"2","max_count":"2","config_drive":"True","return_reservation_id":"1"}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":"none","min_count":"2\n","max_count":" 2","config_drive":"maybe"}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":"none","min_count":1.5,"max_count":true,"return_reservation_id":"TRUE"}}`,
		`{"server":{"name":"vm","imageRef":"` + img + `","flavorRef":"1","networks":"none","min_count":"99999999999999999999999","max_count":"-1"}}`,
		`{"server":null}`, `{"server":[]}`, `[]`, `null`, `"x"`, `{`, ``, `{"server":{"name":"\u0000"}}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/compute/v2.1/servers", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Auth-Token", tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST /servers %q = %d %s", body, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusAccepted {
			// Every accepted create has its instances, each with its ports.
			for _, inst := range b.State().Instances() {
				for _, pid := range inst.PortIDs {
					if _, ok := b.State().Port(pid); !ok {
						t.Fatalf("instance %s misses port %s", inst.ID, pid)
					}
				}
				if v, ok := b.State().Volume(inst.RootVolume); inst.RootVolume != "" && (!ok || v.Attachment() == nil || v.Attachment().ServerID != inst.ID) {
					t.Fatalf("instance %s boots from volume %s, which is missing or not reserved for it", inst.ID, inst.RootVolume)
				}
			}
		}
	})
}

// FuzzServerAction throws arbitrary action bodies at a placed server.
func FuzzServerAction(f *testing.F) {
	for _, s := range []string{`{"os-stop":null}`, `{"os-start":{}}`, `{"reboot":{"type":"HARD"}}`, `{"reboot":null}`,
		`{"os-getConsoleOutput":{"length":"12"}}`, `{"os-getConsoleOutput":{"length":1e99}}`, `{}`, `[]`, `{"a":1,"b":2}`} {
		f.Add(s)
	}
	b := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{"i1": "out"}}
	seed := b.Bootstrap(f, statedb.Settings{}, "secret")
	b.MustApply(f, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
		ID: "i1", Name: "vm", ProjectID: seed.Project.ID, Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 1}}}}})
	b.MustApply(f, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: map[string]statedb.HostCap{"host1": {VCPUs: 1, RAMMB: 1, DiskGB: 1}},
		Placements: []statedb.PlacementRec{{InstanceID: "i1", HostID: "host1"}}})
	tok := b.Token(seed.Admin.ID, seed.Project.ID)
	srv := rest.NewServer(b, resttest.Logger(nil))
	for _, s := range compute.Services(b) {
		srv.Mount(s)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/compute/v2.1/servers/i1/action", "/compute/v2.1/servers/i1/metadata", "/compute/v2.1/flavors"} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Header.Set("X-Auth-Token", tok)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("POST %s %q = %d %s", path, body, rec.Code, rec.Body)
			}
		}
	})
}
