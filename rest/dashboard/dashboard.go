// Package dashboard owns the web dashboard every host serves on its API
// port: the embedded single-page app (HTML, JS, CSS and xterm.js, no CDN),
// the cookie login that turns a Keystone token into an HttpOnly session
// cookie, the CSRF check on every change made with that cookie, Nova's
// remote-console API for the serial console, the console WebSocket and the
// internal host-to-host endpoint that attaches to a console on the host that
// runs the server.
//
// It must not import node or hv, and it keeps no state of its own beyond a
// per-process key for console tokens and the count of open consoles: pages
// read and change the cluster only through the same API the CLI uses.
package dashboard

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Cookie names. The session cookie holds the Keystone token and is never
// readable by scripts; the CSRF cookie is read by the page and echoed in the
// X-CSRF-Token header on every change.
const (
	SessionCookie = "peerstack_session"
	CSRFCookie    = "peerstack_csrf"
	CSRFHeader    = "X-CSRF-Token"
)

//go:embed static
var staticFS embed.FS

// Backend is what the dashboard needs from the daemon beyond the API.
type Backend interface {
	rest.Backend
	// ConsoleOutput returns the last length lines (-1: all) of an
	// instance's console log from the host that runs it.
	ConsoleOutput(ctx context.Context, inst *statedb.Instance, length int) (string, error)
	// OpenConsole attaches to an instance's serial console on the host
	// that runs it: reads are the guest's output, writes are typed into
	// it, Close detaches. It fails wrapping ErrConsoleReadOnly when the
	// console can only be read from its log.
	OpenConsole(ctx context.Context, inst *statedb.Instance) (io.ReadWriteCloser, error)
	// OpenLocalConsole is OpenConsole for an instance that runs on this
	// host, asked for by another host.
	OpenLocalConsole(ctx context.Context, instanceID string) (io.ReadWriteCloser, error)
	// HostID is the member id of this host (console grants name it).
	HostID() string
}

// Dashboard serves the pages and the console.
type Dashboard struct {
	b         Backend
	log       *slog.Logger
	key       []byte // signs console tokens; per process
	poll      time.Duration
	tokenTTL  time.Duration
	sessions  atomic.Int64
	streams   atomic.Int64  // open event streams
	eventPoll time.Duration // how often an event stream looks at the state's index
	static    http.Handler
	gz        map[string][]byte // static file name → gzip of it, made once
}

// Option changes a Dashboard's defaults.
type Option func(*Dashboard)

// WithConsolePoll sets how often a console session looks for new output.
func WithConsolePoll(d time.Duration) Option { return func(x *Dashboard) { x.poll = d } }

// WithEventPoll sets how often an event stream looks for a new state
// index (default 250 ms).
func WithEventPoll(d time.Duration) Option { return func(x *Dashboard) { x.eventPoll = d } }

// New returns a dashboard for the daemon behind b.
func New(b Backend, log *slog.Logger, opts ...Option) *Dashboard {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	d := &Dashboard{b: b, log: log, key: key, poll: 500 * time.Millisecond, eventPoll: 250 * time.Millisecond, tokenTTL: 10 * time.Minute,
		static: http.StripPrefix("/dashboard/static/", http.FileServerFS(sub)), gz: gzipAll(sub)}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Sessions reports how many console WebSockets are open.
func (d *Dashboard) Sessions() int { return int(d.sessions.Load()) }

// Wrap returns api with the dashboard in front: the pages at / and
// /dashboard/…, and cookie sessions for API calls made by the pages.
func (d *Dashboard) Wrap(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/" || p == "/dashboard" || p == "/dashboard/":
			d.index(w, r)
		case strings.HasPrefix(p, "/dashboard/static/"):
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			d.serveStatic(w, r)
		case p == "/dashboard/login":
			d.login(api, w, r)
		case p == "/dashboard/logout":
			d.logout(api, w, r)
		case p == "/dashboard/console":
			d.console(w, r)
		case strings.HasPrefix(p, "/internal/v1/instances/") && strings.HasSuffix(p, "/console/attach"):
			id := strings.TrimSuffix(strings.TrimPrefix(p, "/internal/v1/instances/"), "/console/attach")
			if id == "" || strings.Contains(id, "/") {
				api.ServeHTTP(w, r)
				return
			}
			d.internalAttach(w, r, id)
		default:
			if r.Header.Get("X-Auth-Token") == "" {
				if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
					if !safeMethod(r.Method) && !d.csrfOK(r) {
						rest.KeystoneErrors(w, http.StatusForbidden, "Forbidden", "CSRF token missing or wrong; reload the page.")
						return
					}
					r = r.Clone(r.Context())
					r.Header.Set("X-Auth-Token", c.Value)
				}
			}
			if d.serialAction(api, w, r) {
				return
			}
			api.ServeHTTP(w, r)
		}
	})
}

// gzipAll compresses the text assets once; xterm.js shrinks about 4×.
func gzipAll(sub fs.FS) map[string][]byte {
	out := map[string][]byte{}
	_ = fs.WalkDir(sub, ".", func(name string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || !(strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".css")) {
			return err
		}
		raw, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(raw)
		_ = zw.Close()
		out[name] = buf.Bytes()
		return nil
	})
	return out
}

// serveStatic answers with the gzip form when the client takes it.
func (d *Dashboard) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/dashboard/static/")
	body, ok := d.gz[name]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) || !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		d.static.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	h.Set("Content-Encoding", "gzip")
	h.Set("Vary", "Accept-Encoding")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// csrfOK is the double-submit check: the header must equal the CSRF cookie,
// which another site can neither read nor set.
func (d *Dashboard) csrfOK(r *http.Request) bool {
	c, err := r.Cookie(CSRFCookie)
	h := r.Header.Get(CSRFHeader)
	return err == nil && c.Value != "" && h != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(h)) == 1
}

func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rest.KeystoneErrors(w, http.StatusMethodNotAllowed, "Method Not Allowed", "The method is not allowed for the requested URL.")
		return
	}
	body, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		rest.KeystoneErrors(w, http.StatusInternalServerError, "Internal Server Error", "dashboard page missing")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' wss: ws:; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(body)
}

// loginRequest is the page's login form.
type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Project  string `json:"project"`
	Domain   string `json:"domain"`
}

// login issues a Keystone token through the identity API and stores it in
// the session cookie; the answer carries the token's user, project and roles.
func (d *Dashboard) login(api http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rest.KeystoneErrors(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Log in with POST.")
		return
	}
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		rest.KeystoneErrors(w, http.StatusBadRequest, "Bad Request", "Malformed login request.")
		return
	}
	if req.User == "" || req.Password == "" || req.Project == "" {
		rest.KeystoneErrors(w, http.StatusBadRequest, "Bad Request", "User name, password and project are required.")
		return
	}
	if req.Domain == "" {
		req.Domain = "Default"
	}
	dom := map[string]string{"name": req.Domain}
	body, _ := json.Marshal(map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
			"user": map[string]any{"name": req.User, "domain": dom, "password": req.Password}}},
		"scope": map[string]any{"project": map[string]any{"name": req.Project, "domain": dom}},
	}})
	sub, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, "/identity/v3/auth/tokens", bytes.NewReader(body))
	sub.Header.Set("Content-Type", "application/json")
	sub.RemoteAddr, sub.TLS, sub.Host = r.RemoteAddr, r.TLS, r.Host
	rec := newRecorder()
	api.ServeHTTP(rec, sub)
	if rec.status != http.StatusCreated {
		copyResponse(w, rec)
		return
	}
	tok := rec.header.Get("X-Subject-Token")
	var issued struct {
		Token struct {
			ExpiresAt time.Time                 `json:"expires_at"`
			User      struct{ Name string }     `json:"user"`
			Project   struct{ Name, ID string } `json:"project"`
			Roles     []struct{ Name string }   `json:"roles"`
		} `json:"token"`
	}
	_ = json.Unmarshal(rec.body.Bytes(), &issued)
	exp := issued.Token.ExpiresAt
	csrf := randomHex(16)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", Expires: exp, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: csrf, Path: "/", Expires: exp, Secure: true, SameSite: http.SameSiteStrictMode})
	roles := []string{}
	for _, x := range issued.Token.Roles {
		roles = append(roles, x.Name)
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"session": map[string]any{
		"user": issued.Token.User.Name, "project": issued.Token.Project.Name, "project_id": issued.Token.Project.ID,
		"roles": roles, "expires_at": exp,
	}})
}

// logout revokes the session's token and clears the cookies.
func (d *Dashboard) logout(api http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rest.KeystoneErrors(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Log out with POST.")
		return
	}
	c, err := r.Cookie(SessionCookie)
	if err == nil && c.Value != "" {
		if !d.csrfOK(r) {
			rest.KeystoneErrors(w, http.StatusForbidden, "Forbidden", "CSRF token missing or wrong; reload the page.")
			return
		}
		sub, _ := http.NewRequestWithContext(r.Context(), http.MethodDelete, "/identity/v3/auth/tokens", nil)
		sub.Header.Set("X-Auth-Token", c.Value)
		sub.Header.Set("X-Subject-Token", c.Value)
		sub.RemoteAddr, sub.TLS, sub.Host = r.RemoteAddr, r.TLS, r.Host
		rec := newRecorder()
		api.ServeHTTP(rec, sub)
		if rec.status >= 500 {
			copyResponse(w, rec)
			return
		}
	}
	for _, name := range []string{SessionCookie, CSRFCookie} {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: name == SessionCookie, Secure: true, SameSite: http.SameSiteStrictMode})
	}
	w.WriteHeader(http.StatusNoContent)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// recorder captures an in-process API answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}, status: http.StatusOK} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) { r.status = s }

func copyResponse(w http.ResponseWriter, rec *recorder) {
	for _, k := range []string{"Content-Type", "Retry-After"} {
		if v := rec.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// sign returns the MAC of msg under the dashboard's key.
func (d *Dashboard) sign(msg string) []byte {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
