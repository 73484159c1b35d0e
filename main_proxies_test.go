package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseProxies(t *testing.T) {
	got, err := parseProxies(" 10.0.0.1, 192.168.0.0/16 ,::ffff:10.0.0.2,fd00::/8,")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(got, want) {
		t.Fatalf("parseProxies = %v; want %v", got, want)
	}
	if got, err := parseProxies(""); err != nil || len(got) != 0 {
		t.Fatalf("parseProxies(\"\") = %v, %v; want none", got, err)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "10.0.0.1,nope"} {
		if _, err := parseProxies(bad); err == nil {
			t.Errorf("parseProxies(%q) accepted", bad)
		}
	}
}
