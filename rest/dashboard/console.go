package dashboard

// The serial console is offered the way Nova offers it: POST
// /compute/v2.1/servers/{id}/remote-consoles with protocol serial answers a
// ws(s):// URL on this host carrying a short-lived token, so the link from
// `openstack console url show --serial` and the dashboard's console tab are
// the same thing. The WebSocket is the server's serial console: what the
// guest writes comes out, what the client sends is typed into it, on
// whichever host runs the server (across hosts over the internal mTLS API,
// see attach.go). When the console cannot be attached (the server is
// stopped, or it runs with a log-only console), the WebSocket follows the
// console log instead, read through the same path as `openstack console log
// show`.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
)

// consoleLines is how much of the log one poll reads.
const consoleLines = 1000

// Service is the remote-console API, mounted next to compute's, and the
// dashboard's event stream. Nova serves the remote console from
// microversion 2.6; it is answered whatever version is asked, so clients
// that negotiate a lower maximum can still use it.
func (d *Dashboard) Service() rest.Service {
	return rest.Service{Errors: compute.NovaErrors, Routes: []rest.Route{
		{Method: http.MethodPost, Path: "/compute/v2.1/servers/{server_id}/remote-consoles", Auth: rest.Token, Handler: d.remoteConsole},
		{Method: http.MethodGet, Path: EventsPath, Auth: rest.Token, Handler: d.events},
	}}
}

func (d *Dashboard) remoteConsole(c *rest.Ctx) (any, error) {
	id := c.Var("server_id")
	inst, ok := d.b.State().Instance(id)
	if !ok {
		if c.Cred == nil {
			return nil, rest.Unauthorized("The request you have made requires authentication.")
		}
		return nil, rest.NotFoundf("Instance %s could not be found.", id)
	}
	if err := rest.Check(d.b, c, rest.Write, inst.ProjectID, false, "Instance "+id); err != nil {
		return nil, err
	}
	var req struct {
		RemoteConsole *struct {
			Protocol string `json:"protocol"`
			Type     string `json:"type"`
		} `json:"remote_console"`
	}
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	rc := req.RemoteConsole
	if rc == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute remote_console. Value: None. None is not of type 'object'")
	}
	if rc.Protocol != "serial" || rc.Type != "serial" {
		return nil, &rest.HTTPError{Status: http.StatusBadRequest,
			Msg: fmt.Sprintf("Unavailable console type %s: only protocol serial with type serial is offered.", rc.Protocol+"/"+rc.Type)}
	}
	if inst.Host == "" {
		return nil, rest.Conflictf("Instance %s has no host yet; its console is not available.", id)
	}
	u := rest.BaseURL(c.R)
	u = "ws" + strings.TrimPrefix(u, "http") + "/dashboard/console?token=" + d.consoleToken(id, d.b.Now().Add(d.tokenTTL))
	return map[string]any{"remote_console": map[string]string{"protocol": "serial", "type": "serial", "url": u}}, nil
}

// serialAction answers the pre-2.6 form of the same request, the server
// action {"os-getSerialConsole": {"type": "serial"}} that clients use at
// microversion 2.1, with {"console": {"type", "url"}}. It reports false,
// leaving r as it was, for every other request.
func (d *Dashboard) serialAction(api http.Handler, w http.ResponseWriter, r *http.Request) bool {
	tail, ok := strings.CutPrefix(r.URL.Path, "/compute/v2.1/servers/")
	id, ok2 := strings.CutSuffix(tail, "/action")
	if r.Method != http.MethodPost || !ok || !ok2 || id == "" || strings.Contains(id, "/") {
		return false
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
	// Put back what was read in front of what was not.
	r.Body = readCloser{io.MultiReader(bytes.NewReader(raw), r.Body), r.Body}
	if err != nil || len(raw) > maxActionBody {
		return false // the compute API reports it
	}
	var action map[string]json.RawMessage
	if json.Unmarshal(raw, &action) != nil || len(action) != 1 || action["os-getSerialConsole"] == nil {
		return false
	}
	var req struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(action["os-getSerialConsole"], &req) != nil || req.Type != "serial" {
		compute.NovaErrors(w, http.StatusBadRequest, "", fmt.Sprintf("Invalid input for field/attribute type. Value: %s. It must be serial", action["os-getSerialConsole"]))
		return true
	}
	sub := r.Clone(r.Context())
	sub.URL.Path = "/compute/v2.1/servers/" + id + "/remote-consoles"
	sub.URL.RawPath = ""
	body := `{"remote_console":{"protocol":"serial","type":"serial"}}`
	sub.Body, sub.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	rec := newRecorder()
	api.ServeHTTP(rec, sub)
	var out struct {
		RemoteConsole struct{ URL string } `json:"remote_console"`
	}
	if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &out) != nil {
		copyResponse(w, rec)
		return true
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"console": map[string]string{"type": "serial", "url": out.RemoteConsole.URL}})
	return true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// maxActionBody bounds the server action bodies looked at for the serial
// console.
const maxActionBody = 64 << 10

// consoleToken binds an instance and an expiry under the process key.
func (d *Dashboard) consoleToken(instanceID string, exp time.Time) string {
	msg := instanceID + "." + strconv.FormatInt(exp.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(msg)) + "." + hex.EncodeToString(d.sign(msg))
}

var errBadConsoleToken = errors.New("console token invalid or expired")

func (d *Dashboard) verifyConsoleToken(tok string) (string, error) {
	enc, mac, ok := strings.Cut(tok, ".")
	if !ok {
		return "", errBadConsoleToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", errBadConsoleToken
	}
	got, err := hex.DecodeString(mac)
	if err != nil || !hmac.Equal(got, d.sign(string(raw))) {
		return "", errBadConsoleToken
	}
	id, expS, ok := strings.Cut(string(raw), ".")
	exp, err := strconv.ParseInt(expS, 10, 64)
	if !ok || err != nil || d.b.Now().Unix() > exp {
		return "", errBadConsoleToken
	}
	return id, nil
}

// console serves the WebSocket. Output goes out as binary messages; every
// message received (text or binary) is typed into the console. The session
// starts with the tail of the log, then attaches to the console on the host
// that runs the server. While it cannot attach (the server is stopped, its
// host unreachable, or its console read-only) it follows the log as
// `openstack console log show` reads it, drops what is typed, and tries to
// attach again every few seconds.
func (d *Dashboard) console(w http.ResponseWriter, r *http.Request) {
	id, err := d.verifyConsoleToken(r.URL.Query().Get("token"))
	if err != nil {
		compute.NovaErrors(w, http.StatusUnauthorized, "", "The console token is invalid or expired; ask for a new console URL.")
		return
	}
	if _, ok := d.b.State().Instance(id); !ok {
		compute.NovaErrors(w, http.StatusNotFound, "", fmt.Sprintf("Instance %s could not be found.", id))
		return
	}
	noTimeouts(w)
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		d.log.Debug("console upgrade refused", "instance", id, "err", err)
		return
	}
	conn.SetReadLimit(maxConsoleMessage)
	d.sessions.Add(1)
	defer d.sessions.Add(-1)
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	input := readInput(ctx, cancel, conn)
	t := time.NewTicker(d.poll)
	defer t.Stop()
	var last, lastErr string
	resync := false // the log's current content counts as seen
	var nextAttach time.Time
	for {
		inst, ok := d.b.State().Instance(id)
		if !ok {
			_ = conn.Close(websocket.StatusNormalClosure, "server deleted")
			return
		}
		if inst.Host != "" && !time.Now().Before(nextAttach) {
			nextAttach = time.Now().Add(attachRetry)
			rw, err := d.b.OpenConsole(d.granted(ctx, id), inst)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				if msg := readOnlyNotice(err); msg != lastErr {
					lastErr = msg
					if writeWithin(ctx, conn, consoleNotice(msg)) != nil {
						return
					}
				}
			default:
				// Attached first, then the log: output in between may
				// show twice, but none is lost.
				if out, err := d.b.ConsoleOutput(d.granted(ctx, id), inst, consoleLines); err == nil {
					if delta := consoleDelta(last, out); delta != "" && !resync && writeWithin(ctx, conn, []byte(delta)) != nil {
						rw.Close()
						return
					}
					resync = false
				}
				if lastErr != "" && writeWithin(ctx, conn, consoleNotice("console attached")) != nil {
					rw.Close()
					return
				}
				lastErr = ""
				err := pipeConsole(ctx, conn, rw, input)
				rw.Close()
				if err != nil {
					return // the WebSocket ended
				}
				// Everything in the log up to here was seen live; it is
				// read before the notice goes out, so whatever the viewer
				// sees after the notice is new. Briefly: when the host
				// itself went away the notice must not wait for it.
				lctx, lcancel := context.WithTimeout(ctx, logBeforeNotice)
				if out, err := d.b.ConsoleOutput(d.granted(lctx, id), inst, consoleLines); err == nil {
					last, resync = out, false
				} else {
					// Not read: the next read is taken as seen rather than
					// replaying what was shown live.
					resync = true
				}
				lcancel()
				lastErr = "console closed; showing its log"
				if writeWithin(ctx, conn, consoleNotice(lastErr)) != nil {
					return
				}
				continue
			}
		}
		if inst.Host != "" {
			out, err := d.b.ConsoleOutput(d.granted(ctx, id), inst, consoleLines)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				if msg := "console unavailable: " + err.Error(); msg != lastErr {
					lastErr = msg
					if writeWithin(ctx, conn, consoleNotice(msg)) != nil {
						return
					}
				}
			default:
				if delta := consoleDelta(last, out); delta != "" && !resync {
					if writeWithin(ctx, conn, []byte(delta)) != nil {
						return
					}
				}
				last, resync = out, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-input: // not attached: typing goes nowhere
		case <-t.C:
		}
	}
}

// granted is ctx with a console grant for this host to reach instance
// id's console on the host that runs it: minted here, inside a session
// opened with a console token the remote-console API handed out.
func (d *Dashboard) granted(ctx context.Context, id string) context.Context {
	g, err := compute.MintConsoleGrant(d.b.State(), id, d.b.HostID(), d.b.Now())
	if err != nil {
		d.log.Debug("console grant", "instance", id, "err", err)
		return ctx
	}
	return compute.WithConsoleGrant(ctx, g)
}

// consoleDelta is what cur adds to prev, two reads of the same log's tail.
// Each read starts at a line start, so when the tail has moved on, cur
// begins with the end of prev from some line of prev: the longest such
// overlap is dropped. With nothing in common (trimmed, or more new lines
// than one read holds) cur is sent whole.
func consoleDelta(prev, cur string) string {
	if strings.HasPrefix(cur, prev) {
		return cur[len(prev):]
	}
	for i := 1; i < len(prev); i++ {
		if prev[i-1] == '\n' && strings.HasPrefix(cur, prev[i:]) {
			return cur[len(prev)-i:]
		}
	}
	return cur
}

// logBeforeNotice bounds the log read between a console closing and the
// notice saying so.
const logBeforeNotice = 2 * time.Second

// consoleWriteTimeout bounds one console write: a browser that stays
// connected but stops reading is dropped instead of holding the session.
const consoleWriteTimeout = 10 * time.Second

func writeWithin(ctx context.Context, conn *websocket.Conn, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, consoleWriteTimeout)
	defer cancel()
	return conn.Write(ctx, websocket.MessageBinary, b)
}
