package node

import (
	"testing"
	"time"
)

func TestPWCache(t *testing.T) {
	c := newPWCache(time.Minute, 2)
	now := time.Unix(1000, 0)
	if c.check("h1", "pw", now) {
		t.Fatal("empty cache matched")
	}
	c.remember("h1", "pw", now)
	cases := []struct {
		hash, pw string
		at       time.Time
		want     bool
	}{
		{"h1", "pw", now.Add(time.Second), true},
		{"h1", "other", now, false},             // wrong password
		{"h2", "pw", now, false},                // password changed: new hash
		{"h1", "pw", now.Add(time.Hour), false}, // expired
	}
	for _, tc := range cases {
		if got := c.check(tc.hash, tc.pw, tc.at); got != tc.want {
			t.Errorf("check(%q, %q, +%v) = %v; want %v", tc.hash, tc.pw, tc.at.Sub(now), got, tc.want)
		}
	}
	// Bounded size.
	for i := range 10 {
		c.remember("h", string(rune('a'+i)), now)
	}
	if len(c.entries) > 2 {
		t.Fatalf("cache holds %d entries; want at most 2", len(c.entries))
	}
}

func TestCheckStorageURL(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"nfs://10.0.0.250/export", true},
		{"nfs://nas/export/peerstack", true},
		{"nfs://nas", false},
		{"nfs:///export", false},
		{"http://nas/export", false},
		{"/srv/nfs", false},
		{"nfs://nas/export?x=1", false},
	} {
		if err := checkStorageURL(tc.in); (err == nil) != tc.ok {
			t.Errorf("checkStorageURL(%q) = %v; want ok=%v", tc.in, err, tc.ok)
		}
	}
}
