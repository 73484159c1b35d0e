package node

// Interactive serial consoles for the dashboard: attach to a local VM's
// console socket through the hypervisor, or to another host's through its
// internal console endpoint (a WebSocket over the cluster's mTLS API).

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node/hvagent"
	"github.com/peerstack/peerstack/rest/compute"
	"github.com/peerstack/peerstack/rest/dashboard"
)

// consoleOpener is implemented by hypervisors whose consoles can be typed
// into.
type consoleOpener interface {
	OpenConsole(ctx context.Context, id string) (net.Conn, error)
}

// The real hypervisor has both consoles: a rename on either side fails
// the build instead of turning the dashboard's console off.
var (
	_ consoleOpener = (*hvagent.QEMU)(nil)
	_ consoleLogger = (*hvagent.QEMU)(nil)
)

// OpenConsole attaches to an instance's console on the host that runs it.
func (b computeBackend) OpenConsole(ctx context.Context, inst *statedb.Instance) (io.ReadWriteCloser, error) {
	if inst.Host == b.ID() {
		return b.openLocalConsole(ctx, inst.ID)
	}
	addr := b.apiAddrOf(inst.Host)
	if addr == "" {
		return nil, fmt.Errorf("console of %s: host %s has no known address", inst.ID, inst.Host)
	}
	return b.dialConsole(ctx, addr, inst.ID)
}

// OpenLocalConsole serves another host's attach request for an instance
// that runs here.
func (b computeBackend) OpenLocalConsole(ctx context.Context, instanceID string) (io.ReadWriteCloser, error) {
	inst, ok := b.State().Instance(instanceID)
	if !ok || inst.Host != b.ID() {
		return nil, fmt.Errorf("instance %s does not run on host %s", instanceID, b.Name())
	}
	return b.openLocalConsole(ctx, instanceID)
}

func (n *Node) openLocalConsole(ctx context.Context, instanceID string) (io.ReadWriteCloser, error) {
	n.mu.Lock()
	rt := n.cfg.Agent.rt
	n.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("console of %s: the agent is not running on this host", instanceID)
	}
	co, ok := rt.hv.(consoleOpener)
	if !ok {
		return nil, fmt.Errorf("console of %s: %w: this hypervisor has no interactive console", instanceID, dashboard.ErrConsoleReadOnly)
	}
	c, err := co.OpenConsole(ctx, instanceID)
	if errors.Is(err, qemu.ErrConsoleReadOnly) && !errors.Is(err, dashboard.ErrConsoleReadOnly) {
		err = fmt.Errorf("%w: %w", dashboard.ErrConsoleReadOnly, err)
	}
	if err != nil {
		return nil, fmt.Errorf("console of %s: %w", instanceID, err)
	}
	return c, nil
}

// dialConsole attaches to a console on another host through its internal
// endpoint. WebSockets need HTTP/1.1, so it uses its own transport with
// the host's client certificate rather than the shared HTTP/2 client.
func (n *Node) dialConsole(ctx context.Context, addr, instanceID string) (io.ReadWriteCloser, error) {
	base, ok := n.client.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("console of %s: no mTLS transport", instanceID)
	}
	tr := base.Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.DialTLSContext = n.conns.DialTLS(withProtos(tr.TLSClientConfig, "http/1.1")) // tracked: cut if that host is revoked
	u := "wss://" + addr + dashboard.InternalConsolePath(url.PathEscape(instanceID))
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{compute.ConsoleGrantHeader: {compute.ConsoleGrantFrom(ctx)}}})
	if err != nil {
		tr.CloseIdleConnections()
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			msg := fmt.Sprintf("status %d", resp.StatusCode)
			var e map[string]struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(bytes.TrimSpace(body), &e) == nil {
				for _, v := range e {
					msg = v.Message
				}
			}
			if resp.Header.Get(dashboard.ConsoleModeHeader) == "read-only" {
				return nil, fmt.Errorf("console of %s from %s: %w: %s", instanceID, addr, dashboard.ErrConsoleReadOnly, msg)
			}
			return nil, fmt.Errorf("console of %s from %s: %s", instanceID, addr, msg)
		}
		return nil, fmt.Errorf("console of %s from %s: %w", instanceID, addr, err)
	}
	conn.SetReadLimit(1 << 20)
	// The session's context bounds the connection; Close ends it sooner.
	return websocket.NetConn(ctx, conn, websocket.MessageBinary), nil
}
