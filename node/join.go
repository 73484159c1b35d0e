package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
)

const joinTokenPrefix = "PSJ1-"

// joinToken is what `peerstack token create` prints, base64url-encoded.
type joinToken struct {
	ClusterID     string   `json:"c"`
	CAFingerprint string   `json:"f"`
	Addrs         []string `json:"a"`
	ID            string   `json:"i"`
	Secret        string   `json:"s"`
}

func (t joinToken) String() string {
	b, _ := json.Marshal(t)
	return joinTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func parseJoinToken(s string) (joinToken, error) {
	var t joinToken
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, joinTokenPrefix) {
		return t, errors.New("malformed join token: it should start with " + joinTokenPrefix + " (copy the last line printed by `peerstack token create`)")
	}
	const hint = " (copy the last line printed by `peerstack token create`)"
	raw, err := base64.RawURLEncoding.DecodeString(s[len(joinTokenPrefix):])
	if err != nil {
		return t, fmt.Errorf("malformed join token: %w"+hint, err)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("malformed join token: %w"+hint, err)
	}
	if t.ClusterID == "" || len(t.CAFingerprint) != 64 || len(t.Addrs) == 0 || t.ID == "" || t.Secret == "" {
		return t, errors.New("malformed join token: a field is missing")
	}
	return t, nil
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// CreateJoinToken records a single-use join token and returns its text.
func (n *Node) CreateJoinToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	cfg, ok := n.State().Cluster()
	if !ok {
		return "", time.Time{}, errors.New("cluster is not bootstrapped")
	}
	caCert, err := parseCert(cfg.CACertPEM)
	if err != nil {
		return "", time.Time{}, err
	}
	secretBytes := make([]byte, 32)
	_, _ = rand.Read(secretBytes)
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	now := n.Now()
	jt := statedb.JoinToken{ID: uuid.NewString(), SecretHash: hashSecret(secret), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if _, err := rest.Propose(ctx, n, statedb.CmdCreateJoinToken, jt); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	var addrs []string
	addrs = append(addrs, n.id.APIAddr)
	for _, m := range n.State().Members() {
		if m.ID != n.id.NodeID && m.APIAddr != "" {
			addrs = append(addrs, m.APIAddr)
		}
	}
	tok := joinToken{ClusterID: cfg.ClusterID, CAFingerprint: fingerprint(caCert), Addrs: addrs, ID: jt.ID, Secret: secret}
	return tok.String(), jt.ExpiresAt, nil
}

// Join handles a joining host's request (server side). The endpoint needs
// no login, so the token is checked first (read-only: nothing is said to
// a caller without one); the name and clock checks come before the token
// is consumed, so a host refused by them can retry with the same token.
func (n *Node) Join(ctx context.Context, req cluster.JoinRequest) (*cluster.JoinResponse, error) {
	received := n.clock()
	cfg, ok := n.State().Cluster()
	if !ok {
		return nil, rest.Unavailable("cluster is not bootstrapped yet")
	}
	if err := n.precheckJoinToken(ctx, req); err != nil {
		n.log.Warn("join refused", "name", req.Name, "api", req.APIAddr, "token", req.TokenID, "err", err)
		return nil, err
	}
	if other, ok := n.State().MemberByName(req.Name); ok && other.ID != req.NodeID {
		return nil, rest.Conflictf("a host named %q is already a member; choose another --name", req.Name)
	}
	if err := n.checkJoinClock(req, received); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(ctx, n, statedb.CmdConsumeJoinToken, statedb.ConsumeJoinTokenCmd{
		ID: req.TokenID, SecretHash: hashSecret(req.Secret), NodeID: req.NodeID,
	}); err != nil {
		n.log.Warn("join refused", "name", req.Name, "api", req.APIAddr, "token", req.TokenID, "err", err)
		return nil, err
	}
	ca, err := loadCA(cfg.CACertPEM, cfg.CAKeyPEM)
	if err != nil {
		return nil, err
	}
	ca.now = n.clock
	cert, err := ca.sign(req.CSR, req.NodeID, req.Hosts)
	if err != nil {
		return nil, rest.BadRequest("%v", err)
	}
	if _, err := rest.Propose(ctx, n, statedb.CmdRegisterMember, statedb.Member{
		ID: req.NodeID, Name: req.Name, APIAddr: req.APIAddr, RaftAddr: req.RaftAddr,
		GossipAddr: req.GossipAddr, JoinedAt: n.Now(),
	}); err != nil {
		return nil, err
	}
	var peers []string
	for _, m := range n.State().Members() {
		if m.ID != req.NodeID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	n.log.Info("host joined", "node", req.NodeID, "name", req.Name, "api", req.APIAddr)
	return &cluster.JoinResponse{ClusterID: cfg.ClusterID, CACert: cfg.CACertPEM, Cert: cert, GossipKey: cfg.GossipKey, Peers: peers,
		Time: n.clock()}, nil
}

// joinTokenLag bounds the wait for a join token this host has not applied
// yet (made through another host a moment ago).
const joinTokenLag = 2 * time.Second

// precheckJoinToken refuses, without writing anything, a join whose token
// is unknown, has another secret, was used or expired: the same rules the
// consuming command applies, which stays the authority.
func (n *Node) precheckJoinToken(ctx context.Context, req cluster.JoinRequest) error {
	invalid := rest.Forbiddenf("join token is not valid for this cluster")
	deadline := time.Now().Add(joinTokenLag)
	for {
		jt, ok := n.State().JoinToken(req.TokenID)
		switch {
		case ok && subtle.ConstantTimeCompare([]byte(jt.SecretHash), []byte(hashSecret(req.Secret))) != 1:
			return invalid
		case ok && !jt.UsedAt.IsZero():
			return rest.Forbiddenf("join token was already used")
		case ok && !n.Now().Before(jt.ExpiresAt):
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

// join makes this empty data dir a member of the cluster in cfg.JoinToken.
func (n *Node) join(ctx context.Context) (err error) {
	tok, err := parseJoinToken(n.cfg.JoinToken)
	if err != nil {
		return err
	}
	ln, err := n.listenAPI()
	if err != nil {
		return err
	}
	raftAddr, err := checkPortFree(n.cfg.RaftAddr, "raft")
	if err != nil {
		ln.Close()
		return err
	}
	gossipAddr, err := checkPortFree(n.cfg.GossipAddr, "gossip")
	if err != nil {
		ln.Close()
		return err
	}
	written := false
	defer func() {
		if err != nil {
			ln.Close()
			n.shutdownParts()
			if written {
				for _, p := range []string{n.tlsDir(), filepath.Join(n.cfg.DataDir, "raft"),
					filepath.Join(n.cfg.DataDir, "gossip.key"), identityPath(n.cfg.DataDir)} {
					os.RemoveAll(p)
				}
			}
		}
	}()
	nodeID := uuid.NewString()
	keyPEM, csrPEM, err := newKeyAndCSR(nodeID)
	if err != nil {
		return err
	}
	// Keep the listeners' ports: with port 0 the OS chose them.
	n.cfg.RaftAddr, n.cfg.GossipAddr = raftAddr, gossipAddr
	req := cluster.JoinRequest{
		TokenID: tok.ID, Secret: tok.Secret, NodeID: nodeID, Name: n.cfg.Name,
		APIAddr:    advertised(n.cfg.AdvertiseAddr, ln.Addr()),
		RaftAddr:   advertised(n.cfg.AdvertiseAddr, mustAddr(raftAddr)),
		GossipAddr: advertised(n.cfg.AdvertiseAddr, mustAddr(gossipAddr)),
		CSR:        csrPEM, Hosts: n.certHosts(),
	}
	resp, err := n.sendJoin(ctx, tok, req)
	if err != nil {
		return err
	}
	if resp.ClusterID != tok.ClusterID {
		return fmt.Errorf("join: the server belongs to cluster %s, the token to %s", resp.ClusterID, tok.ClusterID)
	}
	written = true
	if err := n.writeSecrets(resp.CACert, resp.Cert, keyPEM, resp.GossipKey); err != nil {
		return err
	}
	n.id = &identityFile{NodeID: nodeID, Name: n.cfg.Name, ClusterID: resp.ClusterID, Peers: resp.Peers}
	if err := n.startParts(ctx, ln, resp.CACert, resp.Cert, keyPEM, resp.GossipKey, false); err != nil {
		return err
	}
	if _, err := n.gossip.Join(ctx, resp.Peers); err != nil {
		return fmt.Errorf("join gossip via %v: %w", resp.Peers, err)
	}
	if err := saveIdentity(n.cfg.DataDir, n.id); err != nil {
		return err
	}
	n.log.Info("joined cluster", "cluster", resp.ClusterID, "node", nodeID, "name", n.cfg.Name, "api", n.id.APIAddr)
	n.startLoops()
	return nil
}

// sendJoin tries each address in the token, pinning the cluster CA. Each
// attempt carries this host's clock as read just before it is sent.
func (n *Node) sendJoin(ctx context.Context, tok joinToken, req cluster.JoinRequest) (*cluster.JoinResponse, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinnedClient(tok.CAFingerprint)}}
	var errs []error
	for _, addr := range tok.Addrs {
		req.Time = n.clock()
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
		n.checkMemberClock(&jr, req.Time, n.clock())
		return &jr, nil
	}
	return nil, fmt.Errorf("join: no member in the token is reachable: %w", errors.Join(errs...))
}
