package gossip

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkMetaPropagation measures the time from UpdateMeta on one node
// until every node's Members shows the new value, over loopback with the
// tight test timers.
func BenchmarkMetaPropagation(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := startCluster(b, n)
			src := nodes[0]
			m := testMeta(src.nodeID)
			var total time.Duration
			b.ResetTimer()
			for i := range b.N {
				m.UsedVCPUs = i + 1
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := src.UpdateMeta(ctx, m); err != nil {
					cancel()
					b.Fatalf("UpdateMeta: %v", err)
				}
				cancel()
				deadline := start.Add(30 * time.Second)
				for !allSee(nodes, src.nodeID, m) {
					if time.Now().After(deadline) {
						b.Fatalf("update %d did not reach all %d nodes in 30s", i, n)
					}
					time.Sleep(time.Millisecond)
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/propagation")
		})
	}
}

func allSee(nodes []*Gossip, name string, want Meta) bool {
	for _, g := range nodes {
		if m, _ := memberOf(g, name); m.Meta != want {
			return false
		}
	}
	return true
}
