package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DetectAccel returns AccelKVM iff /dev/kvm opens read-write, answers the KVM
// API version ioctl, and a throw-away qemu-system-x86_64 (from PATH) actually
// runs guest code under KVM: its firmware prints on the debug console;
// otherwise AccelTCG.
//
// The probe exists because a /dev/kvm that opens is not enough: on nested
// hosts (seen on the test machines) QEMU aborts on the first vCPU run with
// "failed to set MSR 0x10a". That abort comes from a vCPU thread some time
// after start, so a probe that only waits a fixed time can pass on a loaded
// host and the first real guest then aborts; waiting for the firmware's
// first words cannot. The probe costs well under a second when KVM works.
func DetectAccel() Accel {
	probe := "qemu-system-x86_64"
	if HostArch() != ArchX86 {
		probe = "" // the firmware probe is x86's; elsewhere the KVM ioctl decides
	}
	a, _ := detectAccel(context.Background(), probe)
	return a
}

// kvmProbeTimeout bounds the wait for the probe guest's firmware output.
const kvmProbeTimeout = 20 * time.Second

// detectAccel is DetectAccel with the QEMU binary given; the reason says why
// KVM was not chosen.
func detectAccel(ctx context.Context, qemuBin string) (Accel, string) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return AccelTCG, "/dev/kvm: " + err.Error()
	}
	const kvmGetAPIVersion = 0xAE00
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	unix.Close(fd)
	if err != nil || v != 12 {
		return AccelTCG, fmt.Sprintf("/dev/kvm: KVM_GET_API_VERSION = %d, %v", v, err)
	}
	if qemuBin == "" {
		return AccelKVM, ""
	}
	bin, err := exec.LookPath(qemuBin)
	if err != nil {
		return AccelTCG, "kvm probe: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	// SeaBIOS writes its banner to the ISA debug console (port 0x402): the
	// first byte there is guest code that ran on a KVM vCPU.
	cmd := exec.Command(bin, "-accel", "kvm", "-cpu", "host", "-machine", "pc",
		"-m", "16", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-chardev", "stdio,id=probe,signal=off", "-device", "isa-debugcon,iobase=0x402,chardev=probe")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return AccelTCG, "kvm probe: " + err.Error()
	}
	if err := cmd.Start(); err != nil {
		return AccelTCG, "kvm probe: " + err.Error()
	}
	ran := make(chan bool, 1)
	go func() {
		n, _ := out.Read(make([]byte, 1))
		ran <- n > 0
	}()
	var ok bool
	select {
	case ok = <-ran:
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	werr := cmd.Wait() // closes the pipe, so the reader is done too
	switch {
	case ok:
		return AccelKVM, ""
	case ctx.Err() != nil:
		return AccelTCG, fmt.Sprintf("kvm probe: no guest output within %v (%v)", kvmProbeTimeout, ctx.Err())
	default:
		return AccelTCG, fmt.Sprintf("kvm probe: qemu exited (%v): %s", werr, lastLine(stderr.String()))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// readPID reads a pidfile.
func readPID(pidfile string) (int, error) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pidfile %s: bad content %q", pidfile, b)
	}
	return pid, nil
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces and parens.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// isQEMUFor reports whether pid is a live process whose command line carries
// "-uuid <uuid>", i.e. the QEMU of that VM and not a recycled pid.
func isQEMUFor(pid int, uuid string) bool {
	if pid <= 1 || !procAlive(pid) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-uuid" && strings.EqualFold(args[i+1], uuid) {
			return true
		}
	}
	return false
}

// findQEMU returns the pid of the live QEMU of uuid according to its
// pidfile, or 0.
func findQEMU(p Paths, uuid string) int {
	pid, err := readPID(p.PIDFile())
	if err != nil || !isQEMUFor(pid, uuid) {
		return 0
	}
	return pid
}

// exitInfo describes how a QEMU process ended.
type exitInfo struct {
	known  bool // the status was collected (the process was our child)
	status unix.WaitStatus
}

func (e exitInfo) String() string {
	switch {
	case !e.known:
		return "exited (status unknown: not our child)"
	case e.status.Signaled():
		return fmt.Sprintf("killed by signal %d (%s)", int(e.status.Signal()), unix.SignalName(e.status.Signal()))
	case e.status.Exited():
		return fmt.Sprintf("exited with status %d", e.status.ExitStatus())
	}
	return "exited"
}

// errWatchCancelled is returned by waitExit when cancel fired first.
var errWatchCancelled = errors.New("exit watch cancelled")

// waitExit blocks until pid has exited or cancel is closed. It reaps the
// process when it is a child of this process (started by us, or reparented
// to us as a subreaper) and returns its status; for other processes the
// status is unknown. It uses a pidfd, so it works for processes that are not
// our children, and falls back to polling /proc when pidfds are missing.
func waitExit(pid int, cancel <-chan struct{}) (exitInfo, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return reap(pid), nil
	}
	if err != nil {
		return pollExit(pid, cancel)
	}
	defer unix.Close(pidfd)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return pollExit(pid, cancel)
	}
	defer unix.Close(efd)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // wakes the poll below when cancelled; ends with waitExit
		select {
		case <-cancel:
			_, _ = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		case <-stop:
		}
	}()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return pollExit(pid, cancel)
		}
		if fds[0].Revents != 0 {
			return reap(pid), nil
		}
		if fds[1].Revents != 0 {
			return exitInfo{}, errWatchCancelled
		}
	}
}

func pollExit(pid int, cancel <-chan struct{}) (exitInfo, error) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for procAlive(pid) {
		select {
		case <-cancel:
			return exitInfo{}, errWatchCancelled
		case <-t.C:
		}
	}
	return reap(pid), nil
}

// reap collects the exit status of pid if it is our (zombie) child.
func reap(pid int) exitInfo {
	var ws unix.WaitStatus
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got != pid {
			return exitInfo{}
		}
		return exitInfo{known: true, status: ws}
	}
}
