// Package client is a small Go client of peerstack's cluster API, used by
// the CLI. It authenticates the way the openstack client does (OS_CLOUD and
// clouds.yaml, or OS_* variables) through gophercloud, finds the "cluster"
// endpoint in the catalog and calls it. It must not import the daemon.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Client calls the cluster API with a token.
type Client struct {
	Provider *gophercloud.ProviderClient
	Endpoint string // cluster API base, e.g. https://host:8470/cluster/v1
	http     *http.Client
}

// Options override what the environment says.
type Options struct {
	// BaseURL, when set, sends cluster calls to this host instead of the
	// catalog's cluster endpoint (e.g. the local daemon for `leave`).
	BaseURL string
}

// FromEnv authenticates from OS_CLOUD/clouds.yaml or OS_* variables.
func FromEnv(ctx context.Context, o Options) (*Client, error) {
	var (
		ao     gophercloud.AuthOptions
		eo     gophercloud.EndpointOpts
		tlsCfg *tls.Config
		err    error
	)
	if os.Getenv("OS_CLOUD") != "" {
		ao, eo, tlsCfg, err = clouds.Parse()
		if err != nil {
			return nil, fmt.Errorf("read cloud %q from clouds.yaml: %w", os.Getenv("OS_CLOUD"), err)
		}
	} else {
		ao, err = openstack.AuthOptionsFromEnv()
		if err != nil {
			return nil, fmt.Errorf("no cloud configured (set OS_CLOUD and OS_CLIENT_CONFIG_FILE, or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME): %w", err)
		}
		eo = gophercloud.EndpointOpts{Region: os.Getenv("OS_REGION_NAME"), Availability: gophercloud.AvailabilityPublic}
		if ca := os.Getenv("OS_CACERT"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("read OS_CACERT: %w", err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	pc, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("auth url %q: %w", ao.IdentityEndpoint, err)
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	if tlsCfg != nil {
		hc.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	pc.HTTPClient = *hc
	ao.AllowReauth = true
	if err := openstack.Authenticate(ctx, pc, ao); err != nil {
		return nil, fmt.Errorf("authenticate at %s: %w", ao.IdentityEndpoint, err)
	}
	c := &Client{Provider: pc, http: hc}
	if o.BaseURL != "" {
		c.Endpoint = strings.TrimRight(o.BaseURL, "/") + "/cluster/v1"
		return c, nil
	}
	eo.Type = "cluster"
	if eo.Availability == "" {
		eo.Availability = gophercloud.AvailabilityPublic
	}
	url, err := pc.EndpointLocator(eo)
	if err != nil {
		return nil, fmt.Errorf("find the cluster endpoint in the catalog: %w", err)
	}
	c.Endpoint = strings.TrimRight(url, "/")
	return c, nil
}

// Do sends a request to path under the cluster endpoint and decodes a JSON
// answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", c.Provider.Token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error.Message == "" {
			e.Error.Message = strings.TrimSpace(string(data))
		}
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, e.Error.Message)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
