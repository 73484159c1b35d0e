package nodetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/qemu"
)

// BenchmarkQEMUBootImageFromPeer: server create through the API → the
// guest's PEERSTACK-READY, on a host that does not have the image yet (a
// 2-host cluster with one copy per image, the copy on host 0, the server
// pinned to host 1, so the agent fetches the blob from host 0 before it
// builds the disk), against a plain copy of the same blob (file to file on
// the same disk, fsynced) plus bare qemu-system-x86_64 with the server's
// arguments on an overlay backed by that copy. Alternating, 3 pairs per
// iteration; reports both medians and their ratio, and prints the row of
// the performance table.
func BenchmarkQEMUBootImageFromPeer(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	e := newQMCluster(b, 2)
	// One copy per image: host 0, the uploader, keeps it and nothing
	// replicates it to host 1 behind the benchmark's back.
	if st, body := e.json("PATCH", "/cluster/v1/settings", map[string]any{"image_copies": 1}); st != http.StatusOK {
		b.Fatalf("PATCH settings = %d %v", st, body)
	}
	e.c.Eventually(10*time.Second, "image_copies 1 everywhere", func() bool {
		for _, n := range e.c.Running() {
			if cfg, ok := n.State().Cluster(); !ok || cfg.Settings.EffectiveImageCopies() != 1 {
				return false
			}
		}
		return true
	})
	e.image = e.upload(qmGuestImage(b))
	if holders := e.c.waitHolders(e.image, 1); len(holders) != 1 || holders[0] != 0 {
		b.Fatalf("image holders = %v; want host 0 only", holders)
	}
	img, _ := e.c.imageState(e.image)
	sum := img.SHA256
	e.waitNoCopy(1, sum)

	accel := qemu.DetectAccel()
	copyDir := b.TempDir() // on the same disk as the hosts' data dirs
	var ps, base, cp []time.Duration
	for i := range b.N {
		for r := range 3 {
			if _, err := os.Stat(e.c.blobPath(1, sum)); !os.IsNotExist(err) {
				b.Fatalf("host1 has the image blob before the round (%v); want it absent", err)
			}
			syscall.Sync()
			id, tot := e.bootPinned(1, fmt.Sprintf("fetch-%d-%d", i, r))
			ps = append(ps, tot)
			if _, err := os.Stat(e.c.blobPath(1, sum)); err != nil {
				b.Fatalf("host1 booted the server without a copy of the image: %v", err)
			}
			e.action(id, map[string]any{"os-stop": nil}) // free the CPU for the bare run
			e.waitState(id, statedb.VMStopped, statedb.PowerShutdown)

			syscall.Sync()
			dst := filepath.Join(copyDir, sum)
			c := plainCopy(b, e.c.blobPath(0, sum), dst)
			bare := e.bootBareOn(1, id, dst, accel)
			cp, base = append(cp, c), append(base, c+bare)
			if err := os.Remove(dst); err != nil {
				b.Fatal(err)
			}

			if st, body := e.json("DELETE", "/compute/v2.1/servers/"+id, nil); st != http.StatusNoContent {
				b.Fatalf("delete = %d %v", st, body)
			}
			Eventually(b, 60*time.Second, "server record gone", func() bool {
				_, ok := e.c.Node(0).State().Instance(id)
				return !ok
			})
			// Host 1's copy is cache now (no server of its uses it): take
			// it away by hand, as an eviction would, for the next round.
			if err := os.Remove(e.c.blobPath(1, sum)); err != nil {
				b.Fatal(err)
			}
			e.waitNoCopy(1, sum)
		}
	}
	mp, mb := qmMedian(ps), qmMedian(base)
	ratio := mp.Seconds() / mb.Seconds()
	b.ReportMetric(mp.Seconds(), "peerstack-s")
	b.ReportMetric(mb.Seconds(), "baseline-s")
	b.ReportMetric(float64(qmMedian(cp).Milliseconds()), "plain-copy-ms")
	b.ReportMetric(ratio, "ratio")
	fmt.Printf("BENCHROW\tserver create → guest marker, image fetched from a peer (p50)\t%v\t<= 1.10x\tbare QEMU + plain copy %v\t%.2fx\n",
		mp.Round(10*time.Millisecond), mb.Round(10*time.Millisecond), ratio)
}

// bootPinned creates a server on host through the API (compute 2.74
// "host", as an admin) and returns its id and create → PEERSTACK-READY on
// its console. It leaves the server running.
func (e *qmEnv) bootPinned(host int, name string) (string, time.Duration) {
	e.t.Helper()
	// The user data of create's servers, so the guest does the same work.
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho user-data-ran-on-$(hostname)\n"))
	raw, _ := json.Marshal(map[string]any{"server": map[string]any{"name": name, "imageRef": e.image, "flavorRef": "1",
		"networks": "none", "user_data": ud, "host": e.c.Node(host).Name()}})
	r, err := http.NewRequest("POST", e.c.URL(0)+"/compute/v2.1/servers", bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	r.Header.Set("X-Auth-Token", e.token)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("OpenStack-API-Version", "compute 2.74")
	t0 := time.Now()
	resp, err := e.hc.Do(r)
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var body struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	_ = json.Unmarshal(out, &body)
	if resp.StatusCode != http.StatusAccepted || body.Server.ID == "" {
		e.t.Fatalf("create %s on host%d = %d %s", name, host, resp.StatusCode, out)
	}
	id := body.Server.ID
	e.mu.Lock()
	e.uuids = append(e.uuids, id)
	e.mu.Unlock()
	ready := qmReadyAt(e.t, filepath.Join(e.c.Dir(host), "instances", id, "console.log"), "PEERSTACK-READY", 300*time.Second)
	if inst, ok := e.c.Node(0).State().Instance(id); !ok || inst.Host != e.c.Node(host).ID() {
		e.t.Fatalf("server %s is on %+v; want host%d (%s)", id, inst, host, e.c.Node(host).ID())
	}
	return id, ready.Sub(t0)
}

// waitNoCopy waits until host has no file of blob sum and no running
// host lists it as a holder of the image.
func (e *qmEnv) waitNoCopy(host int, sum string) {
	e.t.Helper()
	hostID := e.c.Node(host).ID()
	e.c.Eventually(30*time.Second, fmt.Sprintf("host%d no holder of %s", host, e.image), func() bool {
		if _, err := os.Stat(e.c.blobPath(host, sum)); !os.IsNotExist(err) {
			return false
		}
		for _, n := range e.c.Running() {
			if img, ok := n.State().Image(e.image); !ok || img.HasHolder(hostID) {
				return false
			}
		}
		return true
	})
}

// plainCopy copies src to dst (a new file) and fsyncs it, and returns how
// long that took.
func plainCopy(tb testing.TB, src, dst string) time.Duration {
	tb.Helper()
	t0 := time.Now()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		tb.Fatalf("copy %s: %v", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
	return time.Since(t0)
}
