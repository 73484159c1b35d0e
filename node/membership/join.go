// Package membership owns how a host becomes a member: join tokens, the
// admission of a joining host (token, name and clock checks, then its
// certificate and member record), the request a joining host sends, the
// cluster CA and host certificates (PKI), the gossip key and its rotation
// when a member is revoked (gossipkeys.go), and clock-skew checks between
// members.
//
// It reaches the state through the functions its types are given, and
// the network only to send a join and to hand out or fetch gossip keys
// over the internal API. It writes only the host's secret files (Files:
// certificates, the CA key, gossip.key). It must not start or stop
// anything of the daemon or decide Raft membership (the leader does, from
// the member records).
package membership

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
)

// Proposer submits a command and returns once the local state applied it.
type Proposer interface {
	Propose(ctx context.Context, t statedb.CmdType, payload any) error
}

// Admitter admits joining hosts on a member (the server side of a join)
// and makes join tokens.
type Admitter struct {
	SelfID, SelfName string
	State            func() *statedb.Snapshot
	Proposer         Proposer
	// Clock is this host's wall clock.
	Clock func() time.Time
	// Members is the gossip view (clock measurements); nil: none.
	Members      func() []gossip.Member
	MaxClockSkew time.Duration
	// CertTTL is how long joining hosts' certificates are valid; zero
	// means DefaultCertTTL.
	CertTTL time.Duration
	// Secrets returns the cluster CA's key and the gossip key as this host
	// keeps them, outside the replicated state; nil (or empty values)
	// means the state's copies (clusters made before they left it).
	Secrets func() (caKeyPEM string, gossipKey []byte, err error)
	Logger  *slog.Logger
	// Commands is the command registry; nil: this build's.
	Commands *statedb.Registry
}

// tokenLag bounds the wait for a join token this host has not applied yet
// (made through another host a moment ago).
const tokenLag = 2 * time.Second

func (a *Admitter) now() time.Time { return a.Clock().UTC() }

// CreateToken records a single-use join token valid for ttl and returns
// its text, which names selfAPIAddr and the other members' API addresses.
func (a *Admitter) CreateToken(ctx context.Context, ttl time.Duration, selfAPIAddr string) (string, time.Time, error) {
	cfg, ok := a.State().Cluster()
	if !ok {
		return "", time.Time{}, errors.New("cluster is not bootstrapped")
	}
	caCert, err := ParseCert(cfg.CACertPEM)
	if err != nil {
		return "", time.Time{}, err
	}
	secretBytes := make([]byte, 32)
	_, _ = rand.Read(secretBytes)
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	now := a.now()
	jt := statedb.JoinToken{ID: uuid.NewString(), SecretHash: HashSecret(secret), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := a.Proposer.Propose(ctx, statedb.CmdCreateJoinToken, jt); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	addrs := []string{selfAPIAddr}
	for _, m := range a.State().Members() {
		if m.ID != a.SelfID && m.APIAddr != "" {
			addrs = append(addrs, m.APIAddr)
		}
	}
	tok := JoinToken{ClusterID: cfg.ClusterID, CAFingerprint: Fingerprint(caCert), Addrs: addrs, ID: jt.ID, Secret: secret}
	return tok.String(), jt.ExpiresAt, nil
}

// Join admits a joining host. The endpoint needs no login, so the token is
// checked first (read-only: nothing is said to a caller without one); the
// name and clock checks come before the token is consumed, so a host
// refused by them can retry with the same token.
func (a *Admitter) Join(ctx context.Context, req cluster.JoinRequest) (*cluster.JoinResponse, error) {
	received := a.Clock()
	cfg, ok := a.State().Cluster()
	if !ok {
		return nil, rest.Unavailable("cluster is not bootstrapped yet")
	}
	if err := a.precheckToken(ctx, req); err != nil {
		a.Logger.Warn("join refused", "name", req.Name, "api", req.APIAddr, "token", req.TokenID, "err", err)
		return nil, err
	}
	m, registered := a.State().Member(req.NodeID)
	if registered && !a.repeat(req, m) {
		return nil, rest.Conflictf("host id %s is already a member (host %q): a joining host needs a new identity; "+
			"join from an empty data dir, not a copy of a member's", req.NodeID, m.Name)
	}
	if other, ok := a.State().MemberByName(req.Name); ok && other.ID != req.NodeID {
		return nil, rest.Conflictf("a host named %q is already a member; choose another --name", req.Name)
	}
	if err := a.checkClock(req, received); err != nil {
		return nil, err
	}
	if err := a.checkVersion(req); err != nil {
		return nil, err
	}
	if err := a.Proposer.Propose(ctx, statedb.CmdConsumeJoinToken, statedb.ConsumeJoinTokenCmd{
		ID: req.TokenID, SecretHash: HashSecret(req.Secret), NodeID: req.NodeID, KeyHash: CSRKeyHash(req.CSR),
	}); err != nil {
		a.Logger.Warn("join refused", "name", req.Name, "api", req.APIAddr, "token", req.TokenID, "err", err)
		return nil, err
	}
	caKey, gossipKey := cfg.CAKeyPEM, cfg.GossipKey
	if a.Secrets != nil {
		k, g, err := a.Secrets()
		if err != nil {
			return nil, err
		}
		if k != "" {
			caKey = k
		}
		if len(g) > 0 {
			gossipKey = g
		}
	}
	ca, err := LoadCA(cfg.CACertPEM, caKey)
	if err != nil {
		return nil, err
	}
	ca.Now = a.Clock
	ca.TTL = a.CertTTL
	cert, err := ca.Sign(req.CSR, req.NodeID, req.Hosts)
	if err != nil {
		return nil, rest.BadRequest("%v", err)
	}
	// A repeated join (its first answer was lost) finds the host already
	// registered: registering it again would be a command for another
	// member, which a host may not forward.
	// This host's state may not show it yet although the leader's does
	// (the first attempt committed, its answer was lost): a refusal is
	// then only that, and the record the first attempt wrote stands.
	if !registered {
		if err := a.Proposer.Propose(ctx, statedb.CmdRegisterMember, statedb.Member{
			ID: req.NodeID, Name: req.Name, APIAddr: req.APIAddr, RaftAddr: req.RaftAddr,
			GossipAddr: req.GossipAddr, JoinedAt: a.now(), Version: req.Version,
		}); err != nil && !a.registeredAs(ctx, req) {
			return nil, err
		}
	}
	var peers []string
	for _, m := range a.State().Members() {
		if m.ID != req.NodeID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	a.Logger.Info("host joined", "node", req.NodeID, "name", req.Name, "api", req.APIAddr)
	return &cluster.JoinResponse{ClusterID: cfg.ClusterID, CACert: cfg.CACertPEM, Cert: cert, GossipKey: gossipKey, CAKey: caKey,
		Peers: peers, Time: a.Clock()}, nil
}

// precheckToken refuses, without writing anything, a join whose token is
// unknown, has another secret, was used or expired: the same rules the
// consuming command applies, which stays the authority.
func (a *Admitter) precheckToken(ctx context.Context, req cluster.JoinRequest) error {
	invalid := rest.Forbiddenf("join token is not valid for this cluster")
	deadline := time.Now().Add(tokenLag)
	for {
		jt, ok := a.State().JoinToken(req.TokenID)
		switch {
		case ok && subtle.ConstantTimeCompare([]byte(jt.SecretHash), []byte(HashSecret(req.Secret))) != 1:
			return invalid
		case ok && jt.RetriedBy(req.NodeID, CSRKeyHash(req.CSR), a.now()):
			return nil // the same host retrying: its first answer was lost
		case ok && !jt.UsedAt.IsZero():
			return rest.Forbiddenf("join token was already used")
		case ok && !a.now().Before(jt.ExpiresAt):
			return rest.Forbiddenf("join token expired at %s", jt.ExpiresAt.Format(time.RFC3339))
		case ok:
			return nil
		case time.Now().After(deadline):
			return invalid
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkClock refuses a joining host whose clock is beyond the limit from
// ours (JoinClockOK). Requests without a clock (older joiners) pass;
// gossip measures them once they run.
func (a *Admitter) checkClock(req cluster.JoinRequest, received time.Time) error {
	if req.Time.IsZero() {
		a.Logger.Debug("join request carries no clock", "name", req.Name)
		return nil
	}
	limit := a.MaxClockSkew
	measured := req.Time.Sub(received)
	if JoinClockOK(measured, limit) {
		return nil
	}
	msg := fmt.Sprintf("clock of joining host %s is %s host %s (limit %s): fix time sync (NTP/chrony) on %s and retry; "+
		"the join token was not used, so the same token still works",
		req.Name, DescribeSkew(measured), a.SelfName, seconds(limit), req.Name)
	if a.Members != nil {
		if off, of := Outliers(a.Members(), a.SelfID, limit); MostOff(off, of) {
			msg += fmt.Sprintf(" (host %s's own clock is also more than %s off from %d of the %d other members: check its time sync too)",
				a.SelfName, seconds(limit), off, of)
		}
	}
	a.Logger.Warn("join refused: "+msg, "name", req.Name, "api", req.APIAddr, "skew_ms", measured.Milliseconds())
	return rest.BadRequest("%s", msg)
}

// SendJoin asks the members in tok, in turn, to admit this host, pinning
// the cluster CA by its fingerprint. Each attempt carries clock's reading
// just before it is sent; a member whose clock is beyond maxSkew from
// ours is logged.
func SendJoin(ctx context.Context, tok JoinToken, req cluster.JoinRequest, clock func() time.Time, maxSkew time.Duration,
	log *slog.Logger) (*cluster.JoinResponse, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: PinnedClient(tok.CAFingerprint)}}
	var errs []error
	for _, addr := range tok.Addrs {
		req.Time = clock()
		body, _ := json.Marshal(req)
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/cluster/v1/join", bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(hreq)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error struct{ Message string } `json:"error"`
			}
			_ = json.Unmarshal(data, &e)
			if resp.StatusCode == http.StatusServiceUnavailable {
				errs = append(errs, fmt.Errorf("%s: %s", addr, e.Error.Message))
				continue
			}
			return nil, fmt.Errorf("join refused by %s (%d): %s", addr, resp.StatusCode, e.Error.Message)
		}
		var jr cluster.JoinResponse
		if err := json.Unmarshal(data, &jr); err != nil {
			return nil, fmt.Errorf("join: bad answer from %s: %w", addr, err)
		}
		CheckMemberClock(log, maxSkew, jr.Time, req.Time, clock())
		return &jr, nil
	}
	return nil, fmt.Errorf("join: no member in the token is reachable: %w", errors.Join(errs...))
}

// checkVersion refuses a joiner too old to apply the cluster's log: one
// older than the newest command version the members may already have
// used. It comes before the token is consumed, so the same token works
// once the joining host is upgraded.
func (a *Admitter) checkVersion(req cluster.JoinRequest) error {
	reg := a.Commands
	if reg == nil {
		reg = statedb.Commands()
	}
	floor := reg.JoinFloor(a.State())
	if floor == "" || statedb.CompareVersions(req.Version, floor) >= 0 {
		return nil
	}
	have := req.Version
	if have == "" {
		have = "a version that does not report itself"
	}
	return rest.Conflictf("this cluster's state holds changes made by peerstack %s; the joining host runs %s and could not apply them. Install peerstack %s or newer on it, then join again with the same token", floor, have, floor)
}

// registeredAs waits (at most 5 s) for this host's state to show the
// joiner registered at the addresses it asks for, and reports whether it
// does.
func (a *Admitter) registeredAs(ctx context.Context, req cluster.JoinRequest) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m, ok := a.State().Member(req.NodeID); ok &&
			m.APIAddr == req.APIAddr && m.RaftAddr == req.RaftAddr && m.GossipAddr == req.GossipAddr {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// repeat reports whether req repeats the join that registered member m:
// the same host (node id and certificate key) with the same token, within
// the retry window, at the same addresses. Its first answer was lost.
func (a *Admitter) repeat(req cluster.JoinRequest, m *statedb.Member) bool {
	jt, ok := a.State().JoinToken(req.TokenID)
	return ok && jt.RetriedBy(req.NodeID, CSRKeyHash(req.CSR), a.now()) &&
		m.APIAddr == req.APIAddr && m.RaftAddr == req.RaftAddr && m.GossipAddr == req.GossipAddr
}
