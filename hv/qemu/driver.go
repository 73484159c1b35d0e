// Package qemu runs peerstack's virtual machines as real QEMU processes and
// talks to them over QMP.
//
// It owns: the QEMU command line (BuildArgs, pure and golden-tested), the
// OpenStack config drive (WriteConfigDrive), a narrow context-aware QMP
// client (Monitor, speaking go-qemu's qmp types over its own socket reader;
// see Monitor for why not go-qemu's SocketMonitor), and the process
// lifecycle of each VM (Driver): root overlays, start, stop, reboot,
// delete, disk hot-plug, console logs, events, and reattaching to running
// VMs after a restart.
//
// Every VM lives in StateDir/<uuid>/ (see Paths): spec.json, qmp.sock,
// qemu.pid, console.log, qemu.log and usually root.qcow2 and config.iso.
// QEMU runs as a child in its own session (setsid, not -daemonize), so VMs
// survive the daemon exiting or being killed; a new Driver finds them again
// with Recover (pidfile + /proc/<pid>/cmdline naming the uuid + query-uuid).
//
// It must not: import other peerstack packages, touch networking (taps and
// bridges belong to hv/netdev) or storage layout beyond the VM directory
// (images and volumes belong to hv/storage), or stop VMs when the daemon
// stops (Close leaves them running). Under systemd, run the daemon with
// KillMode=process (or move VMs to their own scope), or stopping the
// service kills the VMs with it.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Driver errors.
var (
	ErrNotFound       = errors.New("vm not found")
	ErrAlreadyRunning = errors.New("vm already running")
	ErrNotRunning     = errors.New("vm not running")
	ErrDetachTimeout  = errors.New("disk detach timed out (guest did not release the device)")
	ErrNoQEMU         = errors.New("qemu not available")
	errDriverClosed   = errors.New("driver closed")
)

// State of a VM.
type State string

// States.
const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateShutoff State = "shutoff"
	StateMissing State = "missing"
)

// VMStatus is what Status, List and Recover report.
type VMStatus struct {
	UUID   string
	State  State
	PID    int    // 0 unless running or paused
	Reason string // why it is not running (last exit), or QEMU's run state when paused
}

// VMEvent kinds.
const (
	EventShutdown      = "shutdown" // QEMU's SHUTDOWN; Detail: its reason (guest-shutdown, host-qmp-quit, ...)
	EventReset         = "reset"
	EventStop          = "stop"
	EventResume        = "resume"
	EventPowerdown     = "powerdown"
	EventExited        = "exited" // the QEMU process is gone; Detail: why
	EventDeviceDeleted = "device_deleted"
	EventBlockIOError  = "block_io_error"
)

// VMEvent is a lifecycle or device event of one VM.
type VMEvent struct {
	UUID   string
	Kind   string
	Detail string
}

// Config configures a Driver.
type Config struct {
	StateDir     string        // per-VM directories live in StateDir/<uuid>
	QEMUBinary   string        // default DefaultBinary() (qemu-system-<host arch>), looked up in PATH
	QEMUImg      string        // default "qemu-img", looked up in PATH when needed
	StopTimeout  time.Duration // ACPI shutdown grace period; default 60s
	ConsoleLimit int64         // console.log cap in bytes; default 1 MiB
	Accel        Accel         // "" detects (DetectAccel); set to force kvm or tcg
	Logger       *slog.Logger  // default slog.Default()
	// DetachRetry spaces the unplug requests of DetachDisk.
	DetachRetry DetachRetry
}

// Default values.
const (
	DefaultStopTimeout  = 60 * time.Second
	DefaultConsoleLimit = 1 << 20
	startTimeout        = 30 * time.Second // QEMU start → QMP answering
	defaultDetachWait   = 2 * time.Minute
	eventChanSize       = 1024
)

// Driver runs the VMs of one host. It is safe for concurrent use; operations
// on one VM are serialised.
type Driver struct {
	cfg       Config
	qemu      string
	accel     Accel
	log       *slog.Logger
	trimEvery time.Duration
	quit      chan struct{} // closed by Close: stops every owned goroutine

	mu     sync.Mutex // guards vms, closed; wg.Add happens under it
	vms    map[string]*vm
	closed bool
	wg     sync.WaitGroup

	emitMu       sync.RWMutex
	events       chan VMEvent
	eventsClosed bool
}

// New checks the QEMU binary, picks the accelerator (logging a warning when
// it falls back to TCG) and prepares StateDir. It does not look at existing
// VMs: call Recover for that.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("qemu: empty StateDir")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("qemu: state dir: %w", err)
	}
	cfg.StateDir = dir
	if cfg.QEMUBinary == "" {
		cfg.QEMUBinary = DefaultBinary()
	}
	if cfg.QEMUImg == "" {
		cfg.QEMUImg = "qemu-img"
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.ConsoleLimit <= 0 {
		cfg.ConsoleLimit = DefaultConsoleLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.DetachRetry = cfg.DetachRetry.withDefaults()
	log := cfg.Logger.With("component", "qemu")
	bin, err := lookPath(cfg.QEMUBinary)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: state dir: %w", err)
	}
	accel := cfg.Accel
	switch accel {
	case AccelKVM, AccelTCG:
	case "":
		var why string
		accel, why = detectAccel(context.Background(), bin)
		if accel == AccelTCG {
			log.Warn("KVM not usable; guests run under TCG emulation (much slower)", "reason", why)
		}
	default:
		return nil, fmt.Errorf("qemu: accelerator %q: want kvm, tcg or empty", accel)
	}
	return &Driver{
		cfg:       cfg,
		qemu:      bin,
		accel:     accel,
		log:       log,
		trimEvery: 2 * time.Second,
		quit:      make(chan struct{}),
		vms:       map[string]*vm{},
		events:    make(chan VMEvent, eventChanSize),
	}, nil
}

// Accel is the accelerator VMs are started with.
func (d *Driver) Accel() Accel { return d.accel }

// Paths returns the files of the VM uuid.
func (d *Driver) Paths(uuid string) Paths {
	return Paths{Dir: filepath.Join(d.cfg.StateDir, strings.ToLower(uuid))}
}

// Events delivers VM events. Read it continuously: when its buffer is full,
// events are dropped (and logged). It is closed by Close.
func (d *Driver) Events() <-chan VMEvent { return d.events }

// Close stops the driver's goroutines and QMP connections. VMs keep running.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.quit)
	vms := make([]*vm, 0, len(d.vms))
	for _, v := range d.vms {
		vms = append(vms, v)
	}
	d.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		p := v.proc
		v.mu.Unlock()
		if p == nil {
			continue
		}
		p.mu.Lock()
		m := p.mon
		p.mu.Unlock()
		if m != nil {
			_ = m.Close()
		}
	}
	d.wg.Wait()
	d.emitMu.Lock()
	d.eventsClosed = true
	close(d.events)
	d.emitMu.Unlock()
	return nil
}

func (d *Driver) checkOpen() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errDriverClosed
	}
	return nil
}

// revert is a stack of undo steps (lxc/incus shared/revert).
type revert []func()

func (r *revert) add(f func()) { *r = append(*r, f) }
func (r *revert) run() {
	for i := len(*r) - 1; i >= 0; i-- {
		(*r)[i]()
	}
}

// Start boots the VM described by s: it validates s, writes spec.json,
// starts QEMU in its own session, waits for QMP and checks query-uuid. A live
// QEMU for the uuid gives ErrAlreadyRunning. On failure everything this call
// created is removed and the process, if any, killed.
func (d *Driver) Start(ctx context.Context, s Spec) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	p := d.Paths(s.UUID)
	if _, err := BuildArgs(s, p, d.accel); err != nil {
		return err
	}
	v := d.vmFor(s.UUID)
	v.op.Lock()
	defer v.op.Unlock()
	return d.start(ctx, v, s)
}

func (d *Driver) start(ctx context.Context, v *vm, s Spec) (err error) {
	s, err = s.normalize()
	if err != nil {
		return err
	}
	args, err := BuildArgs(s, v.paths, d.accel)
	if err != nil {
		return err
	}
	if p := d.liveProc(v); p != nil {
		return fmt.Errorf("%w: vm %s (pid %d)", ErrAlreadyRunning, v.uuid, p.pid)
	}
	args = incomingArgs(v.paths, args) // resume a suspended VM (pause.go)
	for _, disk := range append([]Disk{s.RootDisk}, s.ExtraDisks...) {
		if strings.HasPrefix(disk.Path, "nfs://") {
			continue // QEMU reports NFS errors itself (see qemu.log in the error)
		}
		if _, err := os.Stat(disk.Path); err != nil {
			return fmt.Errorf("vm %s: disk: %w", v.uuid, err)
		}
	}
	if s.Ephemeral != "" {
		if _, err := os.Stat(s.Ephemeral); err != nil {
			return fmt.Errorf("vm %s: ephemeral disk: %w", v.uuid, err)
		}
	}
	if s.ConfigDrive != "" {
		if _, err := os.Stat(s.ConfigDrive); err != nil {
			return fmt.Errorf("vm %s: config drive: %w", v.uuid, err)
		}
	}

	var undo revert
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	if _, statErr := os.Stat(v.paths.Dir); errors.Is(statErr, os.ErrNotExist) {
		if err := os.MkdirAll(v.paths.Dir, 0o700); err != nil {
			return fmt.Errorf("vm %s: %w", v.uuid, err)
		}
		undo.add(func() { _ = os.RemoveAll(v.paths.Dir) })
	}
	for _, f := range []string{v.paths.ConsoleLog(), v.paths.QEMULog()} {
		if _, statErr := os.Stat(f); errors.Is(statErr, os.ErrNotExist) {
			undo.add(func() { _ = os.Remove(f) })
		}
	}
	if old, readErr := os.ReadFile(v.paths.SpecFile()); readErr == nil {
		undo.add(func() { _ = writeFileAtomic(v.paths.SpecFile(), old, 0o600) })
	} else {
		undo.add(func() { _ = os.Remove(v.paths.SpecFile()) })
	}
	if err := writeSpec(v.paths, s); err != nil {
		return fmt.Errorf("vm %s: write spec: %w", v.uuid, err)
	}
	if err := os.MkdirAll(filepath.Dir(v.paths.QMPSocket()), 0o700); err != nil {
		return fmt.Errorf("vm %s: qmp socket dir: %w", v.uuid, err)
	}
	// Not live (checked above): leftovers of a killed QEMU.
	_ = os.Remove(v.paths.QMPSocket())
	_ = os.Remove(v.paths.PIDFile())

	logf, err := os.OpenFile(v.paths.QEMULog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	logStart, _ := logf.Seek(0, 2)
	fmt.Fprintf(logf, "%s peerstack: starting %s %s\n", time.Now().UTC().Format(time.RFC3339), d.qemu, strings.Join(args, " "))
	cmd := exec.Command(d.qemu, args...)
	cmd.Dir = v.paths.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own session: no controlling terminal, no SIGHUP or terminal signals
	// from ours; no Pdeathsig: the VM outlives this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("vm %s: start %s: %w", v.uuid, d.qemu, err)
	}
	pr := newProc(cmd.Process.Pid)
	_ = cmd.Process.Release() // the exit watcher reaps it by pid
	if !d.track(v, pr) {
		_ = syscall.Kill(pr.pid, syscall.SIGKILL)
		_, _ = syscall.Wait4(pr.pid, nil, 0, nil)
		return errDriverClosed
	}
	// Visible to Status and Recover from now on (they would otherwise adopt
	// it a second time through the pidfile).
	v.mu.Lock()
	v.proc = pr
	v.mu.Unlock()
	undo.add(func() {
		pr.mu.Lock()
		pr.quiet = true
		pr.mu.Unlock()
		if err := d.kill(v, pr, 10*time.Second); err != nil {
			d.log.Error("undo start: kill qemu", "uuid", v.uuid, "err", err)
		}
		_ = os.Remove(v.paths.QMPSocket())
		_ = os.Remove(v.paths.PIDFile())
	})

	mon, err := d.waitQMP(ctx, v, pr)
	if err != nil {
		return fmt.Errorf("vm %s: %w%s", v.uuid, err, qemuLogTail(v.paths.QEMULog(), logStart))
	}
	got, err := mon.UUID(ctx)
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	if !strings.EqualFold(got, v.uuid) {
		return fmt.Errorf("vm %s: query-uuid answered %q", v.uuid, got)
	}
	if err := finishIncoming(ctx, v.paths, mon); err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	d.log.Info("vm started", "uuid", v.uuid, "pid", pr.pid, "accel", d.accel)
	return nil
}

// waitQMP waits until the new QEMU answers on its QMP socket.
func (d *Driver) waitQMP(ctx context.Context, v *vm, p *proc) (*Monitor, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(v.paths.QMPSocket()); err == nil {
			attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
			m, err := d.monitor(attempt, v, p)
			cancelAttempt()
			if err == nil {
				return m, nil
			}
			if errors.Is(err, ErrNotRunning) {
				return nil, fmt.Errorf("qemu exited during start: %s", p.reason)
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("qemu exited during start: %s", p.reason)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: qmp not ready: %v", ErrTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// qemuLogTail returns what QEMU wrote to its log since offset, for errors.
func qemuLogTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) <= offset {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(string(b[offset:]), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "peerstack: starting") {
			lines = append(lines, l)
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	if len(lines) == 0 {
		return ""
	}
	return ": qemu: " + strings.Join(lines, "; ")
}

// Stop shuts the VM down: ACPI power button, up to StopTimeout for the guest
// to power off, then QMP quit, then SIGKILL. Stopping a stopped VM is a
// no-op.
func (d *Driver) Stop(ctx context.Context, uuid string) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	p := d.liveProc(v)
	if p == nil {
		return nil
	}
	return d.stop(ctx, v, p, d.cfg.StopTimeout)
}

func (d *Driver) stop(ctx context.Context, v *vm, p *proc, grace time.Duration) error {
	mon, err := d.monitor(ctx, v, p)
	if err == nil {
		err = mon.Powerdown(ctx)
	}
	if err == nil {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("vm %s: stop: %w", v.uuid, ctx.Err())
		case <-d.quit:
			return errDriverClosed
		case <-t.C:
			d.log.Warn("guest ignored ACPI powerdown; quitting qemu", "uuid", v.uuid, "grace", grace)
		}
	} else {
		d.log.Warn("powerdown failed; quitting qemu", "uuid", v.uuid, "err", err)
	}
	return d.forceStop(ctx, v, p)
}

// forceStop ends QEMU now: QMP quit, then SIGKILL.
func (d *Driver) forceStop(ctx context.Context, v *vm, p *proc) error {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	mon, err := d.monitor(qctx, v, p)
	if err == nil {
		err = mon.Quit(qctx)
	}
	cancel()
	if err == nil {
		select {
		case <-p.exited:
			return nil
		case <-d.quit:
			return errDriverClosed
		case <-time.After(5 * time.Second):
		}
	}
	return d.kill(v, p, 10*time.Second)
}

// Reboot reboots the VM. hard resets the machine (system_reset). Soft is
// what Nova's soft reboot amounts to with QEMU, which has no ACPI reboot
// button: ACPI powerdown, wait up to StopTimeout for QEMU to exit (else quit
// and kill, i.e. fall back to hard), and start again from spec.json.
func (d *Driver) Reboot(ctx context.Context, uuid string, hard bool) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	p := d.liveProc(v)
	if p == nil {
		return fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
	}
	if hard {
		mon, err := d.monitor(ctx, v, p)
		if err != nil {
			return err
		}
		return mon.Reset(ctx)
	}
	s, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: reboot: %w", v.uuid, err)
	}
	if err := d.stop(ctx, v, p, d.cfg.StopTimeout); err != nil {
		return err
	}
	return d.start(ctx, v, s)
}

// Delete kills the VM (no graceful shutdown) and removes its directory.
// Deleting an unknown VM is a no-op.
func (d *Driver) Delete(ctx context.Context, uuid string) error {
	if !uuidRE.MatchString(uuid) {
		return fmt.Errorf("%w: %q is not a uuid", ErrNotFound, uuid)
	}
	v := d.vmFor(uuid)
	v.op.Lock()
	defer v.op.Unlock()
	if p := d.liveProc(v); p != nil {
		if err := d.forceStop(ctx, v, p); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(v.paths.Dir); err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	// Sockets too long a path for the VM's directory live in
	// ShortSocketDir under a hashed name: gone with the VM as well.
	for _, sock := range []string{v.paths.QMPSocket(), v.paths.ConsoleSocket()} {
		if filepath.Dir(sock) != v.paths.Dir {
			if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("vm %s: %w", v.uuid, err)
			}
		}
	}
	d.mu.Lock()
	delete(d.vms, v.uuid)
	d.mu.Unlock()
	return nil
}

// Status reports the state of one VM; a VM without a directory is
// StateMissing (not an error). It never waits behind a running Stop.
func (d *Driver) Status(ctx context.Context, uuid string) (VMStatus, error) {
	v, err := d.lookup(uuid)
	if errors.Is(err, ErrNotFound) {
		return VMStatus{UUID: strings.ToLower(uuid), State: StateMissing}, nil
	}
	if err != nil {
		return VMStatus{}, err
	}
	return d.status(ctx, v), nil
}

func (d *Driver) status(ctx context.Context, v *vm) VMStatus {
	p := d.liveProc(v)
	if p == nil {
		v.mu.Lock()
		defer v.mu.Unlock()
		if _, err := os.Stat(v.paths.Dir); err != nil {
			return VMStatus{UUID: v.uuid, State: StateMissing}
		}
		return VMStatus{UUID: v.uuid, State: StateShutoff, Reason: v.lastExit}
	}
	st := VMStatus{UUID: v.uuid, State: StateRunning, PID: p.pid}
	mon, err := d.monitor(ctx, v, p)
	if err == nil {
		var running bool
		var status string
		if running, status, err = mon.Status(ctx); err == nil && !running {
			st.State, st.Reason = StatePaused, status
		}
	}
	if err != nil {
		if p.isExited() {
			return VMStatus{UUID: v.uuid, State: StateShutoff, Reason: p.reason}
		}
		st.Reason = "qmp: " + err.Error()
	}
	return st
}

// List reports every VM that has a directory in StateDir.
func (d *Driver) List(ctx context.Context) ([]VMStatus, error) {
	uuids, err := d.scan()
	if err != nil {
		return nil, err
	}
	out := make([]VMStatus, 0, len(uuids))
	for _, u := range uuids {
		st, err := d.Status(ctx, u)
		if err != nil {
			return nil, err
		}
		if st.State != StateMissing {
			out = append(out, st)
		}
	}
	return out, nil
}

// scan lists the VM directories (named by a uuid) in StateDir.
func (d *Driver) scan() ([]string, error) {
	ents, err := os.ReadDir(d.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("qemu: state dir: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && uuidRE.MatchString(e.Name()) {
			out = append(out, strings.ToLower(e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Recover reattaches to the VMs of StateDir after a daemon start: each
// directory whose pidfile names a live process whose command line carries
// the uuid is adopted (exit watcher, console trimming, QMP with query-uuid
// checked, event reader); the others are reported shut off. Call it before
// changing anything on the host.
func (d *Driver) Recover(ctx context.Context) ([]VMStatus, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	uuids, err := d.scan()
	if err != nil {
		return nil, err
	}
	out := make([]VMStatus, 0, len(uuids))
	for _, u := range uuids {
		v := d.vmFor(u)
		p := d.liveProc(v)
		if p == nil {
			out = append(out, d.status(ctx, v))
			continue
		}
		st := VMStatus{UUID: u, State: StateRunning, PID: p.pid}
		mon, err := d.monitor(ctx, v, p)
		var got string
		if err == nil {
			got, err = mon.UUID(ctx)
		}
		switch {
		case err != nil:
			st.Reason = "qmp: " + err.Error()
			d.log.Error("recover: qmp unavailable", "uuid", u, "pid", p.pid, "err", err)
		case !strings.EqualFold(got, u):
			st.Reason = fmt.Sprintf("qmp socket answers for uuid %q", got)
			d.log.Error("recover: uuid mismatch", "uuid", u, "qmp_uuid", got)
		default:
			st = d.status(ctx, v)
		}
		out = append(out, st)
	}
	return out, nil
}
