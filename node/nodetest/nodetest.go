// Package nodetest runs N real peerstack nodes in one test process on
// loopback, with tight timers: real Raft over mutual TLS, real memberlist,
// the real REST API. Tests drive it through Go calls or HTTP; helpers wait
// by polling with a deadline, never by sleeping a fixed time.
package nodetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/rest"
)

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	base  string // data dirs live here; removed only after every node stopped
	mu    sync.Mutex
	nodes []*node.Node // nil when stopped
	dirs  []string
	names []string
	// AdminPassword of the bootstrap admin.
	AdminPassword string
	Opts          Options

	netMu sync.Mutex
	group map[int]int    // node index → partition group; nil: no partition
	addrs map[string]int // Raft and gossip address → node index
}

// Options tune the cluster.
type Options struct {
	Voters     int // default 3
	Logger     *slog.Logger
	BcryptCost int // default 4 (fast tests)
	// Agent returns node i's agent options, for example FakeAgents.Options
	// (a recording hypervisor, network, image source and volume store).
	// nil runs no agent at all (tests that play the agents themselves);
	// the cluster never runs real QEMU or touches host devices unless a
	// test asks for it here.
	Agent func(i int) node.AgentOptions
	// Config, when set, edits node i's configuration before each start
	// (a host source, a scheduler gate, extra leader routines).
	Config func(i int, cfg *node.Config)
	// Quotas keeps the built-in default quotas on the admin project.
	// Without it the admin project is unlimited, so tests of other
	// features may create any number of servers, ports and volumes.
	Quotas bool
}

// Timers are the tight timers every test node runs with.
var Timers = node.Timers{
	Leader:     100 * time.Millisecond,
	GossipHeal: 200 * time.Millisecond,
	Raft:       consensus.Timers{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 50 * time.Millisecond},
	Gossip: gossip.Timers{
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 20 * time.Millisecond,
		SuspicionMult: 4, SuspicionMaxTimeoutMult: 4, PushPullInterval: time.Second, TCPTimeout: time.Second,
		GossipToTheDeadTime: 2 * time.Second,
		// Let a restarted node take its name back on a new port.
		DeadNodeReclaimTime: 200 * time.Millisecond,
	},
}

// DeadGrace is how long a test node's voter may be gone before the leader
// hands its vote on.
const DeadGrace = time.Second

// FakeAgents hands each node index its own agenttest fakes and keeps them
// across the node's restarts, as a host's VMs outlive its daemon. The zero
// value is ready to use.
type FakeAgents struct {
	// ResyncInterval of the agents; default 300 ms.
	ResyncInterval time.Duration

	mu   sync.Mutex
	hvs  map[int]*agenttest.Hypervisor
	nets map[int]*agenttest.Network
	vols map[int]*agenttest.Volumes
}

// Options is an Options.Agent function.
func (f *FakeAgents) Options(i int) node.AgentOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hvs == nil {
		f.hvs, f.nets, f.vols = map[int]*agenttest.Hypervisor{}, map[int]*agenttest.Network{}, map[int]*agenttest.Volumes{}
	}
	if f.hvs[i] == nil {
		f.hvs[i], f.nets[i], f.vols[i] = agenttest.NewHypervisor(), &agenttest.Network{}, agenttest.NewVolumes()
	}
	ri := f.ResyncInterval
	if ri == 0 {
		ri = 300 * time.Millisecond
	}
	return node.AgentOptions{Hypervisor: f.hvs[i], NetworkDriver: f.nets[i], Images: agenttest.AnyImage{},
		Volumes: f.vols[i], ResyncInterval: ri, DetachTimeout: time.Second}
}

// Hypervisor returns node i's fake hypervisor.
func (f *FakeAgents) Hypervisor(i int) *agenttest.Hypervisor {
	f.Options(i)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hvs[i]
}

// Network returns node i's fake network.
func (f *FakeAgents) Network(i int) *agenttest.Network {
	f.Options(i)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nets[i]
}

// Volumes returns node i's fake volume store.
func (f *FakeAgents) Volumes(i int) *agenttest.Volumes {
	f.Options(i)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vols[i]
}

// NewCluster bootstraps node 0 and joins n-1 more, waiting until every
// node lists all members.
func NewCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	if len(opts) > 0 {
		c.Opts = opts[0]
	}
	if c.Opts.Voters == 0 {
		c.Opts.Voters = 3
	}
	if c.Opts.Agent == nil {
		c.Opts.Agent = func(int) node.AgentOptions { return node.AgentOptions{Disabled: true} }
	}
	if c.Opts.BcryptCost == 0 {
		c.Opts.BcryptCost = 4
	}
	// Cleanups run last-in first-out: the temp dir is registered first so
	// it is removed only after every node has stopped writing to it.
	c.base = t.TempDir()
	t.Cleanup(c.StopAll)
	c.add(t.Context(), "")
	c.AdminPassword = c.nodes[0].AdminPassword
	for i := 1; i < n; i++ {
		c.Join(t.Context())
	}
	c.WaitMembers(n, 20*time.Second)
	if !c.Opts.Quotas {
		c.unlimitAdmin(t)
	}
	return c
}

// unlimitAdmin lifts every quota of the admin project.
func (c *Cluster) unlimitAdmin(t testing.TB) {
	t.Helper()
	n := c.nodes[0]
	p, ok := n.State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	limits := map[string]int64{}
	for _, rs := range [][]string{statedb.ComputeQuotas(), statedb.NetworkQuotas(), statedb.VolumeQuotas()} {
		for _, r := range rs {
			if statedb.QuotaCeiling(r) == 0 {
				limits[r] = statedb.Unlimited
			}
		}
	}
	if _, err := rest.Propose(adminContext(t.Context(), t, n), n, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: p.ID, Limits: limits}); err != nil {
		t.Fatalf("lift the admin project's quotas: %v", err)
	}
}

func (c *Cluster) config(dir, name, token string) node.Config {
	log := c.Opts.Logger
	if log == nil {
		lvl := slog.LevelWarn
		if os.Getenv("PEERSTACK_TEST_LOG") != "" {
			lvl = slog.LevelDebug
		}
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("host", name)
	}
	// Node i is named host<i>; any other name gets the next index.
	c.mu.Lock()
	idx := len(c.names)
	for i, n := range c.names {
		if n == name {
			idx = i
		}
	}
	c.mu.Unlock()
	cfg := node.Config{
		DataDir: dir, Name: name, APIAddr: "127.0.0.1:0", RaftAddr: testAddr(), GossipAddr: testAddr(),
		AdvertiseAddr: "127.0.0.1", Voters: c.Opts.Voters, BcryptCost: c.Opts.BcryptCost, JoinToken: token,
		Timers: Timers, DeadGrace: DeadGrace, Links: links{c, idx}, Logger: log,
		VCPUs: 8, RAMMB: 16384, DiskGB: 200, Agent: c.Opts.Agent(idx),
	}
	if cfg.Agent.ResyncInterval == 0 {
		cfg.Agent.ResyncInterval = time.Second
	}
	if c.Opts.Config != nil {
		c.Opts.Config(idx, &cfg)
	}
	return cfg
}

// add starts the next node, bootstrapping (empty token) or joining; edit,
// when given, changes its configuration first (a per-host flag).
func (c *Cluster) add(ctx context.Context, token string, edit ...func(*node.Config)) *node.Node {
	c.t.Helper()
	i := len(c.nodes)
	name := fmt.Sprintf("host%d", i)
	dir := filepath.Join(c.base, name)
	cfg := c.config(dir, name, token)
	for _, e := range edit {
		e(&cfg)
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.dirs = append(c.dirs, dir)
	c.names = append(c.names, name)
	c.mu.Unlock()
	return n
}

// Token creates a join token through a running node.
func (c *Cluster) Token(ctx context.Context) string {
	c.t.Helper()
	n := c.Any()
	tok, _, err := n.CreateJoinToken(adminContext(ctx, c.t, n), time.Hour)
	if err != nil {
		c.t.Fatalf("create join token: %v", err)
	}
	return tok
}

// Join adds one more node with a fresh token.
func (c *Cluster) Join(ctx context.Context) *node.Node {
	c.t.Helper()
	return c.add(ctx, c.Token(ctx))
}

// Node returns node i (nil if stopped).
func (c *Cluster) Node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Len is the number of nodes ever started.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Running returns the running nodes.
func (c *Cluster) Running() []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node.Node
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Any returns the first running node.
func (c *Cluster) Any() *node.Node {
	for _, n := range c.Running() {
		return n
	}
	c.t.Fatal("no running node")
	return nil
}

// Leader waits for a leader among running nodes and returns its index.
func (c *Cluster) Leader(timeout time.Duration) int {
	c.t.Helper()
	idx := -1
	c.Eventually(timeout, "a leader", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, n := range c.nodes {
			if n != nil && n.Consensus().IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// Follower returns the index of a running non-leader.
func (c *Cluster) Follower() int {
	l := c.Leader(10 * time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n != nil && i != l {
			return i
		}
	}
	c.t.Fatal("no follower")
	return -1
}

// Stop stops node i (its data dir stays).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		n.Stop()
	}
}

// Restart starts node i again from its data dir.
func (c *Cluster) Restart(ctx context.Context, i int) *node.Node {
	c.t.Helper()
	c.Stop(i)
	cfg := c.config(c.dirs[i], c.names[i], "")
	// Port 0: the daemon keeps the ports its data dir records, which the
	// other members know it by.
	cfg.RaftAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("restart %s: %v", c.names[i], err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return n
}

// StopAll stops every node.
func (c *Cluster) StopAll() {
	for i := range c.Len() {
		c.Stop(i)
	}
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	Eventually(c.t, timeout, what, cond)
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitMembers waits until every running node lists want members, all
// alive in gossip and in the Raft configuration.
func (c *Cluster) WaitMembers(want int, timeout time.Duration) {
	c.t.Helper()
	c.Eventually(timeout, fmt.Sprintf("%d members everywhere", want), func() bool {
		for _, n := range c.Running() {
			ms := n.Members()
			if len(ms) != want {
				return false
			}
			for _, m := range ms {
				if m.GossipState != "alive" || m.RaftRole == "none" {
					return false
				}
			}
		}
		return true
	})
}

// HTTPClient returns a client that trusts the cluster CA.
func (c *Cluster) HTTPClient() *http.Client {
	c.t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.dirs[0], "ca.pem"))
	if err != nil {
		c.t.Fatalf("read ca.pem: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// URL returns the API base URL of node i.
func (c *Cluster) URL(i int) string { return "https://" + c.Node(i).APIAddr() }

// AdminToken issues an admin token through node i.
func (c *Cluster) AdminToken(i int) string {
	c.t.Helper()
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, c.AdminPassword)
	resp, err := c.HTTPClient().Post(c.URL(i)+"/identity/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		c.t.Fatalf("issue token: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("issue token: %d %s", resp.StatusCode, b)
	}
	return resp.Header.Get("X-Subject-Token")
}

// Dir returns node i's data dir.
func (c *Cluster) Dir(i int) string { return c.dirs[i] }

// OpenStackEnv writes a clouds.yaml for the admin pointing at node i and
// returns the environment the real openstack client needs to use it (the
// caller's environment without OS_* variables, HOME in a temp dir).
func (c *Cluster) OpenStackEnv(t testing.TB, i int) []string {
	t.Helper()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is not installed (make deps installs python3-openstackclient): %v", err)
	}
	dir := t.TempDir()
	ca, err := filepath.Abs(filepath.Join(c.Dir(0), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	clouds := fmt.Sprintf(`clouds:
  peerstack:
    auth:
      auth_url: %s/identity
      username: admin
      password: %q
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    volume_api_version: 3
    cacert: %s
`, c.URL(i), c.AdminPassword, ca)
	path := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(path, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"OS_CLIENT_CONFIG_FILE=" + path, "OS_CLOUD=peerstack", "HOME=" + dir}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// Partition cuts the Raft and gossip traffic between the given groups of
// node indexes: a node reaches only the nodes of its own group. Nodes in
// no group keep all their links. The API (forwarded writes, joins) is not
// cut.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	addrs := map[string]int{}
	c.mu.Lock()
	for i, n := range c.nodes {
		if n != nil {
			addrs[n.Consensus().Addr()] = i
			addrs[fmt.Sprintf("127.0.0.1:%d", n.Gossip().Port())] = i
		}
	}
	c.mu.Unlock()
	group := map[int]int{}
	for g, ids := range groups {
		for _, i := range ids {
			group[i] = g
		}
	}
	c.netMu.Lock()
	c.group, c.addrs = group, addrs
	c.netMu.Unlock()
}

// Heal ends a partition.
func (c *Cluster) Heal() {
	c.netMu.Lock()
	c.group = nil
	c.netMu.Unlock()
}

// linkUp reports whether node i reaches the node at addr.
func (c *Cluster) linkUp(i int, addr string) bool {
	c.netMu.Lock()
	defer c.netMu.Unlock()
	if c.group == nil {
		return true
	}
	j, ok := c.addrs[addr]
	if !ok {
		return true
	}
	gi, iok := c.group[i]
	gj, jok := c.group[j]
	return !iok || !jok || gi == gj
}

// links is node i's view of the cluster network (node.Config.Links).
type links struct {
	c *Cluster
	i int
}

func (l links) Up(addr string) bool { return l.c.linkUp(l.i, addr) }

// Gate is a scheduler gate (node.Config.SchedulerGate) that a test shuts
// to build a backlog of pending instances and opens to place it. The
// zero value is open.
type Gate struct {
	mu   sync.Mutex
	open chan struct{} // closed when the gate opens; nil while open
}

// Shut holds every scheduler waiting on g.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == nil {
		g.open = make(chan struct{})
	}
}

// Open lets the schedulers go on.
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open != nil {
		close(g.open)
		g.open = nil
	}
}

// Wait implements leader.Gate.
func (g *Gate) Wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
		return nil
	}
}
