package rest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The consistency header: "local" and no header read at once; a GET or
// HEAD asking for "linearizable" waits for the read barrier and gets 503
// with Retry-After when it fails; writes never wait; anything else is 400.
func TestConsistencyHeader(t *testing.T) {
	calls := 0
	var fail error
	s := NewServer(nil, slog.New(slog.DiscardHandler), ServerOptions{ReadBarrier: func(ctx context.Context) error {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the read barrier got no deadline")
		}
		return fail
	}})
	ok := func(*Ctx) (any, error) { return map[string]string{"ok": "yes"}, nil }
	s.Mount(Service{Prefix: "/x", Routes: []Route{
		{Method: "GET", Path: "/r", Auth: Internal, Handler: ok},
		{Method: "POST", Path: "/r", Auth: Internal, Handler: ok},
		{Method: "GET", Path: "/anon", Auth: Public, Handler: ok},
	}})
	do := func(method, v string) (int, http.Header) {
		req := httptest.NewRequest(method, "/x/r", nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}} // a cluster certificate
		if v != "" {
			req.Header.Set(ConsistencyHeader, v)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		return w.Code, w.Header()
	}
	for _, c := range []struct {
		method, v string
		want      int
		calls     int
	}{
		{"GET", "", 200, 0},
		{"GET", "local", 200, 0},
		{"GET", "Linearizable", 200, 1},
		{"POST", "linearizable", 200, 0},
		{"POST", "anything", 200, 0},
		{"GET", "strong", 400, 0},
	} {
		calls = 0
		if got, _ := do(c.method, c.v); got != c.want || calls != c.calls {
			t.Errorf("%s with %q = %d after %d barriers; want %d after %d", c.method, c.v, got, calls, c.want, c.calls)
		}
	}
	// Nobody who has not said who they are makes the leader confirm.
	calls = 0
	req := httptest.NewRequest("GET", "/x/anon", nil)
	req.Header.Set(ConsistencyHeader, "linearizable")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized || calls != 0 {
		t.Errorf("anonymous linearizable read = %d after %d barriers; want 401, no barrier", w.Code, calls)
	}
	fail = errors.New("no leader")
	if got, hdr := do("GET", "linearizable"); got != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("failed barrier = %d (Retry-After %q); want 503 with Retry-After", got, hdr.Get("Retry-After"))
	}
}
