package nodetest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkTokenValidate: local token validation (signature, expiry,
// revocation, user and project checks) on one host, no network hop.
func BenchmarkTokenValidate(b *testing.B) {
	c := NewCluster(b, 1, quiet())
	tok := c.AdminToken(0)
	n := c.Node(0)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if _, err := n.Authenticate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
}

// BenchmarkTokenIssue: POST /identity/v3/auth/tokens over HTTPS with the
// given bcrypt cost for the admin password, with 2 concurrent clients.
func BenchmarkTokenIssue(b *testing.B) {
	for _, cost := range []int{12} {
		b.Run(fmt.Sprintf("bcrypt=%d", cost), func(b *testing.B) {
			c := newClusterCost(b, cost)
			hc := c.HTTPClient()
			body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, c.AdminPassword)
			// The first login pays bcrypt; later ones hit the verified-password cache.
			t0 := time.Now()
			resp, err := hc.Post(c.URL(0)+"/identity/v3/auth/tokens", "application/json", strings.NewReader(body))
			if err != nil || resp.StatusCode != http.StatusCreated {
				b.Fatalf("first login: %v %v", err, resp)
			}
			resp.Body.Close()
			b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "cold-ms")
			const total = 400
			lat := make([]time.Duration, total)
			var mu sync.Mutex
			next := 0
			var wg sync.WaitGroup
			start := time.Now()
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= total {
							return
						}
						t0 := time.Now()
						resp, err := hc.Post(c.URL(0)+"/identity/v3/auth/tokens", "application/json", strings.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusCreated {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(total)/el.Seconds(), "warm-issues/s")
			b.ReportMetric(float64(lat[total/2].Microseconds())/1000, "warm-p50-ms")
		})
	}
}

func newClusterCost(b *testing.B, cost int) *Cluster {
	o := quiet()
	o.BcryptCost = cost
	return NewCluster(b, 1, o)
}
