package dashboard

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/consensus/statedb"
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

// BenchmarkConsoleEcho times one keystroke's round trip through the
// console WebSocket to an echoing console and back, against the same echo
// straight on the console connection; the difference is what the
// WebSocket path adds (target: ≤ 50 ms).
func BenchmarkConsoleEcho(b *testing.B) {
	be := &fakeBackend{Backend: resttest.New(), consoles: map[string]string{}}
	be.Bootstrap(b, statedb.Settings{}, "secret")
	be.MustApply(b, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
		ID: "i1", Name: "vm", ProjectID: "p", Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 1}}}}})
	be.MustApply(b, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: map[string]statedb.HostCap{"host1": {VCPUs: 1, RAMMB: 1, DiskGB: 1}},
		Placements: []statedb.PlacementRec{{InstanceID: "i1", HostID: "host1"}}})
	guests := be.interactive("i1")
	d := New(be, resttest.Logger(nil))
	api := rest.NewServer(be, resttest.Logger(nil))
	srv := httptest.NewServer(d.Wrap(api.Handler()))
	defer srv.Close()
	echo := func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}

	// Baseline: the echo on the console connection itself.
	direct, guest := net.Pipe()
	go echo(guest)
	key, back := []byte{'k'}, make([]byte, 1)
	start := time.Now()
	const directRounds = 2000
	for range directRounds {
		if _, err := direct.Write(key); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(direct, back); err != nil {
			b.Fatal(err)
		}
	}
	directPer := time.Since(start) / directRounds
	direct.Close()

	ctx := b.Context()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/dashboard/console?token=" + d.consoleToken("i1", be.Now().Add(time.Hour))
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.CloseNow()
	go echo(<-guests)
	// Wait until attached: the first keystroke answered.
	for {
		if err := conn.Write(ctx, websocket.MessageText, key); err != nil {
			b.Fatal(err)
		}
		_, msg, err := conn.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if string(msg) == "k" {
			break
		}
	}
	b.ResetTimer()
	start = time.Now()
	for b.Loop() {
		if err := conn.Write(ctx, websocket.MessageText, key); err != nil {
			b.Fatal(err)
		}
		if _, _, err := conn.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	wsPer := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(wsPer.Microseconds())/1000, "ms/echo")
	b.ReportMetric(float64((wsPer-directPer).Microseconds())/1000, "ms-added/echo")
	b.Logf("keystroke echo: %.3f ms through the WebSocket, %.3f ms on the console directly, %.3f ms added (target ≤ 50 ms)",
		float64(wsPer.Microseconds())/1000, float64(directPer.Microseconds())/1000, float64((wsPer-directPer).Microseconds())/1000)
}
