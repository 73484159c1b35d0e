package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAArch64CommandLineBoots runs the command line BuildArgs makes for an
// aarch64 guest on the real qemu-system-aarch64 (TCG) and waits for the
// UEFI firmware's banner on the serial console: the virt machine, the
// firmware and every device on it are accepted.
func TestAArch64CommandLineBoots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU: not in -short mode")
	}
	bin, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Fatalf("qemu-system-aarch64 (Debian qemu-system-arm, installed by make deps): %v", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", root, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	s := Spec{UUID: testUUID, VCPUs: 1, RAMMB: 256, Arch: ArchARM64, RootDisk: Disk{Path: root}}
	p := Paths{Dir: dir}
	args, err := BuildArgs(s, p, AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		b, _ := os.ReadFile(p.ConsoleLog())
		if strings.Contains(string(b), "UEFI firmware") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no UEFI banner on the console within 2 min:\n%s", b)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
