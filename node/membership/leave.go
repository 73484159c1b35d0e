package membership

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Voter is another voting member: its member id and API address.
type Voter struct{ ID, APIAddr string }

// SelfRemoval proposes the entry that removes and revokes the leaving
// host, and decides when that entry is known to have applied.
//
// The entry cuts this host off as it commits: the members close its
// connections once they apply it, so the answer to the forwarded proposal
// may never come, and this host may never apply the entry itself. The
// removal is proven by any of:
//   - the proposal answered: the leader applied it;
//   - this host applied the revocation itself (Applied);
//   - a majority of the other voting members refuse this host's
//     certificate, each identified by the certificate it presented in a
//     completed TLS 1.3 handshake, whose keys also protect the refusal;
//   - every other voter that answers refuses it, and those refusals with
//     this host make a majority of the configuration (the count Raft
//     commits with): a voter this host cannot reach (down, or cut off
//     from it) cannot hold up a leave the cluster already committed.
//
// One refusal alone is not enough while another voter answers without
// refusing: a member refuses a certificate for other reasons too (a
// broken or lying host — the bad-certificate alert says nothing about
// why), and believing it would make this host stop and mark itself left
// while it is still a member. (With the other voters down, one refusal is
// all there can be.)
type SelfRemoval struct {
	// Propose proposes the removal and returns once the leader applied it.
	Propose func(ctx context.Context) error
	// Applied reports whether this host's own state holds its revocation.
	Applied func() bool
	// Voters are the other voting members of the Raft configuration.
	Voters []Voter
	// ClientTLS is this host's client config (its certificate, the CA).
	ClientTLS *tls.Config
	// Timeout bounds the whole removal (default 30 s).
	Timeout time.Duration
}

// Proof says how a removal was proven applied.
type Proof string

// The proofs Run accepts.
const (
	ProofLeader  Proof = "the leader answered the proposal"
	ProofApplied Proof = "this host applied it"
	ProofVoters  Proof = "a majority of the other voters refuse this host's certificate"
	ProofQuorum  Proof = "every other voter that answers refuses this host's certificate, a majority with this host"
)

const (
	// probeEvery is how often the voters are asked again.
	probeEvery = 200 * time.Millisecond
	// proposeGrace is how long the voters are still asked after the
	// proposal failed: a cut connection may hide a committed entry.
	proposeGrace = 5 * time.Second
	// probeTimeout bounds one probe.
	probeTimeout = 2 * time.Second
)

// Run proposes the removal and returns how it was proven applied, or the
// proposal's error (or the timeout) when it never is.
func (s *SelfRemoval) Run(ctx context.Context) (Proof, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	done := make(chan error, 1)
	go func() { done <- s.Propose(pctx) }()

	confirmed := map[string]bool{} // voters that refused this host
	unreached := map[string]int{}  // voters not refusing: how many probes in a row failed to reach them
	var proposeErr error
	var graceEnd <-chan time.Time
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				return ProofLeader, nil
			}
			proposeErr, done = err, nil
			graceEnd = time.After(proposeGrace)
		case <-tick.C:
		case <-graceEnd:
			return "", fmt.Errorf("remove this host: %w (and no majority of the voting members refuses its certificate)", proposeErr)
		case <-ctx.Done():
			if proposeErr != nil {
				return "", fmt.Errorf("remove this host: %w", proposeErr)
			}
			return "", fmt.Errorf("remove this host: not proven applied: %w", ctx.Err())
		}
		if p := s.proven(ctx, confirmed, unreached); p != "" {
			return p, nil
		}
	}
}

// unreachedProbes is how many probes in a row must fail to reach a voter
// before it counts as not answering (one failed probe may be a hiccup).
const unreachedProbes = 3

// proven asks the voters not yet confirmed and reports how the removal is
// proven ("": not yet); confirmed collects the voters that refused,
// unreached counts the probes in a row that failed to reach each other.
func (s *SelfRemoval) proven(ctx context.Context, confirmed map[string]bool, unreached map[string]int) Proof {
	if s.Applied != nil && s.Applied() {
		return ProofApplied
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, v := range s.Voters {
		if confirmed[v.ID] {
			continue
		}
		if v.APIAddr == "" {
			unreached[v.ID] = 0 // cannot be asked: counts as up and not refusing
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			by, refused := RefusedBy(ctx, v.APIAddr, s.ClientTLS)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case refused && by == v.ID:
				confirmed[v.ID] = true
			case by != "":
				unreached[v.ID] = 0 // a member answered (or refused as another member)
			case ctx.Err() == nil:
				unreached[v.ID]++
			}
		}()
	}
	wg.Wait()
	switch {
	case len(s.Voters) == 0:
		return ""
	case len(confirmed) > len(s.Voters)/2:
		return ProofVoters
	case ctx.Err() != nil:
		return "" // a probe cut short by our own deadline says nothing of its voter
	case len(confirmed)+1 > (len(s.Voters)+1)/2:
		// Every voter not refusing must be out of reach for several
		// probes in a row: one that answers and does not refuse (yet)
		// outweighs a lone refusal.
		for _, v := range s.Voters {
			if !confirmed[v.ID] && (v.APIAddr == "" || unreached[v.ID] < unreachedProbes) {
				return ""
			}
		}
		return ProofQuorum
	}
	return ""
}

// RefusedBy makes one request to the internal API at addr over a new
// connection (a full handshake) and reports whether the server refused the
// client certificate, and which member refused it: the common name of the
// server certificate cfg verified. Only a refusal after a completed TLS
// 1.3 handshake counts (the client certificate is checked after the
// server's, and the alert travels under the handshake's keys); an earlier
// failure proves nothing about who refused.
func RefusedBy(ctx context.Context, addr string, cfg *tls.Config) (memberID string, refused bool) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cc := cfg.Clone()
	cc.ClientSessionCache = nil // a full handshake: the certificate is presented again
	cc.NextProtos = []string{"http/1.1"}
	c, err := (&tls.Dialer{Config: cc}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", false
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() }) // a cancelled leave does not wait for the probe
	defer stop()
	tc := c.(*tls.Conn)
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete || cs.Version != tls.VersionTLS13 || len(cs.VerifiedChains) == 0 {
		return "", false
	}
	by := cs.PeerCertificates[0].Subject.CommonName
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err = fmt.Fprintf(c, "GET /internal/v1/commit HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err == nil {
		var resp *http.Response
		if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close()
			return by, false
		}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && strings.Contains(oe.Err.Error(), "bad certificate") {
		return by, true
	}
	return by, false
}

// HostRemoval takes this host out of the cluster for leave (Leaver.Remove):
// its member record goes and its certificate is revoked in one entry
// (statedb.RemoveHostCmd, what `members remove` proposes), so a host that
// left is refused at once rather than when its certificate expires. While
// a member runs a release without that command, it only removes the
// record, as before.
//
// The entry cuts this host off as it commits, so the answer to the
// proposal may never come: SelfRemoval says when the removal is proven
// otherwise (this host applied it, or a majority of the other voters
// refuse its certificate).
type HostRemoval struct {
	HostID string
	Raft   Raft
	// Servers is the Raft configuration.
	Servers func() ([]RaftServer, error)
	// ClientTLS is this host's client config (its certificate, the CA);
	// nil: the removal fails.
	ClientTLS *tls.Config
	Logger    *slog.Logger
	// Timeout bounds the proof (SelfRemoval.Timeout).
	Timeout time.Duration
}

// Remove proposes the removal and returns once it is proven applied;
// revoked says whether the certificate was revoked too.
func (h *HostRemoval) Remove(ctx context.Context) (revoked bool, err error) {
	sn := h.Raft.State()
	legacy := false
	spec, _ := statedb.Commands().Lookup(statedb.CmdRemoveHost)
	for _, m := range sn.Members() {
		if statedb.CompareVersions(m.Version, spec.MinVersion) < 0 {
			legacy = true
		}
	}
	if legacy {
		_, err := h.Raft.Propose(ctx, statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: h.HostID})
		return false, err
	}
	servers, err := h.Servers()
	if err != nil {
		return false, fmt.Errorf("raft configuration: %w", err)
	}
	var voters []Voter
	for _, s := range servers {
		if s.Voter && s.ID != h.HostID {
			m, _ := sn.Member(s.ID)
			v := Voter{ID: s.ID}
			if m != nil {
				v.APIAddr = m.APIAddr
			}
			voters = append(voters, v)
		}
	}
	if h.ClientTLS == nil {
		return false, errors.New("remove this host: no TLS client")
	}
	r := &SelfRemoval{
		Propose: func(ctx context.Context) error {
			_, err := h.Raft.Propose(ctx, statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: h.HostID, Reason: "left the cluster"})
			return err
		},
		Applied: func() bool {
			_, ok := h.Raft.State().RevokedHost(h.HostID)
			return ok
		},
		Voters: voters, ClientTLS: h.ClientTLS, Timeout: h.Timeout}
	proof, err := r.Run(ctx)
	if err != nil {
		return false, err
	}
	h.Logger.Info("removed and revoked this host", "proof", string(proof))
	return true, nil
}
