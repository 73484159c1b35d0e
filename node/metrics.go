package node

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/rest/dashboard"
)

// metricsHandler exposes Raft and membership gauges, API timings and the
// agent's counters for Prometheus. The
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
	// What this host's agent did: a converged host's full resyncs change
	// nothing, so host writes and operations stand still between changes
	// of the state, and repairs count drift only.
	agentCounter := func(name, help string, f func(agent.Stats) int) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "peerstack", Subsystem: "agent", Name: name, Help: help},
			func() float64 {
				n.mu.Lock()
				rt := n.cfg.Agent.rt
				var ag *agent.Agent
				if rt != nil {
					ag = rt.ag
				}
				n.mu.Unlock()
				if ag == nil {
					return 0
				}
				return float64(f(ag.Stats()))
			}))
	}
	agentCounter("full_resyncs_total", "Full resyncs the agent started.", func(s agent.Stats) int { return s.FullSyncs })
	agentCounter("operations_total", "Operations the agent started on VMs, volumes and reports.", func(s agent.Stats) int { return s.Operations })
	agentCounter("host_writes_total", "Changes the agent's network, firewall and routing drivers made on the host.", func(s agent.Stats) int { return s.HostWrites })
	agentCounter("repairs_total", "Host writes made by full resyncs of an unchanged desired state (the host had drifted).", func(s agent.Stats) int { return s.Repairs })
	reg.MustRegister(n.applyLatency, n.apiSeconds)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// newAPISeconds is the histogram of the time this host spent answering
// API requests, by service: what the control plane costs a client. Its
// _sum over a span of work, next to the span's length, is the control
// plane's share of it (the e2e scenario prints that per step).
func newAPISeconds() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "peerstack", Name: "api_request_seconds",
		Help:    "Time spent answering API requests, by service (internal = host-to-host).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"service"})
}

// apiServices are the first path segments counted under their own name.
var apiServices = map[string]bool{"identity": true, "compute": true, "image": true, "volume": true,
	"network": true, "cluster": true, "internal": true}

// observeRequest records one answered API request; scrapes of /metrics
// itself are left out, so watching does not change the figure, and so are
// the dashboard's event streams, which last as long as a page is open.
func (n *Node) observeRequest(path string, _ int, d time.Duration) {
	if path == "/metrics" || path == dashboard.EventsPath {
		return
	}
	svc, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !apiServices[svc] {
		svc = "other"
	}
	n.apiSeconds.WithLabelValues(svc).Observe(d.Seconds())
}
