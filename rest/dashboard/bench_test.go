package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/resttest"
)

// BenchmarkFirstLoad fetches everything the login page loads (the page,
// its script and styles, xterm.js) over loopback TLS with a fresh
// connection each time, as a first visit does.
func BenchmarkFirstLoad(b *testing.B) {
	be := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{}}
	d := New(be, resttest.Logger(nil))
	api := rest.NewServer(be, resttest.Logger(nil))
	srv := httptest.NewTLSServer(d.Wrap(api.Handler()))
	defer srv.Close()
	paths := []string{"/", "/dashboard/static/app.css", "/dashboard/static/xterm.css", "/dashboard/static/xterm.js", "/dashboard/static/app.js"}
	var bytes int64
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		c := srv.Client()
		c.Transport.(*http.Transport).CloseIdleConnections()
		start := time.Now()
		bytes = 0
		for _, p := range paths {
			req, _ := http.NewRequest("GET", srv.URL+p, nil)
			req.Header.Set("Accept-Encoding", "gzip") // set by hand: the body stays compressed, as on the wire
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("GET %s = %d", p, resp.StatusCode)
			}
			bytes += n
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(bytes), "bytes/load")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/load")
	b.Logf("first load: %d bytes (gzip) in %d requests, %.2f ms over loopback TLS", bytes, len(paths), float64(total.Microseconds())/float64(b.N)/1000)
}
