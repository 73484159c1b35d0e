package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// vm is what the driver knows about one VM directory.
type vm struct {
	uuid  string
	paths Paths
	op    sync.Mutex // serialises lifecycle operations (Start, Stop, Reboot, Delete, disks)

	mu       sync.Mutex            // guards the fields below
	proc     *proc                 // the live QEMU, nil when none is known
	lastExit string                // why the last QEMU ended
	detaches map[string]*detachJob // disk id → DetachDisk in progress
	console  *consoleHub           // the shared connection to the serial console socket, nil when unused
}

// proc is one QEMU process of a vm, from start (or adoption) to exit.
type proc struct {
	pid    int
	exited chan struct{} // closed once the process is gone and reason is set
	reason string        // valid after exited is closed

	dialMu sync.Mutex // one QMP dial at a time (QEMU serves one client)

	mu             sync.Mutex // guards the fields below
	mon            *Monitor
	loopDone       chan struct{} // closed when the event loop of mon has ended
	shutdownReason string        // from the last SHUTDOWN event
	quiet          bool          // a failed Start is undoing: no "exited" event
	waiters        map[string][]chan struct{}
}

func newProc(pid int) *proc {
	return &proc{pid: pid, exited: make(chan struct{}), waiters: map[string][]chan struct{}{}}
}

func (p *proc) isExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitDeleted registers interest in DEVICE_DELETED for a device id. The
// returned channel is closed when the event arrives; call cancel when done.
func (p *proc) waitDeleted(id string) (ch chan struct{}, cancel func()) {
	ch = make(chan struct{})
	p.mu.Lock()
	p.waiters[id] = append(p.waiters[id], ch)
	p.mu.Unlock()
	return ch, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		ws := p.waiters[id]
		for i, c := range ws {
			if c == ch {
				p.waiters[id] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(p.waiters[id]) == 0 {
			delete(p.waiters, id)
		}
	}
}

// vmFor returns the tracked vm of uuid, creating the entry.
func (d *Driver) vmFor(uuid string) *vm {
	uuid = strings.ToLower(uuid)
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vms[uuid]
	if v == nil {
		v = &vm{uuid: uuid, paths: d.Paths(uuid)}
		d.vms[uuid] = v
	}
	return v
}

// lookup returns the vm of uuid if it is tracked or has a directory.
func (d *Driver) lookup(uuid string) (*vm, error) {
	if !uuidRE.MatchString(uuid) {
		return nil, fmt.Errorf("%w: %q is not a uuid", ErrNotFound, uuid)
	}
	uuid = strings.ToLower(uuid)
	d.mu.Lock()
	v := d.vms[uuid]
	d.mu.Unlock()
	if v != nil {
		return v, nil
	}
	if st, err := os.Stat(d.Paths(uuid).Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: vm %s", ErrNotFound, uuid)
	}
	return d.vmFor(uuid), nil
}

// liveProc returns the QEMU of v: the tracked one, or a live one found
// through the pidfile, which is then adopted (watched and trimmed). nil when
// the VM is not running.
func (d *Driver) liveProc(v *vm) *proc {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc != nil && !v.proc.isExited() {
		return v.proc
	}
	pid := findQEMU(v.paths, v.uuid)
	if pid == 0 {
		return nil
	}
	p := newProc(pid)
	if !d.track(v, p) {
		return nil
	}
	v.proc = p
	d.log.Info("adopted running qemu", "uuid", v.uuid, "pid", pid)
	return p
}

// track starts the goroutines owned for a process: the exit watcher and the
// console trimmer. It reports false when the driver is closed.
func (d *Driver) track(v *vm, p *proc) bool {
	if !d.goOwned(func() { d.watch(v, p) }) {
		return false
	}
	d.goOwned(func() { d.trimLoop(v, p) })
	return true
}

// goOwned runs fn in a goroutine owned by the driver (Close waits for it);
// false when the driver is closed.
func (d *Driver) goOwned(fn func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn()
	}()
	return true
}

// watch waits for p to exit (or the driver to close), then records why and
// emits an "exited" event.
func (d *Driver) watch(v *vm, p *proc) {
	info, err := waitExit(p.pid, d.quit)
	if err != nil {
		return // driver closed; the VM keeps running
	}
	// Let the event loop deliver what QEMU said last (SHUTDOWN carries the
	// reason); the socket is closed, so this is quick.
	p.mu.Lock()
	loopDone := p.loopDone
	p.mu.Unlock()
	if loopDone != nil {
		select {
		case <-loopDone:
		case <-time.After(2 * time.Second):
		}
	}
	p.mu.Lock()
	reason := exitReason(p.shutdownReason, info)
	mon, quiet := p.mon, p.quiet
	p.mu.Unlock()
	if mon != nil {
		_ = mon.Close()
	}
	// QEMU removes these on a clean exit, not when killed. Done before
	// exited is closed, so a Start waiting for this exit cannot race it.
	if pid, err := readPID(v.paths.PIDFile()); err == nil && pid == p.pid {
		_ = os.Remove(v.paths.PIDFile())
	}
	if findQEMU(v.paths, v.uuid) == 0 {
		_ = os.Remove(v.paths.QMPSocket())
	}
	v.mu.Lock()
	if v.proc == p {
		v.proc = nil
	}
	v.lastExit = reason
	v.mu.Unlock()
	p.reason = reason
	close(p.exited)
	d.log.Info("qemu exited", "uuid", v.uuid, "pid", p.pid, "reason", reason)
	if !quiet {
		d.emit(VMEvent{UUID: v.uuid, Kind: EventExited, Detail: reason})
	}
}

// exitReason combines QEMU's SHUTDOWN reason with the wait status.
func exitReason(shutdown string, info exitInfo) string {
	var why string
	switch shutdown {
	case "":
	case "guest-shutdown":
		why = "guest shutdown"
	case "host-qmp-quit":
		why = "quit via QMP"
	case "host-signal":
		why = "terminated by a signal to QEMU"
	case "guest-panic":
		why = "guest panic"
	default:
		why = "shutdown: " + shutdown
	}
	switch {
	case why == "":
		return info.String()
	case info.known:
		return why + " (" + info.String() + ")"
	default:
		return why
	}
}

// monitor returns a connected QMP monitor of p, dialling if needed.
func (d *Driver) monitor(ctx context.Context, v *vm, p *proc) (*Monitor, error) {
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	p.mu.Lock()
	m := p.mon
	p.mu.Unlock()
	if m != nil && !m.isClosed() {
		return m, nil
	}
	if p.isExited() {
		return nil, fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
	}
	m, err := Dial(ctx, v.paths.QMPSocket())
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	loopDone := make(chan struct{})
	p.mu.Lock()
	p.mon, p.loopDone = m, loopDone
	p.mu.Unlock()
	if !d.goOwned(func() { d.eventLoop(v, p, m, loopDone) }) {
		_ = m.Close()
		return nil, fmt.Errorf("vm %s: %w", v.uuid, errDriverClosed)
	}
	return m, nil
}

// eventLoop consumes the events of one monitor connection until it ends
// or the driver closes (then it closes the connection).
func (d *Driver) eventLoop(v *vm, p *proc, m *Monitor, done chan struct{}) {
	defer close(done)
	for {
		select {
		case ev, ok := <-m.Events():
			if !ok {
				return
			}
			d.handleEvent(v, p, ev)
		case <-d.quit:
			_ = m.Close()
			return
		}
	}
}

func (d *Driver) handleEvent(v *vm, p *proc, ev Event) {
	str := func(k string) string { s, _ := ev.Data[k].(string); return s }
	out := VMEvent{UUID: v.uuid}
	switch ev.Name {
	case "SHUTDOWN":
		p.mu.Lock()
		p.shutdownReason = str("reason")
		p.mu.Unlock()
		out.Kind, out.Detail = EventShutdown, str("reason")
	case "RESET":
		out.Kind, out.Detail = EventReset, str("reason")
	case "STOP":
		out.Kind = EventStop
	case "RESUME":
		out.Kind = EventResume
	case "POWERDOWN":
		out.Kind = EventPowerdown
	case "DEVICE_DELETED":
		id := str("device")
		if id == "" {
			return // the backend path of a device; the device itself follows
		}
		p.mu.Lock()
		for _, ch := range p.waiters[id] {
			close(ch)
		}
		delete(p.waiters, id)
		p.mu.Unlock()
		out.Kind, out.Detail = EventDeviceDeleted, id
	case "BLOCK_IO_ERROR":
		dev := str("device")
		if dev == "" {
			dev = str("node-name")
		}
		out.Kind = EventBlockIOError
		out.Detail = strings.TrimSpace(fmt.Sprintf("%s %s %s %s", dev, str("operation"), str("action"), str("reason")))
	default:
		return
	}
	d.emit(out)
}

// emit delivers an event without ever blocking; a full channel drops it.
func (d *Driver) emit(ev VMEvent) {
	d.emitMu.RLock()
	defer d.emitMu.RUnlock()
	if d.eventsClosed {
		return
	}
	select {
	case d.events <- ev:
	default:
		d.log.Warn("event channel full; dropping event", "uuid", ev.UUID, "kind", ev.Kind)
	}
}

// kill sends SIGKILL to p (after checking the pid is still that VM's QEMU)
// and waits up to wait for the exit to be observed.
func (d *Driver) kill(v *vm, p *proc, wait time.Duration) error {
	if !p.isExited() && isQEMUFor(p.pid, v.uuid) {
		if err := unix.Kill(p.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("vm %s: kill %d: %w", v.uuid, p.pid, err)
		}
	}
	select {
	case <-p.exited:
		return nil
	case <-d.quit:
		return errDriverClosed
	case <-time.After(wait):
		return fmt.Errorf("%w: vm %s: pid %d still there %s after SIGKILL", ErrTimeout, v.uuid, p.pid, wait)
	}
}

// readSpec loads spec.json.
func readSpec(p Paths) (Spec, error) {
	b, err := os.ReadFile(p.SpecFile())
	if err != nil {
		return Spec{}, err
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", p.SpecFile(), err)
	}
	return s, nil
}

// writeSpec stores spec.json atomically.
func writeSpec(p Paths, s Spec) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(p.SpecFile(), append(b, '\n'), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
