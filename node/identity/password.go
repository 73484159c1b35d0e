package identity

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DefaultBcryptCost is the bcrypt cost for new password hashes.
const DefaultBcryptCost = 12

// MaxPasswordLen is bcrypt's limit; longer passwords are rejected rather
// than silently truncated.
const MaxPasswordLen = 72

// Password errors.
var (
	ErrPasswordTooLong = errors.New("identity: password longer than 72 bytes")
	ErrEmptyPassword   = errors.New("identity: empty password")
	ErrBcryptCost      = errors.New("identity: bcrypt cost out of range")
)

// HashPassword returns the bcrypt hash of pw at cost (4..31). Empty and
// over-72-byte passwords are rejected. The salt comes from crypto/rand.
func HashPassword(pw string, cost int) (string, error) {
	switch {
	case cost < bcrypt.MinCost || cost > bcrypt.MaxCost:
		return "", fmt.Errorf("%w: %d not in %d..%d", ErrBcryptCost, cost, bcrypt.MinCost, bcrypt.MaxCost)
	case pw == "":
		return "", ErrEmptyPassword
	case len(pw) > MaxPasswordLen:
		return "", ErrPasswordTooLong
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("identity: hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches hash. Empty and over-72-byte
// passwords never match (bcrypt would compare only the first 72 bytes).
// To keep timing uniform, callers should check unknown users against a
// dummy hash rather than return early.
func CheckPassword(hash, pw string) bool {
	if pw == "" || len(pw) > MaxPasswordLen {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

// LockoutPolicy locks a user out after MaxAttempts consecutive failures
// (0 disables lockout) for Duration after the last failure; a zero Duration
// locks until an administrator resets the count, as in Keystone.
type LockoutPolicy struct {
	MaxAttempts int
	Duration    time.Duration
}

// Locked reports whether a user with failures consecutive failed logins,
// the last at lastFailure, is locked out at now. The caller resets failures
// on success, and before counting a new failure once a lock has expired.
func (p LockoutPolicy) Locked(failures int, lastFailure, now time.Time) bool {
	if p.MaxAttempts <= 0 || failures < p.MaxAttempts {
		return false
	}
	return p.Duration <= 0 || now.Before(lastFailure.Add(p.Duration))
}
