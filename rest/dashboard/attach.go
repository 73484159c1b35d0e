package dashboard

// The interactive half of the console: a session attaches to the serial
// console of the host that runs the server (Backend.OpenConsole) and pipes
// bytes both ways between it and the WebSocket. Another host's console is
// reached through the internal endpoint below, a WebSocket of raw console
// bytes (binary messages) over the cluster's mTLS API.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/rest/compute"
)

// ErrConsoleReadOnly is wrapped by OpenConsole when the server's console can
// only be read from its log (a VM started before consoles were
// interactive).
var ErrConsoleReadOnly = errors.New("console is read-only")

// ConsoleModeHeader marks the internal endpoint's refusal of a read-only
// console, so the asking host can report it as ErrConsoleReadOnly.
const ConsoleModeHeader = "X-Peerstack-Console"

// InternalConsolePath is the internal endpoint's path for an instance.
func InternalConsolePath(instanceID string) string {
	return "/internal/v1/instances/" + instanceID + "/console/attach"
}

// attachRetry is how often a session showing the log tries to attach.
const attachRetry = 2 * time.Second

// internalAttach serves GET /internal/v1/instances/{id}/console/attach:
// another host's console session for an instance that runs here. Only a
// member holding a grant for the instance may call it (one its console
// session minted, compute.CheckConsoleCaller).
func (d *Dashboard) internalAttach(w http.ResponseWriter, r *http.Request, id string) {
	if err := compute.CheckConsoleCaller(d.b.State(), r, id, d.b.Now()); err != nil {
		compute.NovaErrors(w, http.StatusForbidden, "", err.Error())
		return
	}
	if r.Method != http.MethodGet {
		compute.NovaErrors(w, http.StatusMethodNotAllowed, "", "The method is not allowed for the requested URL.")
		return
	}
	rw, err := d.b.OpenLocalConsole(r.Context(), id)
	if err != nil {
		if errors.Is(err, ErrConsoleReadOnly) {
			w.Header().Set(ConsoleModeHeader, "read-only")
		}
		compute.NovaErrors(w, http.StatusConflict, "", err.Error())
		return
	}
	defer rw.Close()
	noTimeouts(w)
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		d.log.Debug("internal console upgrade refused", "instance", id, "err", err)
		return
	}
	conn.SetReadLimit(maxConsoleMessage)
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	input := readInput(ctx, cancel, conn)
	if err := pipeConsole(ctx, conn, rw, input); err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "console closed")
	}
}

// maxConsoleMessage bounds one WebSocket message of console input: a
// paste arrives as one message, and the library's 32 KiB default closed
// the session on a pasted script.
const maxConsoleMessage = 1 << 20

// noTimeouts lifts the API server's read and write timeouts from a
// connection that becomes a console: they would cut it mid-session; the
// WebSocket's own context ends it.
func noTimeouts(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

// readInput reads the WebSocket's messages (text or binary: keystrokes)
// into the returned channel until the connection ends, then cancels.
func readInput(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn) <-chan []byte {
	// A few messages at most wait for the console: each may be a 1 MiB
	// paste, and a guest that does not read holds them.
	input := make(chan []byte, 4)
	go func() {
		defer cancel()
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			select {
			case input <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	return input
}

// pipeConsole copies console output to conn as binary messages and input
// to the console until either side ends. It returns nil when the console
// ended (the VM stopped), else why the WebSocket side ended.
func pipeConsole(ctx context.Context, conn *websocket.Conn, rw io.ReadWriteCloser, input <-chan []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = rw.Close() }) // unblocks Read and Write
	defer stop()
	outDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := rw.Read(buf)
			if n > 0 {
				if werr := writeWithin(ctx, conn, buf[:n]); werr != nil {
					outDone <- werr
					return
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					outDone <- ctx.Err()
				} else {
					outDone <- nil
				}
				return
			}
		}
	}()
	for {
		select {
		case msg := <-input:
			if _, err := rw.Write(msg); err != nil && ctx.Err() == nil {
				// The console went away; its reader reports how.
				cancel()
				<-outDone
				return nil
			}
		case err := <-outDone:
			return err
		case <-ctx.Done():
			<-outDone
			return ctx.Err()
		}
	}
}

// consoleNotice is a line the session adds to the console's output.
func consoleNotice(msg string) []byte {
	return []byte("\r\n[" + strings.TrimSpace(msg) + "]\r\n")
}

// readOnlyNotice explains a console that only shows the log.
func readOnlyNotice(err error) string {
	if errors.Is(err, ErrConsoleReadOnly) {
		return fmt.Sprintf("read-only console: %v; typing is ignored", err)
	}
	return fmt.Sprintf("console not interactive: %v; showing its log", err)
}
