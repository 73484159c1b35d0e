package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/resttest"
)

// fakeBackend serves console logs from a map and interactive consoles
// from pipes whose other end the test holds as the guest.
type fakeBackend struct {
	*resttest.Backend
	mu       sync.Mutex
	consoles map[string]string
	guests   map[string]chan net.Conn // instance → where OpenConsole hands the guest's end
}

func (f *fakeBackend) OpenConsole(_ context.Context, inst *statedb.Instance) (io.ReadWriteCloser, error) {
	return f.OpenLocalConsole(context.Background(), inst.ID)
}

func (f *fakeBackend) OpenLocalConsole(_ context.Context, id string) (io.ReadWriteCloser, error) {
	f.mu.Lock()
	ch := f.guests[id]
	f.mu.Unlock()
	if ch == nil {
		return nil, fmt.Errorf("vm %s: %w: started before interactive consoles", id, ErrConsoleReadOnly)
	}
	mine, guest := net.Pipe()
	select {
	case ch <- guest:
		return mine, nil
	default:
		return nil, errors.New("vm not running")
	}
}

// interactive makes the console of id attachable; each attach sends the
// guest's end of the pipe to the returned channel.
func (f *fakeBackend) interactive(id string) chan net.Conn {
	ch := make(chan net.Conn, 1)
	f.mu.Lock()
	if f.guests == nil {
		f.guests = map[string]chan net.Conn{}
	}
	f.guests[id] = ch
	f.mu.Unlock()
	return ch
}

func (f *fakeBackend) readOnly(id string) {
	f.mu.Lock()
	delete(f.guests, id)
	f.mu.Unlock()
}

func (f *fakeBackend) ConsoleOutput(_ context.Context, inst *statedb.Instance, _ int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out, ok := f.consoles[inst.ID]
	if !ok {
		return "", errors.New("no console log")
	}
	return out, nil
}

func (f *fakeBackend) setConsole(id, out string) {
	f.mu.Lock()
	f.consoles[id] = out
	f.mu.Unlock()
}

type env struct {
	t     *testing.T
	b     *fakeBackend
	d     *Dashboard
	srv   *httptest.Server
	admin *resttest.Client
	demo  *resttest.Client
	other *resttest.Client
	inst  string // in project demo, on host1
}

func newEnv(t *testing.T) *env {
	t.Helper()
	b := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{}}
	seed := b.Bootstrap(t, statedb.Settings{}, "secret")
	demo, du := b.ProjectUser(t, "demo", "demo-user", "pw", "member")
	other, ou := b.ProjectUser(t, "other", "other-user", "pw", "member")
	b.MustApply(t, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
		ID: "i1", Name: "vm", ProjectID: demo.ID, Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 1}}}}})
	b.MustApply(t, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: map[string]statedb.HostCap{"host1": {VCPUs: 1, RAMMB: 1, DiskGB: 1}},
		Placements: []statedb.PlacementRec{{InstanceID: "i1", HostID: "host1"}}})
	if inst, _ := b.State().Instance("i1"); inst.Host != "host1" {
		t.Fatalf("instance not placed: %+v", inst)
	}
	d := New(b, resttest.Logger(t), WithConsolePoll(10*time.Millisecond), WithEventPoll(10*time.Millisecond))
	api := rest.NewServer(b, resttest.Logger(t))
	api.Mount(d.Service())
	srv := httptest.NewServer(d.Wrap(api.Handler()))
	t.Cleanup(srv.Close)
	c := &resttest.Client{T: t, Base: srv.URL}
	return &env{t: t, b: b, d: d, srv: srv, inst: "i1",
		admin: c.With(b.Token(seed.Admin.ID, seed.Project.ID)),
		demo:  c.With(b.Token(du.ID, demo.ID)),
		other: c.With(b.Token(ou.ID, other.ID))}
}

func (e *env) consoleURL(c *resttest.Client, id string) (int, string) {
	e.t.Helper()
	r := c.Do("POST", "/compute/v2.1/servers/"+id+"/remote-consoles", map[string]any{"remote_console": map[string]any{"protocol": "serial", "type": "serial"}})
	if r.Status != http.StatusOK {
		return r.Status, string(r.Body)
	}
	var out struct {
		RemoteConsole struct{ Protocol, Type, URL string } `json:"remote_console"`
	}
	r.Decode(e.t, &out)
	if out.RemoteConsole.Protocol != "serial" || out.RemoteConsole.Type != "serial" {
		e.t.Fatalf("remote console = %+v", out.RemoteConsole)
	}
	return r.Status, out.RemoteConsole.URL
}

func (e *env) dial(ctx context.Context, u string) (*websocket.Conn, *http.Response, error) {
	return websocket.Dial(ctx, u, nil)
}

func TestConsoleStreamsAndCleansUp(t *testing.T) {
	e := newEnv(t)
	e.b.setConsole(e.inst, "PEERSTACK-BOOT hostname=vm\n")
	status, u := e.consoleURL(e.demo, e.inst)
	if status != http.StatusOK || !strings.HasPrefix(u, "ws://") || !strings.Contains(u, "/dashboard/console?token=") {
		t.Fatalf("remote console = %d %s; want 200 and a ws:// URL with a token", status, u)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, _, err := e.dial(ctx, u)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	read := func() string {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read console: %v", err)
		}
		return string(msg)
	}
	if got := read(); !strings.Contains(got, "read-only console") {
		t.Fatalf("first message = %q; want the read-only notice", got)
	}
	if got := read(); got != "PEERSTACK-BOOT hostname=vm\n" {
		t.Fatalf("first message = %q", got)
	}
	e.b.setConsole(e.inst, "PEERSTACK-BOOT hostname=vm\nlogin: ")
	if got := read(); got != "login: " {
		t.Fatalf("second message = %q; want only the new output", got)
	}
	if n := e.d.Sessions(); n != 1 {
		t.Fatalf("sessions = %d; want 1", n)
	}
	conn.Close(websocket.StatusNormalClosure, "bye")
	deadline := time.Now().Add(10 * time.Second)
	for e.d.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sessions = %d after the client closed; want 0", e.d.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConsoleAuth(t *testing.T) {
	e := newEnv(t)
	e.b.setConsole(e.inst, "boot\n")
	// Another project's server is hidden; no token, no console.
	if status, body := e.consoleURL(e.other, e.inst); status != http.StatusNotFound {
		t.Fatalf("other project's console = %d %s; want 404", status, body)
	}
	anon := &resttest.Client{T: t, Base: e.srv.URL}
	if status, body := e.consoleURL(anon, e.inst); status != http.StatusUnauthorized {
		t.Fatalf("console without a token = %d %s; want 401", status, body)
	}
	if status, _ := e.consoleURL(e.admin, e.inst); status != http.StatusOK {
		t.Fatalf("admin console = %d; want 200", status)
	}
	for _, body := range []map[string]any{
		{"remote_console": map[string]any{"protocol": "vnc", "type": "novnc"}},
		{"remote_console": nil},
		{},
	} {
		if r := e.demo.Do("POST", "/compute/v2.1/servers/"+e.inst+"/remote-consoles", body); r.Status != http.StatusBadRequest {
			t.Fatalf("remote console %v = %d %s; want 400", body, r.Status, r.Body)
		}
	}
	if status, _ := e.consoleURL(e.demo, "nope"); status != http.StatusNotFound {
		t.Fatalf("console of a missing server = %d; want 404", status)
	}

	_, u := e.consoleURL(e.demo, e.inst)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	base, tok, _ := strings.Cut(u, "?token=")
	for name, bad := range map[string]string{
		"no token":       base,
		"forged token":   base + "?token=" + tok[:len(tok)-2] + "00",
		"garbage token":  base + "?token=%%%",
		"other instance": base + "?token=" + e.d.consoleToken("i2", e.b.Now().Add(time.Minute)),
	} {
		_, resp, err := e.dial(ctx, bad)
		if err == nil {
			t.Fatalf("%s: dial succeeded", name)
		}
		if resp == nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusNotFound) {
			t.Fatalf("%s: response %v; want 401 or 404", name, resp)
		}
	}
	// Tokens expire.
	e.b.Advance(11 * time.Minute)
	_, resp, err := e.dial(ctx, u)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: err %v resp %v; want 401", err, resp)
	}
}

func TestCookieSessionNeedsCSRF(t *testing.T) {
	e := newEnv(t)
	tok := e.demo.Token
	do := func(method, csrfCookie, csrfHeader string) int {
		req, _ := http.NewRequest(method, e.srv.URL+"/compute/v2.1/servers/"+e.inst+"/remote-consoles",
			strings.NewReader(`{"remote_console":{"protocol":"serial","type":"serial"}}`))
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: tok})
		if csrfCookie != "" {
			req.AddCookie(&http.Cookie{Name: CSRFCookie, Value: csrfCookie})
		}
		if csrfHeader != "" {
			req.Header.Set(CSRFHeader, csrfHeader)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusForbidden {
			var m map[string]map[string]any
			if json.Unmarshal(body, &m) != nil || !strings.Contains(m["error"]["message"].(string), "CSRF") {
				t.Fatalf("403 body = %s; want the CSRF message", body)
			}
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		name           string
		cookie, header string
		want           int
	}{
		{"no csrf", "", "", http.StatusForbidden},
		{"header only", "", "abc", http.StatusForbidden},
		{"cookie only", "abc", "", http.StatusForbidden},
		{"mismatch", "abc", "abd", http.StatusForbidden},
		{"match", "abc", "abc", http.StatusOK},
	} {
		if got := do("POST", c.cookie, c.header); got != c.want {
			t.Fatalf("%s: status %d; want %d", c.name, got, c.want)
		}
	}
}

func TestPagesEmbedded(t *testing.T) {
	e := newEnv(t)
	for path, want := range map[string]string{
		"/":                           "<title>peerstack</title>",
		"/dashboard/static/app.js":    "remote-consoles",
		"/dashboard/static/xterm.js":  "Terminal",
		"/dashboard/static/xterm.css": ".xterm",
	} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s = %d (%d bytes); want 200 containing %q", path, resp.StatusCode, len(body), want)
		}
	}
	if r := (&resttest.Client{T: t, Base: e.srv.URL}).Do("POST", "/dashboard/login", map[string]any{"user": "x"}); r.Status != http.StatusBadRequest {
		t.Fatalf("login without password = %d; want 400", r.Status)
	}
}

func TestConsoleDelta(t *testing.T) {
	for _, c := range []struct{ prev, cur, want string }{
		{"", "a\n", "a\n"},
		{"a\n", "a\nb\n", "b\n"},
		{"a\nb\n", "a\nb\n", ""},
		{"x\na\nb\n", "a\nb\nc\n", "c\n"}, // the tail moved on
		{"old\n", "new\n", "new\n"},       // nothing in common
	} {
		if got := consoleDelta(c.prev, c.cur); got != c.want {
			t.Fatalf("consoleDelta(%q, %q) = %q; want %q", c.prev, c.cur, got, c.want)
		}
	}
}

// TestSerialConsoleAction covers the pre-2.6 server action form clients
// send at microversion 2.1.
func TestSerialConsoleAction(t *testing.T) {
	e := newEnv(t)
	path := "/compute/v2.1/servers/" + e.inst + "/action"
	r := e.demo.Do("POST", path, map[string]any{"os-getSerialConsole": map[string]any{"type": "serial"}})
	var out struct{ Console struct{ Type, URL string } }
	if r.Status != http.StatusOK {
		t.Fatalf("os-getSerialConsole = %d %s", r.Status, r.Body)
	}
	r.Decode(t, &out)
	if out.Console.Type != "serial" || !strings.Contains(out.Console.URL, "/dashboard/console?token=") {
		t.Fatalf("os-getSerialConsole = %s", r.Body)
	}
	if r := e.demo.Do("POST", path, map[string]any{"os-getSerialConsole": map[string]any{"type": "novnc"}}); r.Status != http.StatusBadRequest {
		t.Fatalf("os-getSerialConsole novnc = %d %s; want 400", r.Status, r.Body)
	}
	if r := e.other.Do("POST", path, map[string]any{"os-getSerialConsole": map[string]any{"type": "serial"}}); r.Status != http.StatusNotFound {
		t.Fatalf("other project's os-getSerialConsole = %d %s; want 404", r.Status, r.Body)
	}
	// Other actions pass through with their whole body, however long.
	var seen []byte
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen, _ = io.ReadAll(r.Body); w.WriteHeader(202) })
	long := `{"os-stop":null,"pad":"` + strings.Repeat("x", 3*maxActionBody) + `"}`
	rec := httptest.NewRecorder()
	e.d.Wrap(api).ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(long)))
	if rec.Code != 202 || string(seen) != long {
		t.Fatalf("passed-through action: status %d, body %d bytes of %d", rec.Code, len(seen), len(long))
	}
	short := `{"os-stop":null}`
	rec = httptest.NewRecorder()
	e.d.Wrap(api).ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(short)))
	if rec.Code != 202 || string(seen) != short {
		t.Fatalf("passed-through action: status %d, body %q", rec.Code, seen)
	}
}

func (b *fakeBackend) HostID() string { return "host-1" }
