package nodetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLoginStorm: unauthenticated logins with wrong passwords (for
// unknown users, so each one costs a bcrypt at cost 10 without lockout)
// hammer one host of a 3-host cluster from 64 loopback source addresses
// for a few seconds, while a token-authenticated client reads flavors from
// the same host. It prints the read latency (p50, p99), how the storm was
// answered, and how many Raft elections happened (term changes).
//
// All three hosts share one Go scheduler and test timers (100 ms): a storm
// that starves every goroutine starves the followers' election timers
// too, so compare election counts only at similar read throughput; even
// one sequential bcrypt client causes elections here on a loaded machine.
func BenchmarkLoginStorm(b *testing.B) {
	const (
		workers  = 64
		duration = 5 * time.Second
	)
	c := NewCluster(b, 3, Options{BcryptCost: 10, Logger: quiet().Logger})
	tok := c.AdminToken(0)
	target := c.Follower()
	url := c.URL(target)
	base := c.HTTPClient().Transport.(*http.Transport)
	termOf := func() uint64 { return c.Node(0).Consensus().Status().Term }
	for range b.N {
		termBefore := termOf()
		ctx, cancel := context.WithTimeout(context.Background(), duration)
		var statuses sync.Map // status → *atomic.Int64
		count := func(st int) {
			v, _ := statuses.LoadOrStore(st, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		var wg sync.WaitGroup
		for w := range workers {
			tr := base.Clone()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(w+1))}}
			tr.DialContext = d.DialContext
			hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer tr.CloseIdleConnections()
				for i := 0; ctx.Err() == nil; i++ {
					body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"nobody-%d-%d","domain":{"name":"Default"},"password":"guess"}}}}}`, w, i)
					req, _ := http.NewRequestWithContext(ctx, "POST", url+"/identity/v3/auth/tokens", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					resp, err := hc.Do(req)
					if err != nil {
						count(0)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					count(resp.StatusCode)
				}
			}()
		}
		var lat []time.Duration
		reader := c.HTTPClient()
		for ctx.Err() == nil {
			req, _ := http.NewRequest("GET", url+"/compute/v2.1/flavors", nil)
			req.Header.Set("X-Auth-Token", tok)
			start := time.Now()
			resp, err := reader.Do(req)
			if err != nil {
				b.Fatalf("read during the storm: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("read during the storm = %d", resp.StatusCode)
			}
			lat = append(lat, time.Since(start))
			time.Sleep(10 * time.Millisecond) // a steady client, not a second storm
		}
		cancel()
		wg.Wait()
		elections := termOf() - termBefore
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
		var parts []string
		statuses.Range(func(k, v any) bool {
			parts = append(parts, fmt.Sprintf("%v:%d", k, v.(*atomic.Int64).Load()))
			return true
		})
		sort.Strings(parts)
		b.Logf("storm %v from %d sources: answers %s; reads %d p50 %v p99 %v; elections %d",
			duration, workers, strings.Join(parts, " "), len(lat), p(0.5), p(0.99), elections)
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "read-p99-ms")
		b.ReportMetric(float64(elections), "elections")
	}
}
