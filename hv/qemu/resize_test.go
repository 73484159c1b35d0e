package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestResizeRevertConfirm grows a guest's root disk while it is stopped,
// boots it with more memory, reverts to the kept disk, and confirms a
// second resize.
func TestResizeRevertConfirm(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	d := newTestDriver(t, stateDir(t))
	s := guestSpec(t, d, guestOpts{hostname: "resize"})
	killVMs(t, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	disk := func(gb int) string { return fmt.Sprintf("PEERSTACK-DISK vda sectors=%d", (int64(gb)<<30)/512) }
	waitConsole(t, d, s.UUID, disk(1), 1)
	size := func() int64 {
		t.Helper()
		info, err := imageInfo(ctx, "qemu-img", s.RootDisk.Path, "qcow2")
		if err != nil {
			t.Fatal(err)
		}
		return info.VirtualSize
	}

	if err := d.PrepareResize(ctx, s.UUID, 2); err != nil {
		t.Fatalf("PrepareResize = %v", err)
	}
	if st, _ := d.Status(ctx, s.UUID); st.State != StateShutoff {
		t.Fatalf("Status after PrepareResize = %+v, want shutoff", st)
	}
	if got := size(); got != 2<<30 {
		t.Fatalf("root disk after PrepareResize = %d bytes, want 2 GiB", got)
	}
	big := s
	big.RAMMB = 192
	if err := d.Start(ctx, big); err != nil {
		t.Fatalf("Start with the new flavor = %v", err)
	}
	waitConsole(t, d, s.UUID, disk(2), 1)

	if err := d.RevertResize(ctx, s.UUID); err != nil {
		t.Fatalf("RevertResize = %v", err)
	}
	if got := size(); got != 1<<30 {
		t.Fatalf("root disk after RevertResize = %d bytes, want 1 GiB", got)
	}
	if _, err := os.Stat(d.Paths(s.UUID).PreResizeDisk()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kept disk after revert: %v, want gone", err)
	}
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start after revert = %v", err)
	}
	waitConsole(t, d, s.UUID, disk(1), 2)

	if err := d.PrepareResize(ctx, s.UUID, 3); err != nil {
		t.Fatalf("PrepareResize again = %v", err)
	}
	if err := d.ConfirmResize(ctx, s.UUID); err != nil {
		t.Fatalf("ConfirmResize = %v", err)
	}
	if _, err := os.Stat(d.Paths(s.UUID).PreResizeDisk()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kept disk after confirm: %v, want gone", err)
	}
	if got := size(); got != 3<<30 {
		t.Fatalf("root disk after confirm = %d bytes, want 3 GiB", got)
	}
	if err := d.Delete(ctx, s.UUID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
}
