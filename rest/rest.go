// Package rest owns the HTTP API: the router, middleware (auth, request
// ids, logging, limits, errors) and the helpers every OpenStack-compatible
// service uses. Service handlers live in rest/<service>.
//
// It must not import node or hv: it talks to the rest of the daemon only
// through the small interfaces declared here, which node satisfies.
package rest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Access is what a request does to an object.
type Access int

const (
	Read Access = iota
	Write
	Admin
)

// Decision is the outcome of authorization. Its zero value denies: a
// policy that forgets to decide forbids rather than allows.
type Decision int

const (
	Forbidden Decision = iota // deny openly
	Allow
	NotFound // deny and hide that the object exists
)

// Credential is the verified identity behind a request.
type Credential struct {
	UserID    string
	UserName  string
	ProjectID string
	Roles     []string // role names
	RoleIDs   []string
	AuditID   string
	Token     string
	IssuedAt  time.Time
	ExpiresAt time.Time
	Methods   []string
	AppCredID string
	// ProjectAdminOnly is set when the token is scoped to a project other
	// than the admin project: an admin role there is not cloud-wide.
	ProjectAdminOnly bool
}

// IsAdmin reports whether the credential carries the cloud-wide admin
// role (the admin role on the admin project).
func (c *Credential) IsAdmin() bool {
	if c.ProjectAdminOnly {
		return false
	}
	for _, r := range c.Roles {
		if r == "admin" {
			return true
		}
	}
	return false
}

// Authenticator verifies a token locally.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Credential, error)
}

// Backend is what handlers need from the daemon.
type Backend interface {
	State() *statedb.Snapshot
	// Apply proposes a command through Raft and returns after the local
	// state has applied it.
	Apply(ctx context.Context, cmd *statedb.Command) (uint64, error)
	Authorize(c *Credential, access Access, ownerProject string, public bool) Decision
	Now() time.Time
	NewID() string
}

type credKey struct{}

// CredentialFrom returns the verified caller of the request ctx belongs
// to, or nil (no token, or not a request).
func CredentialFrom(ctx context.Context) *Credential {
	c, _ := ctx.Value(credKey{}).(*Credential)
	return c
}

// WithCredential returns ctx carrying cred as the verified caller: what
// the server does for every token-authenticated request, for code that
// proposes on a caller's behalf outside one.
func WithCredential(ctx context.Context, cred *Credential) context.Context {
	return context.WithValue(ctx, credKey{}, cred)
}

// Propose builds a command with a fresh request id and applies it. Inside
// a request it waits at most the server's write deadline.
func Propose(ctx context.Context, b Backend, t statedb.CmdType, payload any) (uint64, error) {
	cmd, err := statedb.NewCommand(t, b.NewID(), b.Now(), payload)
	if err != nil {
		return 0, err
	}
	ctx, cancel := writeContext(ctx)
	defer cancel()
	return b.Apply(ctx, cmd)
}

// AuthMode says who may call a route.
type AuthMode int

const (
	Token    AuthMode = iota // a valid token is required
	Public                   // no token needed (version documents, token issue)
	Internal                 // a cluster client certificate is required
)

// HandlerFunc handles one request and returns a value to encode as JSON,
// a *Response, or an error.
type HandlerFunc func(c *Ctx) (any, error)

// Route is one entry of a service's route table.
type Route struct {
	Method  string
	Path    string
	Auth    AuthMode
	Handler HandlerFunc
}

// Response lets a handler choose status, headers or a raw body.
type Response struct {
	Status int
	Header http.Header
	Body   any       // encoded as JSON unless nil
	Raw    io.Reader // streamed as is when set
	Close  func()
}

// ErrorWriter renders an error in a service's own body shape.
type ErrorWriter func(w http.ResponseWriter, status int, title, msg string)

// Service is a group of routes under one prefix with one error style.
type Service struct {
	Prefix string
	Routes []Route
	Errors ErrorWriter
	// Wrap, if set, wraps every handler of the service (microversion checks).
	Wrap func(http.Handler) http.Handler
}

// Ctx is the per-request context handed to handlers.
type Ctx struct {
	R     *http.Request
	W     http.ResponseWriter
	Cred  *Credential
	ReqID string
}

// Context is the request's context.
func (c *Ctx) Context() context.Context { return c.R.Context() }

// Var returns a path variable: the one place that knows the router.
func (c *Ctx) Var(name string) string { return mux.Vars(c.R)[name] }

// Query returns a query parameter.
func (c *Ctx) Query(name string) string { return c.R.URL.Query().Get(name) }

// MaxBody is the default JSON request body limit.
const MaxBody = 1 << 20

// Decode reads a JSON body into v with the default size limit.
func (c *Ctx) Decode(v any) error { return c.DecodeLimit(v, MaxBody) }

// DecodeLimit reads a JSON body of at most limit bytes into v; a longer
// body is refused with 413 once limit bytes have been read.
func (c *Ctx) DecodeLimit(v any, limit int64) error {
	body := http.MaxBytesReader(c.W, c.R.Body, limit)
	dec := json.NewDecoder(body)
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: "Request body too large."}
		}
		return BadRequest("Malformed request body: %v", err)
	}
	return nil
}

// HTTPError is an error with a status code.
type HTTPError struct {
	Status int
	Msg    string
	Header http.Header
	Quiet  bool // an expected, transient condition: not logged as a failure
}

func (e *HTTPError) Error() string { return e.Msg }

// BadRequest returns a 400 error.
func BadRequest(format string, args ...any) error {
	return &HTTPError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// NotFoundf returns a 404 error.
func NotFoundf(format string, args ...any) error {
	return &HTTPError{Status: http.StatusNotFound, Msg: fmt.Sprintf(format, args...)}
}

// Forbiddenf returns a 403 error.
func Forbiddenf(format string, args ...any) error {
	return &HTTPError{Status: http.StatusForbidden, Msg: fmt.Sprintf(format, args...)}
}

// Conflictf returns a 409 error.
func Conflictf(format string, args ...any) error {
	return &HTTPError{Status: http.StatusConflict, Msg: fmt.Sprintf(format, args...)}
}

// Unauthorized returns a 401 error.
func Unauthorized(msg string) error {
	return &HTTPError{Status: http.StatusUnauthorized, Msg: msg}
}

// Unavailable is returned when no leader is known; clients retry.
func Unavailable(msg string) error {
	return &HTTPError{Status: http.StatusServiceUnavailable, Msg: msg, Header: http.Header{"Retry-After": {"1"}}, Quiet: true}
}

// Check applies the policy to one object: NotFound hides it (404),
// Forbidden is 403.
func Check(b Backend, c *Ctx, access Access, owner string, public bool, what string) error {
	if c.Cred == nil {
		return Unauthorized("The request you have made requires authentication.")
	}
	switch b.Authorize(c.Cred, access, owner, public) {
	case Allow:
		return nil
	case NotFound:
		return NotFoundf("%s could not be found.", what)
	default:
		return Forbiddenf("You are not authorized to perform the requested action.")
	}
}

// Visible reports whether an object belongs in a list for this credential.
func Visible(b Backend, c *Ctx, owner string, public bool) bool {
	return c.Cred != nil && b.Authorize(c.Cred, Read, owner, public) == Allow
}

// StatusOf maps an error to an HTTP status.
func StatusOf(err error) (int, string, http.Header) {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status, he.Msg, he.Header
	}
	var se *statedb.Error
	if errors.As(err, &se) {
		switch se.Kind {
		case statedb.KindNotFound:
			return http.StatusNotFound, se.Msg, nil
		case statedb.KindConflict:
			return http.StatusConflict, se.Msg, nil
		case statedb.KindInvalid:
			return http.StatusBadRequest, se.Msg, nil
		case statedb.KindForbidden:
			return http.StatusForbidden, se.Msg, nil
		}
		return http.StatusInternalServerError, se.Msg, nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoLeader) {
		return http.StatusServiceUnavailable, "No Raft leader committed the change in time (this host may be cut off from " +
			"the majority of the cluster); it may or may not have been applied. Retry later.", http.Header{"Retry-After": {"2"}}
	}
	return http.StatusInternalServerError, "An unexpected error prevented the server from fulfilling your request.", nil
}

// ErrNoLeader is matched by StatusOf; node wraps consensus.ErrNoLeader in it.
var ErrNoLeader = errors.New("no leader")

// Title returns the standard reason phrase for a status.
func Title(status int) string { return http.StatusText(status) }

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// KeystoneErrors renders {"error":{"code","title","message"}}.
func KeystoneErrors(w http.ResponseWriter, status int, title, msg string) {
	WriteJSON(w, status, map[string]any{"error": map[string]any{"code": status, "title": title, "message": msg}})
}

// NewRequestID returns a request id in OpenStack's "req-<uuid>" form.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return "req-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Server builds the HTTP handler from services.
type Server struct {
	router  *mux.Router
	auth    Authenticator
	log     *slog.Logger
	opts    ServerOptions
	observe func(path string, status int, d time.Duration)
}

// NewServer returns an empty server; opts, at most one, sets the base URL,
// trusted proxies and limits.
func NewServer(auth Authenticator, log *slog.Logger, opts ...ServerOptions) *Server {
	r := mux.NewRouter()
	r.SkipClean(true)
	s := &Server{router: r, auth: auth, log: log}
	if len(opts) > 0 {
		s.opts = opts[0]
	}
	s.opts.Limits = s.opts.Limits.withDefaults()
	return s
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s }

// OnRequest sets a function told the path, status and duration of every
// request once it is answered (for metrics). Set it before serving.
func (s *Server) OnRequest(f func(path string, status int, d time.Duration)) { s.observe = f }

// Mount registers a service's routes.
func (s *Server) Mount(svc Service) {
	for _, rt := range svc.Routes {
		var h http.Handler = s.wrap(svc, rt)
		if svc.Wrap != nil {
			h = svc.Wrap(h)
		}
		path := svc.Prefix + rt.Path
		s.router.Handle(path, h).Methods(rt.Method)
		if !strings.HasSuffix(path, "/") && rt.Method == http.MethodGet {
			// Clients differ on trailing slashes for collections.
			s.router.Handle(path+"/", h).Methods(rt.Method)
		}
	}
}

// Handle registers a plain handler (health).
func (s *Server) Handle(path string, h http.Handler) { s.router.Handle(path, h) }

// Authorizer is the policy HandleAdmin asks.
type Authorizer interface {
	Authorize(c *Credential, access Access, ownerProject string, public bool) Decision
}

// HandleAdmin registers a plain handler (metrics) that needs a token the
// policy allows Admin access.
func (s *Server) HandleAdmin(path string, h http.Handler, pol Authorizer) {
	s.router.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Auth-Token")
		if tok == "" {
			KeystoneErrors(w, http.StatusUnauthorized, Title(http.StatusUnauthorized), "The request you have made requires authentication.")
			return
		}
		cred, err := s.auth.Authenticate(r.Context(), tok)
		if err != nil {
			KeystoneErrors(w, http.StatusUnauthorized, Title(http.StatusUnauthorized), "The request you have made requires authentication.")
			return
		}
		if pol.Authorize(cred, Admin, "", false) != Allow {
			KeystoneErrors(w, http.StatusForbidden, Title(http.StatusForbidden), "You are not authorized to perform the requested action.")
			return
		}
		h.ServeHTTP(w, r)
	}))
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := NewRequestID()
	w.Header().Set("X-Openstack-Request-Id", reqID)
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: 200}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p, "req", reqID)
			if !sw.wrote {
				KeystoneErrors(sw, 500, "Internal Server Error", "internal error")
			}
		}
		d := time.Since(start)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"ms", d.Milliseconds(), "req", reqID)
		if s.observe != nil {
			s.observe(r.URL.Path, sw.status, d)
		}
	}()
	var match mux.RouteMatch
	if !s.router.Match(r, &match) {
		if match.MatchErr == mux.ErrMethodMismatch {
			KeystoneErrors(sw, http.StatusMethodNotAllowed, "Method Not Allowed", "The method is not allowed for the requested URL.")
			return
		}
		KeystoneErrors(sw, http.StatusNotFound, "Not Found", "The resource could not be found.")
		return
	}
	r = mux.SetURLVars(r, match.Vars)
	ctx := context.WithValue(r.Context(), reqIDKey{}, reqID)
	ctx = context.WithValue(ctx, reqInfoKey{}, s.requestInfo(r))
	if r.Body != nil && r.Body != http.NoBody && strings.HasPrefix(r.Header.Get("Content-Type"), "application/octet-stream") {
		// A streamed upload: a rolling deadline per chunk replaces the
		// server's ReadTimeout.
		r.Body = &streamBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: s.opts.Limits.StreamIdle}
	}
	match.Handler.ServeHTTP(sw, r.WithContext(ctx))
}

type reqIDKey struct{}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) wrap(svc Service, rt Route) http.HandlerFunc {
	errw := svc.Errors
	if errw == nil {
		errw = KeystoneErrors
	}
	return func(w http.ResponseWriter, r *http.Request) {
		reqID, _ := r.Context().Value(reqIDKey{}).(string)
		c := &Ctx{R: r, W: w, ReqID: reqID}
		fail := func(err error) {
			status, msg, hdr := StatusOf(err)
			for k, v := range hdr {
				w.Header()[k] = v
			}
			var he *HTTPError
			quiet := errors.Is(err, ErrNoLeader) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &he) && he.Quiet)
			switch {
			case quiet:
				s.log.Debug("request deferred", "method", r.Method, "path", r.URL.Path, "status", status, "err", err, "req", reqID)
			case status >= 500:
				s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err, "req", reqID)
			}
			errw(w, status, Title(status), msg)
		}
		switch rt.Auth {
		case Token:
			tok := r.Header.Get("X-Auth-Token")
			if tok == "" {
				fail(Unauthorized("The request you have made requires authentication."))
				return
			}
			cred, err := s.auth.Authenticate(r.Context(), tok)
			if err != nil {
				fail(Unauthorized("The request you have made requires authentication."))
				return
			}
			c.Cred = cred
			c.R = r.WithContext(WithCredential(r.Context(), cred))
		case Internal:
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				fail(Forbiddenf("a cluster client certificate is required"))
				return
			}
		case Public:
			if tok := r.Header.Get("X-Auth-Token"); tok != "" {
				if cred, err := s.auth.Authenticate(r.Context(), tok); err == nil {
					c.Cred = cred
				}
			}
		}
		if v := r.Header.Get(ConsistencyHeader); v != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			// Only for reads of callers who proved who they are: a
			// linearizable read costs the leader a confirmation round.
			if err := s.readBarrier(c.R.Context(), v, c.Cred != nil || rt.Auth == Internal); err != nil {
				fail(err)
				return
			}
		}
		v, err := rt.Handler(c)
		if err != nil {
			fail(err)
			return
		}
		writeValue(w, v, s.opts.Limits.StreamIdle)
	}
}

// ConsistencyHeader asks for a read's consistency: "local" (the default)
// answers from this host's state, which may lag the leader by a moment;
// "linearizable" answers only once this host holds every write
// acknowledged anywhere before the request, as if read at the leader.
// Writes are linearizable whatever it says.
const ConsistencyHeader = "X-Peerstack-Consistency"

// readBarrier holds a read that asked for linearizable consistency until
// this host has caught up with the leader as of the request.
func (s *Server) readBarrier(ctx context.Context, v string, known bool) error {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "local":
		return nil
	case "linearizable":
	default:
		return BadRequest("%s must be local or linearizable, not %q.", ConsistencyHeader, v)
	}
	if !known {
		return Unauthorized("A linearizable read needs a token (X-Auth-Token).")
	}
	if s.opts.ReadBarrier == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, linearizableReadTimeout)
	defer cancel()
	if err := s.opts.ReadBarrier(ctx); err != nil {
		s.log.Debug("linearizable read refused", "err", err)
		return &HTTPError{Status: http.StatusServiceUnavailable, Quiet: true, Header: http.Header{"Retry-After": {"1"}},
			Msg: "This host could not confirm with the Raft leader that it holds every acknowledged write in time (it may be " +
				"cut off from the majority of the cluster, or still catching up). Retry later, or read without " + ConsistencyHeader + ": linearizable."}
	}
	return nil
}

// linearizableReadTimeout bounds the wait for the leader behind a
// linearizable read; past it the client gets 503 and may retry.
const linearizableReadTimeout = 5 * time.Second

func writeValue(w http.ResponseWriter, v any, streamIdle time.Duration) {
	resp, ok := v.(*Response)
	if !ok {
		WriteJSON(w, http.StatusOK, v)
		return
	}
	if resp.Close != nil {
		defer resp.Close()
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case resp.Raw != nil:
		w.WriteHeader(status)
		copyStream(w, resp.Raw, streamIdle)
	case resp.Body != nil:
		WriteJSON(w, status, resp.Body)
	default:
		w.WriteHeader(status)
	}
}
