// Package cluster serves peerstack's native cluster API under /cluster/v1
// (members, status, join tokens, join, leave) and the internal host-to-host
// API under /internal/v1 (forwarded writes).
//
// It holds no logic of its own beyond decoding, policy and encoding: the
// daemon behind Backend does the work.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Member is one host as `peerstack members -f json` shows it.
type Member struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	APIAddr     string   `json:"api_addr"`
	RaftAddr    string   `json:"raft_addr"`
	GossipAddr  string   `json:"gossip_addr"`
	VTEPAddr    string   `json:"vtep_addr,omitempty"`
	RaftRole    string   `json:"raft_role"`    // leader, voter, nonvoter, none
	GossipState string   `json:"gossip_state"` // alive, suspect, dead, left
	Capacity    Capacity `json:"capacity"`
	Accel       string   `json:"accel,omitempty"`
	Arch        string   `json:"arch,omitempty"`
	Version     string   `json:"version,omitempty"`
	Disabled    bool     `json:"disabled"`
	// ClockSkewMS is how far the host's wall clock is ahead of the
	// answering host's, in ms (negative: behind), as gossip last measured
	// it; 0 for the answering host, null when not measured (not alive, or
	// just (re)joined).
	ClockSkewMS *int64 `json:"clock_skew_ms"`
}

// Capacity is what a host offers and uses.
type Capacity struct {
	VCPUs      int `json:"vcpus"`
	RAMMB      int `json:"ram_mb"`
	DiskGB     int `json:"disk_gb"`
	UsedVCPUs  int `json:"used_vcpus"`
	UsedRAMMB  int `json:"used_ram_mb"`
	UsedDiskGB int `json:"used_disk_gb"`
}

// NodeRef names a host.
type NodeRef struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	APIAddr string `json:"api_addr,omitempty"`
}

// Status is what `peerstack status -f json` shows.
type Status struct {
	ClusterID    string  `json:"cluster_id"`
	Leader       NodeRef `json:"leader"`
	Term         uint64  `json:"term"`
	AppliedIndex uint64  `json:"applied_index"`
	CommitIndex  uint64  `json:"commit_index"`
	RaftState    string  `json:"raft_state"`
	Self         NodeRef `json:"self"`
	Members      int     `json:"members"`
	// StateDigest is the SHA-256 of this host's whole replicated state
	// as of StateIndex (asked for with ?digest=true): hosts that agree
	// on the state show the same digest.
	StateDigest string `json:"state_digest,omitempty"`
	StateIndex  uint64 `json:"state_index,omitempty"`
}

// JoinRequest is what a joining host sends with the token's secret.
type JoinRequest struct {
	TokenID    string   `json:"token_id"`
	Secret     string   `json:"secret"`
	NodeID     string   `json:"node_id"`
	Name       string   `json:"name"`
	APIAddr    string   `json:"api_addr"`
	RaftAddr   string   `json:"raft_addr"`
	GossipAddr string   `json:"gossip_addr"`
	CSR        string   `json:"csr"`
	Hosts      []string `json:"hosts"` // names and IPs for the certificate
	// Time is the joiner's wall clock just before it sent the request
	// (RFC 3339); the member refuses a joiner whose clock is too far off.
	// Zero (from an older joiner) skips the check.
	Time time.Time `json:"time,omitzero"`
	// Version is the joiner's software version, recorded in its member
	// record from the start (the leader's version gate reads it). Empty
	// from an older joiner: it registers its version once it runs.
	Version string `json:"version,omitempty"`
}

// JoinResponse carries what a new member needs to start.
type JoinResponse struct {
	ClusterID string `json:"cluster_id"`
	CACert    string `json:"ca_cert"`
	Cert      string `json:"cert"`
	GossipKey []byte `json:"gossip_key"`
	// CAKey is the cluster CA's private key (PEM), which every member
	// keeps on its disk to sign host certificates (joins, renewals); it
	// is not in the replicated state. Sent only to a joiner that proved
	// the join token's secret, over TLS pinned to the CA.
	CAKey string   `json:"ca_key,omitempty"`
	Peers []string `json:"peers"` // gossip addresses
	// Time is the member's wall clock as it answered, so the joiner can
	// check the member's clock too.
	Time time.Time `json:"time,omitzero"`
}

// Backend is the daemon side of the cluster API.
type Backend interface {
	rest.Backend
	Members() []Member
	Status() Status
	CreateJoinToken(ctx context.Context, ttl time.Duration) (string, time.Time, error)
	Join(ctx context.Context, req JoinRequest) (*JoinResponse, error)
	Leave(ctx context.Context) error
	// RemoveHost removes another member and revokes its certificates.
	RemoveHost(ctx context.Context, id string) error
	// ClockSkews maps member ids to how far their clocks are ahead of
	// this host's; members not measured are absent.
	ClockSkews() map[string]time.Duration
	// ApplyForwarded applies a command another member forwarded (leader
	// only): fromHost is the member id its client certificate names, token
	// the API caller's token it forwarded ("" for host commands). A
	// command its origin may not propose is a *statedb.Error of
	// KindForbidden.
	ApplyForwarded(ctx context.Context, data []byte, fromHost, token string) (uint64, error)
	// ReadIndex confirms this host still leads and returns the index its
	// state has applied (leader only): what a member waits for before a
	// linearizable read.
	ReadIndex(ctx context.Context) (uint64, error)
}

// Service returns the /cluster/v1 and /internal/v1 routes.
func Service(b Backend) rest.Service {
	h := &handlers{b: b}
	return rest.Service{
		Prefix: "",
		Errors: rest.KeystoneErrors,
		Routes: []rest.Route{
			{Method: "GET", Path: "/cluster", Auth: rest.Public, Handler: h.versions},
			{Method: "GET", Path: "/cluster/v1", Auth: rest.Public, Handler: h.versions},
			{Method: "GET", Path: "/cluster/v1/members", Auth: rest.Token, Handler: h.members},
			{Method: "GET", Path: "/cluster/v1/status", Auth: rest.Token, Handler: h.status},
			{Method: "POST", Path: "/cluster/v1/tokens", Auth: rest.Token, Handler: h.createToken},
			{Method: "POST", Path: "/cluster/v1/join", Auth: rest.Public, Handler: h.join},
			{Method: "POST", Path: "/cluster/v1/leave", Auth: rest.Token, Handler: h.leave},
			{Method: "DELETE", Path: "/cluster/v1/members/{member_id}", Auth: rest.Token, Handler: h.removeMember},
			{Method: "POST", Path: "/internal/v1/apply", Auth: rest.Internal, Handler: h.apply},
			{Method: "POST", Path: "/internal/v1/read-index", Auth: rest.Internal, Handler: h.readIndex},
		},
	}
}

type handlers struct {
	b Backend

	// The last state digest and the index it is of: status?digest=true
	// serialises the whole state once per index, one request at a time.
	digestMu    sync.Mutex
	digestIndex uint64
	digest      string
}

// stateDigest is the digest of the current state and its index.
func (h *handlers) stateDigest() (string, uint64, error) {
	h.digestMu.Lock()
	defer h.digestMu.Unlock()
	sn := h.b.State()
	if h.digest != "" && sn.Index == h.digestIndex && sn.Index != 0 {
		return h.digest, sn.Index, nil
	}
	d, err := sn.Digest()
	if err != nil {
		return "", 0, err
	}
	h.digest, h.digestIndex = d, sn.Index
	return d, sn.Index, nil
}

func (h *handlers) versions(c *rest.Ctx) (any, error) {
	return map[string]any{"version": map[string]any{
		"id": "v1", "status": "CURRENT",
		"links": []map[string]string{{"rel": "self", "href": rest.BaseURL(c.R) + "/cluster/v1/"}},
	}}, nil
}

func (h *handlers) members(c *rest.Ctx) (any, error) {
	// Addresses and capacity are for cloud administrators only.
	if err := rest.Check(h.b, c, rest.Admin, "", false, "members"); err != nil {
		return nil, err
	}
	members := h.b.Members()
	skews := h.b.ClockSkews()
	for i := range members {
		if d, ok := skews[members[i].ID]; ok {
			ms := d.Milliseconds()
			members[i].ClockSkewMS = &ms
		}
	}
	return map[string]any{"members": members}, nil
}

func (h *handlers) status(c *rest.Ctx) (any, error) {
	if err := rest.Check(h.b, c, rest.Admin, "", false, "status"); err != nil {
		return nil, err
	}
	st := h.b.Status()
	switch c.R.URL.Query().Get("digest") {
	case "", "false":
	case "true":
		d, idx, err := h.stateDigest()
		if err != nil {
			return nil, fmt.Errorf("state digest: %w", err)
		}
		st.StateDigest, st.StateIndex = d, idx
	default:
		return nil, rest.BadRequest("digest must be true or false")
	}
	return map[string]any{"status": st}, nil
}

func (h *handlers) createToken(c *rest.Ctx) (any, error) {
	if err := rest.Check(h.b, c, rest.Admin, "", false, "token"); err != nil {
		return nil, err
	}
	var req struct {
		TTL string `json:"ttl"`
	}
	if c.R.ContentLength != 0 {
		if err := c.Decode(&req); err != nil {
			return nil, err
		}
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 7*24*time.Hour {
			return nil, rest.BadRequest("ttl must be a duration between 1s and 168h, like 30m")
		}
		ttl = d
	}
	tok, exp, err := h.b.CreateJoinToken(c.Context(), ttl)
	if err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusCreated, Body: map[string]any{
		"token": map[string]any{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339)},
	}}, nil
}

func (h *handlers) join(c *rest.Ctx) (any, error) {
	var req JoinRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	if req.TokenID == "" || req.Secret == "" || req.NodeID == "" || req.Name == "" || req.CSR == "" {
		return nil, rest.BadRequest("join request needs token_id, secret, node_id, name and csr")
	}
	resp, err := h.b.Join(c.Context(), req)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (h *handlers) leave(c *rest.Ctx) (any, error) {
	if err := rest.Check(h.b, c, rest.Admin, "", false, "member"); err != nil {
		return nil, err
	}
	if err := h.b.Leave(c.Context()); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}

// removeMember removes a member that cannot leave by itself (dead,
// compromised) and revokes its certificates.
func (h *handlers) removeMember(c *rest.Ctx) (any, error) {
	if err := rest.Check(h.b, c, rest.Admin, "", false, "member"); err != nil {
		return nil, err
	}
	if err := h.b.RemoveHost(c.Context(), c.Var("member_id")); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

// ApplyResult is the internal API's answer to a forwarded write.
type ApplyResult struct {
	Index   uint64       `json:"index"`
	ErrKind statedb.Kind `json:"err_kind,omitempty"`
	ErrMsg  string       `json:"err_msg,omitempty"`
}

func (h *handlers) apply(c *rest.Ctx) (any, error) {
	data, err := io.ReadAll(http.MaxBytesReader(c.W, c.R.Body, 64<<20))
	if err != nil {
		return nil, rest.BadRequest("read command: %v", err)
	}
	// The verified chain's leaf names the sending member (wrap checked
	// that a chain exists).
	from := c.R.TLS.VerifiedChains[0][0].Subject.CommonName
	idx, err := h.b.ApplyForwarded(c.Context(), data, from, c.R.Header.Get("X-Auth-Token"))
	var se *statedb.Error
	if err != nil && !errors.As(err, &se) {
		return nil, rest.Unavailable(err.Error())
	}
	if se != nil && se.Kind == statedb.KindForbidden {
		return nil, rest.Forbiddenf("%s", se.Msg)
	}
	res := ApplyResult{Index: idx}
	if se != nil {
		res.ErrKind, res.ErrMsg = se.Kind, se.Msg
	}
	return res, nil
}

// ReadIndexResult is the leader's answer to a member asking for the
// read index.
type ReadIndexResult struct {
	Index uint64 `json:"index"`
}

func (h *handlers) readIndex(c *rest.Ctx) (any, error) {
	idx, err := h.b.ReadIndex(c.Context())
	if err != nil {
		return nil, rest.Unavailable(err.Error())
	}
	return ReadIndexResult{Index: idx}, nil
}

// DecodeApplyResult turns an internal API answer back into (index, error).
func DecodeApplyResult(body []byte) (uint64, error) {
	var r ApplyResult
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, err
	}
	if r.ErrKind != "" {
		return r.Index, &statedb.Error{Kind: r.ErrKind, Msg: r.ErrMsg}
	}
	return r.Index, nil
}
