package access

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
