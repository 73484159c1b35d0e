// Package node is the daemon's composition root: it reads the
// configuration, creates or loads the host's identity, and wires Raft,
// gossip, the REST API, the scheduler and the agents together. Nothing but
// main and tests imports it; it holds wiring, not business logic.
package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/leader"
	"github.com/peerstack/peerstack/node/membership"
)

// Default listen addresses (docs/install.md: ports).
const (
	DefaultDataDir    = "/var/lib/peerstack"
	DefaultAPIAddr    = "0.0.0.0:8470"
	DefaultRaftAddr   = "0.0.0.0:8471"
	DefaultGossipAddr = "0.0.0.0:7946"
)

// Version is this build's version; release builds set it with
// -ldflags '-X github.com/peerstack/peerstack/node.Version=…'.
var Version = "0.2.0"

// Config configures one daemon.
type Config struct {
	DataDir       string
	Name          string // host name; default os.Hostname()
	APIAddr       string // listen host:port
	RaftAddr      string
	GossipAddr    string
	AdvertiseAddr string // IP other hosts reach this one at
	VTEPAddr      string
	PublicURL     string // catalog base URL, e.g. https://cloud.example:8470
	Voters        int    // Raft voters to keep (3 or 5)
	BcryptCost    int
	JoinToken     string // join an existing cluster instead of bootstrapping
	// DeadGrace is how long a voter may be gone from gossip before the
	// leader hands its vote to a healthy nonvoter (default 30 s).
	DeadGrace time.Duration
	// Timers are the daemon's periods and Raft and gossip timeouts; zero
	// fields take the defaults.
	Timers Timers
	Logger *slog.Logger
	// Storage is the cluster storage backend for a new cluster:
	// "nfs://server/export[/path]", or "" for a local directory per host.
	Storage string
	// Agent configures the per-host agents.
	Agent AgentOptions
	// Capacity overrides (tests); zero = read from the host.
	VCPUs, RAMMB, DiskGB int
	// MaxClockSkew is how far another host's wall clock may be from this
	// one's: a joining host beyond it is refused, a member beyond it is
	// logged. Zero means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// CertTTL is how long the host certificates this host signs (its own,
	// renewed, and joining hosts') are valid; zero means
	// membership.DefaultCertTTL. Hosts renew at two thirds of it.
	CertTTL time.Duration
	// ClockOffset shifts this daemon's wall clock, to inject clock skew
	// in tests (--clock-offset, hidden). Zero in production.
	ClockOffset time.Duration
	// ImageCacheSize is the size in bytes this host's image blob cache
	// aims to stay under: fetching an image evicts the least recently used
	// blobs no local disk uses and the cluster does not count on
	// (--image-cache-size). Zero means DefaultImageCacheSize.
	ImageCacheSize int64

	// HostSource, when set, wraps where the scheduler and the hypervisor
	// API read host liveness and capacity (gossip, given as live): for
	// benchmarks that simulate many hosts, whose member records must still
	// exist in the state. nil: gossip.
	HostSource func(live HostSource) HostSource
	// SchedulerGate, when set, is waited on before each scheduling plan
	// (for benchmarks that build a backlog first). nil: always open.
	SchedulerGate leader.Gate
	// Links, when set, decides which peers Raft and gossip can reach
	// (fault injection: nodetest's partitions). nil: all of them.
	Links Links
	// LeaderRoutines run next to the built-in leader routines while this
	// host leads, each in its own goroutine (node/leader).
	LeaderRoutines []leader.Routine
	// TrustedProxies may set X-Forwarded-For and X-Forwarded-Proto
	// (--trusted-proxies); default none.
	TrustedProxies []netip.Prefix
}

// Links says which peer addresses (Raft or gossip) this host can reach.
type Links interface {
	Up(addr string) bool
}

// HostSource tells which hosts are alive and what they offer.
type HostSource = leader.HostSource

// Timers are the daemon's periods and timeouts. The zero value means the
// defaults; tests pass tight ones.
type Timers struct {
	// Leader is the period of each leader routine's full pass (membership,
	// key rotation, scheduling, volumes, images); default 1 s. Gossip
	// events wake them early.
	Leader time.Duration
	// GossipHeal is the period of the loop that rejoins members gossip
	// lost; default 2 s.
	GossipHeal time.Duration
	// Raft and Gossip tune consensus and memberlist.
	Raft   consensus.Timers
	Gossip gossip.Timers
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	// Paths derived from the data dir end up in QEMU command lines and
	// backing-file names, which must be absolute.
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir %q: %w", c.DataDir, err)
	}
	c.DataDir = abs
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host name: %w", err)
		}
		c.Name = h
	}
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = DefaultRaftAddr
	}
	if c.GossipAddr == "" {
		c.GossipAddr = DefaultGossipAddr
	}
	if c.Voters == 0 {
		c.Voters = 3
	}
	if c.Voters != 1 && c.Voters != 3 && c.Voters != 5 {
		return fmt.Errorf("voters must be 1, 3 or 5, not %d", c.Voters)
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = 12
	}
	if c.DeadGrace == 0 {
		c.DeadGrace = 30 * time.Second
	}
	if c.Timers.Leader <= 0 {
		c.Timers.Leader = time.Second
	}
	if c.Timers.GossipHeal <= 0 {
		c.Timers.GossipHeal = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.MaxClockSkew < 0 || c.MaxClockSkew >= certBackdate {
		return fmt.Errorf("--max-clock-skew %v: want more than 0 and less than %v (node certificates are backdated by %v)",
			c.MaxClockSkew, certBackdate, certBackdate)
	}
	if c.ImageCacheSize == 0 {
		c.ImageCacheSize = DefaultImageCacheSize
	}
	if c.ImageCacheSize < 0 {
		return fmt.Errorf("--image-cache-size %d: want a size in bytes above 0", c.ImageCacheSize)
	}
	for _, a := range []struct{ name, v string }{{"api", c.APIAddr}, {"raft", c.RaftAddr}, {"gossip", c.GossipAddr}} {
		if _, _, err := splitHostPort(a.v); err != nil {
			return fmt.Errorf("--%s-addr %q: %w", a.name, a.v, err)
		}
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = guessAdvertise(c.APIAddr)
	}
	if net.ParseIP(c.AdvertiseAddr) == nil {
		return fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr)
	}
	if c.VTEPAddr == "" {
		c.VTEPAddr = c.AdvertiseAddr
	}
	if net.ParseIP(c.VTEPAddr) == nil {
		return fmt.Errorf("--vtep-addr %q is not an IP address", c.VTEPAddr)
	}
	if c.Storage != "" {
		// The same rules as a later change through the settings API.
		if err := statedb.CheckStorageURL(c.Storage); err != nil {
			return fmt.Errorf("--storage: %w", err)
		}
	}
	return nil
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, port, nil
}

// guessAdvertise picks the bind IP if specific, else the first global
// unicast IPv4 address of the host, else loopback.
func guessAdvertise(bind string) string {
	h, _, _ := splitHostPort(bind)
	if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
		return ip.String()
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// advertised combines the advertise IP with the port a listener got.
func advertised(ip string, ln net.Addr) string {
	_, port, _ := net.SplitHostPort(ln.String())
	return net.JoinHostPort(ip, port)
}

// identityFile is node.json in the data dir: who this host is.
type identityFile struct {
	NodeID     string   `json:"node_id"`
	Name       string   `json:"name"`
	ClusterID  string   `json:"cluster_id"`
	APIAddr    string   `json:"api_addr"`
	RaftAddr   string   `json:"raft_addr"`
	GossipAddr string   `json:"gossip_addr"`
	Left       bool     `json:"left,omitempty"`
	Peers      []string `json:"peers,omitempty"` // gossip addresses of other members, for rejoining
}

// peerBook keeps the other members' gossip addresses in node.json
// (membership.PeerBook).
type peerBook struct{ n *Node }

func (b peerBook) Remembered() []string {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	return slices.Clone(b.n.id.Peers)
}

func (b peerBook) Remember(peers []string) error {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	if b.n.id.Left {
		return nil // a host that left must not start as a member again
	}
	b.n.id.Peers = peers
	return saveIdentity(b.n.cfg.DataDir, b.n.id)
}

var errNoIdentity = errors.New("no node identity in data dir")

func identityPath(dataDir string) string { return filepath.Join(dataDir, "node.json") }

func loadIdentity(dataDir string) (*identityFile, error) {
	b, err := os.ReadFile(identityPath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoIdentity
	}
	if err != nil {
		return nil, fmt.Errorf("read node identity: %w", err)
	}
	var id identityFile
	if err := json.Unmarshal(b, &id); err != nil || id.NodeID == "" || id.ClusterID == "" {
		return nil, fmt.Errorf("node identity %s is corrupt", identityPath(dataDir))
	}
	return &id, nil
}

// LocalAPIAddr returns the API address recorded in a data dir, for the CLI.
func LocalAPIAddr(dataDir string) (string, error) {
	id, err := loadIdentity(dataDir)
	if err != nil {
		return "", err
	}
	return id.APIAddr, nil
}

func saveIdentity(dataDir string, id *identityFile) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return membership.WriteFileAtomic(identityPath(dataDir), b, 0o600)
}
