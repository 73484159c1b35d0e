package nodetest

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// oscRunner runs the real openstack client with a cluster's environment
// (OpenStackEnv) for the real-client tests.
type oscRunner struct {
	t   *testing.T
	bin string
	env []string
}

// newOSC finds the openstack client; the tests need it (CI installs it).
func newOSC(t *testing.T, env []string) *oscRunner {
	t.Helper()
	bin, err := exec.LookPath("openstack")
	if err != nil {
		t.Fatalf("the openstack client is required (python3-openstackclient): %v", err)
	}
	return &oscRunner{t: t, bin: bin, env: env}
}

// exe runs the client and returns stdout, stderr and the exit error.
func (o *oscRunner) exe(args ...string) (string, string, error) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(o.t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.bin, args...)
	cmd.Env = o.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// run runs the client and fails the test unless it succeeds.
func (o *oscRunner) run(args ...string) string {
	o.t.Helper()
	out, errOut, err := o.exe(args...)
	if err != nil {
		o.t.Fatalf("openstack %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fails expects the client to fail with want in its stderr.
func (o *oscRunner) fails(want string, args ...string) {
	o.t.Helper()
	out, errOut, err := o.exe(args...)
	if err == nil || !strings.Contains(errOut, want) {
		o.t.Errorf("openstack %s = %v\nstdout: %s\nstderr: %s\nwant a failure saying %q", strings.Join(args, " "), err, out, errOut, want)
	}
}
