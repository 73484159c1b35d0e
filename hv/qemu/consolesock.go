package qemu

// The serial console is also a unix socket (chardev socket, server=on,
// wait=off), next to the log QEMU writes through the same chardev
// (logfile=, logappend=on): the log keeps growing whether or not anyone is
// attached, and an attached client types into the guest.
//
// QEMU serves one client per chardev socket; a second connection would sit
// in the listen backlog until the first leaves. So the driver holds at most
// one connection per VM and shares it: every OpenConsole gets its own
// net.Conn (one end of a pipe), sees all console output from the moment it
// attached, and its writes reach the guest. The connection is closed when
// the last client leaves, and every client sees EOF when QEMU exits.
//
// VMs started before the console socket existed (chardev file) have no
// socket: OpenConsole reports ErrConsoleReadOnly, and only the log is
// available for them until they are started again.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrConsoleReadOnly: the VM runs, but its console is a log file only (it
// was started before consoles had a socket).
var ErrConsoleReadOnly = errors.New("the serial console of this vm is a log only (started before interactive consoles); stop and start it to type into it")

// consoleBacklog is how many unread output chunks a client may fall
// behind; a client that stays that far behind for consoleStall is dropped:
// a stalled client must not hold the guest's output back from the others.
const (
	consoleBacklog = 256
	consoleStall   = 2 * time.Second
)

// ConsoleSocket is the serial console's socket: console.sock in the VM's
// directory, or, as for the QMP socket, a hashed name in ShortSocketDir
// when that path is too long.
func (p Paths) ConsoleSocket() string {
	if in := filepath.Join(p.Dir, "console.sock"); len(in) <= maxSocketPath {
		return in
	}
	sum := sha256.Sum256([]byte(filepath.Clean(p.Dir)))
	return filepath.Join(ShortSocketDir, "console-"+hex.EncodeToString(sum[:12])+".sock")
}

// OpenConsole attaches to the serial console of a running VM. Reads return
// the guest's console output from now on; writes are typed into the guest.
// Close detaches. It fails with ErrNotRunning when the VM is not running
// and with ErrConsoleReadOnly when its console has no socket.
func (d *Driver) OpenConsole(ctx context.Context, uuid string) (net.Conn, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return nil, err
	}
	p := d.liveProc(v)
	if p == nil {
		return nil, fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if h := v.console; h != nil {
		if c, ok := h.attach(); ok {
			return c, nil
		}
	}
	sock := v.paths.ConsoleSocket()
	if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vm %s: %w", v.uuid, ErrConsoleReadOnly)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		if p.isExited() {
			return nil, fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
		}
		return nil, fmt.Errorf("console of vm %s: %w", v.uuid, err)
	}
	h := &consoleHub{conn: conn, clients: map[*consoleClient]struct{}{}, done: make(chan struct{})}
	h.onIdle = func() {
		v.mu.Lock()
		if v.console == h {
			v.console = nil
		}
		v.mu.Unlock()
	}
	c, _ := h.attach() // before run: the hub cannot have closed yet
	if !d.goOwned(func() { h.run(p.exited, d.quit) }) {
		_ = c.Close()
		_ = conn.Close()
		return nil, errDriverClosed
	}
	v.console = h
	return c, nil
}

// consoleHub shares one console connection among clients.
type consoleHub struct {
	conn   net.Conn
	onIdle func() // called once the hub is closed

	wmu sync.Mutex // serialises input from the clients

	mu      sync.Mutex // guards the fields below
	clients map[*consoleClient]struct{}
	closed  bool
	done    chan struct{} // closed with closed
}

// consoleClient is one attached client: the hub's end of its pipe.
type consoleClient struct {
	end  net.Conn
	out  chan []byte
	gone chan struct{}
	once sync.Once
}

func (c *consoleClient) drop() { c.once.Do(func() { close(c.gone); _ = c.end.Close() }) }

// run copies console output to every client until QEMU exits, the
// connection ends or the driver closes.
func (h *consoleHub) run(exited, quit <-chan struct{}) {
	go func() {
		select {
		case <-exited:
		case <-quit:
		case <-h.done:
		}
		_ = h.conn.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := h.conn.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			h.mu.Lock()
			for c := range h.clients {
				select {
				case c.out <- chunk:
					continue
				default:
				}
				t := time.NewTimer(consoleStall)
				select {
				case c.out <- chunk:
				case <-t.C: // stalled
					delete(h.clients, c)
					c.drop()
				}
				t.Stop()
			}
			h.mu.Unlock()
		}
		if err != nil {
			h.close()
			return
		}
	}
}

// close ends the hub and every client.
func (h *consoleHub) close() {
	h.mu.Lock()
	ok := h.closeLocked()
	h.mu.Unlock()
	if ok {
		_ = h.conn.Close()
		h.onIdle()
	}
}

// closeLocked marks the hub closed and ends its clients; it reports whether
// this call closed it. The caller then closes conn and calls onIdle.
func (h *consoleHub) closeLocked() bool {
	if h.closed {
		return false
	}
	h.closed = true
	close(h.done)
	for c := range h.clients {
		delete(h.clients, c)
		close(c.out) // the writer drains and then closes the pipe
	}
	return true
}

// attach adds a client and returns its end of the pipe; false when the hub
// has closed meanwhile.
func (h *consoleHub) attach() (net.Conn, bool) {
	mine, theirs := net.Pipe()
	c := &consoleClient{end: mine, out: make(chan []byte, consoleBacklog), gone: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false
	}
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	// Output: queued chunks to the client.
	go func() {
		defer c.drop()
		for {
			select {
			case chunk, ok := <-c.out:
				if !ok {
					return
				}
				if _, err := c.end.Write(chunk); err != nil {
					return
				}
			case <-c.gone:
				return
			}
		}
	}()
	// Input: the client's writes to the guest; its Close detaches it.
	go func() {
		defer h.detach(c)
		buf := make([]byte, 4096)
		for {
			n, err := c.end.Read(buf)
			if n > 0 {
				// A guest that stops reading its serial input (paused)
				// must not wedge the hub: a write that cannot finish in
				// consoleWriteTimeout drops this client.
				h.wmu.Lock()
				_ = h.conn.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
				_, werr := h.conn.Write(buf[:n])
				_ = h.conn.SetWriteDeadline(time.Time{})
				h.wmu.Unlock()
				if werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return theirs, true
}

// consoleWriteTimeout bounds one write of a client's keystrokes to the
// guest's console.
const consoleWriteTimeout = 5 * time.Second

// detach removes a client; the last one to leave closes the connection,
// so QEMU accepts the next one.
func (h *consoleHub) detach(c *consoleClient) {
	c.drop()
	h.mu.Lock()
	delete(h.clients, c)
	last := len(h.clients) == 0 && h.closeLocked()
	h.mu.Unlock()
	if last {
		_ = h.conn.Close()
		h.onIdle()
	}
}
