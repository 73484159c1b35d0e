package main

import (
	"io"
	"strings"
	"testing"
)

// TestAgentRefusesOneInterfaceForTwoPhysnets: the daemon does not start
// with two physical networks mapped to one interface, and says which.
func TestAgentRefusesOneInterfaceForTwoPhysnets(t *testing.T) {
	cmd := rootCmd()
	cmd.SetArgs([]string{"agent", "--data-dir", t.TempDir(), "--physnet", "a=eth0", "--physnet", "b=eth0"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--physnet: a=eth0 and b=eth0 map two physical networks to one interface") {
		t.Fatalf("agent with a=eth0 and b=eth0 = %v; want refused naming both", err)
	}
	for _, ok := range []map[string]string{nil, {"a": "eth0", "b": "eth1"}} {
		if err := checkPhysnets(ok); err != nil {
			t.Errorf("checkPhysnets(%v) = %v", ok, err)
		}
	}
	if err := checkPhysnets(map[string]string{"a": ""}); err == nil {
		t.Errorf("checkPhysnets(a=) accepted")
	}
}
