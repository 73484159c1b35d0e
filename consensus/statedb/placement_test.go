package statedb

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestFits(t *testing.T) {
	total := HostCap{VCPUs: 2, RAMMB: 1000, DiskGB: 10}
	used := HostCap{VCPUs: 6, RAMMB: 500, DiskGB: 5}
	for _, tc := range []struct {
		need HostCap
		r    Ratios
		want bool
	}{
		{HostCap{2, 500, 5}, Ratios{}, true},
		{HostCap{3, 1, 1}, Ratios{}, false},
		{HostCap{1, 501, 1}, Ratios{}, false},
		{HostCap{1, 1, 6}, Ratios{}, false},
		{HostCap{1, 1000, 1}, Ratios{RAM: 1.5}, true},
		{HostCap{1, 1001, 1}, Ratios{RAM: 1.5}, false},
		{HostCap{0, 0, 15}, Ratios{Disk: 2}, true},
		{HostCap{1, 1, 1}, Ratios{CPU: 3}, false},
		{HostCap{-1, 1, 1}, Ratios{}, false},
		{HostCap{0, 0, 0}, Ratios{CPU: -1, RAM: 0}, true},
		{HostCap{0, 0, 0}, Ratios{CPU: math.NaN(), RAM: math.Inf(1)}, true},
	} {
		if got := Fits(total, used, tc.need, tc.r); got != tc.want {
			t.Errorf("Fits(%v, %v, %v, %v) = %v; want %v", total, used, tc.need, tc.r, got, tc.want)
		}
	}
}

// TestFitsReference holds Fits to the rule written out in floating point
// on random inputs, negative and huge values included.
func TestFitsReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ratios := []Ratios{{}, {CPU: 4, RAM: 1, Disk: 1}, {CPU: 1.5, RAM: 0.9, Disk: 2}, {CPU: -1, RAM: 16, Disk: 0.5}}
	ref := func(total, used, need HostCap, r Ratios) bool {
		r = r.WithDefaults()
		ok := func(t, u, n int, ratio float64) bool {
			lim := 0.0
			if t > 0 {
				lim = math.Floor(float64(t) * ratio)
			}
			return n >= 0 && float64(max(u, 0))+float64(n) <= lim
		}
		return ok(total.VCPUs, used.VCPUs, need.VCPUs, r.CPU) && ok(total.RAMMB, used.RAMMB, need.RAMMB, r.RAM) &&
			ok(total.DiskGB, used.DiskGB, need.DiskGB, r.Disk)
	}
	for range 20000 {
		total := HostCap{VCPUs: rng.IntN(20) - 2, RAMMB: rng.IntN(5000) - 100, DiskGB: rng.IntN(100) - 5}
		used := HostCap{VCPUs: rng.IntN(30) - 3, RAMMB: rng.IntN(6000) - 100, DiskGB: rng.IntN(120) - 5}
		need := HostCap{VCPUs: rng.IntN(10) - 1, RAMMB: rng.IntN(3000) - 10, DiskGB: rng.IntN(50) - 1}
		r := ratios[rng.IntN(len(ratios))]
		if got, want := Fits(total, used, need, r), ref(total, used, need, r); got != want {
			t.Fatalf("Fits(%+v, %+v, %+v, %+v) = %v; the rule says %v", total, used, need, r, got, want)
		}
	}
}

func TestGroupAllows(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		max     int
		members map[string]int
		host    string
		want    bool
	}{
		{"", 0, map[string]int{"a": 1}, "a", true},
		{PolicyAffinity, 0, nil, "a", true},
		{PolicyAffinity, 0, map[string]int{"a": 2}, "a", true},
		{PolicyAffinity, 0, map[string]int{"a": 2}, "b", false},
		{PolicyAffinity, 0, map[string]int{"a": 1, "b": 1}, "a", false},
		{PolicyAffinity, 0, map[string]int{"a": 1, "b": 0}, "a", true},
		{PolicyAffinity, 3, map[string]int{"a": 1}, "b", false}, // the rule is anti-affinity's only
		{PolicyAntiAffinity, 0, map[string]int{"a": 1}, "a", false},
		{PolicyAntiAffinity, 0, map[string]int{"a": 1}, "b", true},
		{PolicyAntiAffinity, 1, map[string]int{"a": 1}, "a", false},
		{PolicyAntiAffinity, -4, map[string]int{"a": 1}, "a", false},
		{PolicyAntiAffinity, 2, map[string]int{"a": 1}, "a", true},
		{PolicyAntiAffinity, 2, map[string]int{"a": 2}, "a", false},
		{PolicyAntiAffinity, 2, map[string]int{"a": 2}, "b", true},
		{PolicyAntiAffinity, 3, map[string]int{"a": 2, "b": 3}, "a", true},
		{PolicyAntiAffinity, 3, map[string]int{"a": 2, "b": 3}, "b", false},
		{PolicySoftAffinity, 0, map[string]int{"a": 1}, "b", true},
		{PolicySoftAntiAffinity, 0, map[string]int{"a": 1}, "a", true},
		{PolicySoftAntiAffinity, 2, map[string]int{"a": 5}, "a", true},
	} {
		if got := GroupAllows(tc.policy, tc.max, tc.members, tc.host); got != tc.want {
			t.Errorf("GroupAllows(%q, %d, %v, %q) = %v; want %v", tc.policy, tc.max, tc.members, tc.host, got, tc.want)
		}
	}
	c := Constraints{Pin: "a"}
	if !c.Allows("a") || c.Allows("b") {
		t.Error("a pin allows exactly its host")
	}
	c = Constraints{Group: "g", NoGroup: true}
	if c.Allows("a") {
		t.Error("a missing group allows a host")
	}
}
