package identity

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func seeded(seed byte) *rand.ChaCha8 { return rand.NewChaCha8([32]byte{seed}) }

func testKey(t testing.TB, seed byte) Key {
	t.Helper()
	k, err := NewKey(seeded(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// staticKeys is a KeySource without rotation.
type staticKeys map[string][]byte

func (m staticKeys) VerifyKey(id string) ([]byte, bool) { s, ok := m[id]; return s, ok }

func keysOf(ks ...Key) staticKeys {
	m := staticKeys{}
	for _, k := range ks {
		m[k.ID] = k.Secret
	}
	return m
}

func testClaims() Claims {
	return Claims{
		UserID:    "6b1f2a4c9e0d4f6a8b3c2d1e0f9a8b7c",
		DomainID:  "default",
		ProjectID: "0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f",
		Roles: []RoleRef{
			{ID: "1a2b3c4d5e6f70819203a4b5c6d7e8f9", Name: RoleMember},
			{ID: "9f8e7d6c5b4a39281706f5e4d3c2b1a0", Name: RoleReader},
			{ID: "aa11bb22cc33dd44ee55ff6600778899", Name: "load-balancer_member"},
		},
		Methods:   []string{MethodPassword},
		IssuedAt:  t0,
		ExpiresAt: t0.Add(time.Hour),
		AuditID:   "xZ3b-8kQ_Tq1mN0pLr7s2w",
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	k := testKey(t, 1)
	full := testClaims()
	appCred := testClaims()
	appCred.Methods = []string{MethodApplicationCredential}
	appCred.AppCredID = "c0ffee00c0ffee00c0ffee00c0ffee00"
	unscoped := testClaims()
	unscoped.ProjectID, unscoped.Roles = "", nil
	unscoped.Methods = []string{MethodPassword, MethodToken}
	odd := Claims{
		UserID: "ユーザー\x00.\xff", DomainID: "", ProjectID: "p.q/r+s=",
		Roles:    []RoleRef{{ID: "", Name: ""}, {ID: "x", Name: strings.Repeat("r", 300)}},
		IssuedAt: time.Date(1969, 7, 20, 20, 17, 40, 123456000, time.UTC),
		AuditID:  "a",
	}
	odd.ExpiresAt = odd.IssuedAt.Add(time.Microsecond)
	many := testClaims()
	for i := range 100 {
		many.Roles = append(many.Roles, RoleRef{ID: fmt.Sprintf("%032x", i), Name: fmt.Sprint("role", i)})
	}
	for _, tc := range []struct {
		name string
		c    Claims
	}{{"full", full}, {"appcred", appCred}, {"unscoped", unscoped}, {"odd", odd}, {"many roles", many}} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Sign(k, tc.c)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !strings.HasPrefix(tok, "ps1."+k.ID+".") {
				t.Errorf("token %q lacks prefix ps1.%s.", tok, k.ID)
			}
			if i := strings.IndexFunc(tok, func(r rune) bool {
				return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._-", r))
			}); i >= 0 {
				t.Errorf("token has URL-unsafe byte %q at %d", tok[i], i)
			}
			got, err := Verify(tok, keysOf(k), tc.c.IssuedAt)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(got, tc.c) {
				t.Errorf("Verify(Sign(%+v)) = %+v", tc.c, got)
			}
		})
	}
	tok, _ := Sign(k, full)
	t.Logf("typical token: %d chars", len(tok))
}

func TestSignTruncatesToMicroseconds(t *testing.T) {
	k := testKey(t, 1)
	c := testClaims()
	c.IssuedAt = time.Date(2026, 3, 1, 13, 0, 0, 123456789, time.FixedZone("CET", 3600))
	c.ExpiresAt = c.IssuedAt.Add(time.Hour)
	tok, err := Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(tok, keysOf(k), c.IssuedAt)
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	if got.IssuedAt != want || got.ExpiresAt != want.Add(time.Hour) {
		t.Errorf("times = %v, %v; want %v, %v", got.IssuedAt, got.ExpiresAt, want, want.Add(time.Hour))
	}
}

func TestVerifyExpiry(t *testing.T) {
	k := testKey(t, 1)
	c := testClaims()
	tok, err := Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		now  time.Time
		want error
	}{
		{c.IssuedAt.Add(-time.Minute), nil}, // skewed clocks: not-yet-valid is accepted
		{c.IssuedAt, nil},
		{c.ExpiresAt.Add(-time.Microsecond), nil},
		{c.ExpiresAt, ErrExpired},
		{c.ExpiresAt.Add(time.Nanosecond), ErrExpired},
		{c.ExpiresAt.Add(24 * time.Hour), ErrExpired},
	} {
		if _, err := Verify(tok, keysOf(k), tc.now); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("Verify(now=%v) = %v; want %v", tc.now, err, tc.want)
		}
	}
}

func isTokenError(err error) bool {
	for _, e := range []error{ErrMalformed, ErrBadSignature, ErrUnknownKey, ErrExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func TestVerifyTampered(t *testing.T) {
	k := testKey(t, 1)
	tok, err := Sign(k, testClaims())
	if err != nil {
		t.Fatal(err)
	}
	keys := keysOf(k)
	for i := range len(tok) {
		for bit := range 8 {
			b := []byte(tok)
			b[i] ^= 1 << bit
			if _, err := Verify(string(b), keys, t0); !isTokenError(err) {
				t.Fatalf("Verify(token with byte %d bit %d flipped) = %v; want a token error", i, bit, err)
			}
		}
		if _, err := Verify(tok[:i], keys, t0); !isTokenError(err) {
			t.Fatalf("Verify(token[:%d]) = %v; want a token error", i, err)
		}
	}
	for _, suffix := range []string{"A", "AA", "AAAA", "."} {
		if _, err := Verify(tok+suffix, keys, t0); !isTokenError(err) {
			t.Errorf("Verify(token+%q) = %v; want a token error", suffix, err)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	k := testKey(t, 1)
	tok, err := Sign(k, testClaims())
	if err != nil {
		t.Fatal(err)
	}
	_, enc, _ := strings.Cut(strings.TrimPrefix(tok, "ps1."), ".")
	sameID := Key{ID: k.ID, Secret: testKey(t, 2).Secret}
	long := testClaims()
	long.Roles = []RoleRef{{ID: strings.Repeat("x", 1500), Name: "big"}}
	longTok, err := Sign(k, long) // decodes into a heap buffer
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		token string
		keys  KeySource
		want  error
	}{
		{"ok", tok, keysOf(k), nil},
		{"ok long", longTok, keysOf(k), nil},
		{"other cluster", tok, keysOf(testKey(t, 3)), ErrUnknownKey},
		{"id collision", tok, keysOf(sameID), ErrBadSignature},
		{"nil keys", tok, nil, ErrUnknownKey},
		{"empty keys", tok, KeySet(nil).At(t0), ErrUnknownKey},
		{"short secret", tok, staticKeys{k.ID: []byte("short")}, ErrUnknownKey},
		{"empty", "", keysOf(k), ErrMalformed},
		{"prefix only", "ps1.", keysOf(k), ErrMalformed},
		{"other version", "ps2." + tok[4:], keysOf(k), ErrMalformed},
		{"no key id", "ps1." + enc, keysOf(k), ErrMalformed},
		{"empty key id", "ps1.." + enc, keysOf(k), ErrMalformed},
		{"bad key id", "ps1.a+b." + enc, keysOf(k), ErrMalformed},
		{"padded", tok + "==", keysOf(k), ErrMalformed},
		{"std base64", "ps1." + k.ID + "." + strings.NewReplacer("-", "+", "_", "/").Replace(enc) + "+/", keysOf(k), ErrMalformed},
		{"short body", "ps1." + k.ID + ".AAAA", keysOf(k), ErrMalformed},
		{"too long", tok + strings.Repeat("A", MaxTokenLen), keysOf(k), ErrMalformed},
		{"bearer", "Bearer " + tok, keysOf(k), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(tc.token, tc.keys, t0)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v; want %v", err, tc.want)
			}
			if !reflect.DeepEqual(c, Claims{}) {
				t.Errorf("Verify returned claims %+v with error %v", c, err)
			}
		})
	}
}

func TestVerifyRejectsValidMACOverBadBody(t *testing.T) {
	k := testKey(t, 1)
	for _, body := range [][]byte{{}, {2}, {tokenVersion}, append(appendClaims(nil, testClaims()), 0)} {
		buf := append(make([]byte, padLen), byte(len(k.ID)))
		buf = append(buf, k.ID...)
		hdr := len(buf)
		buf = append(buf, body...)
		mac := sumHMAC(k.Secret, buf)
		tok := "ps1." + k.ID + "." + base64.RawURLEncoding.EncodeToString(append(buf[hdr:], mac[:]...))
		if _, err := Verify(tok, keysOf(k), t0); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(signed body %x) = %v; want %v", body, err, ErrMalformed)
		}
	}
}

func TestSignRejects(t *testing.T) {
	k := testKey(t, 1)
	mod := func(f func(*Claims)) Claims { c := testClaims(); f(&c); return c }
	for _, tc := range []struct {
		name string
		k    Key
		c    Claims
		want error
	}{
		{"short secret", Key{ID: "k1", Secret: make([]byte, 31)}, testClaims(), ErrInvalidKey},
		{"empty key id", Key{Secret: k.Secret}, testClaims(), ErrInvalidKey},
		{"dot in key id", Key{ID: "a.b", Secret: k.Secret}, testClaims(), ErrInvalidKey},
		{"long key id", Key{ID: strings.Repeat("k", 65), Secret: k.Secret}, testClaims(), ErrInvalidKey},
		{"no user", k, mod(func(c *Claims) { c.UserID = "" }), ErrInvalidClaims},
		{"no audit id", k, mod(func(c *Claims) { c.AuditID = "" }), ErrInvalidClaims},
		{"no issue time", k, mod(func(c *Claims) { c.IssuedAt = time.Time{} }), ErrInvalidClaims},
		{"expires at issue", k, mod(func(c *Claims) { c.ExpiresAt = c.IssuedAt }), ErrInvalidClaims},
		{"too big", k, mod(func(c *Claims) { c.UserID = strings.Repeat("u", MaxTokenLen) }), ErrInvalidClaims},
	} {
		if tok, err := Sign(tc.k, tc.c); !errors.Is(err, tc.want) {
			t.Errorf("Sign(%s) = %q, %v; want %v", tc.name, tok, err, tc.want)
		}
	}
}

func TestSumHMACMatchesStdlib(t *testing.T) {
	r := seeded(9)
	for _, n := range []int{0, 1, 31, 32, 63, 64, 65, 100, 1000} {
		for _, klen := range []int{0, 32, 64, 65, 200} {
			key, msg := make([]byte, klen), make([]byte, n)
			r.Read(key)
			r.Read(msg)
			got := sumHMAC(key, append(make([]byte, padLen), msg...))
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			if want := h.Sum(nil); !bytes.Equal(got[:], want) {
				t.Errorf("sumHMAC(key %d, msg %d) = %x; want %x", klen, n, got, want)
			}
		}
	}
}

func TestDecodeBase64MatchesStrictStdlib(t *testing.T) {
	strict := base64.RawURLEncoding.Strict()
	r := seeded(7)
	check := func(s string) {
		want, werr := strict.DecodeString(s)
		if strings.ContainsAny(s, "\r\n") { // stdlib skips newlines; tokens must not
			werr = errors.New("newline")
		}
		var got []byte
		ok := len(s)%4 != 1
		if ok {
			got = make([]byte, len(s)*3/4)
			ok = decodeBase64(got, s)
		}
		if ok != (werr == nil) || ok && !bytes.Equal(got, want) {
			t.Errorf("decodeBase64(%q) = %x, %v; want %x, %v", s, got, ok, want, werr)
		}
	}
	for n := range 40 {
		b := make([]byte, n)
		r.Read(b)
		s := base64.RawURLEncoding.EncodeToString(b)
		check(s)
		for i := range len(s) { // every other character in every position
			for _, c := range []byte("A_-+/=.\n\x00zZ9") {
				m := []byte(s)
				m[i] = c
				check(string(m))
			}
		}
	}
}

func TestNewAuditID(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id, err := NewAuditID(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 22 || !validKeyID(id) {
			t.Fatalf("NewAuditID() = %q; want 22 url-safe chars", id)
		}
		if seen[id] {
			t.Fatalf("NewAuditID() repeated %q", id)
		}
		seen[id] = true
	}
	if _, err := NewAuditID(strings.NewReader("short")); err == nil {
		t.Error("NewAuditID(short reader) = nil error")
	}
}

func TestNewKey(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	if len(a.ID) != 8 || len(a.Secret) != 32 || a.validate() != nil {
		t.Errorf("NewKey() = id %q, %d-byte secret; want 8 hex chars, 32 bytes", a.ID, len(a.Secret))
	}
	if a.ID == b.ID || bytes.Equal(a.Secret, b.Secret) {
		t.Errorf("NewKey() twice = %v, %v; want distinct keys", a, b)
	}
	if _, err := NewKey(strings.NewReader("short")); err == nil {
		t.Error("NewKey(short reader) = nil error")
	}
	if k, err := NewKey(nil); err != nil || k.validate() != nil {
		t.Errorf("NewKey(nil) = %v, %v", k, err)
	}
}

func TestKeyDoesNotLeakSecret(t *testing.T) {
	k := testKey(t, 1)
	rec := KeyRecord{Key: k, CreatedAt: t0}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k, "rec", rec)
	out := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", k, k, k, k, rec, rec, rec) + logged.String()
	for _, secret := range []string{fmt.Sprintf("%x", k.Secret), fmt.Sprint(k.Secret), fmt.Sprint(k.Secret[0]) + " "} {
		if strings.Contains(out, secret) {
			t.Errorf("formatted key %q contains secret %q", out, secret)
		}
	}
	if !strings.Contains(out, k.ID) {
		t.Errorf("formatted key %q lacks id %q", out, k.ID)
	}
}

func TestVerifyAllocs(t *testing.T) {
	k := testKey(t, 1)
	tok, err := Sign(k, testClaims())
	if err != nil {
		t.Fatal(err)
	}
	keys := keysOf(k)
	// One copy of the body for all strings, the Roles and Methods slices.
	if n := testing.AllocsPerRun(100, func() { Verify(tok, keys, t0) }); n > 3 {
		t.Errorf("Verify allocates %v times; want <= 3", n)
	}
}

func FuzzVerify(f *testing.F) {
	k := testKey(f, 1)
	tok, err := Sign(k, testClaims())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(tok[:len(tok)-1])
	f.Add("ps1." + k.ID + ".")
	f.Add("ps1..")
	f.Add("")
	keys := KeySet{{Key: k, CreatedAt: t0}}.At(t0)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(s, keys, t0)
		if err != nil {
			if !isTokenError(err) {
				t.Fatalf("Verify(%q) = %v; want a token error", s, err)
			}
			return
		}
		// Only Sign can make a valid token, and it encodes deterministically.
		if again, err := Sign(k, c); err != nil || again != s {
			t.Fatalf("Sign(Verify(%q)) = %q, %v", s, again, err)
		}
	})
}

// FuzzDecodeClaims reaches the body decoder, which Verify only runs on
// bodies with a valid MAC.
func FuzzDecodeClaims(f *testing.F) {
	f.Add(appendClaims(nil, testClaims()))
	f.Add(appendClaims(nil, Claims{}))
	f.Add([]byte{tokenVersion})
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := decodeClaims(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decodeClaims(%x) = %v; want %v", body, err, ErrMalformed)
			}
			return
		}
		again, err := decodeClaims(appendClaims(nil, c))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("decodeClaims(appendClaims(%+v)) = %+v, %v", c, again, err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	k := testKey(b, 1)
	old := testKey(b, 2)
	keys := KeySet{
		{Key: old, CreatedAt: t0.Add(-24 * time.Hour), RetireAt: t0.Add(time.Hour)},
		{Key: k, CreatedAt: t0},
	}
	tok, err := Sign(k, testClaims())
	if err != nil {
		b.Fatal(err)
	}
	now := t0.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(tok, keys.At(now), now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
}

func BenchmarkSign(b *testing.B) {
	k := testKey(b, 1)
	c := testClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(k, c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}
