package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sentBody is one request body a client sent.
type sentBody struct {
	method, path string
	body         map[string]any
}

// recordingProxy sits in front of one host as plain HTTP and keeps every
// JSON body a client sends, so a test can see which forms the client
// really uses ("mtu": "1400" or 1400). The host's catalog names its own
// address (never the Host header), so the proxy rewrites that address to
// its own in every answer, and every service is reached through it.
type recordingProxy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	sent []sentBody
}

func newRecordingProxy(t *testing.T, c *Cluster, i int) *recordingProxy {
	t.Helper()
	target, err := url.Parse(c.URL(i))
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		Transport: c.HTTPClient().Transport,
		ModifyResponse: func(resp *http.Response) error {
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			raw = bytes.ReplaceAll(raw, []byte(c.URL(i)), []byte(p.srv.URL))
			resp.Body = io.NopCloser(bytes.NewReader(raw))
			resp.ContentLength = int64(len(raw))
			resp.Header.Set("Content-Length", strconv.Itoa(len(raw)))
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", strings.Replace(loc, c.URL(i), p.srv.URL, 1))
			}
			return nil
		},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
			raw, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(raw))
			var m map[string]any
			if json.Unmarshal(raw, &m) == nil {
				p.mu.Lock()
				p.sent = append(p.sent, sentBody{r.Method, r.URL.Path, m})
				p.mu.Unlock()
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// sentValue returns the value of key.attr in the last body sent to a path
// ending in suffix, and whether there was one.
func (p *recordingProxy) sentValue(method, suffix, key, attr string) (any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.sent) - 1; i >= 0; i-- {
		s := p.sent[i]
		if s.method != method || !strings.HasSuffix(s.path, suffix) {
			continue
		}
		obj, ok := s.body[key].(map[string]any)
		if !ok {
			continue
		}
		v, ok := obj[attr]
		return v, ok
	}
	return nil, false
}

// cloudsEnv writes a clouds.yaml for the admin that reaches the cluster
// through the proxy and returns the environment the openstack client and
// openstacksdk need.
func (p *recordingProxy) cloudsEnv(t *testing.T, c *Cluster) []string {
	t.Helper()
	dir := t.TempDir()
	clouds := fmt.Sprintf(`clouds:
  peerstack:
    auth:
      auth_url: %s/identity
      username: admin
      password: %q
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    volume_api_version: 3
`, p.srv.URL, c.AdminPassword)
	path := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(path, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"OS_CLIENT_CONFIG_FILE=" + path, "OS_CLOUD=peerstack", "HOME=" + dir}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// runClient runs a client program and returns its standard output.
func runClient(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestFormsOpenStackClient runs the real openstack client with the
// options users reported failing (network create --mtu 1400 was a 400
// "expected int, got string") and checks what it sent, that the request
// succeeded and that the host stored the right values.
func TestFormsOpenStackClient(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is required (python3-openstackclient): %v", err)
	}
	c := NewCluster(t, 1)
	cpSeedImage(t.Context(), t, c.Node(0))
	p := newRecordingProxy(t, c, 0)
	env := p.cloudsEnv(t, c)
	osc := func(v any, args ...string) {
		t.Helper()
		out := runClient(t, env, "openstack", append(args, "-f", "json")...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("openstack %s: output %q: %v", strings.Join(args, " "), out, err)
		}
	}

	var net map[string]any
	osc(&net, "network", "create", "--mtu", "1400", "n1")
	sent, ok := p.sentValue("POST", "/v2.0/networks", "network", "mtu")
	t.Logf("openstack network create --mtu 1400 sent mtu %#v", sent)
	if !ok || fmt.Sprint(sent) != "1400" {
		t.Errorf("network create sent mtu %#v (present %v); want 1400 in some form", sent, ok)
	}
	n, found := c.Node(0).State().Network(fmt.Sprint(net["id"]))
	if !found || n.MTU != 1400 || net["mtu"] != 1400.0 {
		t.Errorf("network n1: shown mtu %v, stored %+v (found %v); want 1400", net["mtu"], n, found)
	}

	// The update path converts too.
	runClient(t, env, "openstack", "network", "set", "--mtu", "1450", "n1")
	sent, ok = p.sentValue("PUT", "/v2.0/networks/"+n.ID, "network", "mtu")
	t.Logf("openstack network set --mtu 1450 sent mtu %#v", sent)
	if n, found := c.Node(0).State().Network(n.ID); !ok || !found || n.MTU != 1450 {
		t.Errorf("after network set --mtu 1450 (sent %#v): stored %+v; want 1450", sent, n)
	}

	var sub map[string]any
	osc(&sub, "subnet", "create", "--network", "n1", "--subnet-range", "10.1.0.0/24", "--ip-version", "4", "s1")
	sent, ok = p.sentValue("POST", "/v2.0/subnets", "subnet", "ip_version")
	t.Logf("openstack subnet create --ip-version 4 sent ip_version %#v", sent)
	if !ok || fmt.Sprint(sent) != "4" {
		t.Errorf("subnet create sent ip_version %#v (present %v); want 4 in some form", sent, ok)
	}
	s, found := c.Node(0).State().Subnet(fmt.Sprint(sub["id"]))
	if !found || s.IPVersion != 4 || s.CIDR != "10.1.0.0/24" {
		t.Errorf("subnet s1 stored %+v (found %v); want IPv4 10.1.0.0/24", s, found)
	}

	var vol map[string]any
	osc(&vol, "volume", "create", "--size", "1", "v1")
	sent, ok = p.sentValue("POST", "/volumes", "volume", "size")
	t.Logf("openstack volume create --size 1 sent size %#v", sent)
	if !ok || fmt.Sprint(sent) != "1" {
		t.Errorf("volume create sent size %#v (present %v); want 1 in some form", sent, ok)
	}
	v, found := c.Node(0).State().Volume(fmt.Sprint(vol["id"]))
	if !found || v.SizeGB != 1 {
		t.Errorf("volume v1 stored %+v (found %v); want 1 GB", v, found)
	}

	var srv map[string]any
	osc(&srv, "server", "create", "--image", "tiny", "--flavor", "m1.tiny", "--network", "n1", "--min", "2", "--max", "2", "vm")
	for _, attr := range []string{"min_count", "max_count"} {
		sent, ok = p.sentValue("POST", "/servers", "server", attr)
		t.Logf("openstack server create --min 2 --max 2 sent %s %#v", attr, sent)
		if !ok || fmt.Sprint(sent) != "2" {
			t.Errorf("server create sent %s %#v (present %v); want 2 in some form", attr, sent, ok)
		}
	}
	var names []string
	for _, inst := range c.Node(0).State().Instances() {
		names = append(names, inst.Name)
	}
	if len(names) != 2 || !strings.Contains(strings.Join(names, ","), "vm-1") || !strings.Contains(strings.Join(names, ","), "vm-2") {
		t.Errorf("servers after create --min 2 --max 2: %v; want vm-1 and vm-2", names)
	}
}

// sdkScript uses openstacksdk's cloud layer: a network with an MTU, a
// volume with an integer size and one with a string size (Cinder takes
// both), printing what it made as JSON.
const sdkScript = `
import json, openstack
conn = openstack.connect(cloud="peerstack")
net = conn.create_network("sdknet", mtu_size=1400)
v1 = conn.create_volume(size=1, name="sdkvol1", wait=False)
v2 = conn.create_volume(size="2", name="sdkvol2", wait=False)
print(json.dumps({"network": {"id": net["id"], "mtu": net["mtu"]},
                  "volumes": [{"id": v["id"], "size": v["size"]} for v in (v1, v2)]}))
`

// TestFormsOpenStackSDK drives the same host through openstacksdk's cloud
// layer, which builds its bodies itself.
func TestFormsOpenStackSDK(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import openstack").Run(); err != nil {
		t.Fatalf("openstacksdk is required (python3-openstacksdk): %v", err)
	}
	c := NewCluster(t, 1)
	p := newRecordingProxy(t, c, 0)
	env := p.cloudsEnv(t, c)
	out := runClient(t, env, "/usr/bin/python3", "-c", sdkScript)
	var got struct {
		Network struct {
			ID  string `json:"id"`
			MTU int    `json:"mtu"`
		} `json:"network"`
		Volumes []struct {
			ID   string `json:"id"`
			Size int    `json:"size"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &got); err != nil {
		t.Fatalf("sdk output %q: %v", out, err)
	}
	sent, _ := p.sentValue("POST", "/v2.0/networks", "network", "mtu")
	t.Logf("openstacksdk create_network(mtu_size=1400) sent mtu %#v", sent)
	n, ok := c.Node(0).State().Network(got.Network.ID)
	if !ok || n.MTU != 1400 || got.Network.MTU != 1400 {
		t.Errorf("sdk network: shown mtu %d, stored %+v (found %v); want 1400", got.Network.MTU, n, ok)
	}
	if len(got.Volumes) != 2 {
		t.Fatalf("sdk volumes = %+v; want two", got.Volumes)
	}
	for i, want := range []int{1, 2} {
		v, ok := c.Node(0).State().Volume(got.Volumes[i].ID)
		if !ok || v.SizeGB != want || got.Volumes[i].Size != want {
			t.Errorf("sdk volume %d: shown size %d, stored %+v (found %v); want %d GB", i, got.Volumes[i].Size, v, ok, want)
		}
	}
	sent, _ = p.sentValue("POST", "/volumes", "volume", "size")
	t.Logf("openstacksdk create_volume(size=\"2\") sent size %#v", sent)
	if sent != "2" {
		t.Errorf("the last volume create sent size %#v; want the string \"2\" the script passed", sent)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
