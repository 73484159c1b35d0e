package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestWatchdogFlags(t *testing.T) {
	// The default is short: the host fences W before T_fence, so W is
	// taken from the time a restarted daemon has to renew.
	var def watchdogFlags
	fl := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	def.add(fl)
	if err := fl.Parse(nil); err != nil || def.timeout != 2*time.Second {
		t.Fatalf("default --watchdog-timeout = %v (%v); want 2s", def.timeout, err)
	}

	guard := []string{"/bin/peerstack", "fence-guard"}
	off := watchdogFlags{timeout: 10 * time.Second}
	if cmd, w, err := off.guard(guard); err != nil || w != 0 || !slices.Equal(cmd, guard) {
		t.Fatalf("no --watchdog = %v, %v, %v; want the guard as it is, no watchdog", cmd, w, err)
	}
	// /dev/null stands in for a watchdog device: a character device.
	on := watchdogFlags{device: "/dev/null", timeout: 8 * time.Second}
	cmd, w, err := on.guard(slices.Clone(guard))
	if err != nil || w != 8*time.Second || strings.Join(cmd, " ") != "/bin/peerstack fence-guard --watchdog /dev/null" {
		t.Fatalf("--watchdog /dev/null = %v, %v, %v", cmd, w, err)
	}
	if cmd, w, err := on.guard(nil); err != nil || cmd != nil || w != 0 {
		t.Fatalf("no guard = %v, %v, %v; want no watchdog either", cmd, w, err)
	}
	file := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []watchdogFlags{
		{device: file, timeout: 8 * time.Second},
		{device: filepath.Join(t.TempDir(), "none"), timeout: 8 * time.Second},
		{device: "/dev/null", timeout: 500 * time.Millisecond},
	} {
		if _, _, err := bad.guard(guard); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// The package's systemd-sleep hook runs `fence-sleep` with the arguments
// systemd-sleep passes; the subcommand takes them and refuses a phase it
// does not know (before it looks at any heartbeat).
func TestFenceSleepCommand(t *testing.T) {
	hook, err := os.ReadFile(filepath.Join("packaging", "peerstack.sleep"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hook), `/usr/bin/peerstack fence-sleep "$1" "$2"`) {
		t.Fatalf("the hook does not run fence-sleep with systemd-sleep's arguments:\n%s", hook)
	}
	for _, args := range [][]string{{"fence-sleep", "pre", "suspend"}, {"fence-sleep", "post", "hibernate"}} {
		c, rest, err := rootCmd().Find(args)
		if err != nil || c.Name() != "fence-sleep" || c.Args(c, rest) != nil {
			t.Fatalf("%v: command %v, args %v: %v", args, c.Name(), rest, err)
		}
	}
	root := rootCmd()
	root.SetArgs([]string{"fence-sleep", "suspend"})
	root.SetOut(new(strings.Builder))
	root.SetErr(new(strings.Builder))
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "want pre or post") {
		t.Fatalf("fence-sleep suspend: %v; want refused", err)
	}
}
