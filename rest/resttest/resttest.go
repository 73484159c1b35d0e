// Package resttest is an in-memory harness for testing REST services
// without Raft: Backend applies commands straight to a statedb.Store with an
// incrementing index, decides policy with a small fixed rule set, has a
// controllable clock, and mints opaque test tokens. Helpers seed projects,
// users and roles through real commands, so tests see the same state a
// cluster would.
//
// It is for tests only: it must not be imported by production code, and it
// implements no real token format or password policy.
package resttest

import (
	"context"
	"errors"
	"fmt"
	"github.com/peerstack/peerstack/node/access"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Applied is one command the backend was asked to apply, and its outcome.
type Applied struct {
	Index uint64
	Type  statedb.CmdType
	Err   error
}

// Backend implements rest.Backend (and rest.Authenticator, with tokens from
// Mint) over an in-memory store. It is safe for concurrent use.
type Backend struct {
	Store *statedb.Store

	applyMu sync.Mutex // serialises Apply so indexes are applied in order

	mu       sync.Mutex // guards the fields below
	index    uint64
	now      time.Time
	applied  []Applied
	tokens   map[string]*rest.Credential
	applyErr error
}

// New returns a backend over an empty store whose clock starts at the
// current time, truncated to the second, and stands still until moved.
func New() *Backend {
	return &Backend{
		Store:  statedb.NewStore(),
		now:    time.Now().UTC().Truncate(time.Second),
		tokens: map[string]*rest.Credential{},
	}
}

// State returns a snapshot of the store.
func (b *Backend) State() *statedb.Snapshot { return b.Store.Snapshot() }

// Apply encodes cmd and applies it at the next index, returning the
// command's business error, as the Raft path would.
func (b *Backend) Apply(ctx context.Context, cmd *statedb.Command) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	data, err := cmd.Encode()
	if err != nil {
		return 0, err
	}
	b.applyMu.Lock()
	defer b.applyMu.Unlock()
	b.mu.Lock()
	if b.applyErr != nil {
		err := b.applyErr
		b.mu.Unlock()
		return 0, err
	}
	b.index++
	idx := b.index
	b.mu.Unlock()
	res := b.Store.Apply(idx, data)
	b.mu.Lock()
	b.applied = append(b.applied, Applied{Index: idx, Type: cmd.Type, Err: res.Err})
	b.mu.Unlock()
	return res.Index, res.Err
}

// FailApply makes every later Apply return err without applying anything
// (nil restores normal operation); use it to simulate a lost leader.
func (b *Backend) FailApply(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applyErr = err
}

// Index is the index of the last applied command.
func (b *Backend) Index() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.index
}

// AppliedSince returns the commands applied after index.
func (b *Backend) AppliedSince(index uint64) []Applied {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Applied
	for _, a := range b.applied {
		if a.Index > index {
			out = append(out, a)
		}
	}
	return out
}

// Now returns the test clock.
func (b *Backend) Now() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now
}

// SetNow sets the test clock.
func (b *Backend) SetNow(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = t.UTC()
}

// Advance moves the test clock forward by d.
func (b *Backend) Advance(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = b.now.Add(d)
}

// NewID returns a random UUID.
func (b *Backend) NewID() string { return uuid.NewString() }

// Authorize decides with the real policy (node/access.Decide), as the
// node does: the admin role is cloud-wide unless the credential is
// marked ProjectAdminOnly (scoped to a project other than the admin one).
func (b *Backend) Authorize(c *rest.Credential, acc rest.Access, owner string, public bool) rest.Decision {
	adminProject := ""
	if c != nil && !c.ProjectAdminOnly {
		adminProject = c.ProjectID
	}
	return access.Decide(c, acc, adminProject, owner, public)
}

// ErrBadToken is returned by Authenticate for unknown, expired or revoked
// tokens.
var ErrBadToken = errors.New("resttest: invalid token")

// Mint registers cred under a fresh opaque token and returns the token.
// Zero IssuedAt/ExpiresAt become now and now+1h; an empty AuditID gets one.
func (b *Backend) Mint(cred *rest.Credential) string {
	cp := *cred
	now := b.Now()
	if cp.IssuedAt.IsZero() {
		cp.IssuedAt = now
	}
	if cp.ExpiresAt.IsZero() {
		cp.ExpiresAt = now.Add(time.Hour)
	}
	if cp.AuditID == "" {
		cp.AuditID = strings.ReplaceAll(b.NewID(), "-", "")[:22]
	}
	tok := "rt-" + strings.ReplaceAll(b.NewID(), "-", "")
	cp.Token = tok
	b.mu.Lock()
	b.tokens[tok] = &cp
	b.mu.Unlock()
	return tok
}

// Authenticate resolves a token made by Mint, checking expiry and the
// store's revocations.
func (b *Backend) Authenticate(_ context.Context, token string) (*rest.Credential, error) {
	b.mu.Lock()
	c, ok := b.tokens[token]
	b.mu.Unlock()
	if !ok {
		return nil, ErrBadToken
	}
	if !b.Now().Before(c.ExpiresAt) || b.State().TokenRevoked(c.AuditID, c.UserID, c.IssuedAt) {
		return nil, ErrBadToken
	}
	cp := *c
	return &cp, nil
}

// Credential builds the credential of userID scoped to projectID ("" for
// unscoped) from the roles the state gives them; IssuedAt is now.
func (b *Backend) Credential(userID, projectID string) *rest.Credential {
	sn := b.State()
	c := &rest.Credential{UserID: userID, ProjectID: projectID, Methods: []string{"password"},
		IssuedAt: b.Now(), ExpiresAt: b.Now().Add(time.Hour)}
	if u, ok := sn.User(userID); ok {
		c.UserName = u.Name
	}
	if projectID != "" {
		for _, r := range sn.UserRoles(userID, projectID) {
			c.Roles = append(c.Roles, r.Name)
			c.RoleIDs = append(c.RoleIDs, r.ID)
		}
	}
	return c
}

// Logger returns a logger that writes to the test log, or discards when t
// is nil.
func Logger(t testing.TB) *slog.Logger {
	if t == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// HashPassword hashes pw with bcrypt at the minimum cost, for fast tests.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("resttest: hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword compares a password with a bcrypt hash.
func CheckPassword(hash, pw string) bool {
	return pw != "" && bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
