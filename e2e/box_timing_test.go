package e2e

// Figures of the cluster-in-a-box scenario: the control plane's
// share of each step, from the daemons' own API time, and per server the
// time from `server create` to ACTIVE, to the guest's READY and to its
// first successful ping.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// boxHTTP is an HTTPS client that trusts the box's cluster CA.
func (s *scenario) boxHTTP() (*http.Client, error) {
	s.httpOnce.Do(func() {
		pem, err := os.ReadFile(s.b.CACert())
		if err != nil {
			s.httpErr = err
			return
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			s.httpErr = fmt.Errorf("no certificate in %s", s.b.CACert())
			return
		}
		s.http = &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	})
	return s.http, s.httpErr
}

// apiSeconds returns, per live host, the seconds its daemon spent answering
// client API requests so far (peerstack_api_request_seconds_sum without
// the host-to-host "internal" service, which would count a forwarded
// write twice). A host that does not answer is left out.
func (s *scenario) apiSeconds() map[int]float64 {
	hc, err := s.boxHTTP()
	if err != nil {
		return nil
	}
	out := map[int]float64{}
	for i := range s.b.Hosts {
		h := i + 1
		if !s.b.Alive(h) {
			continue
		}
		// /metrics needs a cloud-admin token.
		tok, err := adminToken(hc, s.b.Host(h).APIAddr, s.b.AdminPassword())
		if err != nil {
			continue
		}
		req, _ := http.NewRequest("GET", "https://"+s.b.Host(h).APIAddr+"/metrics", nil)
		req.Header.Set("X-Auth-Token", tok)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		sum, ok := 0.0, false
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "peerstack_api_request_seconds_sum{") || strings.Contains(line, `service="internal"`) {
				continue
			}
			if f := strings.Fields(line); len(f) == 2 {
				if v, err := strconv.ParseFloat(f[1], 64); err == nil {
					sum, ok = sum+v, true
				}
			}
		}
		resp.Body.Close()
		if ok {
			out[h] = sum
		}
	}
	return out
}

// apiDelta is the API time spent between two apiSeconds readings. A host
// restarted in between starts from zero, so its whole later reading counts.
func apiDelta(before, after map[int]float64) float64 {
	d := 0.0
	for h, a := range after {
		if b, ok := before[h]; ok && a >= b {
			d += a - b
		} else {
			d += a
		}
	}
	return d
}

// serverTimes are one server's milestones, measured from the start of its
// `server create` command.
type serverTimes struct {
	name, id, host         string
	active, ready, pinging time.Duration // 0 = not seen
}

// serverWatch follows servers after their create command: ACTIVE through
// the compute API, READY and the first PEERSTACK-PING-OK in the console log
// file on whichever host runs the server. It polls every 100 ms, far finer
// than a CLI round trip.
type serverWatch struct {
	s *scenario

	mu       sync.Mutex
	token    string // admin token, set by the token issue step
	times    []*serverTimes
	wg       sync.WaitGroup
	stopOnce sync.Once
	stop     chan struct{} // closed by table
}

// watchServer starts following server id, created at t0.
func (w *serverWatch) watchServer(ctx context.Context, name, id string, t0 time.Time) {
	st := &serverTimes{name: name, id: id}
	w.mu.Lock()
	if w.stop == nil {
		w.stop = make(chan struct{})
	}
	stop := w.stop
	w.times = append(w.times, st)
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
		defer cancel()
		for ctx.Err() == nil {
			done := w.poll(st, t0)
			if done {
				return
			}
			select {
			case <-ctx.Done():
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

// poll checks st's milestones once; it reports whether following it is
// over: all seen, or the server went to ERROR. The lock is held only to
// read and record, not across the requests and file reads.
func (w *serverWatch) poll(st *serverTimes, t0 time.Time) bool {
	w.mu.Lock()
	seen := *st
	token := w.token
	w.mu.Unlock()
	var status, host string
	if seen.active == 0 {
		status, host = w.serverStatus(token, st.id)
	}
	var ready, pinging bool
	if seen.ready == 0 || seen.pinging == 0 {
		for _, h := range w.s.b.Hosts {
			b, err := os.ReadFile(filepath.Join(h.DataDir, "instances", st.id, "console.log"))
			if err != nil {
				continue
			}
			ready = ready || strings.Contains(string(b), "PEERSTACK-READY")
			pinging = pinging || strings.Contains(string(b), "PEERSTACK-PING-OK")
		}
	}
	el := time.Since(t0)
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.active == 0 && status == "ACTIVE" {
		st.active, st.host = el, host
	}
	if st.ready == 0 && ready {
		st.ready = el
	}
	if st.pinging == 0 && pinging {
		st.pinging = el
	}
	return status == "ERROR" || (st.active != 0 && st.ready != 0 && st.pinging != 0)
}

// setToken gives the watch the admin token it asks the API with.
func (w *serverWatch) setToken(token string) {
	w.mu.Lock()
	w.token = token
	w.mu.Unlock()
}

// serverStatus asks any live host for the server's status and host.
func (w *serverWatch) serverStatus(token, id string) (status, host string) {
	hc, err := w.s.boxHTTP()
	if err != nil || token == "" {
		return "", ""
	}
	for i := range w.s.b.Hosts {
		if !w.s.b.Alive(i + 1) {
			continue
		}
		req, _ := http.NewRequest("GET", "https://"+w.s.b.Host(i+1).APIAddr+"/compute/v2.1/servers/"+id, nil)
		req.Header.Set("X-Auth-Token", token)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Server struct {
				Status string `json:"status"`
				Host   string `json:"OS-EXT-SRV-ATTR:host"`
			} `json:"server"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return body.Server.Status, body.Server.Host
		}
	}
	return "", ""
}

// table stops following and formats the figures.
func (w *serverWatch) table() string {
	w.mu.Lock()
	if w.stop != nil {
		w.stopOnce.Do(func() { close(w.stop) })
	}
	w.mu.Unlock()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.times) == 0 {
		return ""
	}
	secs := func(d time.Duration) string {
		if d == 0 {
			return "not seen"
		}
		return fmt.Sprintf("%.1f", d.Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %-10s %14s %14s %16s\n", "SERVER", "HOST", "CREATE→ACTIVE", "CREATE→READY", "CREATE→PINGING")
	for _, st := range w.times {
		fmt.Fprintf(&b, "%-10s %-10s %14s %14s %16s\n", st.name, st.host, secs(st.active), secs(st.ready), secs(st.pinging))
	}
	return b.String()
}
