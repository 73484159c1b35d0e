package volume_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
	"github.com/peerstack/peerstack/rest/volume"
)

// backend is the resttest backend plus what the volume API asks of a host.
type backend struct {
	*resttest.Backend
	host string
}

func (b *backend) HostID() string { return b.host }

// VolumePath follows the storage setting, as the node's volume store does.
func (b *backend) VolumePath(name, format string) (string, error) {
	if cfg, ok := b.State().Cluster(); ok && strings.HasPrefix(cfg.Settings.Storage, "nfs://") {
		return cfg.Settings.Storage + "/" + name + "." + format, nil
	}
	return "/data/" + b.host + "/volumes/" + name + "." + format, nil
}

type env struct {
	t    testing.TB
	b    *backend
	seed *resttest.Seed
	url  string
	base string // /volume/v3/<admin project>
	// admin is the bootstrap admin; demo a member of project demo; other a
	// member of project other; reader a reader of demo.
	admin, demo, other, reader *resttest.Client
	demoP, otherP              *statedb.Project
}

func newEnv(t testing.TB, storage string) *env {
	t.Helper()
	b := &backend{Backend: resttest.New(), host: "host1"}
	seed := b.Bootstrap(t, statedb.Settings{Storage: storage}, "secret")
	b.MustApply(t, statedb.CmdRegisterMember, statedb.Member{ID: "host2", Name: "host2"})
	srv := resttest.NewServer(t, b, volume.Service(b, volume.Options{MaxSizeGB: 100}), volume.ComputeService(b))
	e := &env{t: t, b: b, seed: seed, url: srv.URL, base: "/volume/v3/" + seed.Project.ID}
	c := &resttest.Client{T: t, Base: srv.URL}
	e.admin = c.With(b.Token(seed.Admin.ID, seed.Project.ID))
	var u *statedb.User
	e.demoP, u = b.ProjectUser(t, "demo", "demo-user", "pw", "member")
	e.demo = c.With(b.Token(u.ID, e.demoP.ID))
	r := b.CreateUser(t, "demo-reader", "pw", e.demoP.ID)
	b.Grant(t, e.demoP.ID, r.ID, "reader")
	e.reader = c.With(b.Token(r.ID, e.demoP.ID))
	e.otherP, u = b.ProjectUser(t, "other", "other-user", "pw", "member")
	e.other = c.With(b.Token(u.ID, e.otherP.ID))
	return e
}

// vpath is the volume API path of project p.
func vpath(p *statedb.Project, rest string) string { return "/volume/v3/" + p.ID + rest }

// create makes a volume through the API as c in project p and returns its id.
func (e *env) create(c *resttest.Client, p *statedb.Project, name string, size int) string {
	e.t.Helper()
	r := c.Do("POST", vpath(p, "/volumes"), fmt.Sprintf(`{"volume":{"size":%d,"name":%q}}`, size, name))
	if r.Status != http.StatusAccepted {
		e.t.Fatalf("create %s = %d %s; want 202", name, r.Status, r.Body)
	}
	id := str(r.JSON(e.t), "volume", "id")
	e.place(id)
	return id
}

// place chooses host1 for a volume on local storage that has no host yet,
// as the leader would.
func (e *env) place(id string) {
	e.t.Helper()
	if v := e.vol(id); v.Host == "" {
		e.b.MustApply(e.t, statedb.CmdPlaceVolume, statedb.PlaceVolumeCmd{VolumeID: id, HostID: "host1",
			HostCap: statedb.HostCap{VCPUs: 64, RAMMB: 1 << 20, DiskGB: 1 << 20}})
	}
}

// made is host1's report that it made volume id's file (at the path its
// store keeps it, for a volume placed without one).
func (e *env) made(id string) statedb.ReportVolumeCmd {
	e.t.Helper()
	r := statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: statedb.VolumeAvailable}
	if v := e.vol(id); v.Path == "" {
		r.Path, _ = e.b.VolumePath(statedb.VolumeFileBase(v.ID), v.Format)
	}
	return r
}

// report applies a host agent report, as the host would.
func (e *env) report(r statedb.ReportVolumeCmd) {
	e.t.Helper()
	e.b.MustApply(e.t, statedb.CmdReportVolume, r)
}

// available creates a volume and has its host report it available.
func (e *env) available(c *resttest.Client, p *statedb.Project, name string, size int) string {
	e.t.Helper()
	id := e.create(c, p, name, size)
	e.report(e.made(id))
	return id
}

func (e *env) vol(id string) *statedb.Volume {
	e.t.Helper()
	v, ok := e.b.State().Volume(id)
	if !ok {
		e.t.Fatalf("volume %s not in the state", id)
	}
	return v
}

// server creates an active server of project p placed on host, through the
// compute commands.
func (e *env) server(p *statedb.Project, name, host string) string {
	e.t.Helper()
	id := e.b.NewID()
	e.b.MustApply(e.t, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: id, Name: name, ProjectID: p.ID, UserID: "u",
			Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}},
	}}})
	e.b.MustApply(e.t, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{
		Placements: []statedb.PlacementRec{{InstanceID: id, HostID: host}},
		HostCaps:   map[string]statedb.HostCap{host: {VCPUs: 64, RAMMB: 1 << 20, DiskGB: 1 << 20}},
		Ratios:     statedb.Ratios{CPU: 1, RAM: 1, Disk: 1},
	})
	e.b.MustApply(e.t, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: id, HostID: host,
		VMState: "active", PowerState: statedb.PowerRunning})
	inst, ok := e.b.State().Instance(id)
	if !ok || inst.Host != host || inst.VMState != "active" {
		e.t.Fatalf("server %s = %+v; want active on %s", name, inst, host)
	}
	return id
}

// get walks a decoded JSON value by keys and indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

// fault checks an OpenStack error body: {"<key>":{"code":status,"message":…}}
// with msg in the message.
func fault(t *testing.T, r *resttest.Resp, status int, key, msg string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d %s; want %d", r.Status, r.Body, status)
	}
	m := r.JSON(t)
	f, ok := m[key].(map[string]any)
	if !ok || len(m) != 1 {
		t.Fatalf("error body = %s; want a %q fault", r.Body, key)
	}
	if code, _ := f["code"].(float64); int(code) != status {
		t.Fatalf("fault code = %v; want %d", f["code"], status)
	}
	if !strings.Contains(str(f, "message"), msg) {
		t.Fatalf("fault message = %q; want it to contain %q", str(f, "message"), msg)
	}
}
