package qemu

// Volume throughput benchmark: guest-visible sequential write and
// read throughput of a qcow2 volume on a real NFS export, against qemu-io
// (and qemu-img bench with the guest's request shape) on the same export in
// the same run.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/hv/storage/nfstest"
)

const (
	volBenchBytes   = 256 << 20       // bytes written and read per phase
	volBenchPhase   = 3 * time.Minute // bound of each qemu-io run and guest dd
	volBenchVolSize = 1               // GiB: VolumeStore.Create's unit
	volBenchSerial  = "benchvol"      // the volume's disk id, hence its virtio serial
	volBenchSectors = volBenchVolSize << 30 / 512
)

// volBenchUserData finds the volume by its virtio serial (else by its
// size), then runs the guest image's guestio (scripts/guestio): 256 MiB of
// sequential O_DIRECT 1 MiB writes from one buffer filled once, ending
// with fdatasync, then the same reads — the request shape of the
// qemu-img bench reference, and like qemu-io a buffer filled once — and
// prints VOLBENCH-WRITE / VOLBENCH-READ <guestio's line>, or VOLBENCH-FAIL.
// For context it also times busybox dd if=/dev/zero of=/dev/null (the
// guest CPU's cost of producing the data that dd-based tests pay on every
// block) as VOLBENCH-ZERO <ns0> <ns1> from the kernel's monotonic clock.
var volBenchUserData = fmt.Sprintf(`#!/bin/sh
say() { echo "$*" > /dev/console; }
up() { sed -n '/^now at/{s/^now at \([0-9]*\) nsecs.*/\1/p;q}' /proc/timer_list; }
dev=""
for d in /sys/block/vd*; do
  [ "$(cat $d/serial 2>/dev/null)" = %[1]s ] && dev=/dev/${d##*/}
done
if [ -z "$dev" ]; then
  for d in /sys/block/vd*; do [ "$(cat $d/size)" = %[2]d ] && dev=/dev/${d##*/}; done
fi
[ -n "$dev" ] || { say "VOLBENCH-FAIL no volume disk: $(ls /sys/block)"; exit 1; }
say "VOLBENCH-START $dev"
t=$(up)
dd if=/dev/zero of=/dev/null bs=1M count=256 2>/dev/null
say "VOLBENCH-ZERO $t $(up)"
w=$(guestio write $dev %[3]d 1048576 2>&1) || { say "VOLBENCH-FAIL write: $w"; exit 1; }
say "VOLBENCH-WRITE $w"
r=$(guestio read $dev %[3]d 1048576 2>&1) || { say "VOLBENCH-FAIL read: $r"; exit 1; }
say "VOLBENCH-READ $r"
`, volBenchSerial, volBenchSectors, volBenchBytes)

// BenchmarkVolumeThroughput measures sequential 256 MiB write then read of
// fresh qcow2 volumes on a real ganesha export (nfstest), three ways per
// iteration, each on its own volume, in alternating order:
//
//   - qemu-io, one 256 MiB request (QEMU's nfs driver through libnfs,
//     inside the server's namespace);
//   - a guest of the Driver (its QEMU run in the namespace by a wrapper
//     binary) with the volume as an extra virtio-blk disk, running the
//     guest image's guestio: 1 MiB O_DIRECT requests, one in flight, from
//     a buffer filled once (as qemu-io's is);
//   - qemu-img bench with the guest's request shape (1 MiB, one in flight),
//     as a reference that has no guest.
//
// Every write phase ends with one flush, so all three count data on the
// server's storage: qemu-io's default cache is writethrough (one request,
// one flush), guestio ends with fdatasync, qemu-img bench
// --flush-interval. The guest also times busybox dd /dev/zero → /dev/null
// (guest-dd-zero-null): what a dd-based guest test would pay on top, per
// block, to produce its data — under TCG about as long as the write. It reports the median MiB/s of each over the
// iterations, the guest/qemu-io ratios of the medians (the target:
// ≥ 0.8) and the guest/qemu-img-bench ratios (-qd1). The guest runs under
// whatever accelerator the host offers (KVM or TCG; see the log). Use
// -benchtime Nx for N iterations: single 256 MiB runs take well under a
// second and are noisy on a loaded host.
func BenchmarkVolumeThroughput(b *testing.B) {
	requireQEMU(b)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		b.Fatalf("qemu-io not found (apt-get install -y qemu-utils): %v", err)
	}
	ctx := context.Background()
	srv := nfstest.Start(b)
	store, err := storage.NewVolumeStore(srv.URL+"/volbench", storage.VolumeOptions{
		CommandPrefix: srv.Prefix(), Dial: srv.Dial, Timeout: volBenchPhase})
	if err != nil {
		b.Fatal(err)
	}
	// QEMU must reach the export, which lives in srv's namespace: the
	// Driver runs it through a wrapper that execs it there (same PID).
	wrapper := filepath.Join(b.TempDir(), "qemu-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec %s qemu-system-x86_64 \"$@\"\n", strings.Join(srv.Prefix(), " "))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	kill := killLater(b) // before the driver: runs after it is closed, before ganesha stops
	d := newTestDriver(b, stateDir(b), func(c *Config) {
		c.QEMUBinary = wrapper
		c.Accel = "" // detect: KVM when usable
		c.StopTimeout = 10 * time.Second
		c.Logger = slog.New(slog.DiscardHandler) // keeps the benchmark's log to its figures
	})
	b.Logf("guest accelerator: %s", d.Accel())

	var io, qd1, vm []phaseTimes
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first, so drift in the host's load (or the
		// export filling up) does not always favour the same side.
		var r, q, g phaseTimes
		runIO := func() {
			if r, err = qemuIORun(ctx, b, srv, store, fmt.Sprintf("io-%d", i)); err != nil {
				b.Fatalf("qemu-io: %v", err)
			}
		}
		runQD1 := func() {
			if q, err = qemuImgBenchRun(ctx, b, srv, store, fmt.Sprintf("qd1-%d", i)); err != nil {
				b.Fatalf("qemu-img bench: %v", err)
			}
		}
		runVM := func() {
			if g, err = guestRun(ctx, b, d, store, kill, fmt.Sprintf("vm-%d", i)); err != nil {
				b.Fatalf("guest: %v", err)
			}
		}
		if i%2 == 0 {
			runIO()
			runQD1()
			runVM()
		} else {
			runVM()
			runQD1()
			runIO()
		}
		io, qd1, vm = append(io, r), append(qd1, q), append(vm, g)
		b.Logf("iteration %d: qemu-io write %.1f read %.1f MiB/s; qemu-img bench QD1 write %.1f read %.1f MiB/s; guest write %.1f read %.1f MiB/s",
			i, mibps(r.write), mibps(r.read), mibps(q.write), mibps(q.read), mibps(g.write), mibps(g.read))
	}
	b.StopTimer()
	// Medians: one slow phase on a loaded host should not decide the figure.
	ioW, ioR := medianMiBps(io, func(p phaseTimes) time.Duration { return p.write }),
		medianMiBps(io, func(p phaseTimes) time.Duration { return p.read })
	vmW, vmR := medianMiBps(vm, func(p phaseTimes) time.Duration { return p.write }),
		medianMiBps(vm, func(p phaseTimes) time.Duration { return p.read })
	b.ReportMetric(ioW, "qemu-io-write-MiB/s")
	b.ReportMetric(ioR, "qemu-io-read-MiB/s")
	b.ReportMetric(vmW, "guest-write-MiB/s")
	b.ReportMetric(vmR, "guest-read-MiB/s")
	b.ReportMetric(vmW/ioW, "write-ratio")
	b.ReportMetric(vmR/ioR, "read-ratio")
	// The same request shape as the guest's dd (1 MiB, one at a time)
	// without a guest: separates virtio/guest overhead from queue depth.
	qW, qR := medianMiBps(qd1, func(p phaseTimes) time.Duration { return p.write }),
		medianMiBps(qd1, func(p phaseTimes) time.Duration { return p.read })
	b.ReportMetric(qW, "qd1-write-MiB/s")
	b.ReportMetric(qR, "qd1-read-MiB/s")
	b.ReportMetric(vmW/qW, "write-ratio-qd1")
	b.ReportMetric(vmR/qR, "read-ratio-qd1")
	// dd's own CPU cost in the guest (no I/O); under TCG it is a large part
	// of the guest's write time.
	b.ReportMetric(medianMiBps(vm, func(p phaseTimes) time.Duration { return p.zero }), "guest-dd-zero-null-MiB/s")
}

// phaseTimes are the durations of one 256 MiB write and read; for the
// guest also of dd /dev/zero → /dev/null, its CPU cost without I/O.
type phaseTimes struct{ write, read, zero time.Duration }

// medianMiBps is the median throughput of the phase pick selects.
func medianMiBps(runs []phaseTimes, pick func(phaseTimes) time.Duration) float64 {
	ds := make([]time.Duration, len(runs))
	for i, r := range runs {
		ds[i] = pick(r)
	}
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return mibps(ds[n/2])
	}
	return (mibps(ds[n/2-1]) + mibps(ds[n/2])) / 2
}

func mibps(d time.Duration) float64 {
	return float64(volBenchBytes) / (1 << 20) / d.Seconds()
}

// killLater registers (now) a cleanup that SIGKILLs and reaps the QEMU of
// every uuid passed to the returned function by then.
func killLater(b *testing.B) func(uuid string) {
	var mu sync.Mutex
	var uuids []string
	b.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range uuids {
			for _, pid := range qemuPIDs(u) {
				_ = unix.Kill(pid, unix.SIGKILL)
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					got, err := unix.Wait4(pid, nil, unix.WNOHANG, nil)
					if got == pid || (errors.Is(err, unix.ECHILD) && !procAlive(pid)) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				b.Logf("cleanup: killed leftover qemu pid %d (vm %s)", pid, u)
			}
		}
	})
	return func(uuid string) {
		mu.Lock()
		uuids = append(uuids, uuid)
		mu.Unlock()
	}
}

// newBenchVolume creates a fresh qcow2 volume on the export and returns its
// nfs:// URL and a function that deletes it.
func newBenchVolume(ctx context.Context, b *testing.B, store *storage.VolumeStore, name string) (string, func()) {
	b.Helper()
	p, err := store.Create(ctx, name, volBenchVolSize, storage.FormatQCOW2, "")
	if err != nil {
		b.Fatalf("create volume %s: %v", name, err)
	}
	return p, func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := store.Delete(dctx, p); err != nil {
			b.Logf("delete volume %s: %v", p, err)
		}
	}
}

// qemuIORun writes then reads 256 MiB of a fresh volume with qemu-io
// inside the server's namespace and returns the times qemu-io reports for
// the two requests.
func qemuIORun(ctx context.Context, b *testing.B, srv *nfstest.Server, store *storage.VolumeStore, name string) (phaseTimes, error) {
	vol, del := newBenchVolume(ctx, b, store, name)
	defer del()
	var pt phaseTimes
	for _, ph := range []struct {
		cmd string
		out *time.Duration
	}{
		{fmt.Sprintf("write -P 0xab 0 %d", volBenchBytes), &pt.write},
		{fmt.Sprintf("read 0 %d", volBenchBytes), &pt.read},
	} {
		pctx, cancel := context.WithTimeout(ctx, volBenchPhase)
		args := append(srv.Prefix()[1:], "qemu-io", "-f", "qcow2", "-c", ph.cmd, vol)
		out, err := exec.CommandContext(pctx, srv.Prefix()[0], args...).CombinedOutput()
		cancel()
		if err != nil {
			return pt, fmt.Errorf("qemu-io -c %q %s: %v: %s", ph.cmd, vol, err, strings.TrimSpace(string(out)))
		}
		d, err := parseQEMUIO(string(out))
		if err != nil {
			return pt, fmt.Errorf("qemu-io -c %q: %w", ph.cmd, err)
		}
		b.Logf("qemu-io -c %q: %s", ph.cmd, strings.Join(strings.Fields(string(out)), " "))
		*ph.out = d
	}
	return pt, nil
}

var (
	// qemu-io's summary: "256 MiB, 1 ops; 00.57 sec (446.462 MiB/sec and
	// 1.7440 ops/sec)", or with a time like 0:00:01.23 and no "sec".
	qemuIOTimeRE = regexp.MustCompile(`ops; ([0-9:.]+)(?: sec)? \(`)
	// Its rate has more digits than its time (10 ms steps): preferred.
	qemuIORateRE = regexp.MustCompile(`\(([0-9.]+) (bytes|KiB|MiB|GiB|TiB)/sec`)
)

// parseQEMUIO returns the time of qemu-io's request of volBenchBytes: from
// the rate it printed, else from the time.
func parseQEMUIO(out string) (time.Duration, error) {
	if m := qemuIORateRE.FindStringSubmatch(out); m != nil {
		unit := map[string]float64{"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m[2]]
		if r, err := strconv.ParseFloat(m[1], 64); err == nil && r > 0 {
			return time.Duration(float64(volBenchBytes) / (r * unit) * float64(time.Second)), nil
		}
	}
	m := qemuIOTimeRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no timing in output %q", out)
	}
	var secs float64
	for _, part := range strings.Split(m[1], ":") { // [[h:]m:]s.ss
		v, err := strconv.ParseFloat(part, 64)
		if err != nil {
			return 0, fmt.Errorf("timing %q: %w", m[1], err)
		}
		secs = secs*60 + v
	}
	if secs <= 0 {
		return 0, fmt.Errorf("timing %q: not positive", m[1])
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// qemuImgBenchRun writes then reads 256 MiB of a fresh volume with
// qemu-img bench in 1 MiB requests, one in flight, with a writeback cache
// and one flush after the last write (the guest's shape: dd O_DIRECT +
// fsync on a virtio-blk disk with a write cache), inside the server's
// namespace, and returns the run times it reports.
func qemuImgBenchRun(ctx context.Context, b *testing.B, srv *nfstest.Server, store *storage.VolumeStore, name string) (phaseTimes, error) {
	vol, del := newBenchVolume(ctx, b, store, name)
	defer del()
	var pt phaseTimes
	count := strconv.Itoa(volBenchBytes >> 20)
	for _, ph := range []struct {
		args []string
		out  *time.Duration
	}{
		{[]string{"-w", "--pattern=0xab", "--flush-interval=" + count}, &pt.write},
		{nil, &pt.read},
	} {
		pctx, cancel := context.WithTimeout(ctx, volBenchPhase)
		args := append(srv.Prefix()[1:], "qemu-img", "bench", "-f", "qcow2", "-t", "writeback", "-s", "1M", "-c", count, "-d", "1")
		args = append(append(args, ph.args...), vol)
		out, err := exec.CommandContext(pctx, srv.Prefix()[0], args...).CombinedOutput()
		cancel()
		if err != nil {
			return pt, fmt.Errorf("qemu-img bench %v %s: %v: %s", ph.args, vol, err, strings.TrimSpace(string(out)))
		}
		m := imgBenchRE.FindStringSubmatch(string(out))
		secs := 0.0
		if m != nil {
			secs, _ = strconv.ParseFloat(m[1], 64)
		}
		if secs <= 0 {
			return pt, fmt.Errorf("qemu-img bench %v: no run time in %q", ph.args, out)
		}
		*ph.out = time.Duration(secs * float64(time.Second))
	}
	return pt, nil
}

// imgBenchRE matches qemu-img bench's "Run completed in 0.070 seconds."
var imgBenchRE = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// guestRun boots a guest with a fresh volume as an extra disk and returns
// the dd times its user data printed. The VM is deleted before it returns.
func guestRun(ctx context.Context, b *testing.B, d *Driver, store *storage.VolumeStore, kill func(string), name string) (phaseTimes, error) {
	vol, del := newBenchVolume(ctx, b, store, name)
	defer del()
	s := guestSpec(b, d, guestOpts{hostname: "volbench", userData: volBenchUserData})
	s.ExtraDisks = []Disk{{ID: volBenchSerial, Path: vol, Format: "qcow2"}}
	kill(s.UUID)
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Delete(dctx, s.UUID); err != nil {
			b.Logf("delete vm %s: %v", s.UUID, err)
		}
	}()
	if err := d.Start(ctx, s); err != nil {
		return phaseTimes{}, fmt.Errorf("start: %w", err)
	}
	var pt phaseTimes
	for _, ph := range []struct {
		marker  string
		timeout time.Duration
		out     *time.Duration
	}{
		{"VOLBENCH-START", bootTimeout, nil},
		{"VOLBENCH-ZERO", volBenchPhase, &pt.zero},
		{"VOLBENCH-WRITE", volBenchPhase, &pt.write},
		{"VOLBENCH-READ", volBenchPhase, &pt.read},
	} {
		line, err := waitVolBenchMarker(d, s.UUID, ph.marker, ph.timeout)
		if err != nil {
			return pt, err
		}
		b.Logf("guest: %s", line)
		if ph.out == nil {
			continue
		}
		if *ph.out, err = parseGuestTimes(line); err != nil {
			return pt, err
		}
	}
	return pt, nil
}

// waitVolBenchMarker polls the console of uuid until a line starting with
// marker appears (and returns it), VOLBENCH-FAIL appears, or timeout.
func waitVolBenchMarker(d *Driver, uuid, marker string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		log, err := d.ConsoleLog(uuid, 0)
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(log, "\n") {
			l = strings.TrimSpace(l)
			switch {
			case strings.HasPrefix(l, marker+" "):
				return l, nil
			case strings.HasPrefix(l, "VOLBENCH-FAIL"):
				return "", fmt.Errorf("guest: %s", l)
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %s on the console of %s within %s; console tail:\n%s", marker, uuid, timeout, tail(log, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	// "VOLBENCH-ZERO <ns0> <ns1>": the guest's monotonic clock around dd.
	guestTimesRE = regexp.MustCompile(`^VOLBENCH-[A-Z]+ ([0-9]+) ([0-9]+)$`)
	// "VOLBENCH-WRITE guestio write /dev/vdc 268435456 1048576 0.312000000"
	guestioRE = regexp.MustCompile(`^VOLBENCH-[A-Z]+ guestio (?:write|read) \S+ ([0-9]+) [0-9]+ ([0-9.]+)$`)
)

// parseGuestTimes returns the elapsed time of a guest timing line: the
// seconds guestio measured for volBenchBytes, or the delta of two clock
// readings.
func parseGuestTimes(line string) (time.Duration, error) {
	if m := guestioRE.FindStringSubmatch(line); m != nil {
		n, err0 := strconv.ParseInt(m[1], 10, 64)
		s, err1 := strconv.ParseFloat(m[2], 64)
		if err := errors.Join(err0, err1); err != nil || s <= 0 || n != volBenchBytes {
			return 0, fmt.Errorf("guest timing line %q: want %d bytes in a positive time (%v)", line, volBenchBytes, err)
		}
		return time.Duration(s * float64(time.Second)), nil
	}
	m := guestTimesRE.FindStringSubmatch(line)
	if m == nil {
		return 0, fmt.Errorf("guest timing line %q: no time", line)
	}
	t0, err0 := strconv.ParseInt(m[1], 10, 64)
	t1, err1 := strconv.ParseInt(m[2], 10, 64)
	if err := errors.Join(err0, err1); err != nil || t1 <= t0 {
		return 0, fmt.Errorf("guest timing line %q: bad clock readings (%v)", line, err)
	}
	return time.Duration(t1 - t0), nil
}

func TestParseVolBenchTimes(t *testing.T) {
	io := []struct {
		out     string
		want    time.Duration
		wantErr bool
	}{
		{"wrote 268435456/268435456 bytes at offset 0\n256 MiB, 1 ops; 00.48 sec (512.000 MiB/sec and 2.0000 ops/sec)\n", 500 * time.Millisecond, false},
		{"read 268435456/268435456 bytes at offset 0\n256 MiB, 1 ops; 00.22 sec (1.000 GiB/sec and 4.0000 ops/sec)\n", 250 * time.Millisecond, false},
		{"read 268435456/268435456 bytes at offset 0\n256 MiB, 1 ops; 0:01:02.50 (inf/sec)\n", 62500 * time.Millisecond, false},
		{"qemu-io: can't open device\n", 0, true},
		{"256 MiB, 1 ops; 00.00 sec (inf MiB/sec)", 0, true},
	}
	for _, c := range io {
		got, err := parseQEMUIO(c.out)
		if (err != nil) != c.wantErr || got.Round(time.Millisecond) != c.want {
			t.Errorf("parseQEMUIO(%q) = %v, %v; want %v (error %v)", c.out, got, err, c.want, c.wantErr)
		}
	}
	guest := []struct {
		line    string
		want    time.Duration
		wantErr bool
	}{
		{"VOLBENCH-ZERO 2600000000 3150000123", 550000123, false},
		{"VOLBENCH-ZERO 5 5", 0, true},
		{"VOLBENCH-WRITE guestio write /dev/vdc 268435456 1048576 0.312500000", 312500 * time.Microsecond, false},
		{"VOLBENCH-READ guestio read /dev/vdc 268435456 1048576 1.5", 1500 * time.Millisecond, false},
		{"VOLBENCH-READ guestio read /dev/vdc 1048576 1048576 1.5", 0, true},
		{"VOLBENCH-READ guestio read /dev/vdc 268435456 1048576 0", 0, true},
		{"VOLBENCH-READ x", 0, true},
	}
	for _, c := range guest {
		got, err := parseGuestTimes(c.line)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("parseGuestTimes(%q) = %v, %v; want %v (error %v)", c.line, got, err, c.want, c.wantErr)
		}
	}
}
