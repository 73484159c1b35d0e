package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writer sends small writes (network creates) through whichever host the
// test points it at, and records how long writes failed in a row.
type writer struct {
	caFile, password string
	// renames, when set, is the id of a network each write renames instead
	// of creating one (a write that adds nothing: no quota runs out).
	renames string

	mu        sync.Mutex
	target    string // API address of the host to write through
	ok, fails int
	downSince time.Time
	down      time.Duration // total time writes failed
	worst     time.Duration // longest stretch of failed writes
}

var cloudsPasswordRE = regexp.MustCompile(`(?m)^\s*password:\s*"?([^"\n]+)"?\s*$`)

func newWriter(t *testing.T, dataDir string) *writer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "clouds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := cloudsPasswordRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no password in clouds.yaml:\n%s", b)
	}
	return &writer{caFile: filepath.Join(dataDir, "ca.pem"), password: string(m[1])}
}

func (w *writer) point(addr string) { w.mu.Lock(); w.target = addr; w.mu.Unlock() }

func (w *writer) client() (*http.Client, error) {
	pem, err := os.ReadFile(w.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func (w *writer) token(c *http.Client, addr string) (string, error) {
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, w.password)
	resp, err := c.Post("https://"+addr+"/identity/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("token: %s", resp.Status)
	}
	return resp.Header.Get("X-Subject-Token"), nil
}

// run writes every 100 ms until ctx ends.
func (w *writer) run(ctx context.Context, t *testing.T) {
	c, err := w.client()
	if err != nil {
		t.Error(err)
		return
	}
	var tok string
	for i := 0; ctx.Err() == nil; i++ {
		w.mu.Lock()
		addr := w.target
		w.mu.Unlock()
		err := func() error {
			if tok == "" {
				if tok, err = w.token(c, addr); err != nil {
					return err
				}
			}
			method, path, want := "POST", "/network/v2.0/networks", http.StatusCreated
			if w.renames != "" {
				method, path, want = "PUT", "/network/v2.0/networks/"+w.renames, http.StatusOK
			}
			req, _ := http.NewRequestWithContext(ctx, method, "https://"+addr+path,
				bytes.NewReader([]byte(fmt.Sprintf(`{"network":{"name":"upgrade-w%d"}}`, i))))
			req.Header.Set("X-Auth-Token", tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				return fmt.Errorf("%s network: %s", method, resp.Status)
			}
			return nil
		}()
		now := time.Now()
		w.mu.Lock()
		if err == nil {
			w.ok++
			if !w.downSince.IsZero() {
				d := now.Sub(w.downSince)
				w.down += d
				w.worst = max(w.worst, d)
				w.downSince = time.Time{}
			}
		} else if ctx.Err() == nil {
			w.fails++
			if w.downSince.IsZero() {
				w.downSince = now
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestRollingUpgrade runs a three-host cluster of real processes with
// six real QEMU guests, then replaces each host's binary with a newer build
// and restarts it, one host at a time, as a package upgrade under the
// unit would (SIGTERM to the daemon alone). The guests' QEMU processes
// must never change, writes keep flowing through the other hosts, and
// the cluster ends with every member on the new version.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (QEMU guests)")
	}
	guest := filepath.Join(RepoRoot(), "build", "guest.qcow2")
	if _, err := os.Stat(guest); err != nil {
		t.Fatalf("guest image: %v (make guest-image)", err)
	}
	const next = "9.9.9-upgrade"
	newBin := filepath.Join(t.TempDir(), "peerstack-next")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/peerstack/peerstack/node.Version="+next, "-o", newBin, ".")
	build.Dir = RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the newer binary: %v\n%s", err, out)
	}

	root := t.TempDir()
	flags := []string{"--network", "none", "--resync-interval", "2s"}
	a := StartDaemon(t, "upg-a", filepath.Join(root, "a"), append([]string{"agent"}, flags...)...)
	procs := []*Proc{a}
	clouds := filepath.Join(a.DataDir, "clouds.yaml")
	for _, name := range []string{"upg-b", "upg-c"} {
		tok := LastLine(Run(t, clouds, Binary(t), "token", "create"))
		procs = append(procs, StartDaemon(t, name, filepath.Join(root, name), append([]string{"join", tok}, flags...)...))
	}
	waitMembers(t, clouds, 3, "")

	osc := func(args ...string) string { t.Helper(); return Run(t, clouds, "openstack", args...) }
	osc("image", "create", "--file", guest, "--disk-format", "qcow2", "--container-format", "bare", "--public", "upg-guest")
	osc("server", "create", "--image", "upg-guest", "--flavor", "m1.tiny", "--min", "6", "--max", "6", "upg")
	var ids []string
	for _, l := range strings.Fields(osc("server", "list", "-f", "value", "-c", "ID", "--name", "^upg")) {
		ids = append(ids, l)
	}
	if len(ids) != 6 {
		t.Fatalf("servers = %v; want 6", ids)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			for _, pid := range qemuOf(id) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	pids := map[string]int{}
	for _, id := range ids {
		waitValue(t, clouds, 3*time.Minute, "ACTIVE", "server", "show", id, "-f", "value", "-c", "status")
		p := qemuOf(id)
		if len(p) != 1 {
			t.Fatalf("QEMU of %s = %v; want one", id, p)
		}
		pids[id] = p[0]
	}

	w := newWriter(t, a.DataDir)
	w.point(procs[1].APIAddr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(ctx, t) }()
	var restarts atomic.Int32
	start := time.Now()
	for i, p := range procs {
		w.point(procs[(i+1)%len(procs)].APIAddr) // write through a host that stays up
		p.Stop()
		p.Bin = newBin
		p.Restart(t)
		restarts.Add(1)
		waitMembers(t, CloudsFor(t, a, procs[(i+1)%len(procs)]), 3, "")
	}
	time.Sleep(time.Second) // one more second of writes after the last restart
	cancel()
	wg.Wait()
	t.Logf("rolling upgrade of 3 hosts with 6 guests: %.1f s; writes ok %d, failed %d; writes unavailable %.2f s in total, longest %.2f s",
		time.Since(start).Seconds(), w.ok, w.fails, w.down.Seconds(), w.worst.Seconds())
	if w.ok == 0 {
		t.Fatal("no write succeeded during the upgrade")
	}

	waitMembers(t, clouds, 3, next)
	for _, id := range ids {
		if got := qemuOf(id); len(got) != 1 || got[0] != pids[id] {
			t.Errorf("QEMU of %s after the upgrade = %v; want the same process %d (VM downtime)", id, got, pids[id])
		}
		if st := strings.TrimSpace(osc("server", "show", id, "-f", "value", "-c", "status")); st != "ACTIVE" {
			t.Errorf("server %s is %s after the upgrade", id, st)
		}
	}
	osc("server", "delete", "--wait", ids[0], ids[1], ids[2])
}

// waitMembers waits until members lists n hosts alive, each on version
// (any version when empty).
func waitMembers(t *testing.T, clouds string, n int, version string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var out string
	for time.Now().Before(deadline) {
		var err error
		out, err = RunErr(clouds, Binary(t), "members", "-f", "json")
		var ms []struct {
			Name        string `json:"name"`
			GossipState string `json:"gossip_state"`
			Version     string `json:"version"`
		}
		if err == nil && json.Unmarshal([]byte(out), &ms) == nil && len(ms) == n {
			ok := true
			for _, m := range ms {
				ok = ok && m.GossipState == "alive" && (version == "" || m.Version == version)
			}
			if ok {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("members never showed %d hosts alive (version %q):\n%s", n, version, out)
}
