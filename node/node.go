package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node/access"
	"github.com/peerstack/peerstack/node/forward"
	"github.com/peerstack/peerstack/node/hostfail"
	"github.com/peerstack/peerstack/node/leader"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/node/readiness"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/dashboard"
)

// Node is one running daemon.
type Node struct {
	cfg    Config
	log    *slog.Logger
	id     *identityFile
	raft   *consensus.Node
	gossip *gossip.Gossip
	gkeys  *membership.GossipKeyring // the gossip keys, rotated when a member is revoked
	api    *http.Server
	apiLn  net.Listener
	client *http.Client // mTLS client for host-to-host calls
	fwd    *forward.Client
	caPEM  string
	certs  *membership.Keypair // this host's certificate, renewed by membership.CertRenewer
	files  membership.Files    // where this host keeps its secrets
	conns  *membership.Conns   // TLS connections with members, cut at revocation (membership.Cutter)

	// Bootstrap only: the generated admin password, shown once.
	AdminPassword string

	applyLatency prometheus.Histogram
	apiSeconds   *prometheus.HistogramVec // by service; see metrics.go
	// Access verifies tokens, decides the API's policy, signs tokens and
	// checks passwords, from the local state (node/access).
	*access.Access
	img images // image cache and copier (images.go)
	// hosts is where the scheduler and the hypervisor API read host
	// liveness and capacity: gossip, unless Config.HostSource wraps it.
	hosts HostSource
	// contacts is when, as leader, this host last heard a lease renewal
	// from each host (hostfail.go).
	contacts *leader.Contacts
	lease    *hostfail.Lease   // lease renewals with the leader (hostfail.go)
	drain    *hostfail.Drainer // drain before leaving (hostfail.go)

	meta *membership.Advertiser   // this host's gossip metadata
	heal *membership.GossipHealer // rejoins gossip, tends its keys

	mu       sync.Mutex
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	left     chan struct{}
	ready    *readiness.Gate // caught up with the cluster since start
	// fenceTimeouts is what this host's fence counts (hostfail.go).
	fenceTimeouts *hostfail.FenceTimeouts
}

// Start creates, joins or resumes a cluster member, depending on the data
// dir and cfg.JoinToken, and returns once it serves the API.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, files: membership.Files{DataDir: cfg.DataDir}, left: make(chan struct{}),
		contacts: leader.NewContacts(nil)}
	n.Access = access.New(n.State, n.Now, cfg.BcryptCost)
	n.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "peerstack", Name: "apply_seconds",
		Help: "Latency of writes through Raft as seen by this host.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	n.apiSeconds = newAPISeconds()
	id, err := loadIdentity(cfg.DataDir)
	switch {
	case err == nil && cfg.JoinToken != "":
		return nil, fmt.Errorf("data dir %s already belongs to cluster %s as host %s; join needs an empty data dir (or start it with `peerstack agent`)",
			cfg.DataDir, id.ClusterID, id.Name)
	case err == nil && id.Left:
		return nil, fmt.Errorf("host %s left cluster %s; remove %s to join again", id.Name, id.ClusterID, cfg.DataDir)
	case err == nil:
		n.id = id
		n.cfg.APIAddr = keepPort(n.cfg.APIAddr, id.APIAddr)
		n.cfg.RaftAddr = keepPort(n.cfg.RaftAddr, id.RaftAddr)
		n.cfg.GossipAddr = keepPort(n.cfg.GossipAddr, id.GossipAddr)
		return n, n.resume(ctx)
	case !errors.Is(err, errNoIdentity):
		return nil, err
	case cfg.JoinToken != "":
		return n, n.join(ctx)
	default:
		if consensus.HasState(filepath.Join(cfg.DataDir, "raft")) {
			return nil, fmt.Errorf("data dir %s has Raft data but no node.json; refusing to bootstrap over it", cfg.DataDir)
		}
		return n, n.bootstrap(ctx)
	}
}

// keepPort reuses the port a host had before when asked for port 0, so a
// restarted host keeps its addresses.
func keepPort(bind, before string) string {
	h, p, err := splitHostPort(bind)
	if err != nil || p != 0 || before == "" {
		return bind
	}
	_, bp, err := splitHostPort(before)
	if err != nil {
		return bind
	}
	return net.JoinHostPort(h, fmt.Sprint(bp))
}

// listen opens the API listener (TLS set later) so address errors surface
// before anything is written.
func (n *Node) listenAPI() (net.Listener, error) {
	ln, err := net.Listen("tcp", n.cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("listen api %s: %w", n.cfg.APIAddr, err)
	}
	return ln, nil
}

// checkPortFree fails early when a TCP port is taken.
func checkPortFree(addr, what string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s %s: %w", what, addr, err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newKeystoneID() string { return randomHex(16) }

// bootstrap creates a brand-new cluster with this host as the only voter.
func (n *Node) bootstrap(ctx context.Context) (err error) {
	ln, err := n.listenAPI()
	if err != nil {
		return err
	}
	created := []string{}
	defer func() {
		if err != nil {
			ln.Close()
			n.shutdownParts()
			for i := len(created) - 1; i >= 0; i-- {
				os.RemoveAll(created[i])
			}
		}
	}()
	clusterID := uuid.NewString()
	nodeID := uuid.NewString()
	ca, caKeyPEM, err := membership.NewCA(clusterID)
	if err != nil {
		return err
	}
	keyPEM, csrPEM, err := membership.NewKeyAndCSR(nodeID)
	if err != nil {
		return err
	}
	ca.TTL = n.cfg.CertTTL
	certPEM, err := ca.Sign(csrPEM, nodeID, n.certHosts())
	if err != nil {
		return err
	}
	gossipKey := make([]byte, 32)
	_, _ = rand.Read(gossipKey)
	created = append(created, n.files.TLSDir(), filepath.Join(n.cfg.DataDir, "raft"), filepath.Join(n.cfg.DataDir, "gossip.key"))
	if err := n.writeSecrets(ca.CertPEM(), certPEM, keyPEM, gossipKey); err != nil {
		return err
	}
	if err := n.files.WriteCAKey(caKeyPEM); err != nil {
		return err
	}
	n.id = &identityFile{NodeID: nodeID, Name: n.cfg.Name, ClusterID: clusterID}
	if err := n.startParts(ctx, ln, ca.CertPEM(), certPEM, keyPEM, membership.GossipKeys{Keys: [][]byte{gossipKey}}, true); err != nil {
		return err
	}
	password := randomHex(12)
	cmd, err := n.bootstrapCommand(clusterID, ca.CertPEM(), caKeyPEM, gossipKey, password)
	if err != nil {
		return err
	}
	if err := n.waitLeader(ctx); err != nil {
		return err
	}
	if _, err := n.raft.Apply(ctx, cmd); err != nil {
		return fmt.Errorf("bootstrap state: %w", err)
	}
	n.AdminPassword = password
	created = append(created, identityPath(n.cfg.DataDir))
	if err := saveIdentity(n.cfg.DataDir, n.id); err != nil {
		return err
	}
	if err := n.writeClientFiles(password); err != nil {
		return err
	}
	n.log.Info("bootstrapped a new cluster", "cluster", clusterID, "node", nodeID, "name", n.cfg.Name, "api", n.id.APIAddr)
	n.startLoops()
	return nil
}

// resume restarts a member from its data dir.
func (n *Node) resume(ctx context.Context) (err error) {
	ln, err := n.listenAPI()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			ln.Close()
			n.shutdownParts()
		}
	}()
	caPEM, certPEM, keyPEM, gossipKeys, err := n.readSecrets()
	if err != nil {
		return err
	}
	if err := n.checkDuplicateOf(ctx, ln.Addr(), caPEM, certPEM, keyPEM); err != nil {
		return err
	}
	if err := n.startParts(ctx, ln, caPEM, certPEM, keyPEM, gossipKeys, false); err != nil {
		return err
	}
	if err := saveIdentity(n.cfg.DataDir, n.id); err != nil {
		return err
	}
	// Gossip rejoins through the peers recorded at the last run; the
	// gossip healer keeps retrying until the others answer.
	if peers := n.heal.KnownPeers(); len(peers) > 0 {
		if _, err := n.gossip.Join(ctx, peers); err != nil {
			n.log.Warn("rejoin gossip: no peer reachable yet; will keep trying", "err", err)
		}
	}
	n.log.Info("resumed", "cluster", n.id.ClusterID, "node", n.id.NodeID, "name", n.id.Name, "api", n.id.APIAddr)
	n.startLoops()
	return nil
}

func (n *Node) writeSecrets(caPEM, certPEM, keyPEM string, gossipKey []byte) error {
	if err := os.MkdirAll(n.files.TLSDir(), 0o700); err != nil {
		return fmt.Errorf("tls dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{filepath.Join(n.files.TLSDir(), "ca.crt"), []byte(caPEM)},
		{filepath.Join(n.files.TLSDir(), "node.crt"), []byte(certPEM)},
		{filepath.Join(n.files.TLSDir(), "node.key"), []byte(keyPEM)},
		{filepath.Join(n.cfg.DataDir, "gossip.key"), []byte(hex.EncodeToString(gossipKey))},
	} {
		if err := membership.WriteFileAtomic(f.name, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) readSecrets() (caPEM, certPEM, keyPEM string, gossipKeys membership.GossipKeys, err error) {
	read := func(p string) string {
		if err != nil {
			return ""
		}
		var b []byte
		b, err = os.ReadFile(p)
		if err != nil {
			err = fmt.Errorf("read %s: %w", p, err)
		}
		return string(b)
	}
	caPEM = read(filepath.Join(n.files.TLSDir(), "ca.crt"))
	certPEM = read(filepath.Join(n.files.TLSDir(), "node.crt"))
	keyPEM = read(filepath.Join(n.files.TLSDir(), "node.key"))
	if err != nil {
		return
	}
	if gossipKeys, err = n.files.ReadGossipKeys(); err != nil {
		// Lost or cut short (a crash): startParts fetches the keys from
		// the other members before gossip starts.
		n.log.Warn("gossip.key unusable; fetching the gossip keys from the other members", "err", err)
		gossipKeys, err = membership.GossipKeys{}, nil
	}
	return
}

func (n *Node) certHosts() []string {
	hosts := []string{n.cfg.AdvertiseAddr, n.cfg.Name}
	if h, _, err := splitHostPort(n.cfg.APIAddr); err == nil {
		hosts = append(hosts, h)
	}
	if u := n.cfg.PublicURL; u != "" {
		if h := hostOfURL(u); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// startParts starts Raft, gossip and the API server.
func (n *Node) startParts(ctx context.Context, apiLn net.Listener, caPEM, certPEM, keyPEM string, gossipKeys membership.GossipKeys, bootstrap bool) error {
	n.certs = &membership.Keypair{}
	if err := n.certs.Set(caPEM, certPEM, keyPEM); err != nil {
		return err
	}
	serverTLS, clientTLS, err := membership.TLSConfigsFor(caPEM, n.certs)
	if err != nil {
		return err
	}
	var state atomic.Pointer[consensus.Node] // set once Raft runs
	serverTLS, clientTLS = refuseRevoked(serverTLS, &state), refuseRevoked(clientTLS, &state)
	n.conns = trackConns(&state)
	n.caPEM = caPEM
	n.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		// A copy: the HTTP/2 set-up writes NextProtos into it on first
		// use, while Raft's dials read the original.
		TLSClientConfig: clientTLS.Clone(), MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second,
		DialTLSContext: n.conns.DialTLS(withProtos(clientTLS, "h2", "http/1.1")),
	}}
	n.id.APIAddr = advertised(n.cfg.AdvertiseAddr, apiLn.Addr())
	n.fwd = &forward.Client{SelfID: n.id.NodeID, AddrOf: n.apiAddrOf, HTTP: n.client, Leader: func() string {
		rn := state.Load()
		if rn == nil {
			return ""
		}
		id, _ := rn.Leader()
		return id
	}}

	raftAddr, err := checkPortFree(n.cfg.RaftAddr, "raft")
	if err != nil {
		return err
	}
	rn, err := consensus.New(consensus.Config{
		NodeID: n.id.NodeID, DataDir: filepath.Join(n.cfg.DataDir, "raft"),
		BindAddr: raftAddr, AdvertiseAddr: advertised(n.cfg.AdvertiseAddr, mustAddr(raftAddr)),
		ServerTLS: membership.MTLSServer(serverTLS), ClientTLS: clientTLS, Forwarder: n.fwd, CallerOf: forward.CallerOf, TLSConns: n.conns.Raft(),
		Timers: n.cfg.Timers.Raft, Links: n.cfg.Links, Now: n.Now, NewID: n.NewID, Logger: n.log.With("sub", "raft"),
	})
	if err != nil {
		return err
	}
	n.raft = rn
	state.Store(rn)
	n.id.RaftAddr = rn.Addr()
	if bootstrap {
		if err := rn.Bootstrap(); err != nil {
			return err
		}
	}

	if len(gossipKeys.Keys) == 0 {
		others := func() []string {
			var addrs []string
			for _, m := range rn.State().Members() {
				if m.ID != n.id.NodeID && m.APIAddr != "" {
					addrs = append(addrs, m.APIAddr)
				}
			}
			return addrs
		}
		if gossipKeys, err = membership.RecoverGossipKeys(ctx, n.client, others, n.files.WriteGossipKeys); err != nil {
			return fmt.Errorf("gossip.key in %s is lost or unreadable: %w; copy gossip.key from another member", n.cfg.DataDir, err)
		}
		n.log.Info("fetched the gossip keys from the other members", "version", gossipKeys.Version)
	}
	n.meta = &membership.Advertiser{Self: gossip.Meta{NodeID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr, RaftAddr: n.id.RaftAddr,
		VTEPAddr: n.cfg.VTEPAddr, SWVersion: Version}, DataDir: n.cfg.DataDir, VCPUs: n.cfg.VCPUs, RAMMB: n.cfg.RAMMB, DiskGB: n.cfg.DiskGB,
		// KVM only if a probe QEMU can really use it (a /dev/kvm that
		// opens is not enough), else TCG.
		Accel: func() string { return string(qemu.DetectAccel()) }, State: rn.State, Changed: rn.Store().Changed, Logger: n.log}
	gh, gp, _ := splitHostPort(n.cfg.GossipAddr)
	g, err := gossip.New(gossip.Config{
		NodeID: n.id.NodeID, BindAddr: gh, BindPort: gp, AdvertiseAddr: n.cfg.AdvertiseAddr,
		SecretKey: gossipKeys.Keys[0], OtherKeys: gossipKeys.Keys[1:], Meta: n.meta.Meta(), Timers: n.cfg.Timers.Gossip, Links: n.cfg.Links, Logger: n.log.With("sub", "gossip"), Now: n.clock,
	})
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	n.gossip = g
	n.gkeys = membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: n.id.NodeID, State: rn.State,
		Leader: func() string { id, _ := rn.Leader(); return id }, Term: func() uint64 { return rn.Status().Term }, Applied: rn.Store().AppliedIndex, Gossip: g, Files: n.files, Client: n.client,
		Logger: n.log.With("sub", "gossip-keys")}, gossipKeys)
	n.heal = &membership.GossipHealer{SelfID: n.id.NodeID, Interval: n.cfg.Timers.GossipHeal, MaxClockSkew: n.cfg.MaxClockSkew,
		State: rn.State, IsLeader: rn.IsLeader, Gossip: g, Keyring: n.gkeys, Peers: peerBook{n}, Logger: n.log}
	n.hosts = g
	if n.cfg.HostSource != nil {
		n.hosts = n.cfg.HostSource(g)
	}
	n.id.GossipAddr = net.JoinHostPort(n.cfg.AdvertiseAddr, fmt.Sprint(g.Port()))
	n.meta.Gossip = g
	n.meta.Update(ctx)
	n.wireHostFail()
	n.ready = &readiness.Gate{SelfID: n.id.NodeID, SelfName: n.id.Name, Raft: rn, AddrOf: n.apiAddrOf, Client: n.client,
		Logger: n.log}

	base := n.cfg.PublicURL
	if base == "" {
		base = "https://" + n.id.APIAddr
	}
	srv := rest.NewServer(n.Access, n.log.With("sub", "api"),
		rest.ServerOptions{BaseURL: base, TrustedProxies: n.cfg.TrustedProxies, ReadBarrier: n.LinearizableRead})
	srv.OnRequest(n.observeRequest)
	n.mountServices(srv)
	dash := dashboard.New(computeBackend{n}, n.log.With("sub", "dashboard"))
	srv.Mount(dash.Service())
	n.api = rest.HTTPServer(n.ready.Wrap(dash.Wrap(srv.Handler())), rest.Limits{})
	n.api.TLSConfig = serverTLS
	n.api.ErrorLog = slog.NewLogLogger(n.log.With("sub", "http").Handler(), slog.LevelDebug)
	n.apiLn = n.conns.Listener(rest.LimitListener(apiLn, rest.Limits{}), serverTLS)
	go func() {
		if err := n.api.Serve(n.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server stopped", "err", err)
		}
	}()
	return nil
}

func mustAddr(a string) net.Addr {
	t, _ := net.ResolveTCPAddr("tcp", a)
	return t
}

func (n *Node) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if id, _ := n.raft.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no Raft leader elected: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) startLoops() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	rn := n.raft
	record := &membership.MemberRecord{Raft: rn, Changed: rn.Store().Changed, Now: n.Now, Logger: n.log,
		Self: statedb.Member{ID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr, RaftAddr: n.id.RaftAddr,
			GossipAddr: n.id.GossipAddr, Version: Version},
		Left: func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			return n.id.Left
		}}
	cutter := &membership.Cutter{State: rn.State, Changed: rn.Store().Changed, Conns: n.conns, Logger: n.log,
		Servers: func() ([]membership.RaftServer, error) { return raftConfiguration(rn) }}
	renewer := &membership.CertRenewer{HostID: n.id.NodeID, State: n.State, Files: n.files, Clock: n.clock, TTL: n.cfg.CertTTL,
		Hosts: n.certHosts, Keypair: n.certs, Logger: n.log}
	n.wg.Add(10)
	go func() { defer n.wg.Done(); n.drain.Run(ctx) }()
	go func() { defer n.wg.Done(); cutter.Run(ctx) }()
	go func() { defer n.wg.Done(); n.ready.Watch(ctx) }()
	go func() { defer n.wg.Done(); renewer.Run(ctx) }()
	go func() { defer n.wg.Done(); n.heal.Run(ctx) }()
	go func() { defer n.wg.Done(); n.runImageCache(ctx) }()
	go func() { defer n.wg.Done(); n.runAgents(ctx) }()
	go func() { defer n.wg.Done(); n.runLeader(ctx) }()
	go func() { defer n.wg.Done(); record.Run(ctx) }()
	go func() { defer n.wg.Done(); n.meta.Run(ctx) }()
}

// ID returns this host's id.
func (n *Node) ID() string { return n.id.NodeID }

// Name returns this host's name.
func (n *Node) Name() string { return n.id.Name }

// ClusterID returns the cluster id.
func (n *Node) ClusterID() string { return n.id.ClusterID }

// APIAddr is the advertised API address (host:port).
func (n *Node) APIAddr() string { return n.id.APIAddr }

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Consensus exposes Raft for tests and benchmarks.
func (n *Node) Consensus() *consensus.Node { return n.raft }

// Gossip exposes gossip for tests.
func (n *Node) Gossip() *gossip.Gossip { return n.gossip }

// Ready reports whether the host has caught up with the cluster since it
// started.
func (n *Node) Ready() bool { return n.ready != nil && n.ready.Ready() }

// Left is closed when this host has left the cluster through the API.
func (n *Node) Left() <-chan struct{} { return n.left }

// Stop shuts the daemon down without leaving the cluster. VMs keep running.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		n.shutdownParts()
	})
}

func (n *Node) shutdownParts() {
	if n.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = n.api.Shutdown(ctx)
		cancel()
		_ = n.api.Close()
	}
	if n.gossip != nil {
		_ = n.gossip.Shutdown()
	}
	if n.raft != nil {
		_ = n.raft.Shutdown()
	}
}

// Apply proposes a command (rest.Backend).
func (n *Node) Apply(ctx context.Context, cmd *statedb.Command) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A write waits for a leader at most this long, then answers 503.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	start := time.Now()
	idx, err := n.raft.Apply(ctx, cmd)
	n.applyLatency.Observe(time.Since(start).Seconds())
	if errors.Is(err, consensus.ErrNoLeader) || errors.Is(err, consensus.ErrShutdown) {
		return idx, fmt.Errorf("%w: %v", rest.ErrNoLeader, err)
	}
	return idx, err
}

// State returns the local state snapshot (rest.Backend).
func (n *Node) State() *statedb.Snapshot { return n.raft.State() }

// Now is the proposer clock (rest.Backend).
func (n *Node) Now() time.Time { return n.clock().UTC() }

// NewID returns a new uuid (rest.Backend).
func (n *Node) NewID() string { return uuid.NewString() }
