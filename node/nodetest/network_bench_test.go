package nodetest

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent"
)

// fdbWatch wraps a host's fake network: it notes when each remote MAC
// and each local port first appears in an applied desired state, and
// counts Apply calls, so waiting costs no polling quantum.
type fdbWatch struct {
	inner agent.Network

	mu      sync.Mutex
	applies int
	remote  map[string]time.Time // MAC → first applied among the remote MACs
	vtep    map[string]string    // MAC → its VTEP when first applied
	local   map[string]time.Time // port id → first applied as a local port
	changed chan struct{}        // closed and replaced on every Apply
}

func newFDBWatch(inner agent.Network) *fdbWatch {
	return &fdbWatch{inner: inner, remote: map[string]time.Time{}, vtep: map[string]string{},
		local: map[string]time.Time{}, changed: make(chan struct{})}
}

// Apply implements agent.Network.
func (w *fdbWatch) Apply(ctx context.Context, d agent.NetDesired) (int, error) {
	writes, err := w.inner.Apply(ctx, d)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.applies++
	if err == nil {
		for _, seg := range d.Networks {
			for _, m := range seg.MACs {
				if _, ok := w.remote[m.MAC.String()]; !ok {
					w.remote[m.MAC.String()], w.vtep[m.MAC.String()] = now, m.VTEP.String()
				}
			}
			for _, p := range seg.Ports {
				if _, ok := w.local[p.ID]; !ok {
					w.local[p.ID] = now
				}
			}
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return writes, err
}

// TapName implements agent.Network.
func (w *fdbWatch) TapName(portID string) string { return w.inner.TapName(portID) }

// Applies is the number of Apply calls so far.
func (w *fdbWatch) Applies() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applies
}

// waitRemote waits until mac was applied as a remote MAC and returns when.
func (w *fdbWatch) waitRemote(ctx context.Context, mac string) (time.Time, error) {
	return w.wait(ctx, func() (time.Time, bool) { t, ok := w.remote[mac]; return t, ok })
}

// waitLocal waits until port was applied as a local port and returns when.
func (w *fdbWatch) waitLocal(ctx context.Context, port string) (time.Time, error) {
	return w.wait(ctx, func() (time.Time, bool) { t, ok := w.local[port]; return t, ok })
}

func (w *fdbWatch) wait(ctx context.Context, seen func() (time.Time, bool)) (time.Time, error) {
	for {
		w.mu.Lock()
		t, ok := seen()
		ch := w.changed
		w.mu.Unlock()
		if ok {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-ch:
		}
	}
}

// fdbEnv is 3 hosts with fake agents whose networks are watched, and one
// network with a subnet on which every host already has a local port.
type fdbEnv struct {
	c       *Cluster
	fa      *FakeAgents
	watch   []*fdbWatch
	clients []*apiClient
	net     string
	seeded  map[string]string // port id → MAC of the per-host seed ports
}

func newFDBEnv(t testing.TB, fa *FakeAgents) *fdbEnv {
	t.Helper()
	e := &fdbEnv{fa: fa, watch: make([]*fdbWatch, 3), seeded: map[string]string{}}
	var mu sync.Mutex
	opts := quiet()
	opts.Agent = func(i int) node.AgentOptions {
		o := fa.Options(i)
		mu.Lock()
		defer mu.Unlock()
		if e.watch[i] == nil {
			e.watch[i] = newFDBWatch(o.NetworkDriver)
		}
		o.NetworkDriver = e.watch[i]
		return o
	}
	e.c = NewCluster(t, 3, opts)
	e.clients = []*apiClient{e.c.api(0), e.c.api(1), e.c.api(2)}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	n, err := e.clients[0].create(ctx, "networks", "network", map[string]any{"name": "fdbnet"})
	if err != nil {
		t.Fatal(err)
	}
	e.net = n["id"].(string)
	if _, err := e.clients[0].create(ctx, "subnets", "subnet", map[string]any{"network_id": e.net, "cidr": "10.60.0.0/22", "ip_version": 4}); err != nil {
		t.Fatal(err)
	}
	// One local port per host, so every host has the network plumbed
	// before anything is measured.
	var macs []string
	for h := range 3 {
		id, mac, err := e.port(ctx, h, fmt.Sprintf("seed-%d", h))
		if err != nil {
			t.Fatal(err)
		}
		e.seeded[id] = mac
		macs = append(macs, mac)
		if _, err := e.watch[h].waitLocal(ctx, id); err != nil {
			t.Fatalf("seed port %s never plumbed on host%d: %v", id, h, err)
		}
	}
	for h := range 3 {
		for j, mac := range macs {
			if j == h {
				continue
			}
			if _, err := e.watch[h].waitRemote(ctx, mac); err != nil {
				t.Fatalf("host%d never learnt host%d's seed MAC %s: %v", h, j, mac, err)
			}
		}
	}
	return e
}

// port creates a port on the test network bound to host h, through host
// h's API as the admin, and returns its id and MAC.
func (e *fdbEnv) port(ctx context.Context, h int, name string) (string, string, error) {
	p, err := e.clients[h].create(ctx, "ports", "port", map[string]any{
		"network_id": e.net, "name": name, "binding:host_id": e.c.Node(h).ID()})
	if err != nil {
		return "", "", fmt.Errorf("create port %s bound to host%d: %w", name, h, err)
	}
	id, _ := p["id"].(string)
	mac, _ := p["mac_address"].(string)
	if id == "" || mac == "" {
		return "", "", fmt.Errorf("create port %s bound to host%d: answer %v lacks id or MAC", name, h, p)
	}
	return id, mac, nil
}

// portToFDB creates one port bound to host a and waits until every other
// host applied its MAC as a remote one; it returns the time from just
// before the create until the last host got it, and until host a plumbed
// it locally.
func (e *fdbEnv) portToFDB(ctx context.Context, a int, name string) (remote, local time.Duration, id, mac string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	t0 := time.Now()
	id, mac, err = e.port(ctx, a, name)
	if err != nil {
		return 0, 0, "", "", err
	}
	for h := range 3 {
		if h == a {
			at, err := e.watch[h].waitLocal(ctx, id)
			if err != nil {
				return 0, 0, id, mac, fmt.Errorf("port %s never plumbed on its host%d: %w", id, h, err)
			}
			local = at.Sub(t0)
			continue
		}
		at, err := e.watch[h].waitRemote(ctx, mac)
		if err != nil {
			return 0, 0, id, mac, fmt.Errorf("host%d never learnt MAC %s of port %s on host%d: %w", h, mac, id, a, err)
		}
		remote = max(remote, at.Sub(t0))
	}
	return remote, local, id, mac, nil
}

func fdbPct(xs []time.Duration, p int) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return float64(s[min(len(s)*p/100, len(s)-1)].Microseconds()) / 1000
}

// TestPortToFDBOnce: ports created bound to each host in turn reach the
// other hosts' forwarding entries (behind the owner's VTEP) through the
// change-driven sync, not the periodic resync, and the owner plumbs them
// as local ports and never as remote ones.
func TestPortToFDBOnce(t *testing.T) {
	// Resyncs ~30 s apart: within the deadlines below only state changes
	// can have carried the ports.
	e := newFDBEnv(t, &FakeAgents{ResyncInterval: 30 * time.Second})
	ctx := t.Context()
	made := map[string]int{} // MAC → owner host
	ports := map[string]int{}
	for k := range 3 {
		if _, _, id, mac, err := e.portToFDB(ctx, k, fmt.Sprintf("once-%d", k)); err != nil {
			t.Fatal(err)
		} else {
			made[mac], ports[id] = k, k
		}
	}
	const loop = "127.0.0.1" // every in-process host's VTEP
	for h := range 3 {
		d, ok := e.fa.Network(h).Last()
		if !ok || len(d.Networks) != 1 || d.Networks[0].ID != e.net {
			t.Fatalf("host%d last desired = %+v; want the one test network", h, d)
		}
		seg := d.Networks[0]
		remote := map[string]string{}
		for _, m := range seg.MACs {
			remote[m.MAC.String()] = m.VTEP.String()
		}
		local := map[string]bool{}
		for _, p := range seg.Ports {
			local[p.ID] = true
		}
		for mac, owner := range made {
			vtep, isRemote := remote[mac]
			if owner == h && isRemote {
				t.Errorf("host%d lists its own port's MAC %s as remote", h, mac)
			}
			if owner != h && (!isRemote || vtep != loop) {
				t.Errorf("host%d remote MACs = %v; want %s behind %s (port on host%d)", h, remote, mac, loop, owner)
			}
		}
		for id, owner := range ports {
			if local[id] != (owner == h) {
				t.Errorf("host%d local ports = %v; port %s is on host%d", h, local, id, owner)
			}
		}
		// 3 seed ports and 3 new ones, 2 of each on the other hosts.
		if len(seg.MACs) != 4 || len(seg.Ports) != 2 || len(seg.Remotes) != 1 || seg.Remotes[0].String() != loop {
			t.Errorf("host%d: %d remote MACs, %d local ports, remotes %v; want 4, 2 and [%s]",
				h, len(seg.MACs), len(seg.Ports), seg.Remotes, loop)
		}
	}
}

// BenchmarkPortToFDB: from the POST of a port bound to host A (through
// A's API) until the agent on every other host applied a desired state
// with its MAC among the remote MACs, over 100 ports created one after the
// other with A alternating among 3 in-process hosts (fake networks, every
// host already plumbing the network). local-p50-ms is until A plumbed the
// port itself; applies/port counts Apply calls on all 3 hosts per port
// (3 is one per host; the periodic resync is set far beyond the run).
func BenchmarkPortToFDB(b *testing.B) {
	const n = 100
	for range b.N {
		// -timeout does not cover benchmarks: a stuck iteration dies with
		// every goroutine's stack instead of hanging the run.
		watchdog := time.AfterFunc(3*time.Minute, func() {
			debug.SetTraceback("all")
			panic("BenchmarkPortToFDB: an iteration took over 3 minutes")
		})
		e := newFDBEnv(b, &FakeAgents{ResyncInterval: 10 * time.Minute})
		ctx := context.Background()
		remote, local := make([]time.Duration, n), make([]time.Duration, n)
		applies0 := 0
		for _, w := range e.watch {
			applies0 += w.Applies()
		}
		for k := range n {
			r, l, _, _, err := e.portToFDB(ctx, k%3, fmt.Sprintf("bench-%03d", k))
			if err != nil {
				b.Fatal(err)
			}
			remote[k], local[k] = r, l
		}
		applies := -applies0
		for _, w := range e.watch {
			applies += w.Applies()
		}
		b.ReportMetric(fdbPct(remote, 50), "p50-ms")
		b.ReportMetric(fdbPct(remote, 99), "p99-ms")
		b.ReportMetric(fdbPct(local, 50), "local-p50-ms")
		b.ReportMetric(float64(applies)/n, "applies/port")
		e.c.StopAll()
		watchdog.Stop()
	}
}
