package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// memberAlive reports whether the host at api lists a member named name
// with gossip state alive.
func memberAlive(ctx context.Context, hc *http.Client, api, tok, name string) bool {
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+api+"/cluster/v1/members", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Members []struct {
			Name        string `json:"name"`
			GossipState string `json:"gossip_state"`
		} `json:"members"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return false
	}
	for _, m := range body.Members {
		if m.Name == name && m.GossipState == "alive" {
			return true
		}
	}
	return false
}

// waitAliveEverywhere polls every host in apis until each lists name
// alive, and returns when the last one did.
func waitAliveEverywhere(b *testing.B, hc *http.Client, pw string, apis []string, name string) time.Time {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	toks := map[string]string{}
	for _, api := range apis {
		for toks[api] == "" {
			t, err := adminToken(hc, api, pw)
			if err == nil {
				toks[api] = t
			} else if ctx.Err() != nil {
				b.Fatalf("no token from %s: %v", api, err)
			}
		}
	}
	pending := append([]string(nil), apis...)
	for len(pending) > 0 {
		var still []string
		for _, api := range pending {
			if !memberAlive(ctx, hc, api, toks[api], name) {
				still = append(still, api)
			}
		}
		pending = still
		if len(pending) == 0 {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%s not listed alive by %v within 60 s", name, pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

// httpsClient trusts the cluster CA in pemFile.
func httpsClient(b *testing.B, pemFile string) *http.Client {
	b.Helper()
	data, err := os.ReadFile(pemFile)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkJoin measures, between real processes with production timers,
// what a user waits for: bootstrap (start → API answering a login), a
// join (`peerstack join` started → every member lists the host alive),
// and a killed member restarted → listed alive everywhere. The baseline,
// in the same run, is the floor of any of them: starting the binary
// (`peerstack version`) plus one login round trip to a running host.
func BenchmarkJoin(b *testing.B) {
	bin := Binary(b)
	var boots, joins, restarts, floors []time.Duration
	for i := range 3 * b.N { // three clusters per iteration: medians need samples
		root := b.TempDir()
		t0 := time.Now()
		a := StartDaemon(b, "alpha", filepath.Join(root, "a"), "agent")
		pem := filepath.Join(a.DataDir, "ca.pem")
		hc := httpsClient(b, pem)
		pw := a.AdminPassword()
		for {
			if _, err := adminToken(hc, a.APIAddr, pw); err == nil {
				break
			}
			if time.Since(t0) > 60*time.Second {
				b.Fatal("bootstrap: no login within 60 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		boots = append(boots, time.Since(t0))

		clouds := filepath.Join(a.DataDir, "clouds.yaml")
		apis := []string{a.APIAddr}
		var last *Proc
		for _, name := range []string{"beta", "gamma"} {
			tok := LastLine(Run(b, clouds, bin, "token", "create"))
			t1 := time.Now()
			p := StartDaemon(b, name, filepath.Join(root, name), "join", tok)
			apis = append(apis, p.APIAddr)
			done := waitAliveEverywhere(b, hc, pw, apis, name)
			if name == "gamma" { // the second join: a cluster of two already answers
				joins = append(joins, done.Sub(t1))
			}
			last = p
		}

		last.Kill()
		t2 := time.Now()
		last.Restart(b)
		restarts = append(restarts, waitAliveEverywhere(b, hc, pw, apis, last.Name).Sub(t2))

		t3 := time.Now()
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("version: %v: %s", err, out)
		}
		if _, err := adminToken(hc, a.APIAddr, pw); err != nil {
			b.Fatal(err)
		}
		floors = append(floors, time.Since(t3))
		b.Logf("run %d: bootstrap %v, join %v, restart %v, floor %v", i, boots[i], joins[i], restarts[i], floors[i])
	}
	b.ReportMetric(float64(median(boots).Milliseconds()), "bootstrap-ms")
	b.ReportMetric(float64(median(joins).Milliseconds()), "join-to-alive-everywhere-ms")
	b.ReportMetric(float64(median(restarts).Milliseconds()), "restart-to-alive-everywhere-ms")
	b.ReportMetric(float64(median(floors).Milliseconds()), "baseline-exec+login-ms")
	fl := median(floors)
	BenchRow("bootstrap: start -> login answered (p50)", median(boots), "<= 500ms", "exec+login", fl)
	BenchRow("join: `peerstack join` -> alive on every member (p50)", median(joins), "<= 1s", "exec+login", fl)
	BenchRow("killed member restarted -> alive everywhere (p50)", median(restarts), "<= 500ms", "exec+login", fl)
}
