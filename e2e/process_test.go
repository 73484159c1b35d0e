package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type member struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	APIAddr     string `json:"api_addr"`
	RaftAddr    string `json:"raft_addr"`
	GossipAddr  string `json:"gossip_addr"`
	RaftRole    string `json:"raft_role"`
	GossipState string `json:"gossip_state"`
}

// TestThreeProcesses forms a cluster of three real processes with only
// `peerstack agent`, `peerstack token create` and `peerstack join`, then
// checks `peerstack members -f json` on each host.
func TestThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	bin := Binary(t)
	root := t.TempDir()
	a := StartDaemon(t, "alpha", filepath.Join(root, "a"), "agent")
	if a.AdminPassword() == "" {
		t.Fatalf("bootstrap wrote no admin password to clouds.yaml:\n%s", a.Output())
	}
	if strings.Contains(a.Output(), a.AdminPassword()) {
		t.Fatalf("the daemon printed the admin password:\n%s", a.Output())
	}
	procs := []*Proc{a}
	for _, name := range []string{"beta", "gamma"} {
		out := Run(t, filepath.Join(a.DataDir, "clouds.yaml"), bin, "token", "create")
		tok := LastLine(out)
		if !strings.HasPrefix(tok, "PSJ1-") {
			t.Fatalf("token create: last line %q is not a token", tok)
		}
		procs = append(procs, StartDaemon(t, name, filepath.Join(root, name), "join", tok))
	}
	for _, p := range procs {
		clouds := CloudsFor(t, a, p)
		deadline := time.Now().Add(30 * time.Second)
		for {
			out := Run(t, clouds, bin, "members", "-f", "json")
			var ms []member
			if err := json.Unmarshal([]byte(out), &ms); err != nil {
				t.Fatalf("members -f json via %s: %v\n%s", p.Name, err, out)
			}
			ok := len(ms) == 3
			for _, m := range ms {
				ok = ok && m.GossipState == "alive" && m.RaftRole != "none" && m.APIAddr != "" && m.RaftAddr != "" && m.GossipAddr != ""
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("members via %s never showed 3 healthy hosts:\n%s", p.Name, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		var st struct {
			Leader struct{ ID, Name string } `json:"leader"`
			Term   uint64                    `json:"term"`
			Self   struct{ ID, Name string } `json:"self"`
		}
		out := Run(t, clouds, bin, "status", "-f", "json")
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Leader.ID == "" || st.Self.Name != p.Name || st.Term == 0 {
			t.Fatalf("status via %s = %+v (%v)\n%s", p.Name, st, err, out)
		}
	}
	// The three hosts come to hold the same replicated state: `status
	// --digest` shows the same SHA-256 on each (asked in turn until they
	// agree: the hosts' own reports may still be landing).
	deadline := time.Now().Add(30 * time.Second)
	for {
		var digests []string
		for _, p := range procs {
			var st struct {
				Digest string `json:"state_digest"`
				Index  uint64 `json:"state_index"`
			}
			out := Run(t, CloudsFor(t, a, p), bin, "status", "--digest", "-f", "json")
			if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Digest) != 64 || st.Index == 0 {
				t.Fatalf("status --digest via %s = %+v (%v)\n%s", p.Name, st, err, out)
			}
			digests = append(digests, st.Digest)
		}
		if digests[0] == digests[1] && digests[1] == digests[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state digests never agreed: %v", digests)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestBadInput checks the one-line errors for a port in use and a bad token.
func TestBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	bin := Binary(t)
	root := t.TempDir()
	a := StartDaemon(t, "alpha", filepath.Join(root, "a"), "agent")
	// Port in use: reuse alpha's API address.
	out, err := exec.Command(bin, "agent", "--data-dir", filepath.Join(root, "b"), "--api-addr", a.APIAddr,
		"--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("port in use: err %v, output %s", err, out)
	}
	// Malformed token.
	out, err = exec.Command(bin, "join", "not-a-token", "--data-dir", filepath.Join(root, "c"),
		"--api-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "malformed join token") {
		t.Fatalf("bad token: err %v, output %s", err, out)
	}
	if entries, _ := filepath.Glob(filepath.Join(root, "c", "*")); len(entries) > 0 {
		t.Fatalf("a refused join left files behind: %v", entries)
	}
}
