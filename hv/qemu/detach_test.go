package qemu

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newVolume makes a blank qcow2 volume file of 64 MiB.
func newVolume(t *testing.T, name string) Disk {
	t.Helper()
	path := filepath.Join(stateDir(t), name+".qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return Disk{ID: name, Path: path, Format: "qcow2"}
}

// peripheral reports whether QEMU still lists the volume's device.
func peripheral(t *testing.T, d *Driver, uuid, diskID string) bool {
	t.Helper()
	v, err := d.lookup(uuid)
	if err != nil {
		t.Fatal(err)
	}
	v.op.Lock()
	defer v.op.Unlock()
	p := d.liveProc(v)
	if p == nil {
		return false
	}
	mon, err := d.monitor(context.Background(), v, p)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := mon.PeripheralIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ids, VolumeDeviceID(diskID))
}

// specHasDisk reports whether spec.json still records the volume.
func specHasDisk(t *testing.T, d *Driver, uuid, diskID string) bool {
	t.Helper()
	sp, err := readSpec(d.Paths(uuid))
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(sp.ExtraDisks, func(x Disk) bool { return x.ID == diskID })
}

// TestDetachRetries detaches a volume while the guest boots and again
// right after the hot-plug of a READY guest: the guest drops unplug
// requests at those moments, and DetachDisk asks again until it lets go.
func TestDetachRetries(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	d := newTestDriver(t, stateDir(t))
	rec := record(d)
	host := "dr-" + randomHex(3)
	s := guestSpec(t, d, guestOpts{hostname: host})
	killVMs(t, s.UUID)

	// During early boot: plugged in and out before the kernel runs.
	early := newVolume(t, "early1")
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	if err := d.AttachDisk(ctx, s.UUID, early); err != nil {
		t.Fatalf("AttachDisk(early) = %v", err)
	}
	t0 := time.Now()
	if err := d.DetachDisk(ctx, s.UUID, early.ID, 3*time.Minute); err != nil {
		t.Fatalf("DetachDisk during boot = %v", err)
	}
	t.Logf("detach during early boot took %s", time.Since(t0).Round(time.Millisecond))
	if peripheral(t, d, s.UUID, early.ID) || specHasDisk(t, d, s.UUID, early.ID) {
		t.Errorf("after DetachDisk during boot the volume is still plugged in or recorded")
	}

	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	for i, name := range []string{"quick1", "quick2"} {
		vol := newVolume(t, name)
		if err := d.AttachDisk(ctx, s.UUID, vol); err != nil {
			t.Fatalf("AttachDisk(%s) = %v", name, err)
		}
		t0 := time.Now()
		if err := d.DetachDisk(ctx, s.UUID, vol.ID, 3*time.Minute); err != nil {
			t.Fatalf("DetachDisk right after attach (%s) = %v", name, err)
		}
		t.Logf("detach right after attach #%d took %s", i+1, time.Since(t0).Round(time.Millisecond))
		rec.wait(t, s.UUID, EventDeviceDeleted, VolumeDeviceID(vol.ID), 5*time.Second)
		if peripheral(t, d, s.UUID, vol.ID) || specHasDisk(t, d, s.UUID, vol.ID) {
			t.Errorf("after DetachDisk %s is still plugged in or recorded", name)
		}
		// Detaching again is a no-op.
		if err := d.DetachDisk(ctx, s.UUID, vol.ID, time.Second); err != nil {
			t.Errorf("second DetachDisk(%s) = %v; want nil", name, err)
		}
	}
}

// TestDetachGivesUp: firmware without an operating system never answers
// an unplug; DetachDisk gives up after its budget with ErrDetachTimeout,
// a second call meanwhile shares the first one's outcome, and once the VM
// is stopped the volume detaches at once.
func TestDetachGivesUp(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx := context.Background()
	dir := stateDir(t)
	d := newTestDriver(t, dir, func(c *Config) {
		c.DetachRetry = DetachRetry{First: 6 * time.Second}
		c.StopTimeout = time.Second // no OS answers the ACPI button
	})
	uuid := newUUID()
	killVMs(t, uuid)
	// A blank root disk: the firmware finds nothing to boot and idles.
	blank := newVolume(t, "blankroot")
	s := Spec{UUID: uuid, Name: "nos", VCPUs: 1, RAMMB: 128, RootDisk: Disk{ID: "root", Path: blank.Path, Format: "qcow2"}}
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	vol := newVolume(t, "stuck1")
	if err := d.AttachDisk(ctx, uuid, vol); err != nil {
		t.Fatalf("AttachDisk = %v", err)
	}

	const budget = 8 * time.Second // two requests, 6 s apart
	var (
		wg         sync.WaitGroup
		err1, err2 error
	)
	wg.Add(1)
	go func() { defer wg.Done(); err1 = d.DetachDisk(ctx, uuid, vol.ID, budget) }()
	// The second call joins once the first one has registered.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := d.lookup(uuid)
		v.mu.Lock()
		busy := v.detaches[vol.ID] != nil
		v.mu.Unlock()
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first DetachDisk did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	err2 = d.DetachDisk(ctx, uuid, vol.ID, time.Hour)
	wg.Wait()
	if !errors.Is(err1, ErrDetachTimeout) {
		t.Fatalf("DetachDisk on a guest without an OS = %v; want ErrDetachTimeout", err1)
	}
	if !strings.Contains(err1.Error(), "2 unplug requests") {
		t.Errorf("give-up error = %q; want it to count 2 unplug requests", err1)
	}
	if err2 != err1 {
		t.Errorf("joined DetachDisk = %v; want the first call's own error %v", err2, err1)
	}
	if !peripheral(t, d, uuid, vol.ID) || !specHasDisk(t, d, uuid, vol.ID) {
		t.Errorf("after a give-up the volume must stay plugged in and recorded")
	}

	// A cancelled caller stops at once.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := d.DetachDisk(cctx, uuid, vol.ID, time.Minute)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DetachDisk with an expiring context = %v; want DeadlineExceeded", err)
	}

	// A detach in progress does not hold up the VM's other operations:
	// Stop goes through between two requests, and the detach ends as the
	// VM stops, the disk dropped from spec.json.
	done := make(chan error, 1)
	go func() { done <- d.DetachDisk(ctx, uuid, vol.ID, time.Hour) }()
	if err := d.Stop(ctx, uuid); err != nil {
		t.Fatalf("Stop during a detach = %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("DetachDisk when its VM stopped = %v; want nil", err)
	}
	if specHasDisk(t, d, uuid, vol.ID) {
		t.Errorf("spec.json still records %s after detaching it from the stopped VM", vol.ID)
	}
	// A stopped VM: nothing to unplug.
	if err := d.AttachDisk(ctx, uuid, vol); err != nil {
		t.Fatalf("AttachDisk to the stopped VM = %v", err)
	}
	if err := d.DetachDisk(ctx, uuid, vol.ID, time.Hour); err != nil || specHasDisk(t, d, uuid, vol.ID) {
		t.Errorf("DetachDisk on a stopped VM = %v (recorded still: %v); want nil, dropped", err, specHasDisk(t, d, uuid, vol.ID))
	}
}
