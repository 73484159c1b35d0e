// Package forward is the host-to-host side of consensus's leader
// forwarding. On a follower, Client sends writes (consensus.Forwarder)
// and read-index requests to the leader over the members' internal mTLS
// API; on the leader, Admission takes what followers forward: a revoked
// member's commands are refused, and a user command's authority comes
// from its caller's token, verified here, never from the forwarding
// host's certificate.
package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
)

// Client sends a follower's requests to the leader.
type Client struct {
	SelfID string
	// Leader is the leader's member id as this host knows it ("" none).
	Leader func() string
	// AddrOf is a member's API address ("" unknown).
	AddrOf func(id string) string
	// HTTP carries the requests (mTLS with this host's certificate).
	HTTP *http.Client
}

// ErrReadIndexRefused is a leader's lasting refusal of a read index.
var ErrReadIndexRefused = errors.New("the leader refuses read indexes to this host")

// Forward sends a command to the leader (consensus.Forwarder), with the
// token of the API caller ctx carries, and returns the index it was
// applied at. The leader's 403 is final: a *statedb.Error of
// KindForbidden.
func (c *Client) Forward(ctx context.Context, leaderID string, data []byte) (uint64, error) {
	var token string
	if cred := rest.CredentialFrom(ctx); cred != nil {
		// The leader re-checks a user command against its caller's token.
		token = cred.Token
	}
	addr, code, body, err := c.post(ctx, leaderID, "/internal/v1/apply", data, token, 1<<20)
	if err != nil {
		return 0, fmt.Errorf("forward: %w", err)
	}
	if code == http.StatusForbidden {
		// Final: retrying cannot make the command admissible.
		return 0, statedb.Errorf(statedb.KindForbidden, "%s", forbiddenMessage(body))
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("forward to leader %s: status %d", addr, code)
	}
	return cluster.DecodeApplyResult(body)
}

// ReadIndex asks the leader for its read index: the leader confirms it
// still leads and answers its applied index. A 4xx is lasting
// (ErrReadIndexRefused): an older release without the route, a revoked
// member.
func (c *Client) ReadIndex(ctx context.Context) (uint64, error) {
	addr, code, body, err := c.post(ctx, c.Leader(), "/internal/v1/read-index", nil, "", 1<<16)
	switch {
	case err != nil:
		return 0, fmt.Errorf("read index: %w", err)
	case code >= 400 && code < 500:
		return 0, fmt.Errorf("read index from leader %s: status %d: %w", addr, code, ErrReadIndexRefused)
	case code != http.StatusOK:
		return 0, fmt.Errorf("read index from leader %s: status %d", addr, code)
	}
	var r cluster.ReadIndexResult
	if err := json.Unmarshal(body, &r); err != nil || r.Index == 0 {
		return 0, fmt.Errorf("read index from leader %s: bad answer %q", addr, body)
	}
	return r.Index, nil
}

// post sends data to path on the internal API of member id, with the
// caller's token when given, and returns the member's address, the
// status and at most limit bytes of the answer. No member other than
// this host, or no address for it, is consensus.ErrNoLeader.
func (c *Client) post(ctx context.Context, id, path string, data []byte, token string, limit int64) (string, int, []byte, error) {
	addr := ""
	if id != "" && id != c.SelfID {
		addr = c.AddrOf(id)
	}
	if addr == "" {
		return "", 0, nil, fmt.Errorf("leader %q: %w", id, consensus.ErrNoLeader)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytes.NewReader(data))
	if err != nil {
		return addr, 0, nil, err
	}
	if data != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return addr, 0, nil, fmt.Errorf("%s at %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return addr, 0, nil, fmt.Errorf("%s at %s: %w", path, addr, err)
	}
	return addr, resp.StatusCode, body, nil
}

// forbiddenMessage is the message of a 403 body from the internal API.
func forbiddenMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return "The cluster's leader refused the command."
}

// Raft is what the leader side needs of consensus (*consensus.Node).
type Raft interface {
	IsLeader() bool
	State() *statedb.Snapshot
	ReadIndex(ctx context.Context) (uint64, error)
	WaitIndex(ctx context.Context, idx uint64) error
	ApplyForwarded(ctx context.Context, data []byte, from statedb.Origin) (uint64, error)
}

// LinearizableRead returns once the state of r holds every write
// acknowledged anywhere before the call: the leader's read index (its
// own, or asked through c from a follower), then waiting until r has
// applied it. During an election, or with a stale view of the leader, it
// asks again (with back-off) until ctx ends; a lasting refusal ends it
// at once.
func LinearizableRead(ctx context.Context, r Raft, c *Client) error {
	backoff := 10 * time.Millisecond
	for {
		var idx uint64
		var err error
		if r.IsLeader() {
			idx, err = r.ReadIndex(ctx)
		} else {
			idx, err = c.ReadIndex(ctx)
		}
		if err == nil {
			if err := r.WaitIndex(ctx, idx); err != nil {
				return fmt.Errorf("catch up to the read index %d: %w", idx, err)
			}
			return nil
		}
		if errors.Is(err, ErrReadIndexRefused) {
			return err // asking again will not help
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader confirmed a read index: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// Admission applies, on the leader, the commands followers forward.
type Admission struct {
	Raft Raft
	// Authenticate verifies an API caller's token.
	Authenticate func(ctx context.Context, token string) (*rest.Credential, error)
}

// Apply applies a command forwarded by a follower (leader only):
// fromHost is the member its certificate names; token, when the command
// was proposed for an API caller, is that caller's token, verified here
// so the command's authority comes from the caller, not the certificate.
func (a *Admission) Apply(ctx context.Context, data []byte, fromHost, token string) (uint64, error) {
	if !a.Raft.IsLeader() {
		return 0, errors.New("not the leader")
	}
	if _, revoked := a.Raft.State().RevokedHost(fromHost); revoked {
		// A connection made before the revocation applied.
		return 0, statedb.Errorf(statedb.KindForbidden, "The certificate of member %s is revoked.", fromHost)
	}
	from := statedb.Origin{Host: fromHost}
	if token != "" {
		// A token that does not verify proves no caller: a user command
		// is then refused, a host command stands on its own.
		if cred, err := a.Authenticate(ctx, token); err == nil {
			from.Caller = CallerOfCred(cred)
		}
	}
	idx, err := a.Raft.ApplyForwarded(ctx, data, from)
	var se *statedb.Error
	if token == "" && errors.As(err, &se) && se.Kind == statedb.KindForbidden {
		if m, ok := a.Raft.State().Member(fromHost); ok && m.Version == "" {
			// A host of a release before callers' tokens were forwarded
			// (it reports no version): it cannot carry a caller's
			// authority, so its users' writes are refused — as a conflict
			// its release turns into a 409 naming the way out, rather than
			// a 403 it would retry as a lost leader until the client gives
			// up.
			return idx, statedb.Errorf(statedb.KindConflict,
				"Host %s runs an older release than the leader and cannot forward writes to it: upgrade %s, or send writes to an upgraded host.", m.Name, m.Name)
		}
	}
	return idx, err
}

// CallerOf names the API caller a command proposed with ctx acts for:
// the verified credential of the request ctx belongs to, if any.
func CallerOf(ctx context.Context) *statedb.Caller {
	cred := rest.CredentialFrom(ctx)
	if cred == nil {
		return nil
	}
	return CallerOfCred(cred)
}

// CallerOfCred is the identity a user command carries for cred: the same
// rules the API's policy applies (identity.Authorize).
func CallerOfCred(cred *rest.Credential) *statedb.Caller {
	return &statedb.Caller{
		UserID: cred.UserID, ProjectID: cred.ProjectID, Admin: cred.IsAdmin(),
		Writer: slices.Contains(cred.Roles, identity.RoleMember) || slices.Contains(cred.Roles, identity.RoleAdmin),
	}
}
