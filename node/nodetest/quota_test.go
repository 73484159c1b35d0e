package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	bsquotas "github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"
	cquotas "github.com/gophercloud/gophercloud/v2/openstack/compute/v2/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/routers"
	nquotas "github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/quotas"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// qtClients are gophercloud clients of the admin through one host.
type qtClients struct {
	compute, network, volume *gophercloud.ServiceClient
}

func qtConnect(ctx context.Context, t testing.TB, c *Cluster, i int) *qtClients {
	t.Helper()
	provider, err := openstack.NewClient(c.URL(i) + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	provider.HTTPClient = *c.HTTPClient()
	if err := openstack.Authenticate(ctx, provider, gophercloud.AuthOptions{IdentityEndpoint: c.URL(i) + "/identity",
		Username: "admin", Password: c.AdminPassword, DomainName: "Default", TenantName: "admin"}); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	eo := gophercloud.EndpointOpts{Region: "RegionOne"}
	var q qtClients
	if q.compute, err = openstack.NewComputeV2(provider, eo); err != nil {
		t.Fatal(err)
	}
	if q.network, err = openstack.NewNetworkV2(provider, eo); err != nil {
		t.Fatal(err)
	}
	if q.volume, err = openstack.NewBlockStorageV3(provider, eo); err != nil {
		t.Fatal(err)
	}
	return &q
}

func qtAdminProject(t testing.TB, c *Cluster) string {
	t.Helper()
	p, ok := c.Any().State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	return p.ID
}

// qtRetry retries a create the cluster answered 503 (no leader for a
// moment), as a client would.
func qtRetry(create func() error) error {
	var err error
	for range 5 {
		if err = create(); qtStatus(err) != http.StatusServiceUnavailable {
			return err
		}
	}
	return err
}

func qtStatus(err error) int {
	var u gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &u) {
		return u.Actual
	}
	return 0
}

// TestQuotaConcurrentCreatesThreeHosts creates servers, ports, volumes and routers
// through all three hosts at once, more than the quotas allow: exactly the
// limit is created, every refusal is the service's over-quota error, and
// every host's state agrees.
func TestQuotaConcurrentCreatesThreeHosts(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 3, Options{Agent: fa.Options, Quotas: true})
	ctx := t.Context()
	img := cpSeedImage(ctx, t, c.Any())
	project := qtAdminProject(t, c)
	cl := []*qtClients{qtConnect(ctx, t, c, 0), qtConnect(ctx, t, c, 1), qtConnect(ctx, t, c, 2)}

	const maxServers, maxPorts, maxVolumes, maxRouters = 5, 7, 4, 3
	unl := -1
	if _, err := cquotas.Update(ctx, cl[0].compute, project, cquotas.UpdateOpts{Instances: gophercloud.IntToPointer(maxServers), Cores: &unl, RAM: &unl}).Extract(); err != nil {
		t.Fatalf("compute quota update: %v", err)
	}
	if _, err := nquotas.Update(ctx, cl[1].network, project, nquotas.UpdateOpts{Port: gophercloud.IntToPointer(maxPorts), Router: gophercloud.IntToPointer(maxRouters)}).Extract(); err != nil {
		t.Fatalf("network quota update: %v", err)
	}
	if _, err := bsquotas.Update(ctx, cl[2].volume, project, bsquotas.UpdateOpts{Volumes: gophercloud.IntToPointer(maxVolumes)}).Extract(); err != nil {
		t.Fatalf("volume quota update: %v", err)
	}
	net, err := networks.Create(ctx, cl[0].network, networks.CreateOpts{Name: "qnet"}).Extract()
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		kind   string
		status int
		err    error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for h := range 3 {
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 3 {
					name := fmt.Sprintf("q-%d-%d-%d", h, g, k)
					serr := qtRetry(func() error {
						_, err := servers.Create(ctx, cl[h].compute, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: "1", Networks: "none"}, nil).Extract()
						return err
					})
					perr := qtRetry(func() error {
						_, err := ports.Create(ctx, cl[h].network, ports.CreateOpts{NetworkID: net.ID, Name: name}).Extract()
						return err
					})
					verr := qtRetry(func() error {
						_, err := volumes.Create(ctx, cl[h].volume, volumes.CreateOpts{Size: 1, Name: name}, nil).Extract()
						return err
					})
					rerr := qtRetry(func() error {
						_, err := routers.Create(ctx, cl[h].network, routers.CreateOpts{Name: name}).Extract()
						return err
					})
					mu.Lock()
					results = append(results, result{"server", qtStatus(serr), serr}, result{"port", qtStatus(perr), perr}, result{"volume", qtStatus(verr), verr},
						result{"router", qtStatus(rerr), rerr})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	ok := map[string]int{}
	wantRefusal := map[string]int{"server": http.StatusForbidden, "port": http.StatusConflict, "volume": http.StatusRequestEntityTooLarge, "router": http.StatusConflict}
	for _, r := range results {
		switch {
		case r.err == nil:
			ok[r.kind]++
		case r.status != wantRefusal[r.kind]:
			t.Errorf("%s create failed with %d, want success or %d: %v", r.kind, r.status, wantRefusal[r.kind], r.err)
		}
	}
	// A create answered 503 (a leader change under load) may still have
	// applied, so the answers are at most the quota; the state, which
	// 27 tries each fill, is exactly it.
	if ok["server"] > maxServers || ok["port"] > maxPorts || ok["volume"] > maxVolumes || ok["router"] > maxRouters || ok["server"] == 0 {
		t.Fatalf("created %v of 27 tries each; want at most the quotas %d servers, %d ports, %d volumes, %d routers", ok, maxServers, maxPorts, maxVolumes, maxRouters)
	}
	idx := c.Node(c.Leader(10 * time.Second)).State().Index
	for i := range 3 {
		c.Eventually(10*time.Second, fmt.Sprintf("host %d catches up", i), func() bool { return c.Node(i).State().Index >= idx })
		sn := c.Node(i).State()
		u := sn.QuotaUsages(project, "", []string{statedb.QuotaInstances, statedb.QuotaPorts, statedb.QuotaVolumes, statedb.QuotaRouters})
		if u[statedb.QuotaInstances] != maxServers || u[statedb.QuotaPorts] != maxPorts || u[statedb.QuotaVolumes] != maxVolumes || u[statedb.QuotaRouters] != maxRouters {
			t.Errorf("host %d counts %v", i, u)
		}
	}
}

// TestQuotaGophercloud drives the three quota APIs with gophercloud's
// quota packages through a follower.
func TestQuotaGophercloud(t *testing.T) {
	c := NewCluster(t, 3, Options{Quotas: true})
	ctx := t.Context()
	project := qtAdminProject(t, c)
	q := qtConnect(ctx, t, c, c.Follower())

	qs, err := cquotas.Get(ctx, q.compute, project).Extract()
	if err != nil || qs.Instances != 10 || qs.Cores != 20 || qs.RAM != 51200 || qs.KeyPairs != 100 || qs.ServerGroupMembers != 10 {
		t.Fatalf("compute quotasets.Get = %+v, %v", qs, err)
	}
	qs, err = cquotas.Update(ctx, q.compute, project, cquotas.UpdateOpts{Instances: gophercloud.IntToPointer(3), ServerGroups: gophercloud.IntToPointer(2)}).Extract()
	if err != nil || qs.Instances != 3 || qs.ServerGroups != 2 {
		t.Fatalf("compute quotasets.Update = %+v, %v", qs, err)
	}
	det, err := cquotas.GetDetail(ctx, q.compute, project).Extract()
	if err != nil || det.Instances.Limit != 3 || det.Instances.InUse != 0 || det.ServerGroups.Limit != 2 {
		t.Fatalf("compute quotasets.GetDetail = %+v, %v", det, err)
	}
	lim, err := limits.Get(ctx, q.compute, limits.GetOpts{}).Extract()
	if err != nil || lim.Absolute.MaxTotalInstances != 3 || lim.Absolute.MaxTotalCores != 20 || lim.Absolute.TotalInstancesUsed != 0 {
		t.Fatalf("limits.Get = %+v, %v", lim, err)
	}
	if err := cquotas.Delete(ctx, q.compute, project).Err; err != nil {
		t.Fatalf("compute quotasets.Delete: %v", err)
	}
	if qs, err = cquotas.Get(ctx, q.compute, project).Extract(); err != nil || qs.Instances != 10 {
		t.Fatalf("after delete = %+v, %v", qs, err)
	}

	nq, err := nquotas.Update(ctx, q.network, project, nquotas.UpdateOpts{Network: gophercloud.IntToPointer(1), Port: gophercloud.IntToPointer(-1)}).Extract()
	if err != nil || nq.Network != 1 || nq.Port != -1 || nq.Router != 10 {
		t.Fatalf("network quotas.Update = %+v, %v", nq, err)
	}
	if _, err := networks.Create(ctx, q.network, networks.CreateOpts{Name: "one"}).Extract(); err != nil {
		t.Fatal(err)
	}
	_, err = networks.Create(ctx, q.network, networks.CreateOpts{Name: "two"}).Extract()
	var u gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &u) || u.Actual != http.StatusConflict || !strings.Contains(string(u.Body), "OverQuota") {
		t.Fatalf("second network = %v, want 409 OverQuota", err)
	}
	nd, err := nquotas.GetDetail(ctx, q.network, project).Extract()
	if err != nil || nd.Network.Used != 1 || nd.Network.Limit != 1 || nd.SecurityGroup.Used != 0 || nd.Port.Limit != -1 {
		t.Fatalf("network quotas.GetDetail = %+v, %v", nd, err)
	}
	if err := nquotas.Delete(ctx, q.network, project).ExtractErr(); err != nil {
		t.Fatalf("network quotas.Delete: %v", err)
	}
	if nq, err = nquotas.Get(ctx, q.network, project).Extract(); err != nil || nq.Network != 100 {
		t.Fatalf("network quotas after delete = %+v, %v", nq, err)
	}

	bq, err := bsquotas.Update(ctx, q.volume, project, bsquotas.UpdateOpts{Volumes: gophercloud.IntToPointer(2), Gigabytes: gophercloud.IntToPointer(3)}).Extract()
	if err != nil || bq.Volumes != 2 || bq.Gigabytes != 3 || bq.Snapshots != 10 {
		t.Fatalf("blockstorage quotasets.Update = %+v, %v", bq, err)
	}
	if _, err := volumes.Create(ctx, q.volume, volumes.CreateOpts{Size: 2}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	_, err = volumes.Create(ctx, q.volume, volumes.CreateOpts{Size: 2}, nil).Extract()
	if qtStatus(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("volume over gigabytes = %v, want 413", err)
	}
	bu, err := bsquotas.GetUsage(ctx, q.volume, project).Extract()
	if err != nil || bu.Volumes.InUse != 1 || bu.Gigabytes.InUse != 2 || bu.Gigabytes.Limit != 3 || bu.Snapshots.InUse != 0 {
		t.Fatalf("blockstorage quotasets.GetUsage = %+v, %v", bu, err)
	}
	bd, err := bsquotas.GetDefaults(ctx, q.volume, project).Extract()
	if err != nil || bd.Volumes != 10 || bd.Gigabytes != 1000 {
		t.Fatalf("blockstorage quotasets.GetDefaults = %+v, %v", bd, err)
	}
	if err := bsquotas.Delete(ctx, q.volume, project).ExtractErr(); err != nil {
		t.Fatalf("blockstorage quotasets.Delete: %v", err)
	}
	if bq, err = bsquotas.Get(ctx, q.volume, project).Extract(); err != nil || bq.Volumes != 10 {
		t.Fatalf("after delete = %+v, %v", bq, err)
	}
}

// TestQuotaOpenStackCLI runs the real openstack client 6.0: quota show,
// set, show --default, set --class default, list --detail and limits
// show --absolute. (Its
// quota command has no delete or --usage; those are covered through
// gophercloud above.)
func TestQuotaOpenStackCLI(t *testing.T) {
	c := NewCluster(t, 3, Options{Quotas: true})
	o := newCPCLI(t, c, c.Follower())

	var show map[string]any
	o.json(&show, "quota", "show", "admin")
	for k, v := range map[string]float64{"instances": 10, "cores": 20, "ram": 51200, "volumes": 10, "gigabytes": 1000, "networks": 100, "ports": 500} {
		if show[k] != v {
			t.Errorf("quota show %s = %v, want %v (%v)", k, show[k], v, show)
		}
	}
	o.run("quota", "set", "--instances", "7", "--cores", "9", "--ram", "4096", "--volumes", "3", "--gigabytes", "30",
		"--networks", "5", "--ports", "20", "admin")
	o.json(&show, "quota", "show", "admin")
	for k, v := range map[string]float64{"instances": 7, "cores": 9, "ram": 4096, "volumes": 3, "gigabytes": 30, "networks": 5, "ports": 20, "subnets": 100} {
		if show[k] != v {
			t.Errorf("after set, quota show %s = %v, want %v", k, show[k], v)
		}
	}
	var def map[string]any
	o.json(&def, "quota", "show", "--default", "admin")
	if def["instances"] != 10.0 || def["networks"] != 100.0 || def["volumes"] != 10.0 {
		t.Errorf("quota show --default = %v", def)
	}
	var detail []map[string]any
	o.json(&detail, "quota", "list", "--detail", "--compute")
	if !strings.Contains(fmt.Sprint(detail), "instances") {
		t.Errorf("quota list --detail --compute = %v", detail)
	}
	o.json(&detail, "quota", "list", "--detail", "--network")
	if !strings.Contains(fmt.Sprint(detail), "network") {
		t.Errorf("quota list --detail --network = %v", detail)
	}
	// Routers and security groups are counted; their limits set and shown.
	o.run("quota", "set", "--routers", "2", "--floating-ips", "3", "--secgroups", "4", "--secgroup-rules", "20", "admin")
	o.json(&show, "quota", "show", "admin")
	for k, v := range map[string]float64{"routers": 2, "floating-ips": 3, "secgroups": 4, "secgroup-rules": 20} {
		if show[k] != v {
			t.Errorf("after set, quota show %s = %v, want %v (%v)", k, show[k], v, show)
		}
	}
	o.run("router", "create", "r1")
	o.run("security", "group", "create", "web")
	o.json(&detail, "quota", "list", "--detail", "--network")
	used := map[string]any{}
	for _, row := range detail {
		used[fmt.Sprint(row["Resource"])] = row["In Use"]
	}
	// web and the admin project's default group; their 2 + 4 rules.
	for k, v := range map[string]float64{"routers": 1, "security_groups": 2, "security_group_rules": 6, "floating_ips": 0} {
		if used[k] != v {
			t.Errorf("quota list --detail --network: %s in use = %v, want %v (%v)", k, used[k], v, detail)
		}
	}
	// Cluster defaults through the default quota class. (The client's
	// "quota show --class default" looks the class up as a project and
	// fails before asking; show --default reads the same values.)
	o.run("quota", "set", "--class", "--instances", "12", "--volumes", "4", "default")
	o.json(&def, "quota", "show", "--default", "admin")
	if def["instances"] != 12.0 || def["volumes"] != 4.0 {
		t.Errorf("quota show --default after the class set = %v", def)
	}
	var abs []map[string]any
	o.json(&abs, "limits", "show", "--absolute")
	got := map[string]any{}
	for _, row := range abs {
		got[fmt.Sprint(row["Name"])] = row["Value"]
	}
	for k, v := range map[string]float64{"maxTotalInstances": 7, "maxTotalCores": 9, "maxTotalRAMSize": 4096, "totalInstancesUsed": 0,
		"maxTotalVolumes": 3, "maxTotalVolumeGigabytes": 30, "totalVolumesUsed": 0} {
		if got[k] != v {
			t.Errorf("limits show --absolute %s = %v, want %v", k, got[k], v)
		}
	}
}

// TestQuotaAbuseImageProperties is the reported abuse: 30 image creates
// carrying ~900 KB of properties each. With the default limits every one
// is refused (413, no image in the state) and the heap stays within 10 MB
// of idle. That the refusal comes before anything is proposed is asserted
// against the exact log index in rest/image (the idle cluster here writes
// entries of its own).
func TestQuotaAbuseImageProperties(t *testing.T) {
	c := NewCluster(t, 3, Options{Quotas: true})
	f := c.Follower()
	ic := newImageClient(t, c, f)
	var body strings.Builder
	body.WriteString(`{"name":"abuse","disk_format":"qcow2","container_format":"bare"`)
	for i := range 14 {
		fmt.Fprintf(&body, `,"prop%d":%q`, i, strings.Repeat("x", 64000))
	}
	body.WriteString("}")
	payload := body.String()

	idle := qtHeap()
	for i := range 30 {
		status, resp := ic.do(f, "POST", "/image/v2/images", "application/json", strings.NewReader(payload))
		if status != http.StatusRequestEntityTooLarge {
			t.Fatalf("create %d = %d %s, want 413", i, status, resp)
		}
	}
	after := qtHeap()
	if n := len(c.Node(f).State().Images()); n != 0 {
		t.Fatalf("%d images in the state after refused creates", n)
	}
	t.Logf("heap idle %.1f MB, after 30 refused creates %.1f MB", float64(idle)/(1<<20), float64(after)/(1<<20))
	if after > idle+10<<20 {
		t.Fatalf("heap grew from %d to %d bytes: more than 10 MB over idle", idle, after)
	}
}

func qtHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
