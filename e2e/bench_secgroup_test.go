package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// BenchmarkSecGroupRuleEnforced: a cluster in a box of five real daemons,
// each host holding one port (bound to it, no VM) in one security group.
// Every trial creates one ingress TCP rule with its own destination port
// through one host's API, then waits until every host's kernel committed
// the nftables transaction that adds a rule matching that port, watched
// by a netlink monitor in each host's namespace. Enforced is the latest
// host's commit minus the time just before the request; the baseline, in
// the same run, is the API write alone (request to its 2xx). The rules
// are then deleted one by one and measured the same way (the commit that
// deletes the port's rule and adds none back). Those trials run back to
// back; 50 more of each follow with the hosts idle 200 ms before every
// change.
func BenchmarkSecGroupRuleEnforced(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	const hosts, trials = 5, 200
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		box, err := StartBox(ctx, BoxOptions{Hosts: hosts, Kind: "test", Bin: Binary(b), Log: os.Stdout})
		if err != nil {
			cancel()
			b.Fatalf("start box: %v", err)
		}
		func() {
			defer func() {
				if err := box.Down(context.Background()); err != nil {
					b.Errorf("box teardown: %v", err)
				}
				if left := boxRemains(box); len(left) > 0 {
					b.Errorf("teardown left: %v", left)
				}
			}()
			defer cancel()
			benchSecGroupRules(ctx, b, box, trials)
		}()
	}
}

// sgAPI is one host's API with an admin token kept for the whole run.
type sgAPI struct {
	hc   *http.Client
	base string
	tok  string
}

// do sends one request and decodes a JSON answer into out (if not nil);
// it returns the time from just before the request to its 2xx.
func (a *sgAPI) do(ctx context.Context, method, path string, body any, out any) (time.Time, time.Time, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	req.Header.Set("X-Auth-Token", a.tok)
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := a.hc.Do(req)
	if err != nil {
		return t0, time.Time{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	tAck := time.Now()
	if err != nil {
		return t0, tAck, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return t0, tAck, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, tail(string(data), 300))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return t0, tAck, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return t0, tAck, nil
}

type idOf struct {
	ID        string
	ProjectID string `json:"project_id"`
}

// sgTrial is one rule's figures: when it was asked for, acknowledged, and
// committed on each host (index 0 = h1).
type sgTrial struct {
	t0, ack time.Time
	at      []time.Time
	changes []int // size of each host's transaction
}

func (t sgTrial) enforced() time.Duration { return slices.Max(t.since()) }

func (t sgTrial) since() []time.Duration {
	out := make([]time.Duration, len(t.at))
	for i, at := range t.at {
		out[i] = at.Sub(t.t0)
	}
	return out
}

func benchSecGroupRules(ctx context.Context, b *testing.B, box *Box, trials int) {
	hc := httpsClient(b, box.CACert())
	api := box.Host(1).APIAddr
	tok, err := adminToken(hc, api, box.AdminPassword())
	if err != nil {
		b.Fatalf("token: %v", err)
	}
	a := &sgAPI{hc: hc, base: "https://" + api, tok: tok}
	leader := clusterLeader(b, hc, api, tok)

	// One network, one group, one port per host in it.
	var nw, sub, grp struct {
		Network       idOf `json:"network"`
		Subnet        idOf `json:"subnet"`
		SecurityGroup idOf `json:"security_group"`
	}
	must := func(_, _ time.Time, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(a.do(ctx, "POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "fwbench"}}, &nw))
	must(a.do(ctx, "POST", "/network/v2.0/subnets", map[string]any{"subnet": map[string]any{
		"network_id": nw.Network.ID, "ip_version": 4, "cidr": "192.168.77.0/24"}}, &sub))
	must(a.do(ctx, "POST", "/network/v2.0/security-groups", map[string]any{"security_group": map[string]any{"name": "fwbench"}}, &grp))
	g := grp.SecurityGroup.ID
	// Neutron's default quota is 100 rules per project.
	must(a.do(ctx, "PUT", "/network/v2.0/quotas/"+grp.SecurityGroup.ProjectID, map[string]any{"quota": map[string]any{
		"security_group_rule": trials + 10}}, nil))
	var ports []string
	for _, h := range box.Hosts {
		var p struct{ Port idOf }
		must(a.do(ctx, "POST", "/network/v2.0/ports", map[string]any{"port": map[string]any{
			"name": "fwbench-" + h.Name, "network_id": nw.Network.ID, "binding:host_id": h.Name,
			"security_groups": []string{g}}}, &p))
		ports = append(ports, p.Port.ID)
	}
	// Each host filters its port although no VM uses it.
	for i, h := range box.Hosts {
		if err := waitChain(ctx, h.NS, "i-"+ports[i]); err != nil {
			b.Fatalf("%s: %v", h.Name, err)
		}
		links, _ := exec.Command("ip", "-n", h.NS, "-o", "link", "show").Output()
		tap := strings.Contains(string(links), "tap"+strings.ReplaceAll(ports[i], "-", "")[:8])
		fmt.Printf("%s: port %s filtered (chain i-%s installed; no VM; tap device present: %v)\n", h.Name, ports[i], ports[i], tap)
	}

	watches := make([]*nftWatch, len(box.Hosts))
	for i, h := range box.Hosts {
		w, err := watchNFT(h.NS)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		watches[i] = w
	}
	// measure waits, on every host, for the first commit after t0 that
	// match accepts.
	measure := func(t0, ack time.Time, match func(nftCommit) bool) sgTrial {
		tr := sgTrial{t0: t0, ack: ack}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		for i, w := range watches {
			c, err := w.wait(wctx, t0, match)
			if err != nil {
				b.Fatalf("%s: no commit of the change within 30s: %v", box.Host(i+1).Name, err)
			}
			tr.at = append(tr.at, c.at)
			tr.changes = append(tr.changes, c.changes)
		}
		for _, w := range watches {
			w.forget(t0)
		}
		return tr
	}

	// run creates n rules from firstPort on, then deletes them, each
	// change after the previous one is enforced everywhere and gap more.
	run := func(firstPort, n int, gap time.Duration) (created, deleted []sgTrial) {
		rules := make([]string, 0, n)
		pause := func() {
			select {
			case <-time.After(gap): // pacing, not waiting for a state
			case <-ctx.Done():
			}
		}
		for k := range n {
			pause()
			port := firstPort + k
			var r struct {
				SecurityGroupRule idOf `json:"security_group_rule"`
			}
			t0, ack, err := a.do(ctx, "POST", "/network/v2.0/security-group-rules", map[string]any{"security_group_rule": map[string]any{
				"security_group_id": g, "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
				"port_range_min": port, "port_range_max": port}}, &r)
			if err != nil {
				b.Fatalf("rule %d: %v", k, err)
			}
			rules = append(rules, r.SecurityGroupRule.ID)
			created = append(created, measure(t0, ack, func(c nftCommit) bool { return c.added[port] }))
		}
		for k, id := range rules {
			pause()
			port := firstPort + k
			t0, ack, err := a.do(ctx, "DELETE", "/network/v2.0/security-group-rules/"+id, nil, nil)
			if err != nil {
				b.Fatalf("delete rule %d: %v", k, err)
			}
			deleted = append(deleted, measure(t0, ack, func(c nftCommit) bool { return c.deleted[port] && !c.added[port] }))
		}
		return created, deleted
	}
	created, deleted := run(20000, trials, 0)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("%d hosts, writes through %s (leader %s), %d rules created then deleted back to back; load %s", len(box.Hosts), box.Host(1).Name, leader, trials, load)
	report(b, "create", created)
	report(b, "delete", deleted)
	// The same with the hosts idle before each change: what a host still
	// does after committing one change (cutting the connections a deleted
	// rule allowed) is then not charged to the next.
	const paced = 50
	created, deleted = run(30000, paced, 200*time.Millisecond)
	load, _ = os.ReadFile("/proc/loadavg")
	fmt.Printf("%d rules created then deleted, 200 ms idle before each change; load %s", paced, load)
	report(b, "create-paced", created)
	report(b, "delete-paced", deleted)
	// Every port's filtering is gone with the ports, the group and the
	// network.
	for _, p := range ports {
		must(a.do(ctx, "DELETE", "/network/v2.0/ports/"+p, nil, nil))
	}
	must(a.do(ctx, "DELETE", "/network/v2.0/security-groups/"+g, nil, nil))
	must(a.do(ctx, "DELETE", "/network/v2.0/networks/"+nw.Network.ID, nil, nil))
}

// report prints the figures of one kind of change and its BENCHROW lines.
func report(b *testing.B, kind string, trs []sgTrial) {
	var enf, ack, spread []time.Duration
	perHost := make([][]time.Duration, len(trs[0].at))
	var changes []int
	for _, t := range trs {
		enf = append(enf, t.enforced())
		ack = append(ack, t.ack.Sub(t.t0))
		s := t.since()
		spread = append(spread, slices.Max(s)-slices.Min(s))
		for i, d := range s {
			perHost[i] = append(perHost[i], d)
		}
		changes = append(changes, t.changes...)
	}
	q := func(d []time.Duration) string {
		return fmt.Sprintf("p50 %s p90 %s p99 %s max %s", round(percentile(d, 0.5)), round(percentile(d, 0.9)),
			round(percentile(d, 0.99)), round(slices.Max(d)))
	}
	slices.Sort(changes)
	fmt.Printf("rule %s → enforced on every host: %s\n", kind, q(enf))
	fmt.Printf("rule %s → API 2xx (baseline):       %s\n", kind, q(ack))
	fmt.Printf("rule %s, spread between hosts:      %s\n", kind, q(spread))
	for i, d := range perHost {
		fmt.Printf("rule %s → committed on h%d:          %s\n", kind, i+1, q(d))
	}
	fmt.Printf("rule %s: objects per host transaction p50 %d max %d (one transaction per host per rule)\n",
		kind, changes[len(changes)/2], changes[len(changes)-1])
	// How the figure moves as the group's rules grow (create) or shrink
	// (delete): the first and the last quarter of the trials.
	n := len(enf) / 4
	fmt.Printf("rule %s → enforced, first %d trials: %s; last %d: %s\n", kind, n, q(enf[:n]), n, q(enf[len(enf)-n:]))
	for _, p := range []float64{0.5, 0.9, 0.99} {
		b.ReportMetric(float64(percentile(enf, p).Microseconds())/1000, fmt.Sprintf("%s-enforced-p%.0f-ms", kind, p*100))
		b.ReportMetric(float64(percentile(ack, p).Microseconds())/1000, fmt.Sprintf("%s-api-p%.0f-ms", kind, p*100))
	}
	b.ReportMetric(float64(slices.Max(enf).Microseconds())/1000, kind+"-enforced-max-ms")
	b.ReportMetric(float64(percentile(spread, 0.5).Microseconds())/1000, kind+"-host-spread-p50-ms")
	b.ReportMetric(float64(percentile(spread, 0.99).Microseconds())/1000, kind+"-host-spread-p99-ms")
	if strings.HasSuffix(kind, "-paced") {
		return
	}
	what := fmt.Sprintf("security group rule %s -> enforced on all %d hosts", kind, len(perHost))
	targets := map[float64]string{0.5: "<= 50ms", 0.99: "<= 250ms"}
	for _, p := range []float64{0.5, 0.9, 0.99} {
		target := targets[p]
		if target == "" || kind != "create" {
			target = "-"
		}
		BenchRow(fmt.Sprintf("%s (p%.0f)", what, p*100), percentile(enf, p), target,
			fmt.Sprintf("API write (p%.0f)", p*100), percentile(ack, p))
	}
	BenchRow(what+" (max)", slices.Max(enf), "-", "API write (max)", slices.Max(ack))
}

// waitChain waits until the namespace's filter table has the chain.
func waitChain(ctx context.Context, ns, chain string) error {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
		if err != nil {
			return err
		}
		chains, err := c.ListChains()
		if err != nil {
			return fmt.Errorf("list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name == fwTable && ch.Name == chain {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chain %s not installed within 60s", chain)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
