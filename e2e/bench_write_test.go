package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// fsyncFloor times one small write + fsync in dir, as a Raft log append does.
func fsyncFloor(b *testing.B, dir string, n int) []time.Duration {
	f, err := os.CreateTemp(dir, "fsync")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	out := make([]time.Duration, 0, n)
	buf := make([]byte, 512)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(t))
	}
	return out
}

// rttFloor times one loopback TCP round trip of a small message.
func rttFloor(b *testing.B, n int) []time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	out := make([]time.Duration, 0, n)
	buf := make([]byte, 64)
	for range n {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(t))
	}
	return out
}

// BenchmarkWrites: three real daemons; project creates through a
// follower (after the TLS handshake, and with a fresh connection each),
// project lists, and the floor measured in the same run: one fsync in the
// data dir's file system plus one loopback round trip.
func BenchmarkWrites(b *testing.B) {
	const n = 200
	for range b.N {
		procs, hc := procCluster(b)
		pw := procs[0].AdminPassword()
		var follower *Proc
		tok0, err := adminToken(hc, procs[0].APIAddr, pw)
		if err != nil {
			b.Fatal(err)
		}
		leaderName := clusterLeader(b, hc, procs[0].APIAddr, tok0)
		for _, p := range procs {
			if p.Name != leaderName {
				follower = p
				break
			}
		}
		tok, err := adminToken(hc, follower.APIAddr, pw)
		if err != nil {
			b.Fatal(err)
		}
		var leader *Proc
		for _, p := range procs {
			if p.Name == leaderName {
				leader = p
			}
		}
		target, useTok := follower, tok
		do := func(client *http.Client, method, path, body string) time.Duration {
			req, _ := http.NewRequest(method, "https://"+target.APIAddr+path, bytes.NewReader([]byte(body)))
			req.Header.Set("X-Auth-Token", useTok)
			req.Header.Set("Content-Type", "application/json")
			t := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			d := time.Since(t)
			if resp.StatusCode >= 300 {
				b.Fatalf("%s %s = %d", method, path, resp.StatusCode)
			}
			return d
		}
		tr := hc.Transport.(*http.Transport)
		fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tr.TLSClientConfig.Clone(), DisableKeepAlives: true}}
		fresh.Transport.(*http.Transport).TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		do(hc, "GET", "/identity/v3/projects", "") // handshake
		var warm, cold, reads []time.Duration
		for i := range n {
			warm = append(warm, do(hc, "POST", "/identity/v3/projects", fmt.Sprintf(`{"project":{"name":"w-%d"}}`, i)))
		}
		for i := range n / 2 {
			cold = append(cold, do(fresh, "POST", "/identity/v3/projects", fmt.Sprintf(`{"project":{"name":"c-%d"}}`, i)))
		}
		for range n {
			reads = append(reads, do(hc, "GET", "/compute/v2.1/flavors", ""))
		}
		var direct []time.Duration
		if leader != nil {
			target, useTok = leader, tok0
			do(hc, "GET", "/identity/v3/projects", "")
			for i := range n {
				direct = append(direct, do(hc, "POST", "/identity/v3/projects", fmt.Sprintf(`{"project":{"name":"l-%d"}}`, i)))
			}
		}
		fs := fsyncFloor(b, filepath.Dir(follower.DataDir), n)
		rtt := rttFloor(b, n)
		floor := percentile(fs, 0.5) + percentile(rtt, 0.5)
		BenchRow("write through a follower, kept connection (p50)", percentile(warm, 0.5), "<= 2ms", "fsync+rtt", floor)
		BenchRow("write through a follower, kept connection (p99)", percentile(warm, 0.99), "-", "fsync+rtt", floor)
		BenchRow("write through a follower, fresh TLS each (p50)", percentile(cold, 0.5), "<= 6ms", "fsync+rtt", floor)
		BenchRow("write through the leader (p50)", percentile(direct, 0.5), "-", "fsync+rtt", floor)
		BenchRow("list through a follower (p50)", percentile(reads, 0.5), "<= 0.5ms", "loopback rtt", percentile(rtt, 0.5))
		b.ReportMetric(float64(percentile(warm, 0.5).Microseconds())/1000, "write-p50-ms")
		b.ReportMetric(float64(percentile(cold, 0.5).Microseconds())/1000, "write-fresh-tls-p50-ms")
		b.ReportMetric(float64(percentile(reads, 0.5).Microseconds())/1000, "list-p50-ms")
		b.ReportMetric(float64(floor.Microseconds())/1000, "floor-fsync+rtt-ms")
	}
}

// clusterLeader returns the leader's name as api reports it.
func clusterLeader(b *testing.B, hc *http.Client, api, tok string) string {
	req, _ := http.NewRequest("GET", "https://"+api+"/cluster/v1/status", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var st leaderStatus
	if err := jsonDecode(resp.Body, &st); err != nil {
		b.Fatal(err)
	}
	return st.Status.Leader.Name
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
