package network_test

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/network"
	"github.com/peerstack/peerstack/rest/resttest"
)

// env is one network API over a bootstrapped in-memory state with an
// admin, two tenant projects with a member each, and a reader on demo.
type env struct {
	t      *testing.T
	b      *resttest.Backend
	seed   *resttest.Seed
	srv    *httptest.Server
	anon   *resttest.Client
	admin  *resttest.Client
	demo   *resttest.Client // member of demo
	other  *resttest.Client // member of other
	reader *resttest.Client // reader of demo

	demoProject, otherProject *statedb.Project
}

func newEnv(t *testing.T) *env {
	t.Helper()
	b := resttest.New()
	seed := b.Bootstrap(t, statedb.Settings{MTU: 1450}, "secret")
	srv := resttest.NewServer(t, b, network.Service(b))
	anon := &resttest.Client{T: t, Base: srv.URL}
	e := &env{t: t, b: b, seed: seed, srv: srv, anon: anon}
	e.admin = anon.With(b.Token(seed.Admin.ID, seed.Project.ID))
	var u *statedb.User
	e.demoProject, u = b.ProjectUser(t, "demo", "demo-user", "pw", "member")
	e.demo = anon.With(b.Token(u.ID, e.demoProject.ID))
	var o *statedb.User
	e.otherProject, o = b.ProjectUser(t, "other", "other-user", "pw", "member")
	e.other = anon.With(b.Token(o.ID, e.otherProject.ID))
	r := b.CreateUser(t, "reader-user", "pw", e.demoProject.ID)
	b.Grant(t, e.demoProject.ID, r.ID, "reader")
	e.reader = anon.With(b.Token(r.ID, e.demoProject.ID))
	return e
}

// neutronError asserts status and the NeutronError body type.
func neutronError(t *testing.T, r *resttest.Resp, status int, typ string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d (%s); want %d %s", r.Status, r.Body, status, typ)
	}
	var body struct {
		NeutronError struct {
			Type    string  `json:"type"`
			Message string  `json:"message"`
			Detail  *string `json:"detail"`
		} `json:"NeutronError"`
	}
	r.Decode(t, &body)
	if body.NeutronError.Type != typ || body.NeutronError.Message == "" || body.NeutronError.Detail == nil {
		t.Errorf("error body = %s; want NeutronError type %q with a message and detail", r.Body, typ)
	}
}

// mustStatus fails unless r has the status, and returns its JSON object.
func mustStatus(t *testing.T, r *resttest.Resp, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d (%s); want %d", r.Status, r.Body, status)
	}
	if len(r.Body) == 0 {
		return nil
	}
	return r.JSON(t)
}

// create POSTs {"<key>": body} to /network/v2.0/<coll> and returns the
// object of the 201.
func create(t *testing.T, c *resttest.Client, coll, key string, body map[string]any) map[string]any {
	t.Helper()
	r := c.Do("POST", "/network/v2.0/"+coll, map[string]any{key: body})
	return obj(mustStatus(t, r, 201), key)
}

func obj(m map[string]any, key string) map[string]any {
	o, _ := m[key].(map[string]any)
	return o
}

func items(m map[string]any, key string) []map[string]any {
	var out []map[string]any
	arr, _ := m[key].([]any)
	for _, a := range arr {
		if o, ok := a.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

func ids(objs []map[string]any) []string {
	var out []string
	for _, o := range objs {
		out = append(out, fmt.Sprint(o["id"]))
	}
	return out
}

func str(o map[string]any, k string) string {
	s, _ := o[k].(string)
	return s
}

// firstIP is the first fixed IP address of a port view.
func firstIP(p map[string]any) string {
	ips, _ := p["fixed_ips"].([]any)
	if len(ips) == 0 {
		return ""
	}
	f, _ := ips[0].(map[string]any)
	return str(f, "ip_address")
}

// netWithSubnet creates a network and a subnet through c.
func netWithSubnet(t *testing.T, c *resttest.Client, name, cidr string) (netID, subnetID string) {
	t.Helper()
	n := create(t, c, "networks", "network", map[string]any{"name": name})
	s := create(t, c, "subnets", "subnet", map[string]any{"name": name + "-sub", "network_id": n["id"], "cidr": cidr, "ip_version": 4})
	return str(n, "id"), str(s, "id")
}
