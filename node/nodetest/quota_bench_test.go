package nodetest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

// BenchmarkQuotaCreates measures server and port creates through Raft (a
// follower forwarding to the leader, 3 in-process hosts) with quotas on
// (finite limits: every create counts the project's usage inside apply)
// and off (unlimited: no counting), in the same run. The two modes take
// turns in rounds, each going first every other round, so a machine whose
// load drifts during the run weighs on both alike; each mode keeps one project, whose usage grows round by
// round. Run with -benchtime=Nx for N creates per mode and kind.
//
//	go test -run '^$' -bench QuotaCreates -benchtime=1200x ./node/nodetest/
func BenchmarkQuotaCreates(b *testing.B) {
	c := NewCluster(b, 3, quiet())
	h := c.Node(c.Follower())
	ctx := adminContext(context.Background(), b, h)
	flavor, _ := h.State().FlavorByName("m1.tiny")
	if flavor == nil {
		b.Fatal("no m1.tiny flavor")
	}
	modes := []string{"quotas-on", "quotas-off"}
	// servers and ports: one project per mode, growing to b.N (counting
	// is linear in what the project holds: the worst case). small-projects:
	// servers in projects of 10 each, on the default quotas (10 instances)
	// against unlimited ones.
	for _, kind := range []string{"servers", "ports", "small-projects"} {
		b.Run(kind, func(b *testing.B) {
			projects := map[string]string{}
			for _, mode := range modes {
				project := fmt.Sprintf("bench-%s-%s-%d", kind, mode, b.N)
				projects[mode] = project
				limit := int64(1 << 40)
				if mode == "quotas-off" {
					limit = statedb.Unlimited
				}
				limits := map[string]int64{}
				for _, r := range []string{statedb.QuotaInstances, statedb.QuotaCores, statedb.QuotaRAM, statedb.QuotaPorts} {
					limits[r] = limit
				}
				if kind == "small-projects" {
					for k := range (b.N + 9) / 10 {
						if mode == "quotas-on" {
							break // the default quotas
						}
						if _, err := rest.Propose(ctx, h, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: fmt.Sprint(project, "-", k), Limits: limits}); err != nil {
							b.Fatal(err)
						}
					}
					continue
				}
				if _, err := rest.Propose(ctx, h, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: project, Limits: limits}); err != nil {
					b.Fatal(err)
				}
				if kind == "ports" {
					netID := project + "-net"
					if _, err := rest.Propose(ctx, h, statedb.CmdCreateNetwork, statedb.Network{ID: netID, Name: netID, ProjectID: project}); err != nil {
						b.Fatal(err)
					}
					if _, err := rest.Propose(ctx, h, statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: netID + "-sub",
						NetworkID: netID, ProjectID: project, CIDR: "10.0.0.0/8", IPVersion: 4}, GatewayAuto: true, PoolsAuto: true}); err != nil {
						b.Fatal(err)
					}
				}
			}
			const rounds = 6
			elapsed := map[string]time.Duration{}
			lats := map[string][]time.Duration{}
			done := map[string]int{}
			b.ResetTimer()
			for r := range rounds {
				order := modes
				if r%2 == 1 {
					order = []string{modes[1], modes[0]}
				}
				for _, mode := range order {
					project := projects[mode]
					n := b.N/rounds + boolInt(r < b.N%rounds)
					first := done[mode]
					el, lat := createLoad(b, h, n, 8, func(i int) (statedb.CmdType, any) {
						id := fmt.Sprintf("%s-%d", project, first+i)
						proj := project
						if kind == "small-projects" {
							proj = fmt.Sprint(project, "-", (first+i)/10)
						}
						if kind == "ports" {
							return statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: id, NetworkID: project + "-net", ProjectID: project}, AdminStateUp: true}
						}
						return statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
							ID: id, Name: id, ProjectID: proj, UserID: "bench", Flavor: *flavor}}}}
					})
					done[mode] += n
					elapsed[mode] += el
					lats[mode] = append(lats[mode], lat...)
				}
			}
			b.StopTimer()
			rate := map[string]float64{}
			for _, mode := range modes {
				rate[mode] = float64(done[mode]) / elapsed[mode].Seconds()
				l := lats[mode]
				sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
				b.ReportMetric(rate[mode], mode+"-creates/s")
				b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, mode+"-p50-ms")
			}
			ratio := rate["quotas-on"] / rate["quotas-off"]
			b.ReportMetric(ratio, "on/off")
			if b.N >= 600 {
				what := map[string]string{"servers": "servers (one project holding them all)", "ports": "ports (one project holding them all)",
					"small-projects": "servers in projects of 10, default quotas"}[kind]
				fmt.Printf("BENCHROW\t%s created through Raft, quotas on vs off (same run, alternating rounds)\t%.2f×\t>= 0.95×\t%.0f/s vs %.0f/s\t-\n",
					what, ratio, rate["quotas-on"], rate["quotas-off"])
			}
		})
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// createLoad proposes n commands through h with conc concurrent clients
// and returns the time they took and each one's latency.
func createLoad(b *testing.B, h *node.Node, n, conc int, cmd func(i int) (statedb.CmdType, any)) (time.Duration, []time.Duration) {
	ctx := adminContext(context.Background(), b, h)
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				typ, payload := cmd(i)
				if _, err := rest.Propose(ctx, h, typ, payload); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return time.Since(start), lat
}
