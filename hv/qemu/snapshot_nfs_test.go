package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/hv/storage/nfstest"
)

// TestSnapshotRootStoppedNFS copies the root disk of a stopped VM that
// boots from a volume on NFS (a real ganesha export): qemu-img reads it
// through its nfs:// URL into a standalone qcow2 with the volume's data.
func TestSnapshotRootStoppedNFS(t *testing.T) {
	requireQEMU(t)
	srv := nfstest.Start(t)
	// qemu-img reaches the export only inside its namespace.
	wrapper := filepath.Join(t.TempDir(), "qemu-img")
	script := "#!/bin/sh\nexec " + strings.Join(srv.Prefix(), " ") + " qemu-img \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	vol := srv.URL + "/vol-snap.qcow2"
	in := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, srv.Prefix()[0], append(srv.Prefix()[1:], args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	in("qemu-img", "create", "-q", "-f", "qcow2", vol, "1G")
	in("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 1M", vol)
	d := newTestDriver(t, stateDir(t), func(c *Config) { c.QEMUImg = wrapper })
	uuid := newUUID()
	p := d.Paths(uuid)
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeSpec(p, Spec{UUID: uuid, Name: "nfsroot", VCPUs: 1, RAMMB: 128, RootDisk: Disk{ID: "root", Path: vol, Format: "qcow2"}}); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "snap.qcow2")
	if err := d.SnapshotRoot(ctx, uuid, dest); err != nil {
		t.Fatalf("SnapshotRoot of a stopped vm on nfs = %v", err)
	}
	info, err := imageInfo(ctx, "qemu-img", dest, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if info.Backing != "" || info.VirtualSize != 1<<30 || info.Format != "qcow2" {
		t.Fatalf("%s: %+v; want a standalone 1 GiB qcow2", dest, info)
	}
	if out, err := exec.CommandContext(ctx, "qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 1M 1M", dest).CombinedOutput(); err != nil ||
		strings.Contains(string(out), "Pattern verification failed") {
		t.Fatalf("the copy lacks the volume's data: %v: %s", err, out)
	}
}
