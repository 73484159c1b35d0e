package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuotaAbuseRealDaemon is the abuse that once took a daemon from
// 29 MB to 117 MB and its Raft data from 132 KB to 30 MB: 30 image creates
// carrying ~900 KB of properties each, sent to a real daemon. With the
// default limits every one is refused with 413, the Raft data does not
// grow by more than the idle cluster writes itself, and the daemon's
// resident memory stays within 10 MB of idle.
func TestQuotaAbuseRealDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	d := StartDaemon(t, "alpha", filepath.Join(t.TempDir(), "a"), "agent")
	pem, err := os.ReadFile(filepath.Join(d.DataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	tok, err := adminToken(hc, d.APIAddr, d.AdminPassword())
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var body strings.Builder
	body.WriteString(`{"name":"abuse","disk_format":"qcow2","container_format":"bare"`)
	for i := range 14 {
		fmt.Fprintf(&body, `,"prop%d":%q`, i, strings.Repeat("x", 64000))
	}
	body.WriteString("}")
	payload := body.String()
	post := func() (int, string) {
		req, _ := http.NewRequest("POST", "https://"+d.APIAddr+"/image/v2/images", strings.NewReader(payload))
		req.Header.Set("X-Auth-Token", tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("image create: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	// One refused request first, so that idle is measured with the TLS
	// session, the token and the handler's code paths already warm.
	if st, b := post(); st != http.StatusRequestEntityTooLarge {
		t.Fatalf("first create = %d %s, want 413", st, b)
	}
	pid := d.cmd.Process.Pid
	idleRSS, idleRaft := rssMB(pid), dirMB(t, d.DataDir)
	for i := range 30 {
		if st, b := post(); st != http.StatusRequestEntityTooLarge {
			t.Fatalf("create %d = %d %s, want 413", i, st, b)
		}
	}
	afterRSS, afterRaft := rssMB(pid), dirMB(t, d.DataDir)
	t.Logf("daemon RSS idle %.1f MB, after 30 refused ~900 KB creates %.1f MB; data dir %.2f → %.2f MB", idleRSS, afterRSS, idleRaft, afterRaft)
	if idleRSS == 0 {
		t.Fatalf("no VmRSS read for pid %d", pid)
	}
	if afterRSS > idleRSS+10 {
		t.Errorf("daemon RSS grew from %.1f to %.1f MB: more than 10 MB over idle", idleRSS, afterRSS)
	}
	// Each refused create would have written ~900 KB to the log.
	if afterRaft > idleRaft+1 {
		t.Errorf("data dir grew from %.2f to %.2f MB", idleRaft, afterRaft)
	}
	out := Run(t, filepath.Join(d.DataDir, "clouds.yaml"), "openstack", "image", "list", "-f", "value", "-c", "Name")
	if strings.Contains(out, "abuse") {
		t.Errorf("a refused image is listed:\n%s", out)
	}
}

// dirMB is the size of the files under dir, in MB.
func dirMB(t *testing.T, dir string) float64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("size of %s: %v", dir, err)
	}
	return float64(n) / (1 << 20)
}
