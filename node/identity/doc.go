// Package identity owns peerstack's authentication and authorization
// primitives: the self-contained, HMAC-SHA256-signed "ps1." token format
// (Sign, Verify), signing-key generation and rotation (Rotate, ActiveKey,
// KeySet), password hashing (bcrypt), the lockout rule, and Authorize, the
// one authorization decision every API request passes through.
//
// It is pure: no I/O, no network, no logging, no package-level mutable
// state. Clocks are passed in as time.Time values and randomness as an
// io.Reader (bcrypt's salt is the only exception: it comes from crypto/rand
// inside x/crypto). It must not import other peerstack packages, must not
// store users, keys or revocations (the caller keeps those in replicated
// state and passes them in), and must not decide HTTP status codes.
//
// Tokens are signed, not encrypted: anyone holding one can read its claims,
// so claims carry identifiers and role names only, never secrets. Revocation
// is the caller's job: Verify returns the AuditID, which the caller checks
// against its revocation list.
package identity
