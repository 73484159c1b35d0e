package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"
)

// BenchmarkProcessClusterState: idle RSS per daemon of three real daemons,
// first with an empty state (the baseline, same run), then with 100
// servers and 1,000 ports in it. Every host's compute service is disabled
// first, so the servers are recorded (placed nowhere: ERROR) without
// starting 100 guests on this machine: what is measured is the state's
// cost in each daemon.
//
//	make build && go test -run '^$' -bench ProcessClusterState -benchtime 1x ./e2e
func BenchmarkProcessClusterState(b *testing.B) {
	for range b.N {
		procs, hc := procCluster(b)
		tok, err := adminToken(hc, procs[0].APIAddr, procs[0].AdminPassword())
		if err != nil {
			b.Fatal(err)
		}
		api := "https://" + procs[0].APIAddr
		call := func(method, path string, body any, want int) map[string]any {
			b.Helper()
			var rd io.Reader
			if body != nil {
				raw, _ := json.Marshal(body)
				rd = bytes.NewReader(raw)
			}
			req, _ := http.NewRequest(method, api+path, rd)
			req.Header.Set("X-Auth-Token", tok)
			req.Header.Set("Content-Type", "application/json")
			if method == "PUT" && body == nil {
				req.Header.Set("Content-Type", "application/octet-stream")
				req.Body = io.NopCloser(bytes.NewReader(make([]byte, 1<<20)))
			}
			for try := 0; ; try++ {
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatalf("%s %s: %v", method, path, err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable && try < 20 {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if resp.StatusCode != want {
					b.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, raw)
				}
				var out map[string]any
				_ = json.Unmarshal(raw, &out)
				return out
			}
		}
		idle := func() (rss, anon, pss float64) {
			time.Sleep(5 * time.Second)
			for _, p := range procs {
				pid := p.cmd.Process.Pid
				rss = math.Max(rss, rssMB(pid))
				anon = math.Max(anon, memMB(pid, "status", "RssAnon:"))
				pss = math.Max(pss, memMB(pid, "smaps_rollup", "Pss:"))
			}
			return
		}
		baseRSS, _, basePSS := idle()

		projects := call("GET", "/identity/v3/projects?name=admin", nil, http.StatusOK)["projects"].([]any)
		project := projects[0].(map[string]any)["id"].(string)
		call("PUT", "/compute/v2.1/os-quota-sets/"+project, map[string]any{"quota_set": map[string]any{"instances": -1, "cores": -1, "ram": -1}}, http.StatusOK)
		call("PUT", "/network/v2.0/quotas/"+project, map[string]any{"quota": map[string]any{"port": -1}}, http.StatusOK)
		for _, p := range procs {
			call("PUT", "/compute/v2.1/os-services/disable", map[string]any{"host": p.Name, "binary": "nova-compute"}, http.StatusOK)
		}
		img := call("POST", "/image/v2/images", map[string]any{"name": "bench", "disk_format": "raw", "container_format": "bare"}, http.StatusCreated)["id"].(string)
		call("PUT", "/image/v2/images/"+img+"/file", nil, http.StatusNoContent)
		net := call("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "bench"}}, http.StatusCreated)["network"].(map[string]any)["id"].(string)
		call("POST", "/network/v2.0/subnets", map[string]any{"subnet": map[string]any{"network_id": net, "cidr": "10.20.0.0/20", "ip_version": 4}}, http.StatusCreated)

		start := time.Now()
		var wg sync.WaitGroup
		work := make(chan int)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					if i < 900 {
						call("POST", "/network/v2.0/ports", map[string]any{"port": map[string]any{"network_id": net, "name": fmt.Sprint("p", i)}}, http.StatusCreated)
						continue
					}
					call("POST", "/compute/v2.1/servers", map[string]any{"server": map[string]any{"name": fmt.Sprint("s", i), "imageRef": img,
						"flavorRef": "1", "networks": []any{map[string]any{"uuid": net}}}}, http.StatusAccepted)
				}
			}()
		}
		for i := range 1000 {
			work <- i
		}
		close(work)
		wg.Wait()
		filled := time.Since(start)
		rss, anon, pss := idle()
		b.ReportMetric(rss, "state-RSS-MB-max")
		b.ReportMetric(pss, "state-PSS-MB-max")
		fmt.Printf("BENCHROW\tidle RSS per daemon, 100 servers and 1,000 ports in the state (max; filled in %.1f s)\t%.1f MB\t<= 40 MB\tempty state %.1f MB\t%.2f×\n",
			filled.Seconds(), rss, baseRSS, rss/baseRSS)
		fmt.Printf("BENCHROW\t  of which anonymous; PSS\t%.1f MB; %.1f MB\t-\tempty-state PSS %.1f MB\t-\n", anon, pss, basePSS)
	}
}
