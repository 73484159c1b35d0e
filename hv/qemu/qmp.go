package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// QMP errors. Every Monitor method returns one of them (wrapped) on failure.
var (
	// ErrTimeout: the call's deadline passed without a reply. The
	// connection stays usable: replies carry the command's id, so a late
	// reply is discarded instead of answering a later command.
	ErrTimeout = errors.New("qmp: timeout")
	// ErrDisconnected: the connection is closed or broken (QEMU exited).
	ErrDisconnected = errors.New("qmp: disconnected")
	// ErrCommand: QEMU answered with an error (class and text follow).
	ErrCommand = errors.New("qmp: command failed")
)

// DefaultQMPTimeout bounds every QMP call whose context has no earlier
// deadline.
const DefaultQMPTimeout = 10 * time.Second

// Event is an asynchronous QMP event.
type Event struct {
	Name string         // SHUTDOWN, RESET, STOP, RESUME, POWERDOWN, DEVICE_DELETED, BLOCK_IO_ERROR, ...
	Data map[string]any // the event's data member
	Time time.Time      // QEMU's timestamp
}

// Monitor is a QMP connection with a narrow, typed, context-aware API.
//
// It speaks the protocol with go-qemu's qmp types (qmp.Command, qmp.Event)
// but not through go-qemu's SocketMonitor, which we found unusable here: its reader hands the caller a slice of its
// bufio.Scanner buffer that the next event overwrites (a data race that
// -race reports and that corrupts replies; digitalocean/go-qemu#226), it can
// pair a reply with the wrong command when an event arrives during the
// handshake (digitalocean/go-qemu#210), it takes no context, and it blocks
// command replies behind undelivered events.
//
// So: every command carries an id and waits for the reply with that id,
// bounded by its context (DefaultQMPTimeout at most when the context has no
// deadline); one goroutine reads the socket for the life of the connection
// and never blocks: events go to a buffered channel, dropped (and counted)
// when the consumer does not keep up. The channel is closed when the
// connection ends.
type Monitor struct {
	c       net.Conn
	wmu     sync.Mutex // serialises writes
	nextID  atomic.Uint64
	events  chan Event
	greet   chan json.RawMessage // the banner
	done    chan struct{}        // closed when the reader has ended
	dropped atomic.Int64

	mu      sync.Mutex // guards pending, err
	pending map[string]chan reply
	err     error // why the connection ended; nil while open
}

type reply struct {
	ret json.RawMessage
	err error
}

// request is a QMP command with an id.
type request struct {
	qmp.Command
	ID string `json:"id"`
}

// eventBuffer is how many events wait for a slow consumer before new ones
// are dropped.
const eventBuffer = 256

// Dial connects to the QMP socket sock and negotiates capabilities.
func Dial(ctx context.Context, sock string) (*Monitor, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: dial %s", ErrTimeout, sock)
		}
		return nil, fmt.Errorf("%w: dial %s: %v", ErrDisconnected, sock, err)
	}
	m := &Monitor{
		c:       c,
		events:  make(chan Event, eventBuffer),
		greet:   make(chan json.RawMessage, 1),
		done:    make(chan struct{}),
		pending: map[string]chan reply{},
	}
	go m.read() // ends when the connection is closed
	select {
	case <-m.greet:
	case <-m.done:
		return nil, fmt.Errorf("%w: handshake on %s: %v", ErrDisconnected, sock, m.cause())
	case <-ctx.Done():
		_ = m.Close()
		return nil, fmt.Errorf("%w: no QMP greeting on %s (another client connected?)", ErrTimeout, sock)
	}
	if err := m.run(ctx, "qmp_capabilities", nil, nil); err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("handshake on %s: %w", sock, err)
	}
	return m, nil
}

// read decodes messages until the connection fails: the greeting, replies
// (matched by id) and events.
func (m *Monitor) read() {
	dec := json.NewDecoder(bufio.NewReader(m.c))
	var err error
	for {
		var raw json.RawMessage
		if err = dec.Decode(&raw); err != nil {
			break
		}
		var msg struct {
			QMP    json.RawMessage `json:"QMP"`
			Event  string          `json:"event"`
			ID     string          `json:"id"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &msg) != nil {
			continue
		}
		switch {
		case msg.QMP != nil:
			select {
			case m.greet <- msg.QMP:
			default:
			}
		case msg.Event != "":
			var e qmp.Event
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			ev := Event{Name: e.Event, Data: e.Data,
				Time: time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)}
			select {
			case m.events <- ev:
			default:
				m.dropped.Add(1)
			}
		default:
			m.mu.Lock()
			ch := m.pending[msg.ID]
			delete(m.pending, msg.ID)
			m.mu.Unlock()
			if ch == nil {
				continue // a reply nobody waits for any more (timed out)
			}
			r := reply{ret: msg.Return}
			if msg.Error != nil {
				r.err = fmt.Errorf("%s: %s", msg.Error.Class, msg.Error.Desc)
			}
			ch <- r // buffered
		}
	}
	m.mu.Lock()
	if err == nil || errors.Is(err, io.EOF) {
		err = io.EOF
	}
	m.err = err
	for id, ch := range m.pending {
		close(ch)
		delete(m.pending, id)
	}
	m.mu.Unlock()
	close(m.events)
	close(m.done)
}

func (m *Monitor) cause() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Events returns the monitor's events. The channel is closed when the
// connection ends. Read it continuously: when its buffer is full, new events
// are dropped (commands are never blocked by unread events).
func (m *Monitor) Events() <-chan Event { return m.events }

// Done is closed when the connection has ended; the Events channel is
// closed by then.
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Dropped is the number of events dropped because Events was not read.
func (m *Monitor) Dropped() int64 { return m.dropped.Load() }

// isClosed reports whether the connection has ended.
func (m *Monitor) isClosed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Close disconnects and waits for the reader to end. It is safe to call
// more than once and concurrently with commands (which then fail with
// ErrDisconnected).
func (m *Monitor) Close() error {
	err := m.c.Close()
	<-m.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < DefaultQMPTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultQMPTimeout)
}

// run executes one QMP command; out, if non-nil, receives the "return"
// member.
func (m *Monitor) run(ctx context.Context, cmd string, args any, out any) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	ret, err := m.exec(ctx, request{Command: qmp.Command{Execute: cmd, Args: args}})
	if err != nil {
		return fmt.Errorf("%w: %s", err, cmd)
	}
	if out != nil {
		if err := json.Unmarshal(ret, out); err != nil {
			return fmt.Errorf("%w: %s: decode reply: %v", ErrCommand, cmd, err)
		}
	}
	return nil
}

// exec sends req with a fresh id and waits for its reply.
func (m *Monitor) exec(ctx context.Context, req request) (json.RawMessage, error) {
	req.ID = "ps-" + strconv.FormatUint(m.nextID.Add(1), 10)
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrCommand, err)
	}
	ch := make(chan reply, 1)
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return nil, fmt.Errorf("%w (%v)", ErrDisconnected, err)
	}
	m.pending[req.ID] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.pending, req.ID)
		m.mu.Unlock()
	}
	m.wmu.Lock()
	dl, _ := ctx.Deadline()
	_ = m.c.SetWriteDeadline(dl)
	_, err = m.c.Write(append(b, '\n'))
	m.wmu.Unlock()
	if err != nil {
		forget()
		_ = m.c.Close() // a partial write leaves the stream unusable
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, ErrTimeout
		}
		return nil, fmt.Errorf("%w (%v)", ErrDisconnected, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w (%v)", ErrDisconnected, m.cause())
		}
		if r.err != nil {
			return nil, fmt.Errorf("%w (%v)", ErrCommand, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		forget()
		return nil, ErrTimeout
	}
}

// Status runs query-status.
func (m *Monitor) Status(ctx context.Context) (running bool, status string, err error) {
	var r struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := m.run(ctx, "query-status", nil, &r); err != nil {
		return false, "", err
	}
	return r.Running, r.Status, nil
}

// UUID runs query-uuid.
func (m *Monitor) UUID(ctx context.Context) (string, error) {
	var r struct {
		UUID string `json:"UUID"`
	}
	if err := m.run(ctx, "query-uuid", nil, &r); err != nil {
		return "", err
	}
	return r.UUID, nil
}

// Powerdown presses the ACPI power button (system_powerdown).
func (m *Monitor) Powerdown(ctx context.Context) error {
	return m.run(ctx, "system_powerdown", nil, nil)
}

// Reset resets the machine (system_reset), like the reset button.
func (m *Monitor) Reset(ctx context.Context) error { return m.run(ctx, "system_reset", nil, nil) }

// Quit makes QEMU exit at once. A connection that drops before the reply
// counts as success.
func (m *Monitor) Quit(ctx context.Context) error {
	err := m.run(ctx, "quit", nil, nil)
	if errors.Is(err, ErrDisconnected) {
		return nil
	}
	return err
}

// Cont resumes a paused VM.
func (m *Monitor) Cont(ctx context.Context) error { return m.run(ctx, "cont", nil, nil) }

// Stop pauses the VM's vCPUs.
func (m *Monitor) Stop(ctx context.Context) error { return m.run(ctx, "stop", nil, nil) }

// BlockdevAdd runs blockdev-add with args.
func (m *Monitor) BlockdevAdd(ctx context.Context, args map[string]any) error {
	return m.run(ctx, "blockdev-add", args, nil)
}

// BlockdevDel runs blockdev-del for a node name.
func (m *Monitor) BlockdevDel(ctx context.Context, nodeName string) error {
	return m.run(ctx, "blockdev-del", map[string]any{"node-name": nodeName}, nil)
}

// DeviceAdd runs device_add with args.
func (m *Monitor) DeviceAdd(ctx context.Context, args map[string]any) error {
	return m.run(ctx, "device_add", args, nil)
}

// DeviceDel runs device_del. Completion is signalled later by a
// DEVICE_DELETED event (the guest must cooperate for PCI devices).
func (m *Monitor) DeviceDel(ctx context.Context, id string) error {
	return m.run(ctx, "device_del", map[string]any{"id": id}, nil)
}

// BlockResize grows the image of a block node to size bytes (block_resize
// by node-name); a device on the node tells its guest.
func (m *Monitor) BlockResize(ctx context.Context, nodeName string, size int64) error {
	return m.run(ctx, "block_resize", map[string]any{"node-name": nodeName, "size": size}, nil)
}

// BlockNode is one named block node (query-named-block-nodes, flat).
type BlockNode struct {
	NodeName string `json:"node-name"`
	Driver   string `json:"drv"`
	File     string `json:"file"`
	ReadOnly bool   `json:"ro"`
	Image    struct {
		VirtualSize int64 `json:"virtual-size"` // bytes the guest sees
	} `json:"image"`
}

// NamedBlockNodes lists the block nodes.
func (m *Monitor) NamedBlockNodes(ctx context.Context) ([]BlockNode, error) {
	var r []BlockNode
	if err := m.run(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &r); err != nil {
		return nil, err
	}
	return r, nil
}

// PeripheralIDs lists the ids of the devices created with an id (-device or
// device_add), from qom-list /machine/peripheral.
func (m *Monitor) PeripheralIDs(ctx context.Context) ([]string, error) {
	var r []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := m.run(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &r); err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range r {
		if strings.HasPrefix(p.Type, "child<") {
			ids = append(ids, p.Name)
		}
	}
	return ids, nil
}
