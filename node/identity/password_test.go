package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestHashPassword(t *testing.T) {
	pw72 := strings.Repeat("p", 72)
	for _, tc := range []struct {
		pw   string
		cost int
		want error
	}{
		{"correct horse", bcrypt.MinCost, nil},
		{pw72, bcrypt.MinCost, nil},
		{"ünïcødé ✓", bcrypt.MinCost, nil},
		{pw72 + "p", bcrypt.MinCost, ErrPasswordTooLong},
		{"", bcrypt.MinCost, ErrEmptyPassword},
		{"pw", 3, ErrBcryptCost},
		{"pw", 32, ErrBcryptCost},
		{"pw", 0, ErrBcryptCost},
	} {
		h, err := HashPassword(tc.pw, tc.cost)
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("HashPassword(%q, %d) = %v; want %v", tc.pw, tc.cost, err, tc.want)
			continue
		}
		if err != nil {
			continue
		}
		if c, _ := bcrypt.Cost([]byte(h)); c != tc.cost {
			t.Errorf("HashPassword(%q, %d) cost = %d", tc.pw, tc.cost, c)
		}
		if !CheckPassword(h, tc.pw) {
			t.Errorf("CheckPassword(HashPassword(%q), %q) = false; want true", tc.pw, tc.pw)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	pw72 := strings.Repeat("p", 72)
	h, err := HashPassword("s3cret", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hmax, err := HashPassword(pw72, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := HashPassword("s3cret", bcrypt.MinCost)
	if h == h2 {
		t.Error("HashPassword twice gave the same hash; want distinct salts")
	}
	for _, tc := range []struct {
		hash, pw string
		want     bool
	}{
		{h, "s3cret", true},
		{h2, "s3cret", true},
		{h, "S3cret", false},
		{h, "s3cret ", false},
		{h, "", false},
		{hmax, pw72, true},
		{hmax, pw72 + "x", false}, // bcrypt alone would accept: it reads 72 bytes
		{"", "s3cret", false},
		{"$2a$04$garbage", "s3cret", false},
		{"s3cret", "s3cret", false},
	} {
		if got := CheckPassword(tc.hash, tc.pw); got != tc.want {
			t.Errorf("CheckPassword(%q, %q) = %v; want %v", tc.hash, tc.pw, got, tc.want)
		}
	}
}

func TestLocked(t *testing.T) {
	last := t0
	for _, tc := range []struct {
		p        LockoutPolicy
		failures int
		now      time.Time
		want     bool
	}{
		{LockoutPolicy{}, 1000, last, false},
		{LockoutPolicy{MaxAttempts: 0, Duration: time.Hour}, 1000, last, false},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 0, last, false},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 2, last, false},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 3, last, true},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 4, last.Add(59 * time.Minute), true},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 3, last.Add(time.Hour - time.Nanosecond), true},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 3, last.Add(time.Hour), false},
		{LockoutPolicy{MaxAttempts: 3, Duration: time.Hour}, 3, last.Add(48 * time.Hour), false},
		{LockoutPolicy{MaxAttempts: 1, Duration: time.Minute}, 1, last, true},
		{LockoutPolicy{MaxAttempts: 3}, 3, last.Add(1000 * time.Hour), true}, // until an admin resets
		{LockoutPolicy{MaxAttempts: 3}, 2, last, false},
	} {
		if got := tc.p.Locked(tc.failures, last, tc.now); got != tc.want {
			t.Errorf("%+v.Locked(%d, t0, t0+%v) = %v; want %v", tc.p, tc.failures, tc.now.Sub(last), got, tc.want)
		}
	}
}

func BenchmarkHashPasswordCost12(b *testing.B) {
	for b.Loop() {
		if _, err := HashPassword("correct horse battery staple", DefaultBcryptCost); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}

func BenchmarkCheckPasswordCost12(b *testing.B) {
	h, err := HashPassword("correct horse battery staple", DefaultBcryptCost)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !CheckPassword(h, "correct horse battery staple") {
			b.Fatal("CheckPassword = false")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
}
