package imagecache

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// HTTPPeers reaches other hosts' blobs over the internal API
// (GET /internal/v1/blobs/{sha256}, POST …/verify) with the host's mTLS
// client.
type HTTPPeers struct {
	// Client is the mTLS client for host-to-host calls; its transport is
	// reused. It must have no overall timeout: ctx bounds each call.
	Client *http.Client
	// AddrOf returns a host's API address ("" when unknown).
	AddrOf func(host string) string
}

// OpenBlob implements Peers.
func (p HTTPPeers) OpenBlob(ctx context.Context, host, sum string) (io.ReadCloser, error) {
	addr := p.AddrOf(host)
	if addr == "" {
		return nil, fmt.Errorf("host %s: no address", host)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/internal/v1/blobs/"+sum, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.blobClient().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Body, nil
}

// VerifyBlob implements Peers.
func (p HTTPPeers) VerifyBlob(ctx context.Context, host, sum string) error {
	addr := p.AddrOf(host)
	if addr == "" {
		return fmt.Errorf("host %s: no address", host)
	}
	path := "/internal/v1/blobs/" + sum + "/verify"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: p.Client.Transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// blobClient is a client for one blob stream over HTTP/1.1: a bulk
// transfer goes faster without HTTP/2's framing and flow control, and
// costs one TLS handshake, nothing next to the bytes.
func (p HTTPPeers) blobClient() *http.Client {
	tr, ok := p.Client.Transport.(*http.Transport)
	if !ok {
		return &http.Client{Transport: p.Client.Transport}
	}
	tr = tr.Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.DialTLSContext = nil // the shared client's dialer offers h2; TLSClientConfig below does not
	if tr.TLSClientConfig != nil {
		tr.TLSClientConfig.NextProtos = nil
	}
	tr.DisableKeepAlives = true
	return &http.Client{Transport: tr}
}
