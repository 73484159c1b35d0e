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

// linkedNetns adds two namespaces (see testNetns) joined by a veth pair,
// each end named eth0 and up, with net+".1/24" in a and net+".2/24" in b.
func linkedNetns(t *testing.T, prefixA, prefixB, net string) (a, b string) {
	t.Helper()
	a, b = testNetns(t, prefixA), testNetns(t, prefixB)
	ipCmd(t, "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	ipCmd(t, "-n", a, "addr", "add", net+".1/24", "dev", "eth0")
	ipCmd(t, "-n", b, "addr", "add", net+".2/24", "dev", "eth0")
	ipCmd(t, "-n", a, "link", "set", "eth0", "up")
	ipCmd(t, "-n", b, "link", "set", "eth0", "up")
	return a, b
}
