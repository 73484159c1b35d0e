package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// apiClient sends JSON requests with a token to one host of a cluster.
type apiClient struct {
	hc    *http.Client
	base  string
	token string
}

func (c *Cluster) api(i int) *apiClient {
	c.t.Helper()
	hc := c.HTTPClient()
	if tr, ok := hc.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = 64 // keep connections of concurrent clients: no TLS handshake per request
	}
	return &apiClient{hc: hc, base: c.URL(i), token: c.AdminToken(i)}
}

// do sends a request and decodes a JSON object answer; it returns an
// error (never calls t.Fatal) so goroutines can use it.
func (a *apiClient) do(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("%s %s: body %q: %w", method, path, raw, err)
		}
	}
	return resp.StatusCode, m, nil
}

// create POSTs {key: body} and returns the created object.
func (a *apiClient) create(ctx context.Context, coll, key string, body map[string]any) (map[string]any, error) {
	st, m, err := a.do(ctx, http.MethodPost, "/network/v2.0/"+coll, map[string]any{key: body})
	if err != nil {
		return nil, err
	}
	if st != http.StatusCreated {
		return nil, fmt.Errorf("POST %s = %d %v", coll, st, m)
	}
	o, _ := m[key].(map[string]any)
	return o, nil
}

func portIP(p map[string]any) string {
	ips, _ := p["fixed_ips"].([]any)
	if len(ips) != 1 {
		return ""
	}
	f, _ := ips[0].(map[string]any)
	s, _ := f["ip_address"].(string)
	return s
}

// TestNetworkConcurrentAllocation: 20 networks and then 60 ports (20
// through each of 3 hosts) created in parallel; Raft serialises the
// allocations, so every VNI, address and MAC is unique, and every host's
// state agrees.
func TestNetworkConcurrentAllocation(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	clients := []*apiClient{c.api(0), c.api(1), c.api(2)}

	var wg sync.WaitGroup
	var mu sync.Mutex
	vnis := map[float64]string{}
	errs := make(chan error, 100)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := clients[i%3].create(ctx, "networks", "network", map[string]any{"name": fmt.Sprintf("cn-%d", i)})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			vni, _ := n["provider:segmentation_id"].(float64)
			if other, dup := vnis[vni]; dup {
				errs <- fmt.Errorf("VNI %v given to %v and %s", vni, n["id"], other)
			}
			vnis[vni] = n["id"].(string)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var got []float64
	for v := range vnis {
		got = append(got, v)
	}
	sort.Float64s(got)
	if len(got) != 20 || got[0] != float64(statedb.FirstVNI) || got[19] != float64(statedb.FirstVNI+19) {
		t.Fatalf("VNIs = %v; want 20 distinct, %d-%d", got, statedb.FirstVNI, statedb.FirstVNI+19)
	}

	netID := vnis[got[0]]
	if _, err := clients[1].create(ctx, "subnets", "subnet", map[string]any{"network_id": netID, "cidr": "10.20.0.0/24", "ip_version": 4}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		id, ip, mac string
		err         error
	}
	results := make(chan result, 60)
	for h := range 3 {
		for j := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := clients[h].create(ctx, "ports", "port", map[string]any{"network_id": netID, "name": fmt.Sprintf("h%d-%d", h, j)})
				if err != nil {
					results <- result{err: err}
					return
				}
				results <- result{id: p["id"].(string), ip: portIP(p), mac: p["mac_address"].(string)}
			}()
		}
	}
	wg.Wait()
	close(results)
	ipSeen, macSeen := map[string]string{}, map[string]string{}
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.ip == "" || ipSeen[r.ip] != "" {
			t.Errorf("port %s got address %q, already held by %q", r.id, r.ip, ipSeen[r.ip])
		}
		if macSeen[r.mac] != "" {
			t.Errorf("port %s got MAC %s, already held by %s", r.id, r.mac, macSeen[r.mac])
		}
		ipSeen[r.ip], macSeen[r.mac] = r.id, r.id
	}
	if len(ipSeen) != 60 || len(macSeen) != 60 {
		t.Fatalf("%d addresses and %d MACs; want 60 each", len(ipSeen), len(macSeen))
	}
	// The lowest 60 addresses of the pool, .2 to .61.
	for i := 2; i <= 61; i++ {
		if ipSeen[fmt.Sprintf("10.20.0.%d", i)] == "" {
			t.Errorf("address 10.20.0.%d unused; allocation is not lowest-free", i)
		}
	}
	c.Eventually(10*time.Second, "every host holds the same 60 ports", func() bool {
		for _, n := range c.Running() {
			ps := n.State().PortsOf(netID)
			if len(ps) != 60 {
				return false
			}
			for _, p := range ps {
				if len(p.FixedIPs) != 1 || ipSeen[p.FixedIPs[0].IP] != p.ID || macSeen[p.MAC] != p.ID {
					return false
				}
			}
		}
		return true
	})
}

// TestNetworkGophercloud drives networks, subnets and ports with
// gophercloud v2 over TLS through a follower, from discovery to delete.
func TestNetworkGophercloud(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	f := c.Follower()
	provider, err := openstack.NewClient(c.URL(f) + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	provider.HTTPClient = *c.HTTPClient()
	if err := openstack.Authenticate(ctx, provider, gophercloud.AuthOptions{IdentityEndpoint: c.URL(f) + "/identity",
		Username: "admin", Password: c.AdminPassword, DomainName: "Default", TenantName: "admin"}); err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	nc, err := openstack.NewNetworkV2(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatalf("NewNetworkV2: %v", err)
	}
	if want := c.URL(f) + "/network/v2.0/"; nc.ResourceBaseURL() != want {
		t.Errorf("network endpoint = %s; want %s", nc.ResourceBaseURL(), want)
	}
	up := true
	net, err := networks.Create(ctx, nc, networks.CreateOpts{Name: "gnet", AdminStateUp: &up}).Extract()
	if err != nil || net.Name != "gnet" || net.Status != "ACTIVE" || net.CreatedAt.IsZero() {
		t.Fatalf("networks.Create = %+v, %v", net, err)
	}
	sub, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: net.ID, CIDR: "192.168.50.0/24", IPVersion: gophercloud.IPv4, Name: "gsub"}).Extract()
	if err != nil || sub.GatewayIP != "192.168.50.1" || len(sub.AllocationPools) != 1 || sub.AllocationPools[0].Start != "192.168.50.2" || !sub.EnableDHCP {
		t.Fatalf("subnets.Create = %+v, %v", sub, err)
	}
	var created []string
	for i := range 5 {
		opts := ports.CreateOpts{NetworkID: net.ID, Name: fmt.Sprintf("gp%d", i)}
		if i == 0 {
			opts.FixedIPs = []ports.IP{{SubnetID: sub.ID, IPAddress: "192.168.50.100"}}
		}
		p, err := ports.Create(ctx, nc, opts).Extract()
		if err != nil {
			t.Fatalf("ports.Create %d: %v", i, err)
		}
		if i == 0 && (len(p.FixedIPs) != 1 || p.FixedIPs[0].IPAddress != "192.168.50.100") {
			t.Errorf("port with requested IP = %+v", p.FixedIPs)
		}
		if p.Status != "DOWN" || !strings.HasPrefix(p.MACAddress, "fa:16:3e:") {
			t.Errorf("port = %+v", p)
		}
		created = append(created, p.ID)
	}
	vm, err := ports.Create(ctx, nc, ports.CreateOpts{NetworkID: net.ID, Name: "vm", DeviceID: "vm-1", DeviceOwner: "compute:nova"}).Extract()
	if err != nil || vm.DeviceID != "vm-1" || vm.FixedIPs[0].IPAddress != "192.168.50.6" {
		t.Fatalf("ports.Create(device) = %+v, %v; want the next free address .6", vm, err)
	}
	vmPort := vm.ID
	// Paging through the <coll>_links with a limit of 2.
	pages := 0
	var listed []string
	err = ports.List(nc, ports.ListOpts{NetworkID: net.ID, Limit: 2}).EachPage(ctx, func(_ context.Context, pg pagination.Page) (bool, error) {
		pages++
		ps, err := ports.ExtractPorts(pg)
		for _, p := range ps {
			listed = append(listed, p.ID)
		}
		return true, err
	})
	want := append(slices.Clone(created), vmPort)
	slices.Sort(listed)
	slices.Sort(want)
	if err != nil || pages != 3 || !slices.Equal(listed, want) {
		t.Errorf("ports.List paged = %v in %d pages, %v; want %v in 3", listed, pages, err, want)
	}
	all, err := networks.List(nc, networks.ListOpts{Name: "gnet"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nets, err := networks.ExtractNetworks(all); err != nil || len(nets) != 1 || nets[0].ID != net.ID || len(nets[0].Subnets) != 1 {
		t.Errorf("networks.List(name) = %+v, %v", nets, err)
	}
	newName := "gnet2"
	if n, err := networks.Update(ctx, nc, net.ID, networks.UpdateOpts{Name: &newName}).Extract(); err != nil || n.Name != newName {
		t.Errorf("networks.Update = %+v, %v", n, err)
	}
	if err := networks.Delete(ctx, nc, net.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("networks.Delete with a device's port = %v; want 409", err)
	}
	if err := ports.Delete(ctx, nc, vmPort).ExtractErr(); err != nil {
		t.Fatalf("ports.Delete: %v", err)
	}
	if _, err := ports.Get(ctx, nc, vmPort).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("ports.Get after delete = %v; want 404", err)
	}
	// The ports no device uses and the subnet go with the network.
	if err := networks.Delete(ctx, nc, net.ID).ExtractErr(); err != nil {
		t.Fatalf("networks.Delete: %v", err)
	}
	if _, err := subnets.Get(ctx, nc, sub.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("subnets.Get after network delete = %v; want 404", err)
	}
	for _, id := range created {
		if _, err := ports.Get(ctx, nc, id).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			t.Errorf("ports.Get(%s) after network delete = %v; want 404", id, err)
		}
	}
}

// TestNetworkOpenstackCLI runs the real openstack client 6.0 against a
// follower: network, subnet and port create, list, show and delete.
func TestNetworkOpenstackCLI(t *testing.T) {
	bin, err := exec.LookPath("openstack")
	if err != nil {
		t.Fatalf("the openstack client is required (python3-openstackclient): %v", err)
	}
	c := NewCluster(t, 3)
	f := c.Follower()
	env := c.OpenStackEnv(t, f)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("openstack %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	asJSON := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("output %q is not JSON: %v", out, err)
		}
	}
	var net map[string]any
	asJSON(run("network", "create", "net1", "-f", "json"), &net)
	if net["name"] != "net1" || net["status"] != "ACTIVE" {
		t.Errorf("network create = %v", net)
	}
	var sub map[string]any
	asJSON(run("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1", "-f", "json"), &sub)
	if sub["gateway_ip"] != "10.0.0.1" || sub["cidr"] != "10.0.0.0/24" || !strings.Contains(fmt.Sprint(sub["allocation_pools"]), "10.0.0.2") {
		t.Errorf("subnet create = %v", sub)
	}
	var port map[string]any
	asJSON(run("port", "create", "--network", "net1", "p1", "-f", "json"), &port)
	if !strings.Contains(fmt.Sprint(port["fixed_ips"]), "10.0.0.2") || port["status"] != "DOWN" {
		t.Errorf("port create = %v", port)
	}
	var list []map[string]any
	asJSON(run("port", "list", "-f", "json"), &list)
	if len(list) != 1 || list[0]["Name"] != "p1" || !strings.HasPrefix(fmt.Sprint(list[0]["MAC Address"]), "fa:16:3e:") {
		t.Errorf("port list = %v", list)
	}
	var show map[string]any
	asJSON(run("port", "show", "p1", "-f", "json"), &show)
	if show["id"] != port["id"] || show["network_id"] != net["id"] || show["mac_address"] != port["mac_address"] {
		t.Errorf("port show = %v; want %v", show, port)
	}
	run("port", "delete", "p1")
	if _, ok := c.Node(f).State().Port(fmt.Sprint(port["id"])); ok {
		t.Error("port still in the follower's state after delete")
	}
	var nets []map[string]any
	asJSON(run("network", "list", "-f", "json"), &nets)
	if len(nets) != 1 || nets[0]["Name"] != "net1" || !strings.Contains(fmt.Sprint(nets[0]["Subnets"]), fmt.Sprint(sub["id"])) {
		t.Errorf("network list = %v", nets)
	}
}

// BenchmarkPortCreate: ports/s on 3 in-process hosts over loopback TLS,
// 24 clients spread over the hosts, each sub-benchmark on its own /16:
// "api" through POST /network/v2.0/ports (auth, decode, Raft, render),
// "raft" through rest.Propose of CmdCreatePort (Raft and the FSM only).
// The FSM's lowest-free search scans the network's ports, so the rate
// falls as one network fills up; ports-in-net says how full it got.
func BenchmarkPortCreate(b *testing.B) {
	c := NewCluster(b, 3, quiet())
	ctx := context.Background()
	clients := []*apiClient{c.api(0), c.api(1), c.api(2)}
	newNet := func(b *testing.B, name string) string {
		n, err := clients[0].create(ctx, "networks", "network", map[string]any{"name": name})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := clients[0].create(ctx, "subnets", "subnet", map[string]any{"network_id": n["id"], "cidr": "10.128.0.0/16", "ip_version": 4}); err != nil {
			b.Fatal(err)
		}
		return n["id"].(string)
	}
	run := func(b *testing.B, create func(w int, netID string) error) {
		netID := newNet(b, b.Name())
		var next atomic.Int64
		var wg sync.WaitGroup
		lat := make([]time.Duration, b.N)
		b.ResetTimer()
		start := time.Now()
		for w := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= b.N {
						return
					}
					t0 := time.Now()
					if err := create(w, netID); err != nil {
						b.Error(err)
						return
					}
					lat[i] = time.Since(t0)
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(b.N)/el.Seconds(), "ports/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(b.N), "ports-in-net")
	}
	b.Run("api", func(b *testing.B) {
		run(b, func(w int, netID string) error {
			_, err := clients[w%3].create(ctx, "ports", "port", map[string]any{"network_id": netID})
			return err
		})
	})
	nodes := c.Running()
	actx := adminContext(ctx, b, nodes[0]) // forwarded writes carry a caller
	b.Run("raft", func(b *testing.B) {
		run(b, func(w int, netID string) error {
			h := nodes[w%len(nodes)]
			_, err := rest.Propose(actx, h, statedb.CmdCreatePort, statedb.CreatePortCmd{
				PortRequest: statedb.PortRequest{ID: h.NewID(), NetworkID: netID, ProjectID: "bench"}, AdminStateUp: true})
			return err
		})
	})
}
