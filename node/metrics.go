package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler exposes Raft and membership gauges for Prometheus. The
// registry is per node, so several nodes can live in one test process.
func (n *Node) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "peerstack", Name: name, Help: help}, f))
	}
	gauge("raft_is_leader", "1 when this host is the Raft leader.", func() float64 {
		if n.raft.IsLeader() {
			return 1
		}
		return 0
	})
	gauge("raft_term", "Current Raft term.", func() float64 { return float64(n.raft.Status().Term) })
	gauge("raft_applied_index", "Last Raft index applied to the local state.", func() float64 { return float64(n.raft.Status().AppliedIndex) })
	gauge("raft_commit_index", "Raft commit index.", func() float64 { return float64(n.raft.Status().CommitIndex) })
	gauge("members", "Hosts recorded in the cluster state.", func() float64 { return float64(len(n.State().Members())) })
	gauge("gossip_alive", "Hosts alive in gossip.", func() float64 { return float64(n.gossip.NumAlive()) })
	reg.MustRegister(n.applyLatency)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
