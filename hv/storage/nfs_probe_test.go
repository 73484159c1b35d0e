package storage_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/hv/storage/nfstest"
)

// TestProbeNFS checks a share the way a storage setting change does,
// against a real ganesha export: a usable directory (made on the way)
// passes and keeps no probe file; a path under a file is not writable; a
// server that does not answer is unreachable; a malformed URL is refused
// before any network call.
func TestProbeNFS(t *testing.T) {
	srv := nfstest.Start(t)
	ctx := t.Context()

	if err := storage.ProbeNFS(ctx, srv.URL+"/probe/sub", srv.Dial); err != nil {
		t.Fatalf("ProbeNFS(%s/probe/sub) = %v; want nil", srv.URL, err)
	}
	entries, err := os.ReadDir(filepath.Join(srv.ExportDir, "probe", "sub"))
	if err != nil {
		t.Fatalf("the probed directory was not made: %v", err)
	}
	if len(entries) != 0 {
		t.Fatalf("probe left %v behind", entries)
	}
	// A second probe of the same directory passes too.
	if err := storage.ProbeNFS(ctx, srv.URL+"/probe/sub", srv.Dial); err != nil {
		t.Fatalf("ProbeNFS again = %v; want nil", err)
	}

	// A regular file where the directory should be: made through NFS, not
	// behind ganesha's back.
	s := nfsStore(t, srv, "/probe")
	p, err := s.Create(ctx, "vol-probe", 1, "raw", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Delete(context.WithoutCancel(ctx), p) })
	err = storage.ProbeNFS(ctx, srv.URL+"/probe/vol-probe.raw/sub", srv.Dial)
	if !errors.Is(err, storage.ErrNFSNotWritable) {
		t.Fatalf("ProbeNFS under a file = %v; want ErrNFSNotWritable", err)
	}

	refused := func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	err = storage.ProbeNFS(ctx, "nfs://192.0.2.250/export", refused)
	if !errors.Is(err, storage.ErrNFSUnreachable) || !strings.Contains(err.Error(), "cannot reach NFS server 192.0.2.250") {
		t.Fatalf("ProbeNFS with connections refused = %v; want ErrNFSUnreachable naming the server", err)
	}

	dialed := false
	counting := func(ctx context.Context, n, a string) (net.Conn, error) { dialed = true; return srv.Dial(ctx, n, a) }
	for _, bad := range []string{"nfs://srv", "nfs://srv:2049/export", "http://srv/export"} {
		if err := storage.ProbeNFS(ctx, bad, counting); !errors.Is(err, storage.ErrBadNFSURL) {
			t.Errorf("ProbeNFS(%q) = %v; want ErrBadNFSURL", bad, err)
		}
	}
	if dialed {
		t.Error("a malformed URL was dialed")
	}
}
