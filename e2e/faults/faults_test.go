package faults

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/e2e"
)

// stdoutWriter prints progress as it happens (go test -v shows it live).
type stdoutWriter struct{}

func (stdoutWriter) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// TestFaults runs the fault suite: by default a bounded run (75 s of
// faults) as part of `make test`; FAULTS_DURATION sets a longer one
// (`make faults`), FAULTS_SEED replays a seed, FAULTS_NEMESES (comma
// separated) restricts the faults, FAULTS_TAGS=0 leaves out the set
// workload (tag adds), FAULTS_VMS=N boots N HA servers whose QEMUs and
// single-writer logs are checked (default 1; 0 for none).
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	cfg := Config{Bin: e2e.Binary(t), Duration: 75 * time.Second, Log: stdoutWriter{}, Seed: uint64(time.Now().UnixNano())}
	if s := os.Getenv("FAULTS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("FAULTS_DURATION: %v", err)
		}
		cfg.Duration = d
	}
	if s := os.Getenv("FAULTS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FAULTS_SEED: %v", err)
		}
		cfg.Seed = seed
	}
	cfg.Tags = os.Getenv("FAULTS_TAGS") != "0"
	// One HA server by default: its guest boots in about 20 s, which
	// keeps the bounded run well inside its budget.
	cfg.VMs = 1
	if s := os.Getenv("FAULTS_VMS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("FAULTS_VMS: %q: want a number of servers", s)
		}
		cfg.VMs = n
	}
	if s := os.Getenv("FAULTS_NEMESES"); s != "" {
		cfg.Nemeses = strings.Split(s, ",")
	}
	fmt.Printf("faults: FAULTS_SEED=%d (replay: make faults FAULTS_SEED=%d DURATION=%s)\n", cfg.Seed, cfg.Seed, cfg.Duration)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+10*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("seed %d: %v", cfg.Seed, err)
	}
	fmt.Print(res.Summary)
	t.Logf("daemon logs: %s", res.LogDir)
	for _, f := range res.Failures {
		t.Error(f)
	}
}
