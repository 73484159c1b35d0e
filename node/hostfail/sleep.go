package hostfail

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/node/agent"
)

// SleepConfig configures `peerstack fence-sleep`, which systemd-sleep
// runs before the host sleeps ("pre") and after it resumes ("post"); see
// agent.SleepPre and agent.SleepPost.
type SleepConfig struct {
	// RunDir holds the heartbeats of the host's daemons ("": RunDir).
	RunDir string
	// DataDirs are data dirs whose daemon may keep its heartbeat there,
	// when it could not write RunDir (HeartbeatPath).
	DataDirs []string
	Logger   *slog.Logger
}

// FenceSleep is `peerstack fence-sleep pre|post`: it acts on every
// heartbeat of this host (one per daemon) and, after a resume, on every
// record the step before the sleep left, its heartbeat gone or not.
func FenceSleep(phase string, cfg SleepConfig) error {
	if cfg.RunDir == "" {
		cfg.RunDir = RunDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var step func(agent.SleepConfig) error
	switch phase {
	case "pre":
		step = agent.SleepPre
	case "post":
		step = agent.SleepPost
	default:
		return fmt.Errorf("fence-sleep: %q: want pre or post", phase)
	}
	var errs []error
	for _, hb := range sleepHeartbeats(cfg, phase == "post") {
		if err := step(agent.SleepConfig{Heartbeat: hb, Logger: cfg.Logger.With("heartbeat", hb)}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sleepHeartbeats lists the heartbeat files of this host's daemons, as
// HeartbeatPath names them: in the run dir, or in a data dir. With
// records, a heartbeat whose record exists is listed even when the
// heartbeat itself is gone.
func sleepHeartbeats(cfg SleepConfig, records bool) []string {
	var out []string
	add := func(paths ...string) {
		for _, p := range paths {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	pattern := filepath.Join(cfg.RunDir, runHeartbeatPrefix+"*.json")
	hbs, _ := filepath.Glob(pattern)
	add(hbs...)
	for _, d := range cfg.DataDirs {
		hb := filepath.Join(d, dataDirHeartbeat)
		if _, err := os.Stat(hb); err == nil {
			add(hb)
		}
	}
	if records {
		recs, _ := filepath.Glob(agent.SleepRecordPath(pattern))
		for _, d := range cfg.DataDirs {
			rec := agent.SleepRecordPath(filepath.Join(d, dataDirHeartbeat))
			if _, err := os.Stat(rec); err == nil {
				recs = append(recs, rec)
			}
		}
		for _, r := range recs {
			add(strings.TrimSuffix(r, agent.SleepRecordPath("")))
		}
	}
	slices.Sort(out)
	return out
}
