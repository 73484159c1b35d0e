package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Key is a token signing key. ID travels in clear in every token; Secret is
// shared by all hosts through replicated state. String, GoString and
// LogValue print the ID only, so a Key never leaks its secret into logs.
type Key struct {
	ID     string // 1..64 of [A-Za-z0-9_-]; NewKey makes 8 hex chars
	Secret []byte // at least 32 bytes
}

func (k Key) String() string       { return "identity.Key{ID:" + k.ID + "}" }
func (k Key) GoString() string     { return k.String() }
func (k Key) LogValue() slog.Value { return slog.GroupValue(slog.String("id", k.ID)) }

func (k Key) validate() error {
	if !validKeyID(k.ID) {
		return fmt.Errorf("%w: id must be 1..%d of [A-Za-z0-9_-]", ErrInvalidKey, maxKeyIDLen)
	}
	if len(k.Secret) < minSecretLen {
		return fmt.Errorf("%w: secret shorter than %d bytes", ErrInvalidKey, minSecretLen)
	}
	return nil
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return false
	}
	for i := range len(id) {
		if b64Val(id[i]) == 0xff {
			return false
		}
	}
	return true
}

// NewKey draws a key from rand (crypto/rand.Reader if nil): an 8-hex-char ID
// and a 32-byte secret.
func NewKey(r io.Reader) (Key, error) {
	var b [4 + 32]byte
	if err := readRandom(r, b[:]); err != nil {
		return Key{}, fmt.Errorf("identity: new key: %w", err)
	}
	return Key{ID: hex.EncodeToString(b[:4]), Secret: append([]byte(nil), b[4:]...)}, nil
}

// NewAuditID draws 16 bytes from rand (crypto/rand.Reader if nil) and
// returns them as 22 characters of unpadded base64url, like Keystone.
func NewAuditID(r io.Reader) (string, error) {
	var b [16]byte
	if err := readRandom(r, b[:]); err != nil {
		return "", fmt.Errorf("identity: new audit id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func readRandom(r io.Reader, b []byte) error {
	if r == nil {
		r = rand.Reader
	}
	_, err := io.ReadFull(r, b)
	return err
}

// KeyRecord is a key as kept in replicated state.
type KeyRecord struct {
	Key
	CreatedAt time.Time
	RetireAt  time.Time // zero: the active signer; else verifies until this instant
}

// Rotate returns a new key set (keys is not modified): newKey becomes the
// active signer; every previously active key keeps verifying until
// now+tokenLifetime, when the last token it signed has expired; keys whose
// RetireAt has passed are dropped. Pass a tokenLifetime that includes a
// margin for clock skew and replication lag. A key with newKey's ID is
// replaced (its tokens stop verifying); draw another key to avoid that.
func Rotate(keys []KeyRecord, newKey Key, now time.Time, tokenLifetime time.Duration) []KeyRecord {
	out := make([]KeyRecord, 0, len(keys)+1)
	for _, k := range keys {
		switch {
		case k.ID == newKey.ID:
			continue
		case k.RetireAt.IsZero():
			k.RetireAt = now.Add(tokenLifetime)
		case !now.Before(k.RetireAt):
			continue
		}
		out = append(out, k)
	}
	return append(out, KeyRecord{Key: newKey, CreatedAt: now})
}

// ActiveKey returns the signing key: the newest record without RetireAt
// (the later one in keys on a CreatedAt tie).
func ActiveKey(keys []KeyRecord) (KeyRecord, bool) {
	var best KeyRecord
	found := false
	for _, k := range keys {
		if k.RetireAt.IsZero() && (!found || !k.CreatedAt.Before(best.CreatedAt)) {
			best, found = k, true
		}
	}
	return best, found
}

// KeySet is the replicated set of signing keys.
type KeySet []KeyRecord

// At returns the KeySource of the keys usable at now: the active key and
// keys whose RetireAt is still ahead of now.
func (ks KeySet) At(now time.Time) KeySource { return keySetAt{ks, now} }

type keySetAt struct {
	keys KeySet
	now  time.Time
}

func (s keySetAt) VerifyKey(id string) ([]byte, bool) {
	for _, k := range s.keys {
		if k.ID == id && (k.RetireAt.IsZero() || s.now.Before(k.RetireAt)) {
			return k.Secret, true
		}
	}
	return nil, false
}
