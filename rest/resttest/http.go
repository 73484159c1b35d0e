package resttest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/rest"
)

// NewServer serves the services over plain HTTP on loopback until the test
// ends.
func NewServer(t testing.TB, auth rest.Authenticator, svcs ...rest.Service) *httptest.Server {
	t.Helper()
	return NewServerOpts(t, rest.ServerOptions{}, auth, svcs...)
}

// NewServerOpts is NewServer with server options (trusted proxies, base
// URL, limits).
func NewServerOpts(t testing.TB, opts rest.ServerOptions, auth rest.Authenticator, svcs ...rest.Service) *httptest.Server {
	t.Helper()
	srv := rest.NewServer(auth, Logger(t), opts)
	for _, s := range svcs {
		srv.Mount(s)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// Client sends JSON requests to a test server.
type Client struct {
	T     testing.TB
	Base  string // e.g. ts.URL
	Token string // sent as X-Auth-Token when set
}

// Resp is a buffered response.
type Resp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map, failing the test if it is not
// a JSON object.
func (r *Resp) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body %q is not a JSON object: %v", r.Body, err)
	}
	return m
}

// Decode decodes the body into v, failing the test on error.
func (r *Resp) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode response %q: %v", r.Body, err)
	}
}

// Do sends a request. body may be nil, a string or []byte (sent as is), or
// any other value (encoded as JSON). hdr adds headers as key, value pairs.
func (c *Client) Do(method, path string, body any, hdr ...string) *Resp {
	c.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.T.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("X-Auth-Token", c.Token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.T.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &Resp{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// With returns a copy of the client that sends token.
func (c *Client) With(token string) *Client {
	cp := *c
	cp.Token = token
	return &cp
}
