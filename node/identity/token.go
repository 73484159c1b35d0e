package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors. Verify returns one of the first four (possibly wrapped);
// test with errors.Is.
var (
	ErrMalformed     = errors.New("identity: malformed token")
	ErrBadSignature  = errors.New("identity: bad token signature")
	ErrUnknownKey    = errors.New("identity: unknown token signing key")
	ErrExpired       = errors.New("identity: token expired")
	ErrInvalidClaims = errors.New("identity: invalid token claims")
	ErrInvalidKey    = errors.New("identity: invalid signing key")
)

// Token methods, as Keystone names them.
const (
	MethodPassword              = "password"
	MethodApplicationCredential = "application_credential"
	MethodToken                 = "token"
)

// MaxTokenLen bounds a token string. Sign refuses claims that would not fit
// and Verify rejects longer input before decoding it.
const MaxTokenLen = 8192

const (
	tokenPrefix  = "ps1."
	tokenVersion = 1
	macLen       = sha256.Size
	padLen       = sha256.BlockSize // scratch kept in front of the MAC input
	maxKeyIDLen  = 64
	minSecretLen = 32
	stackBufLen  = 1024
)

// RoleRef is a role assignment carried in a token.
type RoleRef struct{ ID, Name string }

// Claims is what a token asserts. Times travel at microsecond precision:
// Sign drops anything finer and Verify returns UTC times, so a Claims whose
// times are UTC and whole microseconds round-trips exactly (empty Roles and
// Methods come back nil).
type Claims struct {
	UserID    string
	DomainID  string    // "default"
	ProjectID string    // "" = unscoped
	Roles     []RoleRef // roles on ProjectID at issue time
	Methods   []string  // MethodPassword, MethodApplicationCredential, MethodToken
	AppCredID string    // set when issued from an application credential
	IssuedAt  time.Time
	ExpiresAt time.Time
	AuditID   string // NewAuditID; the revocation id
}

// KeySource looks up a verification secret by key id.
type KeySource interface {
	VerifyKey(id string) (secret []byte, ok bool)
}

// Sign returns the token "ps1.<key id>.<base64url(body || mac)>", where body
// is the compact binary encoding of c and mac is HMAC-SHA256 over the key id
// and body. The result is safe in URLs and HTTP headers.
func Sign(k Key, c Claims) (string, error) {
	if err := k.validate(); err != nil {
		return "", err
	}
	if err := c.validate(); err != nil {
		return "", err
	}
	buf := make([]byte, padLen, padLen+256)
	buf = append(buf, byte(len(k.ID)))
	buf = append(buf, k.ID...)
	hdr := len(buf)
	buf = appendClaims(buf, c)
	mac := sumHMAC(k.Secret, buf)
	raw := append(buf[hdr:], mac[:]...)
	n := len(tokenPrefix) + len(k.ID) + 1 + base64.RawURLEncoding.EncodedLen(len(raw))
	if n > MaxTokenLen {
		return "", fmt.Errorf("%w: token would be %d bytes, limit %d", ErrInvalidClaims, n, MaxTokenLen)
	}
	out := make([]byte, 0, n)
	out = append(out, tokenPrefix...)
	out = append(out, k.ID...)
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, raw)
	return string(out), nil
}

// Verify checks token's signature with the key named in it, in constant
// time, and its expiry (ExpiresAt <= now is ErrExpired). It returns the
// claims only when every check passes. Revocation is the caller's job.
func Verify(token string, keys KeySource, now time.Time) (Claims, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok || len(token) > MaxTokenLen {
		return Claims{}, ErrMalformed
	}
	kid, enc, ok := strings.Cut(rest, ".")
	if !ok || !validKeyID(kid) {
		return Claims{}, ErrMalformed
	}
	n := len(enc) * 3 / 4 // unpadded base64
	if len(enc)%4 == 1 || n < 1+macLen {
		return Claims{}, ErrMalformed
	}
	// buf = scratch pad | len(kid) | kid | body | mac. The MAC input is
	// contiguous, so sumHMAC needs no allocation.
	hdr := padLen + 1 + len(kid)
	var stack [stackBufLen]byte
	var buf []byte
	if hdr+n <= len(stack) {
		buf = stack[:hdr+n]
	} else {
		buf = make([]byte, hdr+n)
	}
	buf[padLen] = byte(len(kid))
	copy(buf[padLen+1:], kid)
	if !decodeBase64(buf[hdr:], enc) {
		return Claims{}, ErrMalformed
	}
	if keys == nil {
		return Claims{}, ErrUnknownKey
	}
	secret, ok := keys.VerifyKey(kid)
	if !ok || len(secret) < minSecretLen {
		return Claims{}, ErrUnknownKey
	}
	end := len(buf) - macLen
	want := sumHMAC(secret, buf[:end])
	if !hmac.Equal(want[:], buf[end:]) {
		return Claims{}, ErrBadSignature
	}
	c, err := decodeClaims(buf[hdr:end])
	if err != nil {
		return Claims{}, err
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, ErrExpired
	}
	return c, nil
}

func (c Claims) validate() error {
	switch {
	case c.UserID == "":
		return fmt.Errorf("%w: empty UserID", ErrInvalidClaims)
	case c.AuditID == "":
		return fmt.Errorf("%w: empty AuditID", ErrInvalidClaims)
	case c.IssuedAt.IsZero() || !c.ExpiresAt.After(c.IssuedAt):
		return fmt.Errorf("%w: ExpiresAt must be after a non-zero IssuedAt", ErrInvalidClaims)
	}
	return nil
}

// sumHMAC returns HMAC-SHA256(secret, buf[padLen:]), using buf[:padLen] as
// scratch for the inner pad so that the hot path allocates nothing. It is
// RFC 2104 HMAC and is tested against crypto/hmac.
func sumHMAC(secret, buf []byte) [sha256.Size]byte {
	var k [sha256.BlockSize]byte
	if len(secret) > len(k) {
		h := sha256.Sum256(secret)
		copy(k[:], h[:])
	} else {
		copy(k[:], secret)
	}
	var outer [sha256.BlockSize + sha256.Size]byte
	for i, b := range k {
		buf[i] = b ^ 0x36
		outer[i] = b ^ 0x5c
	}
	inner := sha256.Sum256(buf)
	copy(outer[sha256.BlockSize:], inner[:])
	return sha256.Sum256(outer[:])
}

// Body encoding (version 1): version byte; IssuedAt and ExpiresAt as zigzag
// varint Unix microseconds; UserID, DomainID, ProjectID, AppCredID, AuditID;
// a count and the Methods; a count and the Roles as ID, Name pairs. Counts
// are uvarints and strings are a uvarint length followed by the bytes.
func appendClaims(b []byte, c Claims) []byte {
	b = append(b, tokenVersion)
	b = binary.AppendVarint(b, c.IssuedAt.UnixMicro())
	b = binary.AppendVarint(b, c.ExpiresAt.UnixMicro())
	for _, s := range [...]string{c.UserID, c.DomainID, c.ProjectID, c.AppCredID, c.AuditID} {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Methods)))
	for _, m := range c.Methods {
		b = appendStr(b, m)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Roles)))
	for _, r := range c.Roles {
		b = appendStr(appendStr(b, r.ID), r.Name)
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeClaims parses body. Every string in the result is a substring of a
// single copy of body, so decoding allocates three times at most.
func decodeClaims(body []byte) (Claims, error) {
	r := reader{s: string(body)}
	var c Claims
	if r.uvarint() != tokenVersion {
		return Claims{}, fmt.Errorf("%w: unknown claims version", ErrMalformed)
	}
	c.IssuedAt = time.UnixMicro(r.varint()).UTC()
	c.ExpiresAt = time.UnixMicro(r.varint()).UTC()
	c.UserID, c.DomainID, c.ProjectID = r.str(), r.str(), r.str()
	c.AppCredID, c.AuditID = r.str(), r.str()
	if n := r.count(1); n > 0 {
		c.Methods = make([]string, n)
		for i := range c.Methods {
			c.Methods[i] = r.str()
		}
	}
	if n := r.count(2); n > 0 {
		c.Roles = make([]RoleRef, n)
		for i := range c.Roles {
			c.Roles[i] = RoleRef{ID: r.str(), Name: r.str()}
		}
	}
	if r.bad || r.off != len(r.s) {
		return Claims{}, fmt.Errorf("%w: bad claims encoding", ErrMalformed)
	}
	return c, nil
}

// reader walks an encoded body. It works on a string, not the []byte,
// so that the body can stay on Verify's stack.
type reader struct {
	s   string
	off int
	bad bool
}

func (r *reader) uvarint() uint64 {
	var v uint64
	for shift := 0; shift < 64 && r.off < len(r.s); shift += 7 {
		b := r.s[r.off]
		r.off++
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v
		}
	}
	r.bad = true
	return 0
}

func (r *reader) varint() int64 {
	u := r.uvarint() // zigzag, as binary.AppendVarint writes it
	return int64(u>>1) ^ -int64(u&1)
}

// count reads an element count; each element takes at least size bytes, so
// a count the rest of the body cannot hold is rejected before allocating.
func (r *reader) count(size int) int {
	n := r.uvarint()
	if r.bad || n > uint64((len(r.s)-r.off)/size) {
		r.bad = true
		return 0
	}
	return int(n)
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.s)-r.off) {
		r.bad = true
		return ""
	}
	s := r.s[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

func b64Val(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	case c == '_':
		return 63
	}
	return 0xff
}

// decodeBase64 decodes canonical unpadded base64url s into dst, which must
// be len(s)*3/4 long. Non-zero trailing bits are rejected, so each
// byte string has exactly one accepted text and tokens are not malleable.
func decodeBase64(dst []byte, s string) bool {
	var acc uint32
	bits, j := 0, 0
	for i := range len(s) {
		v := b64Val(s[i])
		if v == 0xff {
			return false
		}
		acc, bits = acc<<6|uint32(v), bits+6
		if bits >= 8 {
			bits -= 8
			dst[j] = byte(acc >> bits)
			j++
		}
	}
	return j == len(dst) && acc&(1<<bits-1) == 0
}
