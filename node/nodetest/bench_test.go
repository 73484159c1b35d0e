package nodetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

func quiet() Options { return Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))} }

// writeLoad runs n writes through host h with conc concurrent clients and
// reports writes/s and latency percentiles.
func writeLoad(b *testing.B, h *node.Node, n, conc int, prefix string) {
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
				_, err := rest.Propose(ctx, h, statedb.CmdCreateProject, statedb.Project{
					ID: fmt.Sprintf("%s-%d", prefix, i), Name: fmt.Sprintf("%s-%d", prefix, i), Enabled: true})
				if err != nil {
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
	b.ReportMetric(float64(n)/el.Seconds(), "writes/s")
	b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkWrites: writes through a follower (forwarded to the leader over
// mutual TLS) and through the leader, on 3 in-process hosts over loopback.
func BenchmarkWrites(b *testing.B) {
	c := NewCluster(b, 3, quiet())
	for _, conc := range []int{1, 32} {
		b.Run(fmt.Sprintf("follower/clients=%d", conc), func(b *testing.B) {
			for i := range b.N {
				writeLoad(b, c.Node(c.Follower()), 2000, conc, fmt.Sprintf("f%d-%d", conc, i))
			}
		})
		b.Run(fmt.Sprintf("leader/clients=%d", conc), func(b *testing.B) {
			for i := range b.N {
				writeLoad(b, c.Node(c.Leader(5*time.Second)), 2000, conc, fmt.Sprintf("l%d-%d", conc, i))
			}
		})
	}
}

// BenchmarkJoinListed: from the start of a join until every host lists
// the new member as alive.
func BenchmarkJoinListed(b *testing.B) {
	c := NewCluster(b, 3, quiet())
	for range b.N {
		ctx := context.Background()
		tok := c.Token(ctx)
		start := time.Now()
		n := c.add(ctx, tok)
		want := len(c.Running())
		c.Eventually(20*time.Second, "listed everywhere", func() bool {
			for _, h := range c.Running() {
				found := false
				for _, m := range h.Members() {
					found = found || (m.ID == n.ID() && m.GossipState == "alive" && m.RaftRole != "none")
				}
				if !found || len(h.Members()) != want {
					return false
				}
			}
			return true
		})
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/join")
	}
}

// BenchmarkLeaderLoss: the leader stops; time until a write through a
// surviving host is accepted. Uses production-like timers would be slower;
// this reports the fast-timer figure and the production one is measured by
// the e2e process benchmark.
func BenchmarkLeaderLoss(b *testing.B) {
	for range b.N {
		c := NewCluster(b, 3, quiet())
		l := c.Leader(5 * time.Second)
		c.Stop(l)
		start := time.Now()
		var h *node.Node
		for _, n := range c.Running() {
			h = n
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := rest.Propose(adminContext(ctx, b, h), h, statedb.CmdCreateProject, statedb.Project{ID: "after", Name: "after", Enabled: true})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-write")
		c.StopAll()
	}
}
