package identity

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func rec(k Key, created, retire time.Time) KeyRecord {
	return KeyRecord{Key: k, CreatedAt: created, RetireAt: retire}
}

func TestRotate(t *testing.T) {
	a, b, c := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	const life = time.Hour
	now := t0.Add(10 * time.Hour)
	var zero time.Time
	for _, tc := range []struct {
		name string
		in   []KeyRecord
		want []KeyRecord
	}{
		{"first key", nil, []KeyRecord{rec(c, now, zero)}},
		{"active retires", []KeyRecord{rec(a, t0, zero)},
			[]KeyRecord{rec(a, t0, now.Add(life)), rec(c, now, zero)}},
		{"retiring kept", []KeyRecord{rec(a, t0, now.Add(time.Second)), rec(b, t0, zero)},
			[]KeyRecord{rec(a, t0, now.Add(time.Second)), rec(b, t0, now.Add(life)), rec(c, now, zero)}},
		{"retired dropped", []KeyRecord{rec(a, t0, now), rec(b, t0, zero)},
			[]KeyRecord{rec(b, t0, now.Add(life)), rec(c, now, zero)}},
		{"long retired dropped", []KeyRecord{rec(a, t0, t0.Add(life)), rec(b, t0, zero)},
			[]KeyRecord{rec(b, t0, now.Add(life)), rec(c, now, zero)}},
		{"duplicate id replaced", []KeyRecord{rec(Key{ID: c.ID, Secret: a.Secret}, t0, zero)},
			[]KeyRecord{rec(c, now, zero)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]KeyRecord(nil), tc.in...)
			got := Rotate(tc.in, c, now, life)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Rotate(%v) = %v; want %v", tc.in, got, tc.want)
			}
			if !reflect.DeepEqual(in, tc.in) {
				t.Errorf("Rotate modified its input: %v, was %v", tc.in, in)
			}
		})
	}
}

func TestActiveKey(t *testing.T) {
	a, b, c := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	var zero time.Time
	for _, tc := range []struct {
		name string
		in   []KeyRecord
		want Key
		ok   bool
	}{
		{"none", nil, Key{}, false},
		{"all retiring", []KeyRecord{rec(a, t0, t0.Add(time.Hour))}, Key{}, false},
		{"one", []KeyRecord{rec(a, t0, t0.Add(time.Hour)), rec(b, t0, zero)}, b, true},
		{"newest wins", []KeyRecord{rec(c, t0.Add(time.Minute), zero), rec(b, t0, zero)}, c, true},
		{"tie: later wins", []KeyRecord{rec(b, t0, zero), rec(c, t0, zero)}, c, true},
	} {
		got, ok := ActiveKey(tc.in)
		if ok != tc.ok || !reflect.DeepEqual(got.Key, tc.want) {
			t.Errorf("ActiveKey(%s) = %v, %v; want %v, %v", tc.name, got.Key, ok, tc.want, tc.ok)
		}
	}
}

func TestKeySetAt(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	ks := KeySet{rec(a, t0, t0.Add(time.Hour)), rec(b, t0, time.Time{})}
	for _, tc := range []struct {
		id   string
		now  time.Time
		want bool
	}{
		{a.ID, t0, true},
		{a.ID, t0.Add(time.Hour - time.Nanosecond), true},
		{a.ID, t0.Add(time.Hour), false},
		{b.ID, t0.Add(1000 * time.Hour), true},
		{"nope", t0, false},
	} {
		if _, ok := ks.At(tc.now).VerifyKey(tc.id); ok != tc.want {
			t.Errorf("KeySet.At(%v).VerifyKey(%q) = %v; want %v", tc.now, tc.id, ok, tc.want)
		}
	}
}

// TestRotationLifecycle walks one key through its life: it signs, is
// replaced, keeps verifying its tokens until they expire, and is dropped.
func TestRotationLifecycle(t *testing.T) {
	const life = time.Hour
	k1, k2, k3 := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	sign := func(ks KeySet, at time.Time) string {
		t.Helper()
		active, ok := ActiveKey(ks)
		if !ok {
			t.Fatal("no active key")
		}
		c := testClaims()
		c.IssuedAt, c.ExpiresAt = at, at.Add(life)
		tok, err := Sign(active.Key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	check := func(ks KeySet, tok string, at time.Time, want error) {
		t.Helper()
		if _, err := Verify(tok, ks.At(at), at); !errors.Is(err, want) || (err == nil) != (want == nil) {
			t.Errorf("Verify(at %v) = %v; want %v", at.Sub(t0), err, want)
		}
	}

	ks := KeySet(Rotate(nil, k1, t0, life))
	old := sign(ks, t0.Add(50*time.Minute)) // last token of k1, expires at t0+110m
	rotated := t0.Add(time.Hour)
	ks = Rotate(ks, k2, rotated, life) // k1 verifies until t0+120m
	if a, _ := ActiveKey(ks); a.ID != k2.ID {
		t.Fatalf("ActiveKey after rotation = %v; want %v", a, k2)
	}
	fresh := sign(ks, rotated)
	if !strings.HasPrefix(fresh, "ps1."+k2.ID+".") {
		t.Errorf("token after rotation = %q; want signed by %s", fresh, k2.ID)
	}
	check(ks, old, rotated, nil)
	check(ks, old, t0.Add(110*time.Minute-time.Microsecond), nil)
	check(ks, old, t0.Add(110*time.Minute), ErrExpired)
	check(ks, old, rotated.Add(life), ErrUnknownKey) // k1 retired
	check(ks, fresh, rotated.Add(life-time.Microsecond), nil)

	ks = Rotate(ks, k3, rotated.Add(life), life) // k1 dropped, k2 retiring
	if len(ks) != 2 || ks[0].ID != k2.ID || ks[1].ID != k3.ID {
		t.Errorf("key set after second rotation = %v; want [%s %s]", ks, k2.ID, k3.ID)
	}
	check(ks, old, t0.Add(100*time.Minute), ErrUnknownKey)
	check(ks, fresh, rotated.Add(life-time.Microsecond), nil)
}
