package e2e

// Cluster in a box: N peerstack hosts as network namespaces on one isolated
// underlay bridge, plus a NAS namespace serving NFS with nfs-ganesha. Every
// name carries a run prefix ("pb" + 4 hex digits); the run's state file
// (/var/tmp/peerstack-box/<prefix>/state.json) lists what was created so a
// later run, or `make demo-down`, can remove it after a crash.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BoxBaseDir holds one directory per box run.
const BoxBaseDir = "/var/tmp/peerstack-box"

// BoxBasePrefix starts every name a box creates.
const BoxBasePrefix = "pb"

// boxNameRE matches the prefix of anything a box created.
var boxNameRE = regexp.MustCompile(`^pb[0-9a-f]{4}`)

// BoxOptions configure StartBox.
type BoxOptions struct {
	Hosts int       // number of host namespaces (default 3)
	NFS   bool      // start the NAS namespace and pass --storage nfs://…
	Kind  string    // "test" (removed when its owner dies) or "demo" (kept)
	Bin   string    // bin/peerstack
	Log   io.Writer // progress lines; nil discards
	// LogLevel is the daemons' --log-level (default from
	// PEERSTACK_BOX_LOG_LEVEL, else info).
	LogLevel string
	// LAN adds a LAN namespace bridged to every host's interface lan0,
	// which the hosts map as physnet1 (box_lan.go).
	LAN bool
}

// BoxHost is one simulated host.
type BoxHost struct {
	Index   int    // 1-based
	Name    string // peerstack host name (h1, h2, …)
	NS      string // network namespace
	Addr    string // underlay IP
	DataDir string
	APIAddr string
	LogFile string
	Clouds  string // admin clouds.yaml pointing at this host's API

	mu      sync.Mutex
	started bool // started once: later starts resume the data dir
	cmd     *exec.Cmd
	done    chan struct{}
}

// Box is a running cluster in a box.
type Box struct {
	Prefix  string
	RunDir  string
	LogDir  string
	Subnet  int    // x in 10.x.0.0/24
	NASAddr string // "" without NFS
	Export  string // the NAS's export directory (local path)
	Storage string // the --storage URL, or ""
	Hosts   []*BoxHost
	Bin     string
	LAN     *BoxLAN // nil without BoxOptions.LAN

	logLevel string
	log      io.Writer
	mu       sync.Mutex
	state    boxState
}

// boxState is what teardown needs, written to state.json on every change.
type boxState struct {
	Prefix  string   `json:"prefix"`
	Kind    string   `json:"kind"`
	Owner   int      `json:"owner_pid"`
	Subnet  int      `json:"subnet"`
	RunDir  string   `json:"run_dir"`
	Netns   []string `json:"netns"`
	Links   []string `json:"links"`
	PGIDs   []int    `json:"pgids"`
	Started string   `json:"started"`
}

func (b *Box) logf(format string, a ...any) {
	if b.log != nil {
		fmt.Fprintf(b.log, "box %s: "+format+"\n", append([]any{b.Prefix}, a...)...)
	}
}

// Addr returns the underlay address of host i (1-based), of the NAS (250)
// or of the root namespace (254).
func (b *Box) Addr(i int) string { return fmt.Sprintf("10.%d.0.%d", b.Subnet, i) }

func (b *Box) saveState() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, err := json.MarshalIndent(b.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(b.RunDir, "state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write box state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(b.RunDir, "state.json"))
}

func (b *Box) addNetns(name string) error {
	b.mu.Lock()
	b.state.Netns = append(b.state.Netns, name)
	b.mu.Unlock()
	return b.saveState()
}

func (b *Box) addLink(name string) error {
	b.mu.Lock()
	b.state.Links = append(b.state.Links, name)
	b.mu.Unlock()
	return b.saveState()
}

func (b *Box) addPGID(pid int) error {
	b.mu.Lock()
	b.state.PGIDs = append(b.state.PGIDs, pid)
	b.mu.Unlock()
	return b.saveState()
}

// sh runs a command and returns its combined output, with the command in
// the error.
func sh(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ip runs `ip args…`.
func ip(ctx context.Context, args ...string) error {
	_, err := sh(ctx, "ip", args...)
	return err
}

// pickSubnet chooses x for 10.x.0.0/24 that no address or route on this
// machine and no live box uses.
func pickSubnet(ctx context.Context, seed byte) (int, error) {
	addrs, err := sh(ctx, "ip", "-4", "-o", "addr")
	if err != nil {
		return 0, err
	}
	routes, err := sh(ctx, "ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return 0, err
	}
	used := map[int]bool{}
	for _, st := range boxStates() {
		used[st.Subnet] = true
	}
	for k := 0; k < 100; k++ {
		x := 100 + (int(seed)+k)%100
		pfx := fmt.Sprintf("10.%d.", x)
		if used[x] || strings.Contains(addrs, " "+pfx) || strings.Contains(routes, pfx) || strings.HasPrefix(routes, pfx) {
			continue
		}
		return x, nil
	}
	return 0, errors.New("no free 10.x.0.0/24 for the underlay")
}

// boxStates reads every run's state file.
func boxStates() []boxState {
	dirs, _ := filepath.Glob(filepath.Join(BoxBaseDir, BoxBasePrefix+"*", "state.json"))
	var out []boxState
	for _, f := range dirs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st boxState
		if json.Unmarshal(data, &st) == nil && st.Prefix != "" {
			out = append(out, st)
		}
	}
	return out
}

// StartBox builds a cluster in a box: underlay, NAS (with opts.NFS), and
// opts.Hosts hosts, h1 bootstrapping and the others joining with tokens.
// On error everything created so far is removed.
func StartBox(ctx context.Context, opts BoxOptions) (box *Box, err error) {
	if opts.Hosts == 0 {
		opts.Hosts = 3
	}
	if opts.Kind == "" {
		opts.Kind = "test"
	}
	if err := CleanStaleBoxes(ctx, opts.Log, false); err != nil {
		return nil, err
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	if opts.LogLevel == "" {
		opts.LogLevel = cmpOr(os.Getenv("PEERSTACK_BOX_LOG_LEVEL"), "info")
	}
	b := &Box{Prefix: BoxBasePrefix + hex.EncodeToString(rnd[:]), Bin: opts.Bin, log: opts.Log, logLevel: opts.LogLevel}
	b.RunDir = filepath.Join(BoxBaseDir, b.Prefix)
	b.LogDir = filepath.Join(b.RunDir, "logs")
	if err := os.MkdirAll(b.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("box run dir: %w", err)
	}
	if b.Subnet, err = pickSubnet(ctx, rnd[0]); err != nil {
		_ = os.RemoveAll(b.RunDir)
		return nil, err
	}
	b.state = boxState{Prefix: b.Prefix, Kind: opts.Kind, Owner: os.Getpid(), Subnet: b.Subnet,
		RunDir: b.RunDir, Started: time.Now().UTC().Format(time.RFC3339)}
	if err := b.saveState(); err != nil {
		_ = os.RemoveAll(b.RunDir)
		return nil, err
	}
	defer func() {
		if err != nil {
			b.logf("start failed, tearing down: %v", err)
			_ = b.Down(context.Background())
			box = nil
		}
	}()
	t0 := time.Now()
	if err := b.underlay(ctx); err != nil {
		return b, err
	}
	if opts.NFS {
		if err := b.startNAS(ctx); err != nil {
			return b, err
		}
	}
	for i := 1; i <= opts.Hosts; i++ {
		if err := b.hostNetns(ctx, i); err != nil {
			return b, err
		}
	}
	if opts.LAN {
		if err := b.startLAN(ctx); err != nil {
			return b, err
		}
	}
	if err := b.StartHost(ctx, 1, "agent"); err != nil {
		return b, err
	}
	for i := 2; i <= opts.Hosts; i++ {
		out, err := b.Peerstack(ctx, 1, "token", "create")
		if err != nil {
			return b, fmt.Errorf("token create: %w", err)
		}
		tok := LastLine(out)
		if !strings.HasPrefix(tok, "PSJ1-") {
			return b, fmt.Errorf("token create printed no token: %q", out)
		}
		if err := b.StartHost(ctx, i, "join", tok); err != nil {
			return b, err
		}
	}
	b.logf("%d hosts up in %.1fs; logs in %s", opts.Hosts, time.Since(t0).Seconds(), b.LogDir)
	return b, nil
}

// underlay creates the root-namespace bridge <prefix>ul0 with the root's
// address 10.x.0.254/24 (so the client reaches every host) and no uplink.
func (b *Box) underlay(ctx context.Context) error {
	br := b.Prefix + "ul0"
	if err := ip(ctx, "link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	if err := b.addLink(br); err != nil {
		return err
	}
	if err := ip(ctx, "link", "set", br, "mtu", "1550", "up"); err != nil {
		return err
	}
	return ip(ctx, "addr", "add", b.Addr(254)+"/24", "dev", br)
}

// nsWithVeth creates namespace ns with lo up and eth0 (MTU 1550, addr/24)
// whose peer <prefix>v<tag> is a port of the underlay bridge.
func (b *Box) nsWithVeth(ctx context.Context, ns, tag, addr string) error {
	if err := ip(ctx, "netns", "add", ns); err != nil {
		return err
	}
	if err := b.addNetns(ns); err != nil {
		return err
	}
	veth := b.Prefix + "v" + tag
	steps := [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	if err := b.addLink(veth); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"link", "set", veth, "mtu", "1550", "master", b.Prefix + "ul0", "up"},
		{"-n", ns, "link", "set", "eth0", "mtu", "1550", "up"},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

func (b *Box) hostNetns(ctx context.Context, i int) error {
	h := &BoxHost{Index: i, Name: fmt.Sprintf("h%d", i), NS: fmt.Sprintf("%sh%d", b.Prefix, i), Addr: b.Addr(i)}
	h.DataDir = filepath.Join(b.RunDir, h.Name)
	h.APIAddr = h.Addr + ":8470"
	h.LogFile = filepath.Join(b.LogDir, h.Name+".log")
	h.Clouds = filepath.Join(b.RunDir, h.Name+"-clouds.yaml")
	b.Hosts = append(b.Hosts, h)
	return b.nsWithVeth(ctx, h.NS, strconv.Itoa(i), h.Addr)
}

// Host returns host i (1-based).
func (b *Box) Host(i int) *BoxHost { return b.Hosts[i-1] }

// StartHost runs `peerstack <args…>` (agent, or join TOKEN) inside host i's
// namespace, output appended to its log file, and waits until it serves.
func (b *Box) StartHost(ctx context.Context, i int, args ...string) error {
	h := b.Host(i)
	full := append([]string{"netns", "exec", h.NS, b.Bin}, args...)
	full = append(full, "--data-dir", h.DataDir, "--name", h.Name,
		"--advertise-addr", h.Addr, "--api-addr", h.APIAddr,
		"--raft-addr", h.Addr+":8471", "--gossip-addr", h.Addr+":7946", "--bcrypt-cost", "4", "--log-level", b.logLevel)
	if i == 1 && args[0] == "agent" && b.Storage != "" && !h.started {
		full = append(full, "--storage", b.Storage)
	}
	if b.LAN != nil {
		full = append(full, "--physnet", BoxPhysnet+"="+boxLANIface)
	}
	want := "https://" + h.APIAddr
	cmd, err := b.spawnDaemon(ctx, h.Name, h.LogFile, full, want, func(cmd *exec.Cmd, done chan struct{}) {
		h.mu.Lock()
		h.cmd, h.done = cmd, done
		h.mu.Unlock()
	}, nil)
	if err != nil {
		return err
	}
	first := !h.started
	h.started = true
	if i == 1 && first {
		if err := b.writeClouds(); err != nil {
			return err
		}
	}
	b.logf("%s serving at %s (pid %d)", h.Name, want, cmd.Process.Pid)
	return nil
}

// spawnDaemon runs `ip <args…>` (a daemon in a host namespace) in its own
// process group, registered for teardown, its output appended to logPath,
// and waits (90 s at most) until the output shows want. started is told
// the command and a channel closed when it exits as soon as it runs;
// exited, when given, is called if it exits before serving.
func (b *Box) spawnDaemon(ctx context.Context, name, logPath string, args []string, want string,
	started func(*exec.Cmd, chan struct{}), exited func()) (*exec.Cmd, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s ip %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(args, " "))
	off, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	started(cmd, done)
	if err := b.addPGID(cmd.Process.Pid); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out := readFrom(logPath, off)
		if strings.Contains(out, want) {
			return cmd, nil
		}
		select {
		case <-done:
			if exited != nil {
				exited()
			}
			return nil, fmt.Errorf("%s exited: %s", name, tail(out, 2000))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not start in 90s: %s", name, tail(out, 2000))
		}
	}
}

// writeClouds writes, per host, the bootstrap clouds.yaml with auth_url
// switched to that host's API (cacert stays the bootstrap's ca.pem).
func (b *Box) writeClouds() error {
	boot := b.Host(1)
	data, err := os.ReadFile(filepath.Join(boot.DataDir, "clouds.yaml"))
	if err != nil {
		return fmt.Errorf("bootstrap clouds.yaml: %w", err)
	}
	for _, h := range b.Hosts {
		s := strings.Replace(string(data), "https://"+boot.APIAddr, "https://"+h.APIAddr, 1)
		if err := os.WriteFile(h.Clouds, []byte(s), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// AdminPassword is the bootstrap admin password from h1's clouds.yaml.
func (b *Box) AdminPassword() string {
	data, _ := os.ReadFile(filepath.Join(b.Host(1).DataDir, "clouds.yaml"))
	m := regexp.MustCompile(`password: "([^"]*)"`).FindStringSubmatch(string(data))
	if m == nil {
		return ""
	}
	return m[1]
}

// CACert is the cluster CA file every clouds.yaml uses.
func (b *Box) CACert() string { return filepath.Join(b.Host(1).DataDir, "ca.pem") }

// KillHost SIGKILLs host i's daemon (its whole process group) and waits.
func (b *Box) KillHost(i int) {
	h := b.Host(i)
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// SignalHost sends sig to host i's daemon (its whole process group):
// SIGSTOP and SIGCONT pause and resume it without the box noticing.
func (b *Box) SignalHost(i int, sig syscall.Signal) error {
	h := b.Host(i)
	h.mu.Lock()
	cmd := h.cmd
	h.mu.Unlock()
	if cmd == nil || cmd.Process == nil || !b.Alive(i) {
		return fmt.Errorf("signal %s: not running", h.Name)
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}

// Pid returns the pid of host i's daemon (also its process group), or
// 0 when it does not run.
func (b *Box) Pid(i int) int {
	h := b.Host(i)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Alive reports whether host i's daemon runs.
func (b *Box) Alive(i int) bool {
	h := b.Host(i)
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// cloudEnv returns the environment for clients aimed at host i.
func (b *Box) cloudEnv(i int) []string {
	return append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+b.Host(i).Clouds, "OS_CLOUD=peerstack")
}

// Client runs a client command (openstack or bin/peerstack) from the root
// namespace against host i; stdout on success, stdout+stderr on error.
func (b *Box) Client(ctx context.Context, i int, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = b.cloudEnv(i)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("%s %s (via %s): %w: %s", name, strings.Join(args, " "),
			b.Host(i).Name, err, strings.TrimSpace(tail(stdout.String()+stderr.String(), 1500)))
	}
	return stdout.String(), nil
}

// OSC runs the openstack CLI against host i.
func (b *Box) OSC(ctx context.Context, i int, args ...string) (string, error) {
	return b.Client(ctx, i, "openstack", args...)
}

// Peerstack runs the peerstack operator CLI against host i.
func (b *Box) Peerstack(ctx context.Context, i int, args ...string) (string, error) {
	return b.Client(ctx, i, b.Bin, args...)
}

func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return string(data)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
