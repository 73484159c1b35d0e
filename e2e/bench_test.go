package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procCluster starts three real daemons (production timers) and returns
// them with an HTTPS client that trusts the cluster CA.
func procCluster(b *testing.B) ([]*Proc, *http.Client) {
	bin := Binary(b)
	root := b.TempDir()
	a := StartDaemon(b, "alpha", filepath.Join(root, "a"), "agent")
	procs := []*Proc{a}
	for _, name := range []string{"beta", "gamma"} {
		tok := LastLine(Run(b, filepath.Join(a.DataDir, "clouds.yaml"), bin, "token", "create"))
		procs = append(procs, StartDaemon(b, name, filepath.Join(root, name), "join", tok))
	}
	pem, err := os.ReadFile(filepath.Join(a.DataDir, "ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return procs, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func adminToken(hc *http.Client, api, password string) (string, error) {
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, password)
	resp, err := hc.Post("https://"+api+"/identity/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Subject-Token"), nil
}

func rssMB(pid int) float64 { return memMB(pid, "status", "VmRSS:") }

// memMB reads one "Name: N kB" field of /proc/pid/<file> in MB; 0 when
// absent. RssAnon (heap, stacks) is what the process itself costs; the
// rest of VmRSS is the binary's pages, shared with the fence guard and
// the page cache; Pss (smaps_rollup) splits shared pages between sharers.
func memMB(pid int, file, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

type leaderStatus struct {
	Status struct {
		Leader struct{ ID, Name string } `json:"leader"`
		Term   uint64                    `json:"term"`
	} `json:"status"`
}

// BenchmarkProcessCluster: three real daemons with production timers.
// Reports idle RSS per daemon, and the time from SIGKILL of the leader
// until a write through another host is accepted.
func BenchmarkProcessCluster(b *testing.B) {
	for range b.N {
		procs, hc := procCluster(b)
		time.Sleep(5 * time.Second) // idle
		var max, anon, pss float64
		for _, p := range procs {
			pid := p.cmd.Process.Pid
			max = math.Max(max, rssMB(pid))
			anon = math.Max(anon, memMB(pid, "status", "RssAnon:"))
			pss = math.Max(pss, memMB(pid, "smaps_rollup", "Pss:"))
		}
		b.ReportMetric(max, "idle-RSS-MB-max")
		b.ReportMetric(anon, "idle-anon-MB-max")
		b.ReportMetric(pss, "idle-PSS-MB-max")

		took := killLeaderAndWrite(b, procs, hc)
		b.ReportMetric(float64(took.Milliseconds()), "leader-kill-to-write-ms")
		BenchRow("leader kill -9 -> write accepted through a survivor", took, "<= 1s", "heartbeat timeout", 500*time.Millisecond)
		fmt.Printf("BENCHROW\tidle RSS per daemon, 3 hosts (max)\t%.1f MB\t<= 25 MB\t-\t-\n", max)
		fmt.Printf("BENCHROW\t  of which anonymous (heap, stacks; the rest is the binary's shared pages)\t%.1f MB\t-\t-\t-\n", anon)
		fmt.Printf("BENCHROW\tidle PSS per daemon (shared pages split with the fence guard)\t%.1f MB\t-\t-\t-\n", pss)
	}
}

// clusterStatus asks a host for the cluster's status as it sees it.
func clusterStatus(hc *http.Client, addr, tok string) (leaderStatus, error) {
	var st leaderStatus
	req, _ := http.NewRequest("GET", "https://"+addr+"/cluster/v1/status", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// killLeaderAndWrite SIGKILLs the leader and returns the time until a
// write through another host is accepted.
func killLeaderAndWrite(b *testing.B, procs []*Proc, hc *http.Client) time.Duration {
	b.Helper()
	pw := procs[0].AdminPassword()
	tok, err := adminToken(hc, procs[0].APIAddr, pw)
	if err != nil {
		b.Fatal(err)
	}
	st, err := clusterStatus(hc, procs[0].APIAddr, tok)
	if err != nil {
		b.Fatal(err)
	}
	var leader, other *Proc
	for _, p := range procs {
		if p.Name == st.Status.Leader.Name {
			leader = p
		} else if other == nil {
			other = p
		}
	}
	if leader == nil {
		b.Fatalf("leader %q not found", st.Status.Leader.Name)
	}
	otok, err := adminToken(hc, other.APIAddr, pw)
	if err != nil {
		b.Fatal(err)
	}
	leader.Kill()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		body := fmt.Sprintf(`{"project":{"name":"after-kill-%d","enabled":true}}`, i)
		req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+other.APIAddr+"/identity/v3/projects", bytes.NewReader([]byte(body)))
		req.Header.Set("X-Auth-Token", otok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				return time.Since(start)
			}
		}
		if ctx.Err() != nil {
			b.Fatal("no write accepted within 30 s of the leader's death")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkFailoverUnderLoad: three real daemons with production timers
// while two other processes keep both cores busy. It counts the elections
// that happen with no failure (the Raft term moving on while every daemon
// runs: spurious), then SIGKILLs the leader under the same load.
func BenchmarkFailoverUnderLoad(b *testing.B) {
	for range b.N {
		procs, hc := procCluster(b)
		tok, err := adminToken(hc, procs[0].APIAddr, procs[0].AdminPassword())
		if err != nil {
			b.Fatal(err)
		}
		var burners []*exec.Cmd
		for range runtime.NumCPU() {
			c := exec.Command("sh", "-c", "while :; do :; done")
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			burners = append(burners, c)
		}
		stopBurners := func() {
			for _, c := range burners {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
			burners = nil
		}
		b.Cleanup(stopBurners)
		terms := func() uint64 {
			var top uint64
			for _, p := range procs {
				if st, err := clusterStatus(hc, p.APIAddr, tok); err == nil {
					top = max(top, st.Status.Term)
				}
			}
			return top
		}
		const watch = 20 * time.Second
		first := terms()
		time.Sleep(watch)
		spurious := terms() - first
		took := killLeaderAndWrite(b, procs, hc)
		stopBurners()
		b.ReportMetric(float64(spurious), "spurious-elections")
		b.ReportMetric(float64(took.Milliseconds()), "leader-kill-to-write-ms")
		fmt.Printf("BENCHROW\telections with no failure, %d CPU burners, %v watched\t%d\t0\t-\t-\n", runtime.NumCPU(), watch, spurious)
		BenchRow("leader kill -9 -> write through a survivor, CPU saturated", took, "<= 1s", "heartbeat timeout", 500*time.Millisecond)
	}
}
