package compute

import (
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
)

// A console grant serves the instance and host it names, for a minute,
// and only with its MAC intact.
func TestConsoleGrant(t *testing.T) {
	b := resttest.New()
	b.Bootstrap(t, statedb.Settings{}, "secret")
	sn := b.State()
	now := b.Now()
	mint := func(at time.Time) string {
		g, err := MintConsoleGrant(sn, "i1", "h1", at)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := mint(now)
	if err := VerifyConsoleGrant(sn, g, "i1", "h1", now.Add(30*time.Second)); err != nil {
		t.Fatalf("a fresh grant: %v", err)
	}
	enc, mac, _ := strings.Cut(g, ".")
	flipped := mac[:len(mac)-1] + "0"
	if flipped == mac {
		flipped = mac[:len(mac)-1] + "1"
	}
	for name, tc := range map[string]struct {
		grant, inst, host string
		at                time.Time
	}{
		"another instance": {g, "i2", "h1", now},
		"another host":     {g, "i1", "h2", now},
		"expired":          {g, "i1", "h1", now.Add(ConsoleGrantTTL + 2*time.Second)},
		"tampered MAC":     {enc + "." + flipped, "i1", "h1", now},
		"no MAC":           {enc, "i1", "h1", now},
		"empty":            {"", "i1", "h1", now},
		"not base64":       {"!!." + mac, "i1", "h1", now},
		"expiry far ahead": {mint(now.Add(time.Hour)), "i1", "h1", now},
	} {
		if err := VerifyConsoleGrant(sn, tc.grant, tc.inst, tc.host, tc.at); err == nil {
			t.Errorf("%s: admitted", name)
		}
	}
}
