// Package nfstest runs a real NFS server for tests: nfs-ganesha (FSAL VFS,
// NFSv3 and v4) and rpcbind, in a network namespace of their own that has
// only loopback, and a private /run so parallel servers do not share
// rpcbind's lock and socket. Known to work with ganesha here: no
// Bind_Addr, Mount_Path_Pseudo, rpcbind on port 111 for libnfs.
//
// Everything it starts carries a unique "psnfs-" name and is removed in
// t.Cleanup: processes by PID, the namespace by name, the export and work
// directories. It needs root and the nfs-ganesha, nfs-ganesha-vfs,
// rpcbind, iproute2 and util-linux packages; it must not be imported by
// production code, and imports nothing of the project (hv/* rule).
//
// Clients reach it only inside the namespace: run commands under
// Prefix() (ip netns exec) and dial with Dial, e.g.
// storage.VolumeOptions{CommandPrefix: srv.Prefix(), Dial: srv.Dial}.
package nfstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Server is a running ganesha + rpcbind pair.
type Server struct {
	// NS is the network namespace the server lives in.
	NS string
	// ExportDir is the exported directory. Do not change files in it while
	// ganesha runs (stale handles): go through NFS.
	ExportDir string
	// URL is the export's URL inside NS: nfs://127.0.0.1/export.
	URL string

	t       testing.TB
	work    string
	mu      sync.Mutex
	rpcbind *exec.Cmd
	ganesha *exec.Cmd
	waits   map[*exec.Cmd]chan struct{}
}

// Start starts a server and registers its cleanup. It fails the test if
// it is not root or a needed program is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nfstest needs root (network namespaces, rpcbind, ganesha)")
	}
	for _, bin := range []string{"ip", "unshare", "nsenter", "rpcbind", "ganesha.nfsd", "nfs-ls"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("nfstest: %s not found (install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils iproute2 util-linux): %v", bin, err)
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "psnfs-" + hex.EncodeToString(rnd[:])
	work, err := os.MkdirTemp("", name+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{NS: name, ExportDir: filepath.Join(work, "export"), URL: "nfs://127.0.0.1/export",
		t: t, work: work, waits: map[*exec.Cmd]chan struct{}{}}
	t.Cleanup(func() { _ = os.RemoveAll(work) })
	for _, d := range []string{s.ExportDir, filepath.Join(work, "recov")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "ganesha.conf"), []byte(s.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("nfstest: ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("nfstest: ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("nfstest: lo up in %s: %v: %s", name, err, out)
	}
	t.Cleanup(s.stopAll)

	// rpcbind in the namespace, with a private /run: its lock file and
	// socket would otherwise be shared with every other rpcbind.
	s.rpcbind = exec.Command("ip", "netns", "exec", name, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", "mount -t tmpfs "+name+" /run && mkdir -p /run/rpcbind && exec rpcbind -w -f")
	s.rpcbind.Stdout, s.rpcbind.Stderr = s.logFile("rpcbind.out"), s.logFile("rpcbind.out")
	s.rpcbind.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.start(s.rpcbind); err != nil {
		t.Fatalf("nfstest: start rpcbind: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.waitPort(ctx, "127.0.0.1:111", s.rpcbind); err != nil {
		t.Fatalf("nfstest: rpcbind: %v (%s)", err, s.tail("rpcbind.out"))
	}
	s.StartNFS()
	return s
}

func (s *Server) config() string {
	return fmt.Sprintf(`NFS_CORE_PARAM {
  Protocols = 3, 4;
  NFS_Port = 2049;
  MNT_Port = 20048;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; RecoveryRoot = "%s"; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
  Export_Id = 1; Path = "%s"; Pseudo = /export;
  Protocols = 3, 4; Transports = TCP; Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
`, filepath.Join(s.work, "recov"), s.ExportDir)
}

func (s *Server) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(s.work, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { f.Close() })
	return f
}

func (s *Server) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.work, name))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// start starts cmd and reaps it in the background.
func (s *Server) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.waits[cmd] = done
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); close(done) }()
	return nil
}

func (s *Server) exited(cmd *exec.Cmd) bool {
	s.mu.Lock()
	done := s.waits[cmd]
	s.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to cmd's PID, and SIGKILL if it is still there after
// grace.
func (s *Server) stop(cmd *exec.Cmd, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	s.mu.Lock()
	done := s.waits[cmd]
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	_ = cmd.Process.Kill()
	<-done
}

func (s *Server) waitPort(ctx context.Context, addr string, cmd *exec.Cmd) error {
	for {
		c, err := s.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if s.exited(cmd) {
			return fmt.Errorf("exited before serving %s", addr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not reachable: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartNFS starts ganesha (again, after StopNFS) and waits until the export
// mounts. It fails the test on error.
func (s *Server) StartNFS() {
	s.t.Helper()
	s.mu.Lock()
	running := s.ganesha != nil
	s.mu.Unlock()
	if running {
		s.t.Fatal("nfstest: ganesha is already running")
	}
	// Join rpcbind's network and mount namespaces so ganesha registers
	// with this rpcbind and no other.
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(s.rpcbind.Process.Pid), "-m", "-n",
		"ganesha.nfsd", "-F", "-f", filepath.Join(s.work, "ganesha.conf"), "-L", filepath.Join(s.work, "ganesha.log"),
		"-p", filepath.Join(s.work, "ganesha.pid"), "-N", "NIV_EVENT")
	cmd.Stdout, cmd.Stderr = s.logFile("ganesha.out"), s.logFile("ganesha.out")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.start(cmd); err != nil {
		s.t.Fatalf("nfstest: start ganesha: %v", err)
	}
	s.mu.Lock()
	s.ganesha = cmd
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		// As the recipe does: the export lists through libnfs.
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, "ip", "netns", "exec", s.NS, "nfs-ls", s.URL).CombinedOutput()
		ccancel()
		if err == nil {
			return
		}
		err = fmt.Errorf("nfs-ls %s: %v: %s", s.URL, err, strings.TrimSpace(string(out)))
		if s.exited(cmd) {
			s.t.Fatalf("nfstest: ganesha exited: %s %s", s.tail("ganesha.out"), s.tail("ganesha.log"))
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("nfstest: ganesha not serving after 30s: %v (%s)", err, s.tail("ganesha.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopNFS stops ganesha (rpcbind stays), as a failed NFS server would.
func (s *Server) StopNFS() {
	s.mu.Lock()
	cmd := s.ganesha
	s.ganesha = nil
	s.mu.Unlock()
	s.stop(cmd, 10*time.Second)
}

func (s *Server) stopAll() {
	s.StopNFS()
	s.stop(s.rpcbind, 5*time.Second)
}

// Prefix is the command prefix that runs a program inside the namespace.
func (s *Server) Prefix() []string { return []string{"ip", "netns", "exec", s.NS} }

// Dial opens a connection from inside the namespace; it fits
// storage.VolumeOptions.Dial and storage.NewNFSClient.
func (s *Server) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(s.NS)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("netns %s: %w", s.NS, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter netns %s: %w", s.NS, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if netns.Set(orig) == nil {
			// Only a thread back in its own namespace may be reused; a
			// failed restore leaves it locked, and it exits with us.
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
