package qemu

// Real-QEMU tests (TCG, -m 128) of the Driver against the guest built by
// scripts/build-guest-image.sh.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// testNICs returns one NIC on a fresh tap when we may create taps (QEMU
// creates the tap itself as root).
func testNICs(t *testing.T) []NIC {
	if os.Geteuid() != 0 {
		return nil
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Logf("no /dev/net/tun: testing without a NIC")
		return nil
	}
	return []NIC{{ID: "port0", Tap: "qt" + randomHex(4), MAC: "02:" + strings.TrimSuffix(strings.Join(pairs(randomHex(5)), ":"), ":")}}
}

func pairs(s string) []string {
	var out []string
	for i := 0; i+1 < len(s); i += 2 {
		out = append(out, s[i:i+2])
	}
	return out
}

func TestVMLifecycle(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	dir := stateDir(t)
	host := "life-" + randomHex(3)
	d0 := newTestDriver(t, dir) // only to prepare the disks; the real one follows
	s := guestSpec(t, d0, guestOpts{
		hostname: host,
		userData: "#!/bin/sh\necho \"PEERSTACK-UD-RAN $(hostname)\"\nexit 0\n",
		nics:     testNICs(t),
	})
	killVMs(t, s.UUID)
	d := newTestDriver(t, dir)
	rec := record(d)

	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	if err := d.Start(ctx, s); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Start = %v; want ErrAlreadyRunning", err)
	}
	boot := fmt.Sprintf("PEERSTACK-BOOT hostname=%s uuid=%s", host, s.UUID)
	waitConsole(t, d, s.UUID, boot, 1)
	waitConsole(t, d, s.UUID, "PEERSTACK-UD-RAN "+host, 1)
	waitConsole(t, d, s.UUID, "PEERSTACK-USERDATA-DONE rc=0", 1)
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)

	st, err := d.Status(ctx, s.UUID)
	if err != nil || st.State != StateRunning || st.PID == 0 || !isQEMUFor(st.PID, s.UUID) {
		t.Fatalf("Status = %+v, %v; want running with the QEMU pid", st, err)
	}
	if sid := procSession(t, st.PID); sid != st.PID {
		t.Errorf("qemu pid %d is in session %d; want its own session (setsid)", st.PID, sid)
	}
	if len(s.NICs) > 0 {
		if _, err := os.Stat("/sys/class/net/" + s.NICs[0].Tap); err != nil {
			t.Errorf("tap %s of the running VM: %v", s.NICs[0].Tap, err)
		}
	}
	if c, _ := d.ConsoleLog(s.UUID, 64); len(c) > 64 {
		t.Errorf("ConsoleLog(64) returned %d bytes", len(c))
	}
	list, err := d.List(ctx)
	if err != nil || len(list) != 1 || list[0].UUID != s.UUID || list[0].State != StateRunning {
		t.Errorf("List = %+v, %v; want the one running VM", list, err)
	}

	// Hard reboot: the guest boots a second time in the same process.
	if err := d.Reboot(ctx, s.UUID, true); err != nil {
		t.Fatalf("Reboot(hard) = %v", err)
	}
	rec.wait(t, s.UUID, EventReset, "", 10*time.Second)
	waitConsole(t, d, s.UUID, boot, 2)
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 2)
	if st2, _ := d.Status(ctx, s.UUID); st2.PID != st.PID {
		t.Errorf("hard reboot changed the pid: %d → %d", st.PID, st2.PID)
	}

	// Stop: ACPI powerdown honoured by the guest, well before the timeout.
	t0 := time.Now()
	if err := d.Stop(ctx, s.UUID); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	t.Logf("Stop (ACPI) took %s", time.Since(t0))
	if procAlive(st.PID) {
		t.Errorf("qemu pid %d alive after Stop", st.PID)
	}
	st, err = d.Status(ctx, s.UUID)
	if err != nil || st.State != StateShutoff || !strings.Contains(st.Reason, "guest shutdown") {
		t.Errorf("Status after Stop = %+v, %v; want shutoff, guest shutdown", st, err)
	}
	rec.wait(t, s.UUID, EventShutdown, "guest-shutdown", 5*time.Second)
	rec.wait(t, s.UUID, EventExited, "guest shutdown", 5*time.Second)
	if err := d.Stop(ctx, s.UUID); err != nil {
		t.Errorf("Stop of a stopped VM = %v; want nil", err)
	}
	if err := d.Reboot(ctx, s.UUID, true); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reboot of a stopped VM = %v; want ErrNotRunning", err)
	}

	// Start again (console appended), then a soft reboot (new process).
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start after Stop = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 3)
	st, _ = d.Status(ctx, s.UUID)
	if err := d.Reboot(ctx, s.UUID, false); err != nil {
		t.Fatalf("Reboot(soft) = %v", err)
	}
	waitConsole(t, d, s.UUID, boot, 4)
	st2, _ := d.Status(ctx, s.UUID)
	if st2.State != StateRunning || st2.PID == st.PID || procAlive(st.PID) {
		t.Errorf("soft reboot: status %+v, old pid %d; want running in a new process", st2, st.PID)
	}

	if err := d.Delete(ctx, s.UUID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if pids := qemuPIDs(s.UUID); len(pids) > 0 || procAlive(st2.PID) {
		t.Errorf("qemu still running after Delete: %v", pids)
	}
	if _, err := os.Stat(d.Paths(s.UUID).Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vm dir after Delete: %v; want gone", err)
	}
	if st, err := d.Status(ctx, s.UUID); err != nil || st.State != StateMissing {
		t.Errorf("Status after Delete = %+v, %v; want missing", st, err)
	}
	if err := d.Stop(ctx, s.UUID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stop after Delete = %v; want ErrNotFound", err)
	}
	if len(s.NICs) > 0 {
		if _, err := os.Stat("/sys/class/net/" + s.NICs[0].Tap); err == nil {
			t.Errorf("tap %s still there after Delete", s.NICs[0].Tap)
		}
	}
}

// Driver A starts a VM and closes; driver B on the same state dir finds it
// running and controls it.
func TestRecoverAfterClose(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	dir := stateDir(t)
	a := newTestDriver(t, dir)
	s := guestSpec(t, a, guestOpts{hostname: "rec-" + randomHex(3)})
	killVMs(t, s.UUID)
	if err := a.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, a, s.UUID, "PEERSTACK-READY", 1)
	st, _ := a.Status(ctx, s.UUID)
	if err := a.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if !isQEMUFor(st.PID, s.UUID) {
		t.Fatalf("VM died when its driver closed")
	}

	b := newTestDriver(t, dir)
	rec := record(b)
	got, err := b.Recover(ctx)
	if err != nil || len(got) != 1 || got[0].UUID != s.UUID || got[0].State != StateRunning || got[0].PID != st.PID {
		t.Fatalf("Recover = %+v, %v; want [%s running pid %d]", got, err, s.UUID, st.PID)
	}
	if err := b.Start(ctx, s); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("Start of a recovered VM = %v; want ErrAlreadyRunning", err)
	}
	// Paused is reported (and evented) through the reattached monitor.
	v, _ := b.lookup(s.UUID)
	mon, err := b.monitor(ctx, v, b.liveProc(v))
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Stop(ctx); err != nil {
		t.Fatalf("QMP stop = %v", err)
	}
	rec.wait(t, s.UUID, EventStop, "", 5*time.Second)
	if st, _ := b.Status(ctx, s.UUID); st.State != StatePaused || st.Reason != "paused" {
		t.Errorf("Status of a paused VM = %+v; want paused", st)
	}
	if err := mon.Cont(ctx); err != nil {
		t.Fatalf("QMP cont = %v", err)
	}
	rec.wait(t, s.UUID, EventResume, "", 5*time.Second)
	if err := b.Stop(ctx, s.UUID); err != nil {
		t.Fatalf("Stop via the new driver = %v", err)
	}
	if procAlive(st.PID) {
		t.Errorf("pid %d alive after Stop", st.PID)
	}
	rec.wait(t, s.UUID, EventExited, "guest shutdown", 5*time.Second)
	if st, _ := b.Status(ctx, s.UUID); st.State != StateShutoff {
		t.Errorf("Status = %+v; want shutoff", st)
	}
	if got, err := b.Recover(ctx); err != nil || len(got) != 1 || got[0].State != StateShutoff {
		t.Errorf("Recover of a stopped VM = %+v, %v; want [shutoff]", got, err)
	}
}

// A daemon that dies (SIGKILL) leaves its VM running; a new driver recovers
// it; QEMU killed from outside is reported as exited.
func TestRecoverAfterDaemonKilled(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	dir := stateDir(t)
	prep := newTestDriver(t, dir)
	// ~20 KB of console output, to be trimmed once the VM is recovered.
	s := guestSpec(t, prep, guestOpts{hostname: "orphan-" + randomHex(3),
		userData: "#!/bin/sh\ni=0\nwhile [ $i -lt 300 ]; do echo \"PEERSTACK-FILL $i ..........................................\"; i=$((i+1)); done\n"})
	killVMs(t, s.UUID)

	helper, pid := startInHelper(t, dir, s)
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	if !isQEMUFor(pid, s.UUID) {
		t.Fatalf("VM pid %d died with the daemon that started it", pid)
	}
	// It keeps booting without its parent.
	waitConsole(t, prep, s.UUID, "PEERSTACK-READY", 1)

	const limit = 8 << 10
	if fi, err := os.Stat(prep.Paths(s.UUID).ConsoleLog()); err != nil || fi.Size() <= limit {
		t.Fatalf("console log %v, %v: want more than %d bytes before recovery", fi, err, limit)
	}
	c := newTestDriver(t, dir, func(c *Config) { c.ConsoleLimit = limit })
	c.trimEvery = 50 * time.Millisecond
	rec := record(c)
	got, err := c.Recover(ctx)
	if err != nil || len(got) != 1 || got[0].State != StateRunning || got[0].PID != pid {
		t.Fatalf("Recover = %+v, %v; want [running pid %d]", got, err, pid)
	}
	// The recovered VM's console is cut back to its newest part.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		log, _ := c.ConsoleLog(s.UUID, 0)
		if len(log) <= limit && strings.Contains(log, "PEERSTACK-READY") && strings.Contains(log, "PEERSTACK-FILL 299") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console not trimmed to %d bytes keeping the tail: %d bytes", limit, len(log))
		}
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := rec.wait(t, s.UUID, EventExited, "", 10*time.Second)
	// We are the subreaper here, so the status is known; a real daemon
	// restart would report "status unknown".
	if !strings.Contains(ev.Detail, "killed by signal 9") {
		t.Errorf("exited event detail = %q; want killed by signal 9", ev.Detail)
	}
	st, err := c.Status(ctx, s.UUID)
	if err != nil || st.State != StateShutoff || st.Reason != ev.Detail {
		t.Errorf("Status = %+v, %v; want shutoff, %q", st, err, ev.Detail)
	}
	if _, err := os.Stat(c.Paths(s.UUID).QMPSocket()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale qmp socket left after kill: %v", err)
	}
}

func TestStartFailures(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	for _, bin := range []string{"/nonexistent/qemu-system-x86_64", "no-such-qemu-binary"} {
		if _, err := New(Config{StateDir: t.TempDir(), QEMUBinary: bin}); !errors.Is(err, ErrNoQEMU) {
			t.Errorf("New(QEMUBinary %q) = %v; want ErrNoQEMU", bin, err)
		}
	}

	dir := stateDir(t)
	d := newTestDriver(t, dir)
	good := guestSpec(t, d, guestOpts{hostname: "fail", noConfig: true})
	nothingLeft := func(what string, uuid string) {
		t.Helper()
		if pids := qemuPIDs(uuid); len(pids) > 0 {
			t.Errorf("%s: qemu running: %v", what, pids)
		}
		if _, err := os.Stat(d.Paths(uuid).Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: vm dir left behind (%v)", what, err)
		}
	}

	bad := good
	bad.UUID = newUUID()
	bad.NICs = []NIC{{ID: "p", Tap: "qtbad", MAC: "01:00:5e:00:00:01"}}
	killVMs(t, bad.UUID)
	if err := d.Start(ctx, bad); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "mac") {
		t.Errorf("Start(multicast mac) = %v; want ErrInvalidSpec about the mac", err)
	}
	nothingLeft("invalid mac", bad.UUID)

	bad.NICs = nil
	for i := range MaxNICs + 1 {
		bad.NICs = append(bad.NICs, NIC{ID: fmt.Sprintf("p%d", i), Tap: fmt.Sprintf("qt%d", i), MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1)})
	}
	if err := d.Start(ctx, bad); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("Start(9 NICs) = %v; want ErrInvalidSpec", err)
	}
	nothingLeft("9 nics", bad.UUID)

	bad.NICs = nil
	bad.RootDisk.Path = filepath.Join(t.TempDir(), "missing.qcow2")
	err := d.Start(ctx, bad)
	t.Logf("Start(missing root disk) = %v", err)
	if err == nil || !strings.Contains(err.Error(), bad.RootDisk.Path) {
		t.Errorf("Start(missing root disk) = %v; want an error naming %s", err, bad.RootDisk.Path)
	}
	nothingLeft("missing root disk", bad.UUID)

	// QEMU itself refuses to start (a raw file declared qcow2): the error
	// carries QEMU's message and everything is undone.
	junk := filepath.Join(t.TempDir(), "junk.img")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not an image ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	bad.RootDisk.Path = junk
	err = d.Start(ctx, bad)
	t.Logf("Start(raw file as qcow2) = %v", err)
	if err == nil || !strings.Contains(err.Error(), "qcow2") {
		t.Errorf("Start(raw file as qcow2) = %v; want QEMU's qcow2 error", err)
	}
	nothingLeft("qemu start failure", bad.UUID)
	if st, _ := d.Status(ctx, bad.UUID); st.State != StateMissing {
		t.Errorf("Status after failed start = %+v; want missing", st)
	}

	// An unbootable image starts (QEMU cannot know) and stays silent: the
	// agent detects it by the missing boot marker.
	junkRaw := filepath.Join(t.TempDir(), "junk.raw")
	rnd := make([]byte, 1<<20)
	_, _ = rand.Read(rnd)
	if err := os.WriteFile(junkRaw, rnd, 0o600); err != nil {
		t.Fatal(err)
	}
	bad.UUID = newUUID()
	killVMs(t, bad.UUID)
	bad.RootDisk = Disk{Path: junkRaw, Format: "raw"}
	if err := d.Start(ctx, bad); err != nil {
		t.Fatalf("Start(random bytes) = %v", err)
	}
	if st, _ := d.Status(ctx, bad.UUID); st.State != StateRunning {
		t.Errorf("Status(random bytes) = %+v; want running", st)
	}
	if err := d.Delete(ctx, bad.UUID); err != nil {
		t.Errorf("Delete = %v", err)
	}
	nothingLeft("delete", bad.UUID)
	if err := d.Delete(ctx, bad.UUID); err != nil {
		t.Errorf("Delete of a deleted VM = %v; want nil", err)
	}
}

func TestHotplugDisk(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	dir := stateDir(t)
	d := newTestDriver(t, dir)
	rec := record(d)
	host := "hp-" + randomHex(3)
	s := guestSpec(t, d, guestOpts{hostname: host, meta: map[string]string{"disktest": "write"}})
	killVMs(t, s.UUID)
	eph, err := d.CreateEphemeralDisk(ctx, s.UUID, 1)
	if err != nil {
		t.Fatalf("CreateEphemeralDisk = %v", err)
	}
	if again, err := d.CreateEphemeralDisk(ctx, s.UUID, 1); err != nil || again != eph {
		t.Errorf("second CreateEphemeralDisk = %q, %v; want %q, nil", again, err, eph)
	}
	s.Ephemeral = eph
	// As if booted from a volume: the root disk carries the volume's id,
	// so ResizeDisk finds it (node "root") as it does an extra disk.
	s.RootDisk.ID = "rootvol1"
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	// vda root, vdb the blank 1 GiB ephemeral disk, vdc the config drive.
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK vdb sectors=2097152", 1)
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK vdc", 1)

	vol := filepath.Join(stateDir(t), "vol1.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", vol, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	disk := Disk{ID: "vol1", Path: vol, Format: "qcow2"}
	if err := d.AttachDisk(ctx, s.UUID, disk); err != nil {
		t.Fatalf("AttachDisk = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK vdd sectors=131072", 1)
	marker := "PEERSTACK-WROTE-BY-" + host + "-ON-vdd"
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK-READBACK vdd: "+marker, 1)
	if err := d.AttachDisk(ctx, s.UUID, disk); err != nil {
		t.Errorf("second AttachDisk = %v; want nil (already attached)", err)
	}

	// Online extend: QEMU grows the image under the running guest.
	if err := d.ResizeDisk(ctx, s.UUID, "vol1", 128<<20); err != nil {
		t.Fatalf("ResizeDisk = %v", err)
	}
	if got := volumeVirtualSize(t, d, s.UUID, "vol1"); got != 128<<20 {
		t.Errorf("virtual size after ResizeDisk = %d; want %d", got, 128<<20)
	}
	for _, tc := range []struct {
		disk    string
		size    int64
		wantErr string
	}{
		{"vol1", 128 << 20, ""},            // same size again: no-op
		{"vol1", 64 << 20, "no shrinking"}, // shrinking is refused
		{"vol9", 128 << 20, "not attached"},
		{"vol1", 1000, "multiple of 512"},
	} {
		err := d.ResizeDisk(ctx, s.UUID, tc.disk, tc.size)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("ResizeDisk(%s, %d) = %v; want %q", tc.disk, tc.size, err, tc.wantErr)
		}
	}
	if got := volumeVirtualSize(t, d, s.UUID, "vol1"); got != 128<<20 {
		t.Errorf("virtual size after refused resizes = %d; want %d", got, 128<<20)
	}
	rootSize := blockNodeSize(t, d, s.UUID, "root")
	if err := d.ResizeDisk(ctx, s.UUID, "rootvol1", rootSize+64<<20); err != nil {
		t.Fatalf("ResizeDisk(root volume) = %v", err)
	}
	if got := blockNodeSize(t, d, s.UUID, "root"); got != rootSize+64<<20 {
		t.Errorf("root virtual size after ResizeDisk = %d; want %d", got, rootSize+64<<20)
	}
	if sp, _ := readSpec(d.Paths(s.UUID)); len(sp.ExtraDisks) != 1 || sp.ExtraDisks[0].ID != "vol1" {
		t.Errorf("spec.json extra disks = %+v; want vol1", sp.ExtraDisks)
	}
	if err := d.AttachDisk(ctx, s.UUID, Disk{ID: "vol2", Path: "/nonexistent/vol2.qcow2"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/vol2.qcow2") {
		t.Errorf("AttachDisk(missing file) = %v; want an error naming it", err)
	}

	if err := d.DetachDisk(ctx, s.UUID, "vol1", 90*time.Second); err != nil {
		t.Fatalf("DetachDisk = %v", err)
	}
	rec.wait(t, s.UUID, EventDeviceDeleted, "vol-vol1", 5*time.Second)
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK-GONE vdd", 1)
	if sp, _ := readSpec(d.Paths(s.UUID)); len(sp.ExtraDisks) != 0 {
		t.Errorf("spec.json extra disks after detach = %+v; want none", sp.ExtraDisks)
	}
	if err := d.DetachDisk(ctx, s.UUID, "vol1", time.Second); err != nil {
		t.Errorf("second DetachDisk = %v; want nil", err)
	}
	// The guest's write reached the volume file.
	if out, err := exec.Command("qemu-io", "-r", "-f", "qcow2", "-c", "read -v 1M 64", vol).CombinedOutput(); err != nil {
		t.Errorf("qemu-io: %v: %s", err, out)
	} else if want := strings.ReplaceAll(marker, "-", "."); !strings.Contains(squeezeHexdump(string(out)), want) {
		t.Errorf("volume does not hold the guest's marker; qemu-io:\n%s", out)
	}
	if err := d.Delete(ctx, s.UUID); err != nil {
		t.Errorf("Delete = %v", err)
	}
	if _, err := os.Stat(eph); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ephemeral disk after Delete: stat = %v; want it gone", err)
	}
}

// volumeVirtualSize asks the VM's QEMU for the virtual size of a volume's
// block node.
func volumeVirtualSize(t *testing.T, d *Driver, uuid, diskID string) int64 {
	t.Helper()
	return blockNodeSize(t, d, uuid, volumeNodeName(diskID))
}

// blockNodeSize is the virtual size of a named block node of a running VM.
func blockNodeSize(t *testing.T, d *Driver, uuid, node string) int64 {
	t.Helper()
	ctx := context.Background()
	v, err := d.lookup(uuid)
	if err != nil {
		t.Fatal(err)
	}
	mon, err := d.monitor(ctx, v, d.liveProc(v))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := mon.NamedBlockNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.NodeName == node {
			return n.Image.VirtualSize
		}
	}
	t.Fatalf("no block node %s in %+v", node, nodes)
	return 0
}

// squeezeHexdump joins the ASCII columns (the last 16 characters of each
// full line) of qemu-io's read -v output, which shows '-' as '.'.
func squeezeHexdump(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 60 && l[8] == ':' {
			b.WriteString(l[len(l)-16:])
		}
	}
	return b.String()
}

// procSession returns the session id of pid (field 6 of /proc/pid/stat).
func procSession(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var sid int
	fmt.Sscan(f[3], &sid) // state ppid pgrp session
	return sid
}

func TestDetectAccel(t *testing.T) {
	requireQEMU(t)
	a, why := detectAccel(context.Background(), "qemu-system-x86_64")
	t.Logf("DetectAccel here: %s (%s)", a, why)
	if _, err := os.Stat("/dev/kvm"); err != nil && a != AccelTCG {
		t.Errorf("detectAccel without /dev/kvm = %s; want tcg", a)
	}
	if a != AccelKVM && a != AccelTCG {
		t.Errorf("detectAccel = %q", a)
	}
	// A busy host must not change the answer: the probe waits for guest
	// output, not for a fixed time (a 0.5 s wait once said KVM on a loaded
	// host where KVM aborts, and the first real guest died).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 * runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; ; x++ {
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	busy, whyBusy := detectAccel(context.Background(), "qemu-system-x86_64")
	close(stop)
	wg.Wait()
	if busy != a {
		t.Errorf("detectAccel on a busy host = %s (%s); idle it said %s (%s)", busy, whyBusy, a, why)
	}
}

// A VM whose directory path is too long for a unix socket keeps its QMP
// and console sockets in ShortSocketDir; Delete removes them with the
// directory.
func TestDeleteRemovesShortSockets(t *testing.T) {
	long := filepath.Join(stateDir(t), strings.Repeat("d", 120))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, long)
	uuid := "0b5d6c3e-3c1a-4f5e-9a55-1f6d2c3b4a51"
	p := d.Paths(uuid)
	socks := []string{p.QMPSocket(), p.ConsoleSocket()}
	for _, s := range socks {
		if filepath.Dir(s) != ShortSocketDir {
			t.Fatalf("socket %s not in %s: the directory path is not long enough for this test", s, ShortSocketDir)
		}
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ShortSocketDir, 0o700); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("not root: cannot create %s: %v", ShortSocketDir, err)
		}
		t.Fatal(err)
	}
	for _, s := range socks {
		if err := os.WriteFile(s, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(s) })
	}
	if err := d.Delete(t.Context(), uuid); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	for _, s := range socks {
		if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Delete: %v; want gone", s, err)
		}
	}
}
