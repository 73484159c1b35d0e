package statedb

import (
	"time"

	"github.com/hashicorp/go-memdb"
)

const (
	tblMeta       = "meta"
	tblMembers    = "members"
	tblJoinTokens = "join_tokens"
	tblRequests   = "requests"

	clusterConfigID = "cluster"
)

// ClusterConfig is the singleton written at bootstrap: cluster identity,
// its CA and gossip key, and cluster-wide settings.
type ClusterConfig struct {
	ID        string    `json:"id"` // always "cluster"
	ClusterID string    `json:"cluster_id"`
	CACertPEM string    `json:"ca_cert_pem"`
	CAKeyPEM  string    `json:"ca_key_pem"`
	GossipKey []byte    `json:"gossip_key"`
	CreatedAt time.Time `json:"created_at"`
	Settings  Settings  `json:"settings"`
}

// Settings are cluster-wide tunables.
type Settings struct {
	Voters           int           `json:"voters"`             // Raft voters to keep: 3 or 5
	TokenLifetime    time.Duration `json:"token_lifetime"`     // identity tokens
	LockoutAttempts  int           `json:"lockout_attempts"`   // 0 = off
	LockoutDuration  time.Duration `json:"lockout_duration"`   //
	PublicURL        string        `json:"public_url"`         // optional catalog base URL
	JoinTokenTimeout time.Duration `json:"join_token_timeout"` // default 1h
	Storage          string        `json:"storage"`            // "nfs://server/export[/path]" or "" = local dir per host
	Ratios           Ratios        `json:"ratios"`             // allocation ratios for the scheduler
	Weigher          string        `json:"weigher"`            // "spread" (default) or "pack"
	MTU              int           `json:"mtu"`                // tenant network MTU, default 1450
	ImageCopies      int           `json:"image_copies"`       // hosts holding each image with local storage, default 2
	ImageSizeLimit   int64         `json:"image_size_limit"`   // largest image upload in bytes, 0 = DefaultImageSizeLimit
	// FormerStorage lists the nfs:// backends used before the current
	// one, most recent first. Volumes keep their own URL (Volume.Path);
	// image blobs on the share ("shared" holder) may be on any of these.
	FormerStorage []string `json:"former_storage,omitempty"`
	// Quotas are the cluster's default quota limits by resource name
	// (quotas.go); a resource not named uses its built-in default.
	Quotas map[string]int64 `json:"quotas,omitempty"`
	// QuotasEnforced turns on quota and hard-limit checks in apply. It is
	// set at bootstrap, by CmdEnableQuotas (the leader proposes it once
	// after an upgrade) and by any quota command, so log entries written
	// before quotas existed replay exactly as they applied then.
	QuotasEnforced bool `json:"quotas_enforced,omitempty"`
	// FenceTimeout is T_fence (hostfail.go): 0 = DefaultFenceTimeout.
	// HADisabled turns automatic restart of a failed host's servers off.
	FenceTimeout time.Duration `json:"fence_timeout,omitempty"`
	HADisabled   bool          `json:"ha_disabled,omitempty"`
	// FenceTimeoutBound is the longest fence timeout a host may still
	// fence on after FenceTimeout changed (0 once settled); FenceGen
	// counts the changes (fencetimeout.go).
	FenceTimeoutBound time.Duration `json:"fence_timeout_bound,omitempty"`
	FenceGen          uint64        `json:"fence_gen,omitempty"`
}

// Member is a host of the cluster as recorded in the state.
type Member struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	APIAddr    string    `json:"api_addr"`
	RaftAddr   string    `json:"raft_addr"`
	GossipAddr string    `json:"gossip_addr"`
	Disabled   bool      `json:"disabled"`
	DisabledBy string    `json:"disabled_reason,omitempty"`
	JoinedAt   time.Time `json:"joined_at"`
	// Version is the software version the host last registered with ("" =
	// not reported, which counts as older than every version). A host
	// re-registers when it starts with a new binary; the leader's version
	// gate (CmdSpec.MinVersion) reads it.
	Version string `json:"version,omitempty"`
}

// JoinToken is a single-use invitation; only a hash of its secret is kept.
type JoinToken struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"` // hex sha256
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UsedAt     time.Time `json:"used_at,omitempty"`
	UsedBy     string    `json:"used_by,omitempty"`
	// UsedKey is a hash of the public key the joining host asked a
	// certificate for: only the same host (same id and key) may repeat a
	// join whose answer it lost.
	UsedKey string `json:"used_key,omitempty"`
}

// BootstrapCmd creates the cluster: config, the first member and the
// identity seed (admin project and user, roles, signing key).
type BootstrapCmd struct {
	Config      ClusterConfig `json:"config"`
	Member      Member        `json:"member"`
	Project     Project       `json:"project"`
	Admin       User          `json:"admin"`
	Roles       []Role        `json:"roles"`
	Assignment  Assignment    `json:"assignment"`
	SigningKey  SigningKey    `json:"signing_key"`
	ExtraProjs  []Project     `json:"extra_projects,omitempty"`
	ExtraAssign []Assignment  `json:"extra_assignments,omitempty"`
	Flavors     []Flavor      `json:"flavors,omitempty"`
}

func applyBootstrap(t *Txn, c *Command) error {
	b, err := decode[BootstrapCmd](c)
	if err != nil {
		return err
	}
	if _, ok := t.read().Cluster(); ok {
		return Errorf(KindConflict, "cluster already bootstrapped")
	}
	cfg := b.Config
	cfg.ID = clusterConfigID
	if err := t.insert(tblMeta, &cfg); err != nil {
		return err
	}
	m := b.Member
	if err := t.insert(tblMembers, &m); err != nil {
		return err
	}
	for i := range b.Roles {
		r := b.Roles[i]
		if err := t.insert(tblRoles, &r); err != nil {
			return err
		}
	}
	for _, p := range append([]Project{b.Project}, b.ExtraProjs...) {
		p := p
		if err := t.insert(tblProjects, &p); err != nil {
			return err
		}
	}
	u := b.Admin
	if err := t.insert(tblUsers, &u); err != nil {
		return err
	}
	for _, a := range append([]Assignment{b.Assignment}, b.ExtraAssign...) {
		a := a
		a.ID = AssignmentID(a.ProjectID, a.UserID, a.RoleID)
		if err := t.insert(tblAssignments, &a); err != nil {
			return err
		}
	}
	for i := range b.Flavors {
		f := b.Flavors[i]
		if err := t.insert(tblFlavors, &f); err != nil {
			return err
		}
	}
	k := b.SigningKey
	return t.insert(tblSigningKeys, &k)
}

// Cluster returns the cluster config, if bootstrapped.
func (sn *Snapshot) Cluster() (*ClusterConfig, bool) {
	return get[ClusterConfig](sn, tblMeta, clusterConfigID)
}

// Member returns one member by id.
func (sn *Snapshot) Member(id string) (*Member, bool) { return get[Member](sn, tblMembers, id) }

// Members returns all members sorted by name.
func (sn *Snapshot) Members() []*Member {
	return sortByName(list[Member](sn, tblMembers), func(m *Member) string { return m.Name })
}

// MembersMark marks the member records of one view, for a cheap test of
// whether they changed since (MembersChangedSince): loops that would
// otherwise list every member at every state change keep one. It holds
// no view of the state, so keeping it keeps no old state alive.
type MembersMark struct {
	db    *memdb.MemDB
	watch <-chan struct{}
}

// MembersMark marks sn's member records.
func (sn *Snapshot) MembersMark() MembersMark {
	if sn.db == nil {
		return MembersMark{} // a view inside Apply: never matches
	}
	it, err := sn.txn.Get(tblMembers, "id")
	if err != nil {
		return MembersMark{}
	}
	// The watch of the table's id index closes at any write to the table
	// after this view (memdb tracks mutations of committed trees).
	return MembersMark{db: sn.db, watch: it.WatchCh()}
}

// MembersChangedSince reports whether sn's member records may differ
// from those marked: false only when sn reads the same database and no
// member record was written since the mark was taken.
func (sn *Snapshot) MembersChangedSince(m MembersMark) bool {
	if m.db == nil || m.db != sn.db {
		return true // no mark, or a restore in between
	}
	select {
	case <-m.watch:
		return true
	default:
		return false
	}
}

// MemberByName finds a member by host name.
func (sn *Snapshot) MemberByName(name string) (*Member, bool) {
	return firstBy[Member](sn, tblMembers, "Name", name)
}

func applyRegisterMember(t *Txn, c *Command) error {
	m, err := decode[Member](c)
	if err != nil {
		return err
	}
	if m.ID == "" || m.Name == "" {
		return Errorf(KindInvalid, "member needs an id and a name")
	}
	if other, ok := t.read().MemberByName(m.Name); ok && other.ID != m.ID {
		return Errorf(KindConflict, "a member named %q already exists (id %s)", m.Name, other.ID)
	}
	if old, ok := t.read().Member(m.ID); ok {
		m.Disabled, m.DisabledBy = old.Disabled, old.DisabledBy
		if m.JoinedAt.IsZero() {
			m.JoinedAt = old.JoinedAt
		}
	}
	return t.insert(tblMembers, m)
}

// RemoveMemberCmd removes a member record.
type RemoveMemberCmd struct {
	ID string `json:"id"`
}

func applyRemoveMember(t *Txn, c *Command) error {
	r, err := decode[RemoveMemberCmd](c)
	if err != nil {
		return err
	}
	m, ok := t.read().Member(r.ID)
	if !ok {
		return nil // idempotent
	}
	return t.delete(tblMembers, m)
}

// SetHostEnabledCmd enables or disables placements on a host.
type SetHostEnabledCmd struct {
	ID       string `json:"id"`
	Disabled bool   `json:"disabled"`
	Reason   string `json:"reason,omitempty"`
}

func applySetHostEnabled(t *Txn, c *Command) error {
	r, err := decode[SetHostEnabledCmd](c)
	if err != nil {
		return err
	}
	m, ok := t.read().Member(r.ID)
	if !ok {
		return Errorf(KindNotFound, "host %s not found", r.ID)
	}
	cp := *m
	cp.Disabled, cp.DisabledBy = r.Disabled, r.Reason
	return t.insert(tblMembers, &cp)
}

func applyCreateJoinToken(t *Txn, c *Command) error {
	jt, err := decode[JoinToken](c)
	if err != nil {
		return err
	}
	if jt.ID == "" || jt.SecretHash == "" || !jt.ExpiresAt.After(c.Time) {
		return Errorf(KindInvalid, "join token needs an id, a secret hash and a future expiry")
	}
	// Drop tokens that expired long ago to keep the table small.
	for _, old := range list[JoinToken](t.read(), tblJoinTokens) {
		if c.Time.Sub(old.ExpiresAt) > 24*time.Hour {
			_ = t.txn.Delete(tblJoinTokens, old)
		}
	}
	return t.insert(tblJoinTokens, jt)
}

// ConsumeJoinTokenCmd marks a join token used by a joining host.
type ConsumeJoinTokenCmd struct {
	ID         string `json:"id"`
	SecretHash string `json:"secret_hash"`
	NodeID     string `json:"node_id"`
	// KeyHash identifies the key of the joining host's certificate request.
	KeyHash string `json:"key_hash,omitempty"`
}

func applyConsumeJoinToken(t *Txn, c *Command) error {
	r, err := decode[ConsumeJoinTokenCmd](c)
	if err != nil {
		return err
	}
	jt, ok := get[JoinToken](t.read(), tblJoinTokens, r.ID)
	if !ok || jt.SecretHash != r.SecretHash {
		return Errorf(KindForbidden, "join token is not valid for this cluster")
	}
	if !jt.UsedAt.IsZero() {
		if jt.RetriedBy(r.NodeID, r.KeyHash, c.Time) {
			return nil // the same host retrying a join whose answer it lost
		}
		return Errorf(KindForbidden, "join token was already used")
	}
	if !c.Time.Before(jt.ExpiresAt) {
		return Errorf(KindForbidden, "join token expired at %s", jt.ExpiresAt.Format(time.RFC3339))
	}
	cp := *jt
	cp.UsedAt, cp.UsedBy, cp.UsedKey = c.Time, r.NodeID, r.KeyHash
	return t.insert(tblJoinTokens, &cp)
}

// JoinRetryWindow is how long after its first use a join token may be
// used again by the same host (a join whose answer it lost).
const JoinRetryWindow = 10 * time.Minute

// RetriedBy reports whether a used token was used by the host with this
// node id and certificate key, which may repeat its join at now: before
// the token expires and within JoinRetryWindow of its use. (A member of
// a release before UsedKey keeps no key and refuses every repeat; it
// writes nothing either way, so the states stay equal.)
func (jt *JoinToken) RetriedBy(nodeID, keyHash string, now time.Time) bool {
	return !jt.UsedAt.IsZero() && jt.UsedBy != "" && jt.UsedKey != "" && jt.UsedBy == nodeID && jt.UsedKey == keyHash &&
		now.Before(jt.ExpiresAt) && now.Sub(jt.UsedAt) < JoinRetryWindow
}

// JoinToken returns a join token by id.
func (sn *Snapshot) JoinToken(id string) (*JoinToken, bool) {
	return get[JoinToken](sn, tblJoinTokens, id)
}
