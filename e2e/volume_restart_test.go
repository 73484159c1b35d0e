package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVolumeAttachedDaemonKilled: a real daemon with a real
// QEMU guest and a volume attached is SIGKILLed and restarted on the same
// data dir. The guest and its disk must not notice, the attachment must be
// the same one, and the restarted daemon must still drive the device: a
// detach unplugs it in the guest, a new attach plugs it back.
func TestVolumeAttachedDaemonKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (QEMU guests)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("QEMU is required for this test (CI installs it): %v", err)
	}
	guest := filepath.Join(RepoRoot(), "build", "guest.qcow2")
	if _, err := os.Stat(guest); err != nil {
		t.Fatalf("guest image: %v (make guest-image)", err)
	}
	// A deep data dir on purpose: its instances' QMP sockets do not fit a
	// unix socket path (107 bytes) and live in /run/peerstack instead,
	// which the restarted daemon must find again.
	dir := t.TempDir()
	p := StartDaemon(t, "volkill", filepath.Join(dir, "data"), "agent", "--network", "none", "--resync-interval", "2s")
	clouds := filepath.Join(p.DataDir, "clouds.yaml")
	osc := func(args ...string) string { t.Helper(); return Run(t, clouds, "openstack", args...) }

	osc("image", "create", "--file", guest, "--disk-format", "qcow2", "--container-format", "bare", "--public", "volkill-guest")
	vm := strings.TrimSpace(osc("server", "create", "--image", "volkill-guest", "--flavor", "m1.tiny",
		"--property", "disktest=write", "-f", "value", "-c", "id", "volkill-vm"))
	// The QEMU outlives the daemon by design: kill it by its uuid when done.
	t.Cleanup(func() {
		for _, pid := range qemuOf(vm) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	waitValue(t, clouds, 3*time.Minute, "ACTIVE", "server", "show", vm, "-f", "value", "-c", "status")
	console := filepath.Join(p.DataDir, "instances", vm, "console.log")
	waitConsole(t, console, 3*time.Minute, "PEERSTACK-READY", 1) // its disk watcher runs
	vol := strings.TrimSpace(osc("volume", "create", "--size", "1", "-f", "value", "-c", "id", "volkill-vol"))
	waitValue(t, clouds, time.Minute, "available", "volume", "show", vol, "-f", "value", "-c", "status")
	osc("server", "add", "volume", vm, vol)
	waitValue(t, clouds, time.Minute, "in-use", "volume", "show", vol, "-f", "value", "-c", "status")
	waitConsole(t, console, 3*time.Minute, "PEERSTACK-DISK-READBACK", 1)
	before := attachment(t, clouds, vol)
	pids := qemuOf(vm)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes of %s = %v; want one", vm, pids)
	}

	p.Kill() // SIGKILL, no chance to clean up
	if err := syscall.Kill(pids[0], 0); err != nil {
		t.Fatalf("QEMU %d died with the daemon: %v", pids[0], err)
	}
	p.Restart(t)
	// A few resyncs (2 s each) with the attachment in place: nothing may
	// change. A negative check, so it waits rather than polls.
	time.Sleep(7 * time.Second)
	if got := attachment(t, clouds, vol); got != before {
		t.Fatalf("attachment after the restart = %+v; want %+v", got, before)
	}
	if st := strings.TrimSpace(osc("volume", "show", vol, "-f", "value", "-c", "status")); st != "in-use" {
		t.Fatalf("volume status after the restart = %q; want in-use", st)
	}
	var srv struct {
		Status   string `json:"status"`
		Attached []struct {
			ID string `json:"id"`
		} `json:"volumes_attached"`
	}
	if err := json.Unmarshal([]byte(osc("server", "show", vm, "-f", "json")), &srv); err != nil {
		t.Fatal(err)
	}
	if srv.Status != "ACTIVE" || len(srv.Attached) != 1 || srv.Attached[0].ID != vol {
		t.Fatalf("server after the restart = %+v; want ACTIVE with %s attached", srv, vol)
	}
	if got := qemuOf(vm); len(got) != 1 || got[0] != pids[0] {
		t.Fatalf("QEMU of %s after the restart = %v; want the adopted %d", vm, got, pids[0])
	}
	if b, _ := os.ReadFile(console); strings.Contains(string(b), "PEERSTACK-DISK-GONE") {
		t.Fatalf("the guest lost its volume across the daemon restart:\n%s", b)
	}

	// The restarted daemon drives the device: detach unplugs it in the
	// guest, attach plugs it again.
	osc("server", "remove", "volume", vm, vol)
	waitValue(t, clouds, 2*time.Minute, "available", "volume", "show", vol, "-f", "value", "-c", "status")
	waitConsole(t, console, time.Minute, "PEERSTACK-DISK-GONE", 1)
	osc("server", "add", "volume", vm, vol)
	waitValue(t, clouds, time.Minute, "in-use", "volume", "show", vol, "-f", "value", "-c", "status")
	waitConsole(t, console, 2*time.Minute, "PEERSTACK-DISK-READBACK", 2)

	osc("server", "delete", "--wait", vm)
	waitValue(t, clouds, time.Minute, "available", "volume", "show", vol, "-f", "value", "-c", "status")
	osc("volume", "delete", vol)
	if got := qemuOf(vm); len(got) != 0 {
		t.Fatalf("QEMU of deleted %s still runs: %v", vm, got)
	}
}

// volumeAttachment is the part of a volume's attachment that must survive
// a daemon restart unchanged.
type volumeAttachment struct {
	ID       string `json:"attachment_id"`
	ServerID string `json:"server_id"`
	HostName string `json:"host_name"`
	Device   string `json:"device"`
}

// attachment returns the volume's single attachment.
func attachment(t *testing.T, clouds, vol string) volumeAttachment {
	t.Helper()
	var v struct {
		Attachments []volumeAttachment `json:"attachments"`
	}
	out := Run(t, clouds, "openstack", "volume", "show", vol, "-f", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("volume show: %v\n%s", err, out)
	}
	if len(v.Attachments) != 1 || v.Attachments[0].ID == "" {
		t.Fatalf("attachments of %s = %+v; want one", vol, v.Attachments)
	}
	return v.Attachments[0]
}

// waitValue runs an openstack command until its trimmed output is want.
func waitValue(t *testing.T, clouds string, timeout time.Duration, want string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		out, err := RunErr(clouds, "openstack", args...)
		last = strings.TrimSpace(out)
		if err == nil && last == want {
			return
		}
		if err == nil && (last == "error" || last == "ERROR") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("openstack %s = %q; want %q within %v", strings.Join(args, " "), last, want, timeout)
}

// waitConsole waits until a console log holds marker at least n times.
func waitConsole(t *testing.T, file string, timeout time.Duration, marker string, n int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(file)
		if strings.Count(string(b), marker) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d× %q not seen within %v; console:\n%s", file, n, marker, timeout, tail(string(b), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// qemuOf lists the QEMU processes whose command line names uuid.
func qemuOf(uuid string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.HasPrefix(filepath.Base(strings.SplitN(string(b), "\x00", 2)[0]), "qemu-system") && strings.Contains(string(b), uuid) {
			out = append(out, pid)
		}
	}
	return out
}
