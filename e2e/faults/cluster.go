package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/peerstack/peerstack/e2e"
)

// hostClient talks to one host's API with an admin token that host issued.
type hostClient struct {
	idx   int // 1-based box index
	name  string
	base  string // https://addr:8470
	token string
	hc    *http.Client
	net   *gophercloud.ServiceClient
	vol   *gophercloud.ServiceClient // block storage (volumes), this host
	comp  *gophercloud.ServiceClient // compute (volume attachments), this host
}

// status is the part of GET /cluster/v1/status the checks read.
type status struct {
	Leader struct {
		Name string `json:"name"`
	} `json:"leader"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	RaftState    string `json:"raft_state"`
	StateDigest  string `json:"state_digest"`
	StateIndex   uint64 `json:"state_index"`
}

// member is the part of GET /cluster/v1/members the checks read.
type member struct {
	Name        string `json:"name"`
	RaftRole    string `json:"raft_role"`
	ClockSkewMS *int64 `json:"clock_skew_ms"` // how far its clock is ahead of the answering host's

	Capacity struct {
		VCPUs      int `json:"vcpus"`
		RAMMB      int `json:"ram_mb"`
		DiskGB     int `json:"disk_gb"`
		UsedVCPUs  int `json:"used_vcpus"`
		UsedRAMMB  int `json:"used_ram_mb"`
		UsedDiskGB int `json:"used_disk_gb"`
	} `json:"capacity"`
}

// httpClient trusts the box's cluster CA and keeps connections for the
// concurrent clients.
func httpClient(b *e2e.Box) (*http.Client, error) {
	pem, err := os.ReadFile(b.CACert())
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster CA %s: no certificate", b.CACert())
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	return &http.Client{Transport: tr}, nil
}

// connect authenticates as admin against host i (retrying for up to a
// minute while the cluster settles) and returns its client.
func connect(ctx context.Context, b *e2e.Box, hc *http.Client, i int) (*hostClient, error) {
	h := b.Host(i)
	c := &hostClient{idx: i, name: h.Name, base: "https://" + h.APIAddr, hc: hc}
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.auth(ctx, b.AdminPassword())
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("authenticate at %s: %w", h.Name, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *hostClient) auth(ctx context.Context, password string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	provider, err := openstack.NewClient(c.base + "/identity")
	if err != nil {
		return err
	}
	provider.HTTPClient = *c.hc
	if err := openstack.Authenticate(ctx, provider, gophercloud.AuthOptions{IdentityEndpoint: c.base + "/identity",
		Username: "admin", Password: password, DomainName: "Default", TenantName: "admin"}); err != nil {
		return err
	}
	nc, err := openstack.NewNetworkV2(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		return err
	}
	// Every request of this client goes to this host, whatever the
	// catalog says.
	nc.Endpoint = c.base + "/network/"
	nc.ResourceBase = c.base + "/network/v2.0/"
	vc, err := openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		return err
	}
	// The catalog's path (it carries the project), on this host.
	u, err := url.Parse(vc.Endpoint)
	if err != nil {
		return fmt.Errorf("volume endpoint %q: %w", vc.Endpoint, err)
	}
	vc.Endpoint = c.base + strings.TrimSuffix(u.Path, "/") + "/"
	vc.ResourceBase = vc.Endpoint
	cc, err := openstack.NewComputeV2(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		return err
	}
	cc.Endpoint = c.base + "/compute/v2.1/"
	cc.ResourceBase = cc.Endpoint
	c.net, c.vol, c.comp, c.token = nc, vc, cc, provider.TokenID
	return nil
}

// get GETs a path of the host's API and returns the body of a 200.
func (c *hostClient) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s at %s: %s: %s", path, c.name, resp.Status, buf.String())
	}
	return buf.Bytes(), nil
}

// getJSON GETs a path of the host's API into v.
func (c *hostClient) getJSON(ctx context.Context, path string, v any) error {
	b, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (c *hostClient) status(ctx context.Context) (status, error) {
	return c.readStatus(ctx, "/cluster/v1/status", 3*time.Second)
}

// digest asks for the SHA-256 of the host's whole replicated state and
// the index it was taken at.
func (c *hostClient) digest(ctx context.Context) (status, error) {
	st, err := c.readStatus(ctx, "/cluster/v1/status?digest=true", 5*time.Second)
	if err == nil && len(st.StateDigest) != 64 {
		err = fmt.Errorf("status of %s has no state digest", c.name)
	}
	return st, err
}

func (c *hostClient) readStatus(ctx context.Context, path string, limit time.Duration) (status, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var out struct {
		Status status `json:"status"`
	}
	err := c.getJSON(ctx, path, &out)
	return out.Status, err
}

func (c *hostClient) members(ctx context.Context) ([]member, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out struct {
		Members []member `json:"members"`
	}
	err := c.getJSON(ctx, "/cluster/v1/members", &out)
	return out.Members, err
}
