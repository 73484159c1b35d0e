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
// and off (unlimited: no counting), in the same run. Each op is one
// create in a fresh project; run with -benchtime=Nx for N creates.
//
//	go test -run '^$' -bench QuotaCreates -benchtime=1000x ./node/nodetest/
func BenchmarkQuotaCreates(b *testing.B) {
	c := NewCluster(b, 3, quiet())
	h := c.Node(c.Follower())
	ctx := adminContext(context.Background(), b, h)
	flavor, _ := h.State().FlavorByName("m1.tiny")
	if flavor == nil {
		b.Fatal("no m1.tiny flavor")
	}
	run := 0
	for _, kind := range []string{"servers", "ports"} {
		for _, mode := range []string{"quotas-on", "quotas-off"} {
			b.Run(kind+"/"+mode, func(b *testing.B) {
				run++
				project := fmt.Sprintf("bench-%s-%s-%d", kind, mode, run)
				limit := int64(1 << 40)
				if mode == "quotas-off" {
					limit = statedb.Unlimited
				}
				limits := map[string]int64{}
				for _, r := range []string{statedb.QuotaInstances, statedb.QuotaCores, statedb.QuotaRAM, statedb.QuotaPorts} {
					limits[r] = limit
				}
				if _, err := rest.Propose(ctx, h, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: project, Limits: limits}); err != nil {
					b.Fatal(err)
				}
				netID := project + "-net"
				if kind == "ports" {
					if _, err := rest.Propose(ctx, h, statedb.CmdCreateNetwork, statedb.Network{ID: netID, Name: netID, ProjectID: project}); err != nil {
						b.Fatal(err)
					}
					if _, err := rest.Propose(ctx, h, statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: netID + "-sub",
						NetworkID: netID, ProjectID: project, CIDR: "10.0.0.0/8", IPVersion: 4}, GatewayAuto: true, PoolsAuto: true}); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				createLoad(b, h, b.N, 8, func(i int) (statedb.CmdType, any) {
					id := fmt.Sprintf("%s-%d", project, i)
					if kind == "ports" {
						return statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: id, NetworkID: netID, ProjectID: project}, AdminStateUp: true}
					}
					return statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
						ID: id, Name: id, ProjectID: project, UserID: "bench", Flavor: *flavor}}}}
				})
			})
		}
	}
}

// createLoad proposes n commands through h with conc concurrent clients
// and reports creates/s and latency percentiles.
func createLoad(b *testing.B, h *node.Node, n, conc int, cmd func(i int) (statedb.CmdType, any)) {
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
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(n)/el.Seconds(), "creates/s")
	b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
}
