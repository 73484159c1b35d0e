package compute_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
	"github.com/peerstack/peerstack/rest/resttest"
)

// fakeBackend is compute.Backend over resttest's in-memory state, with a
// fixed host list and console logs per instance.
type fakeBackend struct {
	*resttest.Backend

	mu       sync.Mutex
	hosts    []compute.Host
	consoles map[string]string // instance id → console log
	lengths  []int             // lengths asked for, in order
}

func (f *fakeBackend) Hosts() []compute.Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]compute.Host, len(f.hosts))
	copy(out, f.hosts)
	// Disabled comes from the member records, as node does.
	sn := f.State()
	for i := range out {
		if m, ok := sn.Member(out[i].ID); ok {
			out[i].Disabled, out[i].DisabledReason = m.Disabled, m.DisabledBy
		}
	}
	return out
}

var errNoConsole = errors.New("no console log")

func (f *fakeBackend) ConsoleOutput(ctx context.Context, inst *statedb.Instance, length int) (string, error) {
	return f.LocalConsole(ctx, inst.ID, length)
}

func (f *fakeBackend) LocalConsole(_ context.Context, id string, length int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lengths = append(f.lengths, length)
	out, ok := f.consoles[id]
	if !ok {
		return "", errNoConsole
	}
	return out, nil
}

// HostID is the host serving the requests: host1.
func (f *fakeBackend) HostID() string { return "host1" }

// VolumePath keeps volume files under /vols.
func (f *fakeBackend) VolumePath(name, format string) (string, error) {
	return "/vols/" + name + "." + format, nil
}

var _ compute.Backend = (*fakeBackend)(nil)

// env is a compute API over a bootstrapped state with two hosts, the
// default flavors, an admin, a member and a reader of project "demo", and a
// member of project "other".
type env struct {
	t        *testing.T
	b        *fakeBackend
	srv      *httptest.Server
	seed     *resttest.Seed
	demo     *statedb.Project
	other    *statedb.Project
	admin    *resttest.Client
	member   *resttest.Client
	reader   *resttest.Client
	alien    *resttest.Client // member of "other"
	anon     *resttest.Client
	memberID string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	b := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{}}
	seed := b.Bootstrap(t, statedb.Settings{Ratios: statedb.Ratios{CPU: 4, RAM: 1, Disk: 1}}, "secret")
	b.MustApply(t, statedb.CmdRegisterMember, statedb.Member{ID: "host2", Name: "host2", APIAddr: "127.0.0.2:8470"})
	b.hosts = []compute.Host{
		{ID: "host1", Name: "host1", IP: "127.0.0.1", VCPUs: 4, RAMMB: 8192, DiskGB: 100, Up: true, Accel: "tcg", Arch: "x86_64"},
		{ID: "host2", Name: "host2", IP: "127.0.0.2", VCPUs: 2, RAMMB: 4096, DiskGB: 50, Up: false, Accel: "kvm", Arch: "x86_64"},
	}
	for _, f := range []statedb.Flavor{
		{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1, RxTxFactor: 1, Public: true},
		{ID: "2", Name: "m1.small", VCPUs: 1, RAMMB: 2048, DiskGB: 20, RxTxFactor: 1, Public: true},
		{ID: "3", Name: "m1.medium", VCPUs: 2, RAMMB: 4096, DiskGB: 40, RxTxFactor: 1, Public: true},
	} {
		b.MustApply(t, statedb.CmdCreateFlavor, f)
	}
	demo, mu := b.ProjectUser(t, "demo", "demo-user", "pw", "member")
	ru := b.CreateUser(t, "demo-reader", "pw", demo.ID)
	b.Grant(t, demo.ID, ru.ID, "reader")
	other, ou := b.ProjectUser(t, "other", "other-user", "pw", "member")
	srv := resttest.NewServer(t, b, compute.Services(b)...)
	c := &resttest.Client{T: t, Base: srv.URL}
	e := &env{t: t, b: b, srv: srv, seed: seed, demo: demo, other: other, anon: c, memberID: mu.ID}
	e.admin = c.With(b.Token(seed.Admin.ID, seed.Project.ID))
	e.member = c.With(b.Token(mu.ID, demo.ID))
	e.reader = c.With(b.Token(ru.ID, demo.ID))
	e.alien = c.With(b.Token(ou.ID, other.ID))
	return e
}

const api = "/compute/v2.1"

// image creates an image through the images commands and, if active,
// finishes its upload.
func (e *env) image(owner, visibility string, minDisk, minRAM int, props map[string]string, active bool) string {
	e.t.Helper()
	id := e.b.NewID()
	e.b.MustApply(e.t, statedb.CmdCreateImage, statedb.Image{ID: id, Name: "img-" + id[:8], ProjectID: owner,
		Visibility: visibility, DiskFormat: "qcow2", ContainerFormat: "bare", MinDiskGB: minDisk, MinRAMMB: minRAM, Properties: props})
	if active {
		e.b.MustApply(e.t, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: id, HostID: "host1"})
		e.b.MustApply(e.t, statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: id, Size: 1 << 20, VirtualSize: 1 << 20,
			SHA256: "0000000000000000000000000000000000000000000000000000000000000000", Holders: []string{"host1"}})
	}
	return id
}

// network creates a network (with a /24 subnet if withSubnet).
func (e *env) network(owner, name string, shared, withSubnet bool) string {
	e.t.Helper()
	id := e.b.NewID()
	e.b.MustApply(e.t, statedb.CmdCreateNetwork, statedb.Network{ID: id, Name: name, ProjectID: owner, Shared: shared, AdminStateUp: true})
	if withSubnet {
		e.b.MustApply(e.t, statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: e.b.NewID(), NetworkID: id,
			ProjectID: owner, IPVersion: 4, CIDR: "10.1.0.0/24", EnableDHCP: true}, GatewayAuto: true, PoolsAuto: true})
	}
	return id
}

// place puts an instance on a host as the scheduler would, and optionally
// reports it active as that host's agent would.
func (e *env) place(id, host string, active bool) {
	e.t.Helper()
	caps := map[string]statedb.HostCap{}
	for _, h := range e.b.Hosts() {
		caps[h.ID] = statedb.HostCap{VCPUs: h.VCPUs, RAMMB: h.RAMMB, DiskGB: h.DiskGB}
	}
	e.b.MustApply(e.t, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: caps,
		Placements: []statedb.PlacementRec{{InstanceID: id, HostID: host}}})
	if inst, _ := e.b.State().Instance(id); inst.Host != host {
		e.t.Fatalf("instance %s not placed on %s", id, host)
	}
	if active {
		e.report(id, host, statedb.VMActive, statedb.PowerRunning)
	}
}

func (e *env) report(id, host, vmState string, power int) {
	e.t.Helper()
	e.b.MustApply(e.t, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: id, HostID: host,
		VMState: vmState, PowerState: power, LaunchedAt: e.b.Now()})
}

// createServer posts a server and returns its id, failing unless 202.
func (e *env) createServer(c *resttest.Client, body map[string]any) string {
	e.t.Helper()
	r := c.Do("POST", api+"/servers", map[string]any{"server": body})
	if r.Status != 202 {
		e.t.Fatalf("create server %v = %d %s", body, r.Status, r.Body)
	}
	var out struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	r.Decode(e.t, &out)
	return out.Server.ID
}

// errMessage extracts the message of a Nova error body with key.
func errMessage(t *testing.T, r *resttest.Resp, key string) string {
	t.Helper()
	m := r.JSON(t)
	inner, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("error body %s has no %q", r.Body, key)
	}
	if code, _ := inner["code"].(float64); int(code) != r.Status {
		t.Fatalf("error body code %v; status %d", inner["code"], r.Status)
	}
	msg, _ := inner["message"].(string)
	return msg
}

var _ rest.Backend = (*fakeBackend)(nil)
