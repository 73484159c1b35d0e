package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBoxRoutingSecurityGroups: a 2-host box with a LAN namespace on the
// hosts' physnet1 and an internet namespace routed behind it, driven with
// the real openstack client; two real guests behind a router on a tenant
// network:
//   - vm1 (default group) reaches the LAN namespace through SNAT: the LAN
//     has no route to the tenant network, so a reply means the host
//     translated the source;
//   - vm1 and vm2 (two hosts, no floating IP) ping the internet namespace,
//     which sees exactly the two hosts' own LAN addresses as sources;
//   - a second project (its own user, the real client) builds the same
//     tenant CIDR behind its own router, and its guest, at vm1's address,
//     reaches the internet namespace too; the first project's floating IP
//     steps below run with it in place;
//   - from the LAN namespace, vm1's floating IP answers neither ping nor
//     TCP until an ingress rule opens ICMP, then TCP port 8080; the time
//     from the rule's create to the first packet through is measured over
//     several trials (the rule deleted in between, waiting until blocked
//     again) and printed;
//   - vm2, in another group, does not answer vm1 until a rule of its group
//     names vm1's group as the remote group;
//   - neither guest (vm1 with its floating IP, vm2 through SNAT) can open
//     a connection to any host's Raft or gossip port or to the NAS's NFS
//     and rpcbind ports, which the underlay reaches; both reach every
//     host's API;
//   - the floating IP moves to vm2 on the other host and back (CLI, then
//     timed through the API): the LAN reaches the new VM only, only the
//     new VM's host answers ARP for the address, and the time from the
//     move to the first answer is printed;
//   - with all of that in place, each host's full reconcile finds nothing
//     to change (no netlink or nftables write, no operation) and no full
//     resync had to repair a host in the whole run;
//   - removing the floating IP, the servers and the router leaves no router
//     namespace of this box on the machine.
func TestBoxRoutingSecurityGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster in a box: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"qemu-system-x86_64", "openstack", "ping", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the routing box test needs %s: %v", tool, err)
		}
	}
	if _, err := os.Stat(guestImage()); err != nil {
		t.Fatalf("guest image missing (run `make guest-image`): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 17*time.Minute)
	defer cancel()
	out := testWriter{t}
	t0 := time.Now()
	b, err := StartBox(ctx, BoxOptions{Hosts: 2, LAN: true, NFS: true, Kind: "test", Bin: Binary(t), Log: out})
	if err != nil {
		t.Fatalf("start box: %v", err)
	}
	var routerNS []string // prefixes of this box's router namespaces
	t.Cleanup(func() {
		if err := b.Down(context.Background()); err != nil {
			t.Errorf("box teardown: %v", err)
		}
		// Router namespaces are machine-wide names the daemons made; a
		// failed run may leave some: remove them by this box's prefixes.
		for _, ns := range netnsWithPrefix(routerNS) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		if left := append(boxRemains(b), netnsWithPrefix(routerNS)...); len(left) > 0 {
			t.Errorf("teardown left: %v", left)
		}
		t.Logf("logs of every daemon and console: %s", b.LogDir)
	})
	for _, h := range b.Hosts {
		raw, err := os.ReadFile(filepath.Join(h.DataDir, "node.json"))
		var id struct {
			NodeID string `json:"node_id"`
		}
		if err != nil || json.Unmarshal(raw, &id) != nil || id.NodeID == "" {
			t.Fatalf("node id of %s: %v", h.Name, err)
		}
		routerNS = append(routerNS, routerNSPrefix(id.NodeID))
	}
	s, err := newScenario(ctx, b, out)
	if err != nil {
		t.Fatal(err)
	}
	echoes, err := listenEchoes(b.LAN.Internet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echoes.close)
	r := &routingRun{t: t, s: s, lan: b.LAN, echoes: echoes}
	fmt.Fprintf(out, "box up in %.1fs\n", time.Since(t0).Seconds())
	r.setup()
	r.snat()
	r.internet()
	r.secondProject()
	r.floatingIP()
	r.remoteGroup()
	r.openGroupB()
	r.guard()
	r.moveFIP()
	r.quiet()
	r.teardown(routerNS)
	fmt.Fprintf(out, "routing box test: %.1fs in all\n", time.Since(t0).Seconds())
}

// routerNSPrefix is the prefix of the router namespaces of the host with
// member id id (node/routing.go names them so).
func routerNSPrefix(id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if len(id) > 8 {
		id = id[:8]
	}
	return "psr-" + id + "-"
}

// netnsWithPrefix lists the named network namespaces starting with any of
// prefixes.
func netnsWithPrefix(prefixes []string) []string {
	raw, _ := exec.Command("ip", "netns", "list").Output()
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(f[0], p) {
				out = append(out, f[0])
			}
		}
	}
	return out
}

// Addresses of the tenant network.
const (
	rtVM1 = "192.168.90.11"
	rtVM2 = "192.168.90.12"
)

type routingRun struct {
	t   *testing.T
	s   *scenario
	lan *BoxLAN

	net, grp, defaultGroup, fip, fipID string
	tok                                string // admin token for api, fetched once (outside timed windows)

	echoes   *echoSources // echo requests the internet namespace received
	p2, p2VM string       // the second project's clouds.yaml and guest id
}

func (r *routingRun) osc(args ...string) string {
	r.t.Helper()
	out, err := r.s.osc(r.s.next(), args...) // both hosts' APIs in turn
	if err != nil {
		r.t.Fatalf("openstack %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (r *routingRun) obj(args ...string) map[string]any {
	r.t.Helper()
	var m map[string]any
	if err := r.s.oscJSON(1, &m, args...); err != nil {
		r.t.Fatal(err)
	}
	return m
}

// lanSh runs a shell command in the LAN namespace; err is its exit.
func (r *routingRun) lanSh(ctx context.Context, script string) (string, error) {
	return sh(ctx, "ip", "netns", "exec", r.lan.NS, "bash", "-c", script)
}

// vm1Data is vm1's user data: a web server on 8080 (guestWeb), a ping of
// the LAN gateway until it answers (SNAT), then a watch of vm2 that prints
// each change between answering and not.
func vm1Data(lan, internet string) string {
	return "#!/bin/sh\n" + guestWeb("PEERSTACK-HTTP-VM1") + pingInternet(internet) + `i=0
while [ $i -lt 300 ]; do
  if ping -c1 -W1 ` + lan + ` >/dev/null 2>&1; then echo "PEERSTACK-SNAT-OK"; break; fi
  i=$((i+1)); sleep 1
done
[ $i -lt 300 ] || echo "PEERSTACK-SNAT-FAIL"
( state=""; while true; do
    if ping -c1 -W1 ` + rtVM2 + ` >/dev/null 2>&1; then now=OK; else now=NO; fi
    [ "$now" = "$state" ] || echo "PEERSTACK-PEER-$now" > /dev/console
    state=$now; [ $now = NO ] || sleep 1
  done ) >/dev/null 2>&1 &
exit 0
`
}

func (r *routingRun) setup() {
	r.t.Helper()
	s, t := r.s, r.t
	t0 := time.Now()
	if _, err := stepImage(s, 1); err != nil {
		t.Fatal(err)
	}
	r.osc("flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", "rt.tiny")
	start, end := r.lan.Pool()
	r.osc("network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", BoxPhysnet, "ext")
	r.osc("subnet", "create", "--network", "ext", "--subnet-range", r.lan.CIDR, "--no-dhcp", "--gateway", r.lan.Gateway,
		"--allocation-pool", "start="+start+",end="+end, "ext-sub")
	r.net = fmt.Sprint(r.obj("network", "create", "rt-net")["id"])
	r.osc("subnet", "create", "--network", "rt-net", "--subnet-range", "192.168.90.0/24", "rt-sub")
	r.osc("router", "create", "rt-r")
	r.osc("router", "set", "--external-gateway", "ext", "rt-r")
	r.osc("router", "add", "subnet", "rt-r", "rt-sub")
	r.osc("security", "group", "create", "rt-b")
	r.defaultGroup = fmt.Sprint(r.obj("security", "group", "show", "default")["id"])
	r.grp = fmt.Sprint(r.obj("server", "group", "create", "--policy", "anti-affinity", "rt-grp")["id"])
	for _, vm := range []struct{ name, ip, group, data string }{
		{"rt-vm1", rtVM1, "default", vm1Data(r.lan.Gateway, r.lan.InternetAddr)},
		{"rt-vm2", rtVM2, "rt-b", "#!/bin/sh\n" + guestWeb("PEERSTACK-HTTP-VM2") + pingInternet(r.lan.InternetAddr) + "exit 0\n"},
	} {
		ud := filepath.Join(s.dir, vm.name+".userdata")
		if err := os.WriteFile(ud, []byte(vm.data), 0o644); err != nil {
			t.Fatal(err)
		}
		r.osc("server", "create", "--flavor", "rt.tiny", "--image", "e2e-guest", "--nic", "net-id="+r.net+",v4-fixed-ip="+vm.ip,
			"--security-group", vm.group, "--hint", "group="+r.grp, "--user-data", ud, vm.name)
	}
	for _, vm := range []string{"rt-vm1", "rt-vm2"} {
		if err := s.waitField(1, 4*time.Minute, "server", vm, "status", "ACTIVE"); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintf(s.out, "routing setup (image, networks, router, 2 servers ACTIVE): %.1fs\n", time.Since(t0).Seconds())
}

// snat: vm1 pings the LAN namespace, which has no route back to the
// tenant network.
func (r *routingRun) snat() {
	r.t.Helper()
	t0 := time.Now()
	if err := r.s.consoleHas(1, 5*time.Minute, "rt-vm1", "PEERSTACK-IP "+rtVM1, "PEERSTACK-SNAT-OK"); err != nil {
		r.t.Fatalf("vm1 egress through SNAT: %v", err)
	}
	if out, err := r.lanSh(r.s.ctx, "ip route"); err != nil || strings.Contains(out, "192.168.90") {
		r.t.Fatalf("the LAN namespace must have no route to the tenant network: %q %v", out, err)
	}
	fmt.Fprintf(r.s.out, "vm1 → LAN through SNAT: answered (%.1fs after ACTIVE)\n", time.Since(t0).Seconds())
}

// probe runs script in the LAN namespace, which returns once what it
// probes passes, and returns how long that took (d at most).
func (r *routingRun) probe(d time.Duration, script string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(r.s.ctx, d)
	defer cancel()
	t0 := time.Now()
	_, err := r.lanSh(ctx, script)
	return time.Since(t0), err
}

// pingUntil is a probe script: one ping process sending every 20 ms that
// ends at the first reply (the figure is late by at most two intervals:
// the probe before the reply and ping's next write, which ends it).
func pingUntil(addr string) string {
	return "ping -n -i 0.02 -w 30 " + addr + " | grep -q -m1 'bytes from'"
}

// webUntil is a probe script: HTTP GETs of vm1's page, each given 300 ms
// (a dropped SYN is not retransmitted sooner), until one answers.
func webUntil(addr string) string { return webUntilMarker(addr, "PEERSTACK-HTTP-VM1") }

// blocked checks that check fails from the LAN namespace, twice.
func (r *routingRun) blocked(check string) error {
	for range 2 {
		if _, err := r.lanSh(r.s.ctx, check); err == nil {
			return fmt.Errorf("%s passed; want it blocked", check)
		}
	}
	return nil
}

// api sends a network API request as the admin through host 1 and decodes
// the answer into v (when not nil).
func (r *routingRun) api(method, path, body string, want int, v any) error {
	hc, err := r.s.boxHTTP()
	if err != nil {
		return err
	}
	api := r.s.b.Host(1).APIAddr
	if r.tok == "" {
		if r.tok, err = adminToken(hc, api, r.s.b.AdminPassword()); err != nil {
			return err
		}
	}
	tok := r.tok
	req, err := http.NewRequestWithContext(r.s.ctx, method, "https://"+api+"/network/v2.0"+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s = %d %s", method, path, resp.StatusCode, raw)
	}
	if v != nil {
		return json.Unmarshal(raw, v)
	}
	return nil
}

// timedRule creates an ingress rule in the default group through the API
// and returns the time until check first passes from the LAN namespace,
// and the rule's id.
func (r *routingRun) timedRule(rule, check string) (time.Duration, string) {
	r.t.Helper()
	var created struct {
		Rule struct {
			ID string `json:"id"`
		} `json:"security_group_rule"`
	}
	body := fmt.Sprintf(`{"security_group_rule": {"security_group_id": %q, "direction": "ingress", "ethertype": "IPv4", %s}}`, r.defaultGroup, rule)
	done := make(chan error, 1)
	go func() { done <- r.api("POST", "/security-group-rules", body, http.StatusCreated, &created) }()
	took, err := r.probe(30*time.Second, check)
	if err := <-done; err != nil {
		r.t.Fatal(err)
	}
	if err != nil {
		r.t.Fatalf("%s still blocked 30 s after the rule %s: %v", check, rule, err)
	}
	return took, created.Rule.ID
}

func (r *routingRun) floatingIP() {
	r.t.Helper()
	t, s := r.t, r.s
	var ports []map[string]any
	if err := s.oscJSON(1, &ports, "port", "list", "--server", "rt-vm1"); err != nil || len(ports) != 1 {
		t.Fatalf("vm1's ports = %v (%v)", ports, err)
	}
	f := r.obj("floating", "ip", "create", "ext", "--port", fmt.Sprint(ports[0]["ID"]))
	r.fip, r.fipID = fmt.Sprint(f["floating_ip_address"]), fmt.Sprint(f["id"])
	if err := s.eventually(time.Minute, func() error {
		var f map[string]any
		if err := s.oscJSON(1, &f, "floating", "ip", "show", r.fipID); err != nil {
			return err
		}
		if f["status"] != "ACTIVE" {
			return fmt.Errorf("floating ip %s status %v; want ACTIVE", r.fip, f["status"])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ping, web := pingUntil(r.fip), webUntil(r.fip)

	// The default group has no ingress rule for the LAN: both blocked.
	if err := r.blocked("ping -c1 -W1 " + r.fip); err != nil {
		t.Fatal(err)
	}
	if err := r.blocked("curl -s -m 2 http://" + r.fip + ":8080/"); err != nil {
		t.Fatal(err)
	}

	// ICMP opened with the real client first.
	// The default group by id: the second project has a "default" too.
	r.osc("security", "group", "rule", "create", "--ingress", "--protocol", "icmp", r.defaultGroup)
	if _, err := r.probe(30*time.Second, ping); err != nil {
		t.Fatalf("ping of the floating IP after `security group rule create --ingress --protocol icmp`: %v", err)
	}
	if err := r.blocked("curl -s -m 2 http://" + r.fip + ":8080/"); err != nil {
		t.Fatalf("ICMP rule opened TCP too: %v", err)
	}
	var rules []map[string]any
	if err := s.oscJSON(1, &rules, "security", "group", "rule", "list", "--ingress", "--protocol", "icmp", r.defaultGroup); err != nil || len(rules) != 1 {
		t.Fatalf("icmp rules = %v (%v)", rules, err)
	}
	r.osc("security", "group", "rule", "delete", fmt.Sprint(rules[0]["ID"]))
	if err := s.eventually(30*time.Second, func() error { return r.blocked("ping -c1 -W1 " + r.fip) }); err != nil {
		t.Fatalf("rule deleted, ping still passes: %v", err)
	}

	// Timed trials: rule create (API) → first packet through.
	trial := func(what, resolution, rule, check, blockedCheck string, n int) {
		var took []time.Duration
		for range n {
			d, id := r.timedRule(rule, check)
			took = append(took, d)
			if err := r.api("DELETE", "/security-group-rules/"+id, "", http.StatusNoContent, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.eventually(30*time.Second, func() error { return r.blocked(blockedCheck) }); err != nil {
				t.Fatalf("%s rule deleted, still open: %v", what, err)
			}
		}
		slices.Sort(took)
		ms := make([]string, len(took))
		for i, d := range took {
			ms[i] = fmt.Sprintf("%.0f", d.Seconds()*1000)
		}
		fmt.Fprintf(s.out, "FIGURE rule create (API) → first %s through the floating IP: p50 %.0f ms, max %.0f ms over %d trials (ms: %s; probe resolution %s)\n",
			what, took[len(took)/2].Seconds()*1000, took[len(took)-1].Seconds()*1000, len(took), strings.Join(ms, " "), resolution)
	}
	trial("ping reply", "40 ms", `"protocol": "icmp"`, ping, "ping -c1 -W1 "+r.fip, 7)
	trial("TCP 8080 answer", "300 ms", `"protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080`, web, "curl -s -m 2 http://"+r.fip+":8080/", 5)

	// TCP opened with the real client, and the answer is vm1's.
	r.osc("security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "8080", r.defaultGroup)
	if _, err := r.probe(30*time.Second, web); err != nil {
		t.Fatalf("TCP 8080 to the floating IP after the rule: %v", err)
	}
}

// remoteGroup: vm1 (default) cannot ping vm2 (rt-b) until rt-b allows
// ICMP from the default group.
func (r *routingRun) remoteGroup() {
	r.t.Helper()
	s := r.s
	if err := s.consoleHas(1, 3*time.Minute, "rt-vm1", "PEERSTACK-PEER-NO"); err != nil {
		r.t.Fatal(err)
	}
	if out, _ := s.osc(1, "console", "log", "show", "rt-vm1"); strings.Contains(out, "PEERSTACK-PEER-OK") {
		r.t.Fatal("vm1 reached vm2 before any rule of vm2's group allowed it")
	}
	t0 := time.Now()
	r.osc("security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "--remote-group", r.defaultGroup, "rt-b")
	if err := s.consoleHas(1, time.Minute, "rt-vm1", "PEERSTACK-PEER-OK"); err != nil {
		r.t.Fatalf("vm1 → vm2 after the remote-group rule: %v", err)
	}
	fmt.Fprintf(s.out, "FIGURE remote-group rule (CLI) → vm1's console shows vm2 answering: %.1fs (console polled by the CLI, ±2 s)\n",
		time.Since(t0).Seconds())
}

// teardown removes what the routers need and checks that no host keeps a
// router namespace.
func (r *routingRun) teardown(prefixes []string) {
	r.t.Helper()
	s := r.s
	if len(netnsWithPrefix(prefixes)) == 0 {
		r.t.Fatal("no router namespace of this box while its router served")
	}
	r.osc("floating", "ip", "delete", r.fipID)
	r.teardownSecondProject()
	r.osc("server", "delete", "--wait", "rt-vm1", "rt-vm2")
	r.osc("router", "remove", "subnet", "rt-r", "rt-sub")
	r.osc("router", "unset", "--external-gateway", "rt-r")
	r.osc("router", "delete", "rt-r")
	if err := s.eventually(time.Minute, func() error {
		if left := netnsWithPrefix(prefixes); len(left) > 0 {
			return fmt.Errorf("router namespaces left: %v", left)
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
}

// quiet checks that, with routers, floating IPs, security groups and
// guests in place and the state unchanged, each host's agent finds
// nothing to change: a full reconcile makes no netlink or nftables write
// and starts no operation, and no full resync had to repair the host in
// the whole run.
func (r *routingRun) quiet() {
	r.t.Helper()
	hc, err := r.s.boxHTTP()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.api("GET", "/networks?limit=1", "", http.StatusOK, nil); err != nil { // fetches the admin token
		r.t.Fatal(err)
	}
	for _, h := range r.s.b.Hosts {
		n, c, err := QuietWindow(r.s.ctx, boxAgentHost{hc: hc, api: h.APIAddr, token: r.tok}, time.Now().Add(2*time.Minute))
		if err != nil {
			r.t.Fatalf("%s: %v", h.Name, err)
		}
		if c.Repairs != 0 || c.HostWrites == 0 {
			r.t.Fatalf("%s: %d repairs and %d host writes over the run; want no repair, and the routers' writes counted", h.Name, c.Repairs, c.HostWrites)
		}
		fmt.Fprintf(testWriter{r.t}, "%s: a full reconcile changes nothing (window %d; over the run %d host writes, %d operations, 0 repairs)\n",
			h.Name, n, c.HostWrites, c.Operations)
	}
}

// boxAgentHost reads one box host's agent counters and state digest
// (AgentHost) with a cloud-admin token.
type boxAgentHost struct {
	hc         *http.Client
	api, token string
}

func (b boxAgentHost) get(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+b.api+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", b.token)
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s at %s: %d %s", path, b.api, resp.StatusCode, raw)
	}
	return raw, err
}

func (b boxAgentHost) AgentCounters(ctx context.Context) (AgentCounters, error) {
	raw, err := b.get(ctx, "/metrics")
	if err != nil {
		return AgentCounters{}, err
	}
	return ParseAgentCounters(raw)
}

func (b boxAgentHost) StateDigest(ctx context.Context) (string, uint64, error) {
	raw, err := b.get(ctx, "/cluster/v1/status?digest=true")
	if err != nil {
		return "", 0, err
	}
	var out struct {
		Status struct {
			StateDigest string `json:"state_digest"`
			StateIndex  uint64 `json:"state_index"`
		} `json:"status"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Status.StateDigest == "" {
		return "", 0, fmt.Errorf("status of %s: no state digest (%v)", b.api, err)
	}
	return out.Status.StateDigest, out.Status.StateIndex, nil
}
