package faults

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"
)

// ipCmd runs ip with args and fails the test on an error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// testNetns adds a network namespace named prefix and a random suffix,
// deleted when the test ends, and returns its name.
func testNetns(t *testing.T, prefix string) string {
	t.Helper()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	ns := prefix + hex.EncodeToString(rnd[:])
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}
