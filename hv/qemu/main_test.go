package qemu

// Test harness for the real-QEMU tests: the guest image, drivers on
// temporary state directories, event recording, console polling and
// cleanup of every QEMU by pid.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	helperEnv      = "PEERSTACK_QEMU_TEST_HELPER" // re-exec: start a VM and wait to be killed
	guestDirEnv    = "PEERSTACK_GUEST_DIR"        // where the guest image is built (optional)
	defaultGuest   = "/var/tmp/peerstack-guest"
	bootTimeout    = 150 * time.Second // TCG boots take ~8 s alone, much more on a loaded host
	testStopPeriod = 90 * time.Second  // a loaded host slows the guest's ACPI handling
)

var (
	guestImage string // guest.qcow2 built by scripts/build-guest-image.sh
	guestErr   error  // why there is no guest image
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	flag.Parse()
	// VMs orphaned by the killed helper process are reparented to us, so
	// the test can reap them (PID 1 of these sandboxes does not promptly).
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil || os.Geteuid() == 0 {
		guestImage, guestErr = buildGuest()
	}
	os.Exit(m.Run())
}

// buildGuest runs scripts/build-guest-image.sh (cached, idempotent) into
// $PEERSTACK_GUEST_DIR, else the repo's build/ if it already has an image,
// else /var/tmp/peerstack-guest.
func buildGuest() (string, error) {
	script, err := filepath.Abs("../../scripts/build-guest-image.sh")
	if err != nil {
		return "", err
	}
	dir := os.Getenv(guestDirEnv)
	if dir == "" {
		dir = defaultGuest
		if _, err := os.Stat("../../build/guest.qcow2"); err == nil {
			dir, _ = filepath.Abs("../../build")
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, dir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building the test guest with %s %s failed: %v\n%s\n"+
			"(needs root, apt lists (apt-get update) or a cached kernel, and: apt-get install -y busybox-static cpio grub-pc-bin xorriso mtools qemu-utils)",
			script, dir, err, out)
	}
	img := filepath.Join(dir, "guest.qcow2")
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("guest image missing after %s: %w", script, err)
	}
	return img, nil
}

// requireQEMU skips only when QEMU is absent and we are not root; as root
// (CI) a missing QEMU or guest image fails the test.
func requireQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Geteuid() != 0 {
			t.Skip("qemu-system-x86_64 not installed and not root")
		}
		t.Fatalf("qemu-system-x86_64 not found; as root it must be installed (apt-get install -y qemu-system-x86 qemu-utils): %v", err)
	}
	if guestErr != nil {
		t.Fatal(guestErr)
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// testLog is a slog sink that writes to t.Log until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// stateDir makes a short state directory (QMP socket paths must stay under
// 108 bytes) removed at the end of the test.
func stateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newTestDriver returns a TCG driver on dir, closed at the end of the test.
func newTestDriver(t testing.TB, dir string, opts ...func(*Config)) *Driver {
	t.Helper()
	lw := &testLog{t: t}
	cfg := Config{
		StateDir:    dir,
		Accel:       AccelTCG,
		StopTimeout: testStopPeriod,
		Logger:      slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return d
}

// qemuPIDs lists the processes whose command line carries -uuid uuid.
func qemuPIDs(uuid string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && isQEMUFor(pid, uuid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killVMs SIGKILLs and reaps every QEMU of the uuids; registered as cleanup
// before the driver is created, so it runs after the driver is closed.
func killVMs(t testing.TB, uuids ...string) {
	t.Cleanup(func() {
		for _, u := range uuids {
			for _, pid := range qemuPIDs(u) {
				_ = unix.Kill(pid, unix.SIGKILL)
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					var ws unix.WaitStatus
					got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
					if got == pid || (errors.Is(err, unix.ECHILD) && !procAlive(pid)) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Logf("cleanup: killed leftover qemu pid %d (vm %s)", pid, u)
			}
		}
	})
}

// recorder collects a driver's events (reading the channel continuously).
type recorder struct {
	mu  sync.Mutex
	evs []VMEvent
}

func record(d *Driver) *recorder {
	r := &recorder{}
	go func() { // ends when Close closes the channel
		for ev := range d.Events() {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

// wait returns the first event of uuid and kind whose detail contains
// substr, polling until timeout.
func (r *recorder) wait(t testing.TB, uuid, kind, substr string, timeout time.Duration) VMEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		for _, ev := range r.evs {
			if ev.UUID == uuid && ev.Kind == kind && strings.Contains(ev.Detail, substr) {
				r.mu.Unlock()
				return ev
			}
		}
		all := fmt.Sprint(r.evs)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %q event with %q for %s within %s; events: %s", kind, substr, uuid, timeout, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitConsole polls the console log until marker appears n times.
func waitConsole(t testing.TB, d *Driver, uuid, marker string, n int) string {
	t.Helper()
	start := time.Now()
	for {
		log, err := d.ConsoleLog(uuid, 0)
		if err != nil {
			t.Fatalf("ConsoleLog = %v", err)
		}
		if strings.Count(log, marker) >= n {
			return log
		}
		if time.Since(start) > bootTimeout {
			t.Fatalf("console of %s: %q seen %d times after %s, want %d; console tail:\n%s",
				uuid, marker, strings.Count(log, marker), bootTimeout, n, tail(log, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type guestOpts struct {
	hostname string
	userData string
	meta     map[string]string
	nics     []NIC
	noConfig bool
}

// guestSpec prepares a VM of the test guest: root overlay and config drive
// in the VM's directory.
func guestSpec(t testing.TB, d *Driver, o guestOpts) Spec {
	t.Helper()
	uuid := newUUID()
	ctx := context.Background()
	root, err := d.CreateRootDisk(ctx, uuid, guestImage, "qcow2", 1)
	if err != nil {
		t.Fatalf("CreateRootDisk = %v", err)
	}
	s := Spec{UUID: uuid, Name: o.hostname, VCPUs: 1, RAMMB: 128,
		RootDisk: Disk{ID: "root", Path: root, Format: "qcow2"}, NICs: o.nics}
	if !o.noConfig {
		s.ConfigDrive = d.Paths(uuid).ConfigDrive()
		err := WriteConfigDrive(s.ConfigDrive, ConfigDrive{
			UUID: uuid, Hostname: o.hostname, Name: o.hostname, AvailabilityZone: "nova",
			Meta: o.meta, UserData: []byte(o.userData),
		})
		if err != nil {
			t.Fatalf("WriteConfigDrive = %v", err)
		}
	}
	return s
}

// helperMain runs in a re-executed test binary: it starts the VM described
// by $PEERSTACK_QEMU_TEST_HELPER (JSON: state dir + spec), prints STARTED
// and waits to be SIGKILLed.
func helperMain() int {
	var req struct {
		StateDir string
		Spec     Spec
	}
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &req); err != nil {
		fmt.Println("ERROR", err)
		return 2
	}
	d, err := New(Config{StateDir: req.StateDir, Accel: AccelTCG, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("ERROR", err)
		return 2
	}
	if err := d.Start(context.Background(), req.Spec); err != nil {
		fmt.Println("ERROR", err)
		return 2
	}
	st, _ := d.Status(context.Background(), req.Spec.UUID)
	fmt.Printf("STARTED %d\n", st.PID)
	select {} // until killed
}

// startInHelper starts s from a child process and returns once QEMU runs;
// kill the returned command to simulate a crashed daemon.
func startInHelper(t testing.TB, dir string, s Spec) (*exec.Cmd, int) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"StateDir": dir, "Spec": s})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(req))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	var pid int
	if _, perr := fmt.Sscanf(line, "STARTED %d", &pid); err != nil || perr != nil {
		t.Fatalf("helper: %q, %v", line, err)
	}
	return cmd, pid
}
